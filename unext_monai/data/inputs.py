"""The files that inference segments: one file or every supported picture in a folder."""

from __future__ import annotations

import os

__all__ = ["IMAGE_SUFFIXES", "list_images"]

#: suffixes inference reads: PNG/JPEG/BMP/TIFF through PIL, DICOM through pydicom, NIfTI through nibabel
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")


def _is_mask_or_output(name: str) -> bool:
    stem = name.lower()
    return any(tag in stem for tag in ("_mask.", "_overlay.", "_segmentation."))


def list_images(input_path: str) -> list[str]:
    """Absolute paths of the images to segment, sorted.

    Args:
        input_path: one image file, or a folder whose supported files (see :data:`IMAGE_SUFFIXES`, not recursive) are
            all segmented; files named like masks or outputs (``*_mask.*``, ``*_overlay.*``, ``*_segmentation.*``)
            are left out.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: a file with an unsupported suffix, or a folder without any supported file.
    """
    path = os.path.abspath(os.path.expanduser(input_path))
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path}: unsupported file type; inference reads {', '.join(IMAGE_SUFFIXES)}.")
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input_path {path} does not exist.")
    files = sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if name.lower().endswith(IMAGE_SUFFIXES) and not _is_mask_or_output(name) and not name.startswith(".")
    )
    if not files:
        raise ValueError(f"{path}: no images to segment ({', '.join(IMAGE_SUFFIXES)}).")
    return files
