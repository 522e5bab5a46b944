"""What became of each input of a MONAI Deploy run: ``OUTPUT/report.json``, rewritten atomically after each input.

The file holds::

    {"model": ..., "input": ..., "output": ...,
     "counts": {"total": n, "segmented": n, "skipped": n, "failed": n},
     "inputs": [{"input": path, "status": "segmented" | "skipped" | "failed", "outputs": [paths],
                 "error": why or null, "dicom": {identifiers, for DICOM input}}, ...]}

``skipped``: not a readable image, left out before inference; ``failed``: an error during inference or writing
(outputs already written are listed); an input the graph never finished is ``failed`` too.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from unext_monai.io import write_json_atomic

__all__ = ["RunReport"]

_STATUSES = ("segmented", "skipped", "failed")


class RunReport:
    """One entry per input, in input order: the skipped ones as given, the others pending until recorded.

    Args:
        path: the JSON file to write.
        input_path, output_path, model_path: what the run was given (written into the report).
        skipped: ``[{"input", "status": "skipped", "error"}]`` for files left out before inference.
        inputs: the files handed to inference.
    """

    def __init__(self, path: Path, input_path: str, output_path: str, model_path: str, skipped: list[dict],
                 inputs: list[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._head = {"model": model_path, "input": input_path, "output": output_path}
        self._entries: dict[str, dict[str, Any]] = {}
        for entry in skipped:
            self._entries[entry["input"]] = {"input": entry["input"], "status": "skipped", "outputs": [],
                                             "error": entry["error"]}
        for f in inputs:
            self._entries[f] = {"input": f, "status": "pending", "outputs": [], "error": None}
        self._entries = dict(sorted(self._entries.items()))
        self._write()

    def segmented(self, source: str, outputs: list[str], dicom: dict | None = None) -> None:
        """Record that ``source`` was segmented into ``outputs``."""
        self._record(source, status="segmented", outputs=list(outputs), error=None, dicom=dicom)

    def failed(self, source: str, error: str, outputs: list[str] | None = None) -> None:
        """Record that ``source`` failed (``outputs`` already written, if any)."""
        self._record(source, status="failed", outputs=list(outputs or []), error=error)

    def finish(self) -> None:
        """Mark inputs never recorded as failed and write the final report."""
        with self._lock:
            for entry in self._entries.values():
                if entry["status"] == "pending":
                    entry.update(status="failed", error="not segmented: the run stopped before this input")
        self._write()

    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [e["status"] for e in self._entries.values()]
        return {"total": len(statuses), **{s: statuses.count(s) for s in _STATUSES}}

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries.values()]

    def _record(self, source: str, **fields: Any) -> None:
        with self._lock:
            entry = self._entries.setdefault(source, {"input": source})
            entry.update({k: v for k, v in fields.items() if v is not None or k == "error"})
        self._write()

    def _write(self) -> None:
        with self._lock:
            data = {**self._head, "counts": None, "inputs": [dict(e) for e in self._entries.values()]}
        statuses = [e["status"] for e in data["inputs"]]
        data["counts"] = {"total": len(statuses), **{s: statuses.count(s) for s in _STATUSES}}
        write_json_atomic(self.path, data)
