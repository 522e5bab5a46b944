"""Pre-flight check of a datalist: every image and mask read as training will read it, before any epoch."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

from monai.data import MetaTensor

from unext_monai.transforms import IMAGE_SUFFIXES, LoadMaskd, read_picture

__all__ = ["read_checked", "check_image_file", "check_datalist", "MAX_LISTED"]

logger = logging.getLogger("unext_monai")

#: at most this many problems are listed in the error; the rest are counted
MAX_LISTED = 20


def read_checked(path: str) -> tuple[MetaTensor | None, str | None]:
    """``(picture, None)`` if the bundle can read ``path`` as a 2D picture (``transforms.read_picture``,
    decoded in full), else ``(None, what is wrong)`` in one line."""
    if not os.path.isfile(path):
        return None, "not a file" if os.path.exists(path) else "file missing (or a broken link)"
    if not path.lower().endswith(IMAGE_SUFFIXES):
        return None, f"not a file type the bundle reads ({', '.join(IMAGE_SUFFIXES)})"
    if os.path.getsize(path) == 0:
        return None, "file is empty (0 bytes)"
    try:
        picture = read_picture(path)
    except Exception as e:  # each reader raises its own errors for damaged or foreign files
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return None, f"cannot be read as a picture: {type(e).__name__}: {lines[-1] if lines else ''}"[:300]
    if picture.dim() != 3:
        return None, f"a picture of shape {tuple(picture.shape)}: a 2D picture (one frame, one slice) is expected"
    return picture, None


def check_image_file(path: str) -> str | None:
    """``None`` if the bundle can read ``path`` as a 2D picture, else what is wrong (:func:`read_checked`)."""
    return read_checked(path)[1]


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_datalist(items: list[dict], skip_bad: bool = False, class_names: Sequence[str] = ("lesion",),
                   class_key: str | None = None) -> list[dict]:
    """Read every image (:func:`read_checked`) and its masks (:class:`LoadMaskd`, with ``class_names`` and
    ``class_key``) of ``items`` ``{"image", "label": [paths], "name"}`` as the transforms will, and drop repeated
    images (the same content under two names would leak between split parts). Returns the good items in their order,
    ``"label"`` as a list; raises ``ValueError`` for no items, any problem (each named with its file, the first
    :data:`MAX_LISTED`) unless ``skip_bad`` leaves the bad items out with a warning each, or nothing left."""
    if not items:
        raise ValueError("the datalist is empty: no image/mask pairs to check")
    load_mask = LoadMaskd("label", class_names=class_names, class_key=class_key)
    good, problems, seen = [], [], {}
    for item in items:
        labels = [item["label"]] if isinstance(item.get("label"), str) else list(item.get("label") or [])
        item = {**item, "label": labels}
        image, found = item.get("image"), []
        picture, problem = read_checked(image) if image else (None, "no image file for these masks")
        if problem:
            found.append((image or (labels[0] if labels else str(item)), problem))
        if not labels:
            found.append((image, "no mask file for this image"))
        elif image and picture is not None:
            try:
                load_mask({**item, "image": picture})
            except Exception as e:  # the mask rule's ValueError names the file; readers' errors do not
                found.append(("", str(e)) if isinstance(e, ValueError) else (labels[0], f"{type(e).__name__}: {e}"))
        if not found:
            twin = seen.setdefault(_digest(image), image)
            if twin != image:
                logger.warning(f"{image}: the same file content as {twin}; using it once")
                continue
            good.append(item)
        elif skip_bad:
            logger.warning(f"skipping {item.get('name', image)}: " + "; ".join(f"{p} {w}".strip() for p, w in found))
        problems += found
    if problems and not skip_bad:
        lines = [f"  {p}: {w}" if p else f"  {w}" for p, w in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
        raise ValueError(f"{len(problems)} problem(s) in the data; fix or remove these files, or pass --skip_bad True "
                         "to leave them out:\n" + "\n".join(lines))
    if not good:
        raise ValueError(f"all {len(items)} datalist items have problems (see the warnings): nothing left to use")
    return good
