# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""The files that inference segments and the files it writes, sorted out before anything is written.

- :func:`plan_inference` (the bundle's ``inference.json``): the inputs (one file, or every picture in a folder and
  its subfolders), each decoded in full first; the outputs of each (``io.output_stems``, ``io.mask_file_name``,
  ``io.overlay_file_name``, in the input's subfolder of ``output_dir``); refusals before the first image (an output
  folder that holds inputs, an output location that cannot be written). The :class:`InferencePlan` it returns is the
  datalist and, attached to the evaluator, writes ``report.json`` last: what was segmented and where each output
  went, what was skipped and why.
- :func:`list_images`: the readable pictures of one file or folder (no subfolders), for applications that write
  their own outputs (MONAI Deploy).
- :func:`check_image_file`: decodes a file with the library inference reads it with (PIL for PNG/JPEG/BMP/TIFF,
  pydicom for DICOM, nibabel for NIfTI) and says what is wrong with it, if anything.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections import Counter
from typing import Any

import numpy as np

from ..data.checks import read_itk_picture
from ..io import file_stem, mask_file_name, output_stems, overlay_file_name, write_json_atomic
from ..transforms import ITK_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "list_images", "check_image_file", "write_report", "plan_inference", "InferencePlan",
           "is_mask_or_output"]

logger = logging.getLogger("unext_monai")

#: suffixes inference reads: PNG/JPEG/BMP/TIFF through PIL, NRRD/MetaImage through ITK, DICOM through pydicom, NIfTI
#: through nibabel
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *ITK_SUFFIXES, ".dcm", ".nii", ".nii.gz")
_NIFTI = (".nii", ".nii.gz")


#: stems of ground-truth masks (``case_mask``, BUSI's ``case_mask_1``, ISIC's ``case_segmentation``) and of outputs
_MASK_OR_OUTPUT = re.compile(r"_(mask(_\d+)?|segmentation|overlay)$", re.IGNORECASE)
NAMED_LIKE_MASK = "named like a mask or an output (*_mask*, *_segmentation, *_overlay): not an input"


def is_mask_or_output(path: str) -> bool:
    """Whether the file's stem ends like a mask's or an output's (``_mask``, ``_mask_2``, ``_segmentation``,
    ``_overlay``)."""
    return bool(_MASK_OR_OUTPUT.search(file_stem(path)))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check_pil(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decodes every pixel: truncated or damaged data fails here
                bands = len(im.getbands())
    except UnidentifiedImageError:
        return "not an image file: PIL cannot identify it"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"image too large to decode safely ({_first_line(e)})"
    except Exception as e:  # OSError, SyntaxError, ValueError, struct.error ... for damaged files
        return f"corrupt or truncated image: {_first_line(e)}"
    if bands not in (1, 2, 3, 4):
        return f"unsupported picture with {bands} channels (gray, RGB or RGBA expected)"
    return None


def _check_dicom(path: str) -> str | None:
    try:
        import pydicom
    except ImportError:
        return "DICOM file, but pydicom is not installed (pip install pydicom)"
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        return f"not a readable DICOM file: {_first_line(e)}"
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"multi-frame DICOM ({frames} frames): inference segments single 2-D images"
    try:
        pixels = ds.pixel_array  # decodes the pixel data, compressed or not
    except Exception as e:
        return f"DICOM pixel data cannot be decoded: {_first_line(e)}"
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (1, 3, 4)):
        return f"DICOM pixel array of shape {tuple(pixels.shape)}: a 2-D gray or RGB image is expected"
    return None


def _check_nifti(path: str) -> str | None:
    try:
        import nibabel as nib
    except ImportError:
        return "NIfTI file, but nibabel is not installed (pip install nibabel)"
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)  # reads (and for .nii.gz decompresses) the whole array
    except Exception as e:
        return f"not a readable NIfTI file: {_first_line(e)}"
    if len(data.shape) != 2:
        return f"NIfTI image of shape {tuple(data.shape)}: inference segments 2-D images (H, W) only"
    if not np.issubdtype(data.dtype, np.number):
        return f"NIfTI image of data type {data.dtype}: a numeric 2-D image is expected"
    return None


def check_image_file(path: str) -> str | None:
    """``None`` if inference can read ``path``, else what is wrong with it (one line).

    The file is decoded in full with the library inference uses for its suffix: PIL (PNG, JPEG, BMP, TIFF; gray, RGB
    or RGBA, 8 or 16 bit), ITK (NRRD, MetaImage: 2-D pictures), pydicom (``.dcm``, one frame, pixel data decoded) or
    nibabel (``.nii``, ``.nii.gz``; 2-D images only, as the network is 2-D).
    """
    if not os.path.exists(path):
        return "file missing"
    if not os.path.isfile(path):
        return "not a file"
    if os.path.getsize(path) == 0:
        return "file is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "file not readable (permission denied)"
    lower = path.lower()
    if lower.endswith(".dcm"):
        return _check_dicom(path)
    if lower.endswith(_NIFTI):
        return _check_nifti(path)
    if lower.endswith(ITK_SUFFIXES):
        return read_itk_picture(path, "image")[1]
    return _check_pil(path)


def write_report(report_path: str, skipped: list[dict], segmented: list[str]) -> None:
    """Write ``{"skipped": [{"file", "error"}], "segmented": [...]}`` to ``report_path`` atomically."""
    write_json_atomic(report_path, {"skipped": skipped, "segmented": segmented})


def _candidates(folder: str) -> tuple[list[str], list[dict]]:
    """The supported pictures directly in ``folder`` (sorted) and the other files there with the reason."""
    files, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        if not name.lower().endswith(IMAGE_SUFFIXES):
            skipped.append({"file": path, "error": f"not a file type inference reads ({', '.join(IMAGE_SUFFIXES)})"})
        elif is_mask_or_output(name):
            skipped.append({"file": path, "error": NAMED_LIKE_MASK})
        else:
            files.append(path)
    return files, skipped


def _check_all(files: list[str]) -> tuple[list[str], list[dict]]:
    good, skipped = [], []
    for f in files:
        problem = check_image_file(f)
        if problem is None:
            good.append(f)
        else:
            skipped.append({"file": f, "error": problem})
            logger.warning(f"skipping {f}: {problem}")
    return good, skipped


def list_images(input_path: str, report_path: str | None = None, check: bool = True) -> list[str]:
    """Absolute paths of the images to segment, sorted, each checked readable by :func:`check_image_file`.

    Args:
        input_path: one image file, or a folder whose supported files (see :data:`IMAGE_SUFFIXES`; not its
            subfolders) are all segmented. Files named like masks or outputs (``*_mask``, ``*_mask_1``,
            ``*_segmentation``, ``*_overlay``), files of other types and unreadable files are left out, each with a
            warning; hidden files are ignored.
        report_path: if given, a JSON file written atomically with ``{"skipped": [{"file": path, "error": why}],
            "segmented": [paths]}``.
        check: decode every file first and leave out the unreadable ones; ``False`` only lists.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: a file with an unsupported suffix; a folder without any supported file; a single file that
            cannot be read, or a folder none of whose files can be read (the report is written first).
    """
    path = os.path.abspath(os.path.expanduser(input_path))
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path}: unsupported file type; inference reads {', '.join(IMAGE_SUFFIXES)}.")
        files, skipped = [path], []
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"input_path {path} does not exist.")
    else:
        files, skipped = _candidates(path)
        for s in skipped:
            logger.warning(f"skipping {s['file']}: {s['error']}")
        if not files:
            raise ValueError(f"{path}: no images to segment ({', '.join(IMAGE_SUFFIXES)}).")
    good, bad = _check_all(files) if check else (files, [])
    skipped += bad
    if report_path:
        write_report(report_path, skipped, good)
    if not good:
        where = f"; see {report_path}" if report_path else ""
        if len(files) == 1:
            raise ValueError(f"{files[0]}: {bad[0]['error']}{where}")
        raise ValueError(f"{path}: none of the {len(files)} image file(s) can be read{where}")
    if bad:
        logger.warning(f"left out {len(bad)} unreadable file(s) of {len(files)}; segmenting {len(good)}"
                       + (f" (report: {report_path})" if report_path else ""))
    by_output: dict[str, list[str]] = {}
    for f in good:
        by_output.setdefault(mask_file_name(file_stem(f), f), []).append(os.path.basename(f))
    for output, sources in by_output.items():
        if len(sources) > 1:
            logger.warning(f"{', '.join(sources)} all give {output}: give them distinct names (io.output_stems)")
    return good


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _writable_folder(folder: str) -> str | None:
    """``None`` if files can be created in ``folder`` (made if missing), else why not. Writes a probe file."""
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is a file, not a folder"
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    return None


class InferencePlan:
    """The inputs of one inference run, the files each gives, and the report of what happened.

    Made by :func:`plan_inference`. :attr:`datalist` feeds the bundle's dataset: ``{"image": input, "mask_file":
    path, "overlay_file": path}`` items (``overlay_file`` only with overlays), which ``SavePredictiond`` writes to.
    Attached to the evaluator (it is one of ``inference.json``'s handlers, before ``StatsHandler``, which re-raises
    errors) it records the files each iteration wrote
    (the ``pred_files`` that ``SavePredictiond`` leaves in the output) and writes ``report.json`` when the run ends,
    or fails::

        {"status": "completed" | "failed", "error": str | null, "input_path": ..., "output_dir": ...,
         "segmented": [{"input": path, "outputs": [paths]}], "not_segmented": [paths],
         "skipped": [{"file": path, "reason": why}]}
    """

    def __init__(self, input_path: str, output_dir: str, items: list[dict], skipped: list[dict],
                 report_path: str) -> None:
        self.input_path = input_path
        self.output_dir = output_dir
        self.items = items
        self.skipped = skipped
        self.report_path = report_path
        self.written: dict[str, list[str]] = {}
        self._input_of = {it["mask_file"]: it["image"] for it in items}

    @property
    def datalist(self) -> list[dict[str, str]]:
        return [dict(it) for it in self.items]

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: self.written.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write_report())
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)

    def _record(self, engine: Any) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for out in outputs:
            files = list(out.get("pred_files") or []) if isinstance(out, dict) else []
            if files and files[0] in self._input_of:
                self.written[self._input_of[files[0]]] = files

    def _failed(self, engine: Any, e: BaseException) -> None:
        self.write_report(error=e)
        raise e

    def write_report(self, error: BaseException | None = None) -> str:
        """Write ``report.json`` (atomically) and log where the outputs went; returns its path."""
        segmented = [{"input": it["image"], "outputs": self.written[it["image"]]}
                     for it in self.items if it["image"] in self.written]
        missing = [it["image"] for it in self.items if it["image"] not in self.written]
        report = {
            "status": "failed" if error is not None else "completed",
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "input_path": self.input_path,
            "output_dir": self.output_dir,
            "segmented": segmented,
            "not_segmented": missing,
            "skipped": [{"file": s["file"], "reason": s["error"]} for s in self.skipped],
        }
        write_json_atomic(self.report_path, report)
        n_files = sum(len(s["outputs"]) for s in segmented)
        log = logger.error if error is not None else logger.info
        log(f"inference {report['status']}: wrote {n_files} file(s) for {len(segmented)} of {len(self.items)} "
            f"input(s) to {self.output_dir}; {len(self.skipped)} file(s) skipped; report: {self.report_path}")
        return self.report_path


def plan_inference(
    input_path: str | None,
    output_dir: str,
    overlay: bool = True,
    report_name: str = "report.json",
) -> InferencePlan:
    """Sort out the inputs and outputs of an inference run before anything is written.

    Inputs: ``input_path`` is one file (segmented whatever its name), or a folder: every picture in it and its
    subfolders (hidden files and folders ignored). Files of other types, files named like masks or outputs
    (``*_mask``, ``*_mask_1``, ``*_segmentation``, ``*_overlay``) and unreadable files (:func:`check_image_file`)
    are skipped with the reason, logged and listed in the report. Outputs: each input's mask (and overlay) go to the
    input's subfolder of ``output_dir``, named by ``io.output_stems`` (inputs sharing a stem get distinct names).
    Every output folder is made and checked writable before returning.

    Raises:
        ValueError: no ``input_path``; nothing readable to segment; ``output_dir`` inside the input folder, or the
            folder of a single input file; an output location that is not writable, or an output path taken by a
            folder. Nothing is written then.
        FileNotFoundError: ``input_path`` does not exist.
    """
    if not input_path:
        raise ValueError("no input: set dataset_dir (a folder of pictures) or input_path (a file or folder), e.g. "
                         "--dataset_dir /path/to/pictures")
    root = os.path.abspath(os.path.expanduser(str(input_path)))
    output_dir = os.path.abspath(os.path.expanduser(str(output_dir)))
    if not os.path.exists(root):
        raise FileNotFoundError(f"input_path {root} does not exist")
    if os.path.isfile(root):
        base = os.path.dirname(root)
        if os.path.realpath(output_dir) == os.path.realpath(base):
            raise ValueError(f"output_dir {output_dir} is the folder of the input {root}: choose another output_dir "
                             "(outputs are never written beside their input)")
        candidates, skipped = [root], []
    else:
        base = root
        if _inside(output_dir, root):
            raise ValueError(f"output_dir {output_dir} is inside the input folder {root}, which inference reads with "
                             "its subfolders: choose an output_dir outside it")
        candidates, skipped = [], []
        for folder, dirs, _ in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files, other = _candidates(folder)
            candidates += files
            skipped += other
    good, bad = _check_all(candidates)
    skipped += bad
    reasons = Counter(s["error"] if s["error"] in (NAMED_LIKE_MASK,) or s["error"].startswith("not a file type")
                      else "unreadable" for s in skipped)
    if not good:
        detail = "; ".join(f"{n} {r}" for r, n in reasons.items())
        raise ValueError(f"{root}: nothing to segment ({len(candidates)} picture(s) readable: 0"
                         + (f"; skipped: {detail}" if detail else "") + ")")
    items = []
    by_folder: dict[str, list[str]] = {}
    for f in good:
        by_folder.setdefault(os.path.dirname(f), []).append(f)
    for folder, files in by_folder.items():
        out_folder = os.path.join(output_dir, os.path.relpath(folder, base))
        out_folder = os.path.normpath(out_folder)
        stems = output_stems(files)
        for f in files:
            item = {"image": f, "mask_file": os.path.join(out_folder, mask_file_name(stems[f], f))}
            if overlay:
                item["overlay_file"] = os.path.join(out_folder, overlay_file_name(stems[f]))
            items.append(item)
    items.sort(key=lambda it: it["image"])
    report_path = os.path.join(output_dir, report_name)
    planned = [p for it in items for k, p in it.items() if k != "image"] + [report_path]
    taken = [p for p in planned if os.path.isdir(p)]
    if taken:
        raise ValueError(f"output path(s) {taken[:3]} are folders: move them or choose another output_dir")
    if len(set(planned)) != len(planned):
        raise ValueError(f"two inputs would write the same output in {output_dir}")  # guarded by output_stems
    for folder in sorted({os.path.dirname(p) for p in planned}):
        problem = _writable_folder(folder)
        if problem:
            raise ValueError(f"output folder {folder}: {problem}; nothing was written")
    logger.info(f"segmenting {len(items)} input(s) from {root} into {output_dir}"
                + (f"; skipping {sum(reasons.values())}: " + ", ".join(f"{n} {r}" for r, n in reasons.items())
                   if reasons else ""))
    return InferencePlan(root, output_dir, items, skipped, report_path)
