"""What an inference run (``inference.json``, the Deploy app) reads and writes, sorted out before the first image
(:func:`find_inputs`, :func:`plan_inference`), and its ``report.json`` (:class:`InferenceReport`)::

    {"status": "running" | "completed" | "failed" | "interrupted", "error", "input", "output", "model",
     "counts": {"total", "segmented", "skipped", "failed", "pending"},
     "inputs": [{"input", "status": "segmented" | "skipped" | "failed" | "pending", "outputs": [...], "error", ...}]}

written when the run starts, and when it ends, fails or gets SIGTERM (once the input in hand is recorded)."""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
from typing import Any

from unext_monai.data.checks import check_image_file
from unext_monai.folders import cannot_write, is_inside
from unext_monai.io import file_stem, write_json_atomic
from unext_monai.transforms import NOT_INPUTS, output_files

__all__ = ["find_inputs", "plan_inference", "InferenceReport", "output_stems", "REPORT_NAME"]

logger = logging.getLogger("unext_monai")

REPORT_NAME = "report.json"


def output_stems(paths: list[str]) -> dict[str, str]:
    """A distinct output stem per input: its file stem, or, for inputs sharing one (``a.png``, ``a.dcm``), the stem
    and its suffix (``a_png``, ``a_dcm``), numbered if still taken."""
    counts = collections.Counter(file_stem(p) for p in paths)
    stems: dict[str, str] = {}
    for p in paths:
        stem = file_stem(p)
        if counts[stem] > 1:
            stem = f"{stem}_{os.path.basename(p)[len(stem):].lstrip('.').replace('.', '_').lower()}"
        candidate, n = stem, 1
        while candidate in stems.values():
            n += 1
            candidate = f"{stem}_{n}"
        stems[p] = candidate
    return stems


def find_inputs(input_path: str) -> tuple[list[str], list[dict[str, str]]]:
    """``(inputs, skipped)`` of ``input_path`` and its subfolders (hidden ones not looked at): the readable pictures,
    sorted, and ``{"input": path, "error": why}`` for every other file (unreadable, or named like a mask or an output:
    :data:`~unext_monai.transforms.NOT_INPUTS`) and every symlinked folder that leads into the input folder or to one
    read already (each folder is read once). ``FileNotFoundError`` where ``input_path`` does not exist."""
    root = os.path.abspath(os.path.expanduser(str(input_path)))
    if not os.path.exists(root):
        raise FileNotFoundError(f"input_path {root} does not exist")
    if not os.path.isdir(root):
        problem = check_image_file(root)
        return ([], [{"input": root, "error": problem}]) if problem else ([root], [])
    inputs, skipped, seen = [], [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path, real = os.path.join(folder, d), os.path.realpath(os.path.join(folder, d))
            if os.path.islink(path) and (is_inside(real, root) or real in seen):
                skipped.append({"input": path, "error": f"a link to a folder read once already, as {real}"})
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        for name in sorted(f for f in files if not f.startswith(".")):
            path = os.path.join(folder, name)
            if NOT_INPUTS.search(file_stem(name)):
                skipped.append({"input": path, "error": "named like a mask or an output: not an input"})
            elif problem := check_image_file(path):
                skipped.append({"input": path, "error": problem})
            else:
                inputs.append(path)
    return inputs, skipped


def plan_inference(input_path: str | None, output_dir: str, overlay: bool = True, overwrite: bool = False,
                   model: str | None = None, dicom_seg: bool = False, allow_empty: bool = False) -> InferenceReport:
    """The inputs of an inference run and each one's output files, checked before anything is written, as the run's
    :class:`InferenceReport` (its ``datalist``: ``{"image", "mask_file"[, "overlay_file"]}``). With ``dicom_seg`` a
    DICOM input gives a DICOM Segmentation ``<stem>_seg.dcm``; ``allow_empty`` allows nothing to segment.

    Raises ``ValueError`` (no ``input_path``, nothing readable in it, ``output_dir`` inside the input folder, an
    output that exists without ``overwrite`` or is a folder, an output folder that cannot be written) or
    ``FileNotFoundError``."""
    if not input_path:
        raise ValueError("no input: give --input_path (a picture or a folder of pictures)")
    root = os.path.abspath(os.path.expanduser(str(input_path)))
    output_dir = os.path.abspath(os.path.expanduser(str(output_dir)))
    base = root if os.path.isdir(root) else os.path.dirname(root)
    if os.path.isdir(root) and is_inside(output_dir, root):
        raise ValueError(f"output_dir {output_dir} is inside the input folder {root}: choose an output_dir outside it")
    inputs, skipped = find_inputs(root)
    if not inputs and not allow_empty:
        reasons = "".join(f"; {os.path.basename(s['input'])}: {s['error']}" for s in skipped[:3])
        raise ValueError(f"{root}: nothing to segment ({len(skipped)} file(s) skipped{reasons})")
    items, stems = [], {}
    for folder in sorted({os.path.dirname(f) for f in inputs}):
        stems.update(output_stems([f for f in inputs if os.path.dirname(f) == folder]))
    for f in inputs:
        folder = os.path.normpath(os.path.join(output_dir, os.path.relpath(os.path.dirname(f), base)))
        seg = dicom_seg and f.lower().endswith(".dcm")  # a DICOM Segmentation, and no overlay
        files = [os.path.join(folder, f"{stems[f]}_seg.dcm")] if seg else output_files(folder, stems[f], f, overlay)
        items.append({"image": f, "mask_file": files[0], **({"overlay_file": files[1]} if len(files) > 1 else {})})
    report_path = os.path.join(output_dir, REPORT_NAME)
    planned = [p for it in items for k, p in it.items() if k != "image"]
    taken = next((p for p in planned + [report_path] if os.path.isdir(p)), None)
    if taken:
        raise ValueError(f"{taken}: an output path is a folder; move it or choose another output_dir")
    existing = next((p for p in planned if os.path.lexists(p)), None)
    if existing and not overwrite:
        raise ValueError(f"{existing}: exists, and this run did not write it; choose another output_dir, or pass "
                         "--overwrite True to replace it")
    for folder in sorted({os.path.dirname(p) for p in planned + [report_path]}):
        if why := cannot_write(folder):
            raise ValueError(f"output folder {folder}: cannot write there ({why})")
    logger.info(f"segmenting {len(items)} input(s) from {root} into {output_dir}; {len(skipped)} file(s) skipped")
    return InferenceReport(report_path, root, output_dir, inputs, skipped, items=items, model=model)


class InferenceReport:
    """``report.json`` of an inference run (the module docstring), written atomically: ``inputs`` are ``pending``
    until recorded, ``skipped`` are ``{"input", "error"}``, ``items`` the datalist of the planned outputs."""

    def __init__(self, path: str, input_path: str, output_dir: str, inputs: list[str], skipped: list[dict],
                 items: list[dict] | None = None, model: str | None = None) -> None:
        self.path, self.items = path, list(items or [])
        self._head = {"input": input_path, "output": output_dir, "model": model}
        self._entries = {s["input"]: {"input": s["input"], "status": "skipped", "outputs": [], "error": s["error"]}
                         for s in skipped}
        self._entries.update({f: {"input": f, "status": "pending", "outputs": [], "error": None} for f in inputs})
        self._entries = dict(sorted(self._entries.items()))
        self._lock = threading.Lock()
        self.interrupted = False
        self._in_input, self._stop_signal = False, 0
        self.write("running")

    @property
    def datalist(self) -> list[dict[str, str]]:
        return [dict(it) for it in self.items]

    def segmented(self, source: str, outputs: list[str], **extra: Any) -> None:
        self._record(source, status="segmented", outputs=list(outputs), error=None, **extra)

    def failed(self, source: str, error: str) -> None:
        self._record(source, status="failed", outputs=[], error=error)

    def _record(self, source: str, **entry: Any) -> None:
        with self._lock:
            self._entries.setdefault(source, {"input": source}).update(entry)

    def counts(self) -> dict[str, int]:
        statuses = [e["status"] for e in self._entries.values()]
        return {"total": len(statuses), **{s: statuses.count(s) for s in ("segmented", "skipped", "failed", "pending")}}

    def write(self, status: str, error: str | None = None) -> str:
        """Write the report with the run's ``status``; returns its path."""
        with self._lock:
            report = {"status": status, "error": error, **self._head, "counts": self.counts(),
                      "inputs": [dict(e) for e in self._entries.values()]}
        return write_json_atomic(self.path, report)

    def finish(self, error: BaseException | str | None = None, status: str | None = None) -> dict[str, int]:
        """Write the final report (``completed``, or ``failed`` with ``error``) and log where everything went; after a
        run that completed, inputs never recorded count as failed."""
        status = status or ("failed" if error else "completed")
        if status == "completed":
            with self._lock:
                for entry in self._entries.values():
                    if entry["status"] == "pending":
                        entry.update(status="failed", error="not segmented: the run stopped before this input")
        self.write(status, None if error is None else (error if isinstance(error, str) else _one_line(error)))
        counts = self.counts()
        empty = sum(1 for e in self._entries.values() if e.get("lesion_pixels") == 0)
        log = logger.info if status == "completed" else logger.error
        log(f"inference {status}: {counts['segmented']} of {counts['total']} file(s) segmented into "
            f"{self._head['output']} ({empty} with no lesion found), {counts['skipped']} skipped, {counts['failed']} "
            f"failed; report: {self.path}")
        return counts

    def attach(self, engine: Any) -> None:
        """Record each iteration's written files, and finish when the evaluator completes, fails or gets SIGTERM."""
        from ignite.engine import Events

        by_mask = {it["mask_file"]: it["image"] for it in self.items}

        def started(engine: Any) -> None:
            self._in_input = True

        def record(engine: Any) -> None:
            for out in engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]:
                files = list(out.get("pred_files") or []) if isinstance(out, dict) else []
                if files and files[0] in by_mask:
                    lesion = int((out["pred"] > 0).sum()) if "pred" in out else None
                    self.segmented(by_mask[files[0]], files, lesion_pixels=lesion)
            self._in_input = False
            if self._stop_signal:  # SIGTERM came while this input was being segmented: its files are recorded now
                self._terminated(self._stop_signal, None)

        def failed(engine: Any, e: BaseException) -> None:
            if not self.interrupted:
                self.finish(e)
            raise e

        engine.add_event_handler(Events.ITERATION_STARTED, started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, record)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.finish())
        engine.add_event_handler(Events.EXCEPTION_RAISED, failed)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum: int, frame: Any) -> None:
        if self._in_input:  # the files of the input being segmented may be half written: stop once it is recorded
            self._stop_signal = signum
            return
        self.interrupted = True
        self.finish("stopped by SIGTERM before every input was segmented", status="interrupted")
        sys.exit(128 + signum)


def _one_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
