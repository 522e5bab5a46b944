"""The files that inference segments: one file or every supported picture in a folder, each checked readable first.

:func:`list_images` decodes every candidate in full with the library that inference reads it with (PIL for
PNG/JPEG/BMP/TIFF, pydicom for DICOM, nibabel for NIfTI). Unreadable files are left out with a warning, so that one
damaged file does not stop a folder's run, and an optional JSON report lists each skipped file with its problem.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "list_images", "check_image_file", "write_report"]

logger = logging.getLogger("unext_monai")

#: suffixes inference reads: PNG/JPEG/BMP/TIFF through PIL, DICOM through pydicom, NIfTI through nibabel
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
_NIFTI = (".nii", ".nii.gz")


def _is_mask_or_output(name: str) -> bool:
    stem = name.lower()
    return any(tag in stem for tag in ("_mask.", "_overlay.", "_segmentation."))


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
    or RGBA, 8 or 16 bit), pydicom (``.dcm``, one frame, pixel data decoded) or nibabel (``.nii``, ``.nii.gz``;
    2-D images only, as the network is 2-D).
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
    return _check_pil(path)


def write_report(report_path: str, skipped: list[dict], segmented: list[str]) -> None:
    """Write ``{"skipped": [{"file", "error"}], "segmented": [...]}`` to ``report_path`` atomically (temp + rename)."""
    folder = os.path.dirname(os.path.abspath(report_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(report_path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"skipped": skipped, "segmented": segmented}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, report_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def list_images(input_path: str, report_path: str | None = None, check: bool = True) -> list[str]:
    """Absolute paths of the images to segment, sorted, each checked readable by :func:`check_image_file`.

    Args:
        input_path: one image file, or a folder whose supported files (see :data:`IMAGE_SUFFIXES`, not recursive) are
            all segmented; files named like masks or outputs (``*_mask.*``, ``*_overlay.*``, ``*_segmentation.*``)
            and hidden files are left out.
        report_path: if given, a JSON file written atomically with ``{"skipped": [{"file": path, "error": what}],
            "segmented": [paths]}``: the files left out and the files handed to inference (written before
            inference runs; its outputs are named ``<stem>_mask.*`` after these).
        check: decode every file first and leave out the unreadable ones (a warning each); ``False`` only lists.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: a file with an unsupported suffix; a folder without any supported file; a single file that
            cannot be read, or a folder none of whose files can be read (the report is written first).
    """
    path = os.path.abspath(os.path.expanduser(input_path))
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path}: unsupported file type; inference reads {', '.join(IMAGE_SUFFIXES)}.")
        files = [path]
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"input_path {path} does not exist.")
    else:
        files = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.lower().endswith(IMAGE_SUFFIXES) and not _is_mask_or_output(name) and not name.startswith(".")
        )
        if not files:
            raise ValueError(f"{path}: no images to segment ({', '.join(IMAGE_SUFFIXES)}).")
    if not check:
        if report_path:
            write_report(report_path, [], files)
        return files
    good, skipped = [], []
    for f in files:
        problem = check_image_file(f)
        if problem is None:
            good.append(f)
        else:
            skipped.append({"file": f, "error": problem})
            logger.warning(f"skipping {f}: {problem}")
    if report_path:
        write_report(report_path, skipped, good)
    if not good:
        where = f"; see {report_path}" if report_path else ""
        if len(files) == 1:
            raise ValueError(f"{files[0]}: {skipped[0]['error']}{where}")
        raise ValueError(f"{path}: none of the {len(files)} image file(s) can be read{where}")
    if skipped:
        logger.warning(
            f"left out {len(skipped)} unreadable file(s) of {len(files)}; segmenting {len(good)}"
            + (f" (report: {report_path})" if report_path else "")
        )
    _warn_output_collisions(good)
    return good


def _output_name(path: str) -> str:
    """The mask file name inference writes for ``path`` (as ``SavePredictiond`` names it)."""
    name = os.path.basename(path)
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else os.path.splitext(name)[0]
    return stem + ("_mask.nii.gz" if name.endswith(_NIFTI) else "_mask.png")


def _warn_output_collisions(files: list[str]) -> None:
    by_output: dict[str, list[str]] = {}
    for f in files:
        by_output.setdefault(_output_name(f), []).append(os.path.basename(f))
    for output, sources in by_output.items():
        if len(sources) > 1:
            logger.warning(f"{', '.join(sources)} all give {output}: only the last one's mask is kept; rename one")
