# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Pre-flight check of a datalist: find every unreadable or inconsistent file before any training starts."""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..transforms import ITK_SUFFIXES

__all__ = ["check_datalist", "read_itk_picture", "MASK_VALUES", "MAX_LISTED"]

logger = logging.getLogger("unext_monai")

MASK_VALUES = frozenset({0, 1, 255})
"""Pixel values a binary mask may hold (0 background; 1 or 255 foreground)."""

MAX_LISTED = 20
"""At most this many problems are listed in the error message; the rest are counted."""

# modes whose pixel values PIL's histogram() gives exactly (256 bins per band)
_HISTOGRAM_MODES = ("L", "P")


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _format_from_signature(path: str) -> str | None:
    """The image format announced by the file's first bytes, if any."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((fmt for sig, fmt in _SIGNATURES.items() if head.startswith(sig)), None)


def _open_checked(path: str, role: str) -> tuple[Image.Image | None, tuple[int, int] | None, str | None]:
    """Open ``path`` and decode it fully; return ``(image, size, None)`` or ``(None, None, problem)``.

    JPEG images (not masks) are decoded at 1/8 scale with ``draft``: the whole stream is still read, so truncation is
    found, at a fraction of the cost of a full decode. ``size`` is the stored size, before any ``draft``.
    """
    if not os.path.exists(path):
        return None, None, f"{role} file missing"
    if not os.path.isfile(path):
        return None, None, f"{role} path is not a file"
    if os.path.getsize(path) == 0:
        return None, None, f"{role} file is empty (0 bytes)"
    if path.lower().endswith(ITK_SUFFIXES):
        pixels, problem = read_itk_picture(path, role)
        return pixels, None if pixels is None else (pixels.shape[1], pixels.shape[0]), problem
    try:
        with Image.open(path) as im:
            im.verify()
    except UnidentifiedImageError:
        fmt = _format_from_signature(path)
        if fmt:  # a PNG/JPEG cut short inside its header
            return None, None, f"corrupt or truncated {role} file: a {fmt} whose header PIL cannot read"
        article = "an" if role[0] in "aeiou" else "a"
        return None, None, f"not an image file: PIL cannot identify it ({article} {role} is expected)"
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... for damaged files
        return None, None, f"corrupt or truncated {role} file: {e}"
    try:
        with Image.open(path) as im:
            size = im.size
            if role == "image" and im.format == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        return im, size, None
    except Exception as e:
        return None, None, f"corrupt or truncated {role} file: {e}"


def read_itk_picture(path: str, role: str) -> tuple[np.ndarray | None, str | None]:
    """Read an NRRD / MetaImage file with ITK, as MONAI's ``ITKReader`` will: ``(pixels (H, W[, C]), None)`` or
    ``(None, what is wrong)``; ``role`` (image, mask) names the file in the message. ITK (``itk-io``) is optional:
    without it the answer says so (a packaged bundle does not require it, only NRRD/MetaImage input needs it)."""
    from monai.utils import optional_import

    itk, has_itk = optional_import("itk")
    if not has_itk:
        return None, f"{role} file in an ITK format: reading it needs ITK, which is not installed (pip install itk-io)"
    try:
        pixels = itk.array_from_image(itk.imread(path))  # a copy: a view dies with its image
    except Exception as e:  # ITK raises RuntimeError for unreadable and damaged files
        return None, f"not a readable {role} file for ITK: {str(e).strip().splitlines()[-1][:200]}"
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] <= 4)):
        return None, f"{role} of shape {pixels.shape}: a 2-D gray or colour picture is expected"
    return pixels, None


def _mask_values(im: Image.Image | np.ndarray) -> list[int | float]:
    """The distinct pixel values of a mask, as the transforms will read them (palette indices for mode P)."""
    if isinstance(im, np.ndarray):
        return np.unique(im).tolist()
    if im.mode in _HISTOGRAM_MODES:
        return [v for v, count in enumerate(im.histogram()) if count]
    values = np.unique(np.asarray(im))
    if values.dtype == bool:
        values = values.astype(np.uint8)
    return values.tolist()


def _describe_values(values: list) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    more = f", ... ({len(values)} distinct values)" if len(values) > 8 else ""
    return f"[{shown}{more}]"


def _item_problems(item: dict) -> list[tuple[str, str]]:
    """``(path, what is wrong)`` for every problem of one datalist item."""
    image = item.get("image")
    labels = item.get("label") or []
    if isinstance(labels, str):
        labels = [labels]
    name = item.get("name", "?")
    if not image:
        return [(m, f"mask without image (no image file for case '{name}')") for m in labels] or [
            (str(item), "datalist item has neither an image nor a mask")
        ]
    problems: list[tuple[str, str]] = []
    _, image_size, problem = _open_checked(image, "image")
    if problem:
        problems.append((image, problem))
    if not labels:
        problems.append((image, f"image without mask (no mask file for case '{name}')"))
    for mask_path in labels:
        mask, mask_size, problem = _open_checked(mask_path, "mask")
        if problem:
            problems.append((mask_path, problem))
            continue
        assert mask is not None
        if image_size is not None and mask_size != image_size:
            problems.append((
                mask_path,
                f"mask size {mask_size[0]}x{mask_size[1]} differs from its image's size "
                f"{image_size[0]}x{image_size[1]} ({image})",
            ))
        values = _mask_values(mask)
        bad = [v for v in values if v not in MASK_VALUES]
        if bad:
            problems.append((
                mask_path,
                f"mask values {_describe_values(values)}: a binary mask holds only 0 and 1 or 255",
            ))
    return problems


def check_datalist(items: list[dict], skip_bad: bool = False) -> list[dict]:
    """Open every image and mask of ``items`` (a datalist from :mod:`unext_monai.data.layouts`) and check them.

    Each file is decoded in full (JPEG images at 1/8 scale, which still reads every byte), which takes a few seconds for
    the 2075 ISIC 2018 pairs. A problem is one of: file missing or empty; not an image (e.g. text with a ``.png`` name);
    corrupt or truncated PNG/JPEG; image without mask (item with an empty ``"label"``) or mask without image (item with
    ``"image": None``), as the readers report orphans; mask size different from its image's size; mask values other
    than 0/1/255. RGBA, palette and 16-bit images are not problems (the transforms convert them). Case names used by
    more than one item are logged as a warning (outputs are named by case).

    Args:
        items: datalist items ``{"image": path, "label": [path, ...], "name": str}``; a single label path is accepted.
        skip_bad: drop the items with problems (one warning each, naming the files) and return the rest, instead of
            raising.

    Returns:
        The good items, in the given order (``"label"`` normalised to a list).

    Raises:
        ValueError: ``items`` is empty; or, unless ``skip_bad``, any problem: one message lists every problem with its
            file path (the first :data:`MAX_LISTED`, then a count); or ``skip_bad`` left no item.
    """
    if not items:
        raise ValueError("the datalist is empty: no image/mask pairs to check")
    good: list[dict] = []
    problems: list[tuple[str, str]] = []
    n_bad = 0
    for item in items:
        if isinstance(item.get("label"), str):
            item = {**item, "label": [item["label"]]}
        item_problems = _item_problems(item)
        if not item_problems:
            good.append(item)
            continue
        n_bad += 1
        problems += item_problems
        if skip_bad:
            listing = "; ".join(f"{p}: {what}" for p, what in item_problems)
            logger.warning(f"skipping case '{item.get('name', '?')}': {listing}")
    if problems and not skip_bad:
        lines = [f"  {p}: {what}" for p, what in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more problem(s)")
        raise ValueError(
            f"{len(problems)} problem(s) in {n_bad} of {len(items)} datalist item(s); fix or remove these files, "
            "or pass skip_bad=True to leave the bad items out:\n" + "\n".join(lines)
        )
    if not good:
        raise ValueError(f"all {len(items)} datalist items have problems (see the warnings): nothing left to use")
    if n_bad:
        logger.warning(f"left out {n_bad} of {len(items)} item(s) with problems; {len(good)} remain")
    duplicates = {n: c for n, c in Counter(it.get("name") for it in good).items() if c > 1}
    if duplicates:
        shown = ", ".join(f"'{n}' x{c}" for n, c in list(duplicates.items())[:5])
        logger.warning(f"{len(duplicates)} case name(s) used by several items ({shown}): outputs named by case collide")
    return good
