# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Readers that turn each supported dataset layout into a MONAI datalist.

Every reader returns a list of dicts sorted by ``"name"``::

    {"image": "/abs/path/case.png", "label": ["/abs/path/case_mask.png", ...], "name": "case"}

``"label"`` is always a list of one or more mask paths (several only for BUSI images with several lesions, to be merged
by a union when loading). ``"name"`` is the image's file stem and identifies the case in outputs.

Readers do not open any image. Files they cannot pair are returned too, so that
:func:`unext_monai.data.checks.check_datalist` can name them: an image without a mask is an item whose ``"label"`` is
an empty list, a mask without an image is an item whose ``"image"`` is ``None``. Run the readers' output through
``check_datalist`` (or use :func:`unext_monai.data.split.read_all` / ``prepare_split``) before handing it to transforms.

Missing roots raise ``FileNotFoundError``; a folder without a single image/mask pair raises ``ValueError``; both name
the path.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable

from monai.data import load_decathlon_datalist

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "read_isic2018",
    "read_busi",
    "read_unext_pytorch",
    "read_datalist_json",
    "read_dataset",
]

logger = logging.getLogger("unext_monai")

DATASETS = ("demo", "isic2018", "busi", "unext", "datalist")
"""Names accepted by :func:`read_dataset` (``"demo"`` is read with the UNeXt-pytorch layout)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File extensions (case-insensitive) that the folder readers treat as images or masks; other files are ignored."""

BUSI_CLASSES = ("benign", "malignant", "normal")
_BUSI_FOLDER = "Dataset_BUSI_with_GT"
_BUSI_MASK = re.compile(r"^(?P<name>.+)_mask(?:_(?P<index>\d+))?$")


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _image_files(folder: str) -> list[str]:
    """Absolute paths of the image files directly inside ``folder``, sorted."""
    names = sorted(
        n for n in os.listdir(folder)
        if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".") and os.path.isfile(os.path.join(folder, n))
    )
    return [os.path.abspath(os.path.join(folder, n)) for n in names]


def _by_stem(files: Iterable[str], what: str, strip_suffix: str = "") -> dict[str, str]:
    """Map case name -> file; a name found twice (``a.png`` and ``a.jpg``) keeps the first and logs a warning."""
    out: dict[str, str] = {}
    for f in files:
        stem = _stem(f)
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        if stem in out:
            logger.warning(f"two {what} files for case '{stem}': using {out[stem]}, ignoring {f}")
            continue
        out[stem] = f
    return out


def _require_dir(path: str, what: str = "dataset_dir") -> str:
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise NotADirectoryError(f"{what} {path} is not a folder")
        raise FileNotFoundError(f"{what} {path} does not exist")
    return os.path.abspath(path)


def _join(images: dict[str, str], masks: dict[str, list[str]]) -> list[dict]:
    """Join images and masks by case name; unpaired files become orphan items (see the module docstring)."""
    items = [{"image": img, "label": list(masks.get(name, [])), "name": name} for name, img in images.items()]
    items += [{"image": None, "label": list(m), "name": name} for name, m in masks.items() if name not in images]
    return items


def _sorted_with_pairs(items: list[dict], where: str) -> list[dict]:
    """Sort by name; raise ``ValueError`` naming ``where`` when not one item is a complete image/mask pair."""
    if not any(it["image"] is not None and it["label"] for it in items):
        detail = ""
        if items:
            n_img = sum(1 for it in items if it["image"] is not None)
            detail = f" ({n_img} image(s) without a mask, {len(items) - n_img} mask(s) without an image)"
        raise ValueError(f"no image/mask pairs found in {where}{detail}")
    return sorted(items, key=lambda it: (it["name"], it["image"] or ""))


def _split_word(folder_name: str, suffix: str) -> str:
    """``ISIC2018_Task1-2_Training_Input`` -> ``training`` (the word before the suffix)."""
    return folder_name[: -len(suffix)].rstrip("_").split("_")[-1].lower()


def read_isic2018(root: str) -> list[dict]:
    """Read the ISIC 2018 Task 1 layout.

    ``root`` holds a ``*_Input`` folder of images (``ISIC_xxxxxxx.jpg`` or ``.png``) and the matching ``*_GroundTruth``
    folder of masks (``ISIC_xxxxxxx_segmentation.png``), as shipped: ``ISIC2018_Task1-2_Training_Input`` with
    ``ISIC2018_Task1_Training_GroundTruth``, or the ``Validation`` / ``Test`` pair. Folders are matched by the word
    before ``_Input`` / ``_GroundTruth``; with a single pair of folders any names are accepted. When ``root`` holds
    several pairs, the ``Training`` pair is read (logged); a ``Task2`` ground truth folder (attribute masks) is never
    used.
    Files that are not images (``LICENSE.txt``, ``ATTRIBUTION.txt``) are ignored.
    """
    root = _require_dir(root)
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    inputs = [d for d in subdirs if d.lower().endswith("_input")]
    truths = [d for d in subdirs if d.lower().endswith("_groundtruth") and "task2" not in d.lower()]
    if not inputs:
        raise FileNotFoundError(f"no ISIC '*_Input' image folder in {root} (found: {subdirs or 'nothing'})")
    if not truths:
        raise FileNotFoundError(f"no ISIC '*_GroundTruth' mask folder in {root} (found: {subdirs})")
    if len(inputs) == 1 and len(truths) == 1:
        pairs = [(inputs[0], truths[0])]
    else:
        gt_by_word: dict[str, str] = {}
        for d in truths:
            gt_by_word.setdefault(_split_word(d, "_groundtruth"), d)
        pairs = [(d, gt_by_word[w]) for d in inputs if (w := _split_word(d, "_input")) in gt_by_word]
        if not pairs:
            raise FileNotFoundError(f"no '*_Input' folder in {root} has a matching '*_GroundTruth' folder: {subdirs}")
        if len(pairs) > 1:
            training = [p for p in pairs if _split_word(p[0], "_input") == "training"]
            if not training:
                raise ValueError(f"{root} holds several ISIC splits {[p[0] for p in pairs]}: point at one of them")
            logger.info(f"{root} holds several ISIC splits: reading {training[0][0]}")
            pairs = training
    image_dir, mask_dir = (os.path.join(root, d) for d in pairs[0])
    images = _by_stem(_image_files(image_dir), "image")
    masks = _by_stem(_image_files(mask_dir), "mask", strip_suffix="_segmentation")
    return _sorted_with_pairs(_join(images, {k: [v] for k, v in masks.items()}), f"{image_dir} and {mask_dir}")


def read_busi(root: str, include_normal: bool = False) -> list[dict]:
    """Read the BUSI layout: ``Dataset_BUSI_with_GT/<benign|malignant|normal>/<name>.png`` with ``<name>_mask.png``.

    ``root`` is the folder containing ``Dataset_BUSI_with_GT`` or that folder itself. An image with several lesions has
    ``<name>_mask.png``, ``<name>_mask_1.png``, ...; all of them are listed in ``"label"`` (in that order) to be merged
    by a union. Items also get ``"class"``. ``normal`` images (all-zero masks) are read only with
    ``include_normal=True``; the UNeXt paper trains on benign and malignant only. Names keep their spaces and
    parentheses (``"benign (1)"``).
    """
    root = _require_dir(root)
    base = os.path.join(root, _BUSI_FOLDER) if os.path.isdir(os.path.join(root, _BUSI_FOLDER)) else root
    classes = BUSI_CLASSES if include_normal else BUSI_CLASSES[:2]
    present = [c for c in classes if os.path.isdir(os.path.join(base, c))]
    if not present:
        raise FileNotFoundError(
            f"no BUSI class folders {list(classes)} in {base} (expected {_BUSI_FOLDER}/<class>/ under dataset_dir)"
        )
    for c in classes:
        if c not in present:
            logger.warning(f"BUSI class folder {os.path.join(base, c)} does not exist: reading {present} only")
    items = []
    for cls in present:
        folder = os.path.join(base, cls)
        images: dict[str, str] = {}
        masks: dict[str, list[tuple[int, str]]] = {}
        for f in _image_files(folder):
            m = _BUSI_MASK.match(_stem(f))
            if m:
                masks.setdefault(m["name"], []).append((int(m["index"] or 0), f))
            elif _stem(f) in images:
                logger.warning(f"two image files for case '{_stem(f)}': using {images[_stem(f)]}, ignoring {f}")
            else:
                images[_stem(f)] = f
        for it in _join(images, {k: [f for _, f in sorted(v)] for k, v in masks.items()}):
            it["class"] = cls
            items.append(it)
    return _sorted_with_pairs(items, base)


def _unext_root(root: str) -> str:
    """``root`` itself when it holds ``images/`` and ``masks/``, else its single sub-folder that does."""
    def is_dataset(d: str) -> bool:
        return os.path.isdir(os.path.join(d, "images")) and os.path.isdir(os.path.join(d, "masks"))

    if is_dataset(root):
        return root
    candidates = sorted(
        os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
        and is_dataset(os.path.join(root, d))
    )
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ValueError(f"{root} holds several datasets {[os.path.basename(c) for c in candidates]}: point at one")
    raise FileNotFoundError(f"no 'images/' and 'masks/0/' folders in {root} (UNeXt-pytorch layout expected)")


def read_unext_pytorch(root: str) -> list[dict]:
    """Read the UNeXt-pytorch layout: ``<root>/images/<name>.png|jpg`` with ``<root>/masks/0/<name>.png``.

    ``root`` may be the dataset folder (``inputs/busi``) or a folder holding exactly one such dataset (``inputs``).
    Images and masks are paired by file stem. Only the first class folder ``masks/0`` is read (binary segmentation);
    a layout with the masks directly in ``masks/`` is accepted too.
    """
    root = _unext_root(_require_dir(root))
    image_dir = os.path.join(root, "images")
    mask_dir = os.path.join(root, "masks", "0")
    if not os.path.isdir(mask_dir):
        mask_dir = os.path.join(root, "masks")
    images = _by_stem(_image_files(image_dir), "image")
    masks = _by_stem(_image_files(mask_dir), "mask")
    return _sorted_with_pairs(_join(images, {k: [v] for k, v in masks.items()}), f"{image_dir} and {mask_dir}")


def _load_json(path: str) -> dict:
    """Parse a JSON file; a syntax error becomes ``ValueError("<path>: not valid JSON: <reason> (line N)")``."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder: dataset 'datalist' needs the path of a datalist JSON file")
        raise FileNotFoundError(f"datalist {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with a 'training' list, got {type(data).__name__}")
    return data


def read_datalist_json(path: str, key: str = "training") -> list[dict]:
    """Read the ``key`` list of a MONAI datalist JSON file (``{"training": [{"image": ..., "label": ...}]}``).

    The file and its items are checked first (clear errors naming the file, the line of a JSON syntax error and the
    bad item), then read with MONAI's ``load_decathlon_datalist``, which makes ``image``/``label`` paths relative to
    the JSON file's folder absolute. ``"label"`` may be one path or a list of paths and is returned as a list (an item
    without a label gets an empty list, which ``check_datalist`` reports). ``"name"`` defaults to the image's file
    stem; other keys are kept. Items are sorted by name.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (with the line), ``key`` is missing or not a list, or an item has no
            ``"image"`` path.
    """
    path = os.path.abspath(path)
    entries = _load_json(path).get(key)
    if entries is None:
        raise ValueError(f"{path}: no '{key}' list in the datalist (keys: {sorted(_load_json(path))})")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: '{key}' must be a list of items, got {type(entries).__name__}")
    if not entries:
        raise ValueError(f"{path}: the '{key}' list is empty")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ValueError(f"{path}: {key}[{i}] needs an 'image' path (one string), got {entry!r}")
        label = entry.get("label", [])
        if not isinstance(label, str) and not (isinstance(label, list) and all(isinstance(x, str) for x in label)):
            raise ValueError(f"{path}: {key}[{i}] 'label' must be a path or a list of paths, got {label!r}")
    items = []
    for entry in load_decathlon_datalist(path, data_list_key=key):
        item = dict(entry)
        label = item.get("label", [])
        item["label"] = [label] if isinstance(label, str) else list(label)
        item["name"] = str(item.get("name") or _stem(item["image"]))
        items.append(item)
    return sorted(items, key=lambda it: (it["name"], it["image"]))


def read_dataset(dataset: str, dataset_dir: str, include_normal: bool = False) -> list[dict]:
    """Read ``dataset_dir`` with the reader for ``dataset``, one of :data:`DATASETS` (case-insensitive).

    ``"demo"`` and ``"unext"`` use :func:`read_unext_pytorch`, ``"datalist"`` reads the ``"training"`` list of the JSON
    file ``dataset_dir``. ``include_normal`` applies to ``"busi"`` only. The result is not checked: see
    :func:`unext_monai.data.checks.check_datalist`.

    Raises:
        ValueError: unknown ``dataset`` name, or the readers' errors.
        FileNotFoundError: ``"dataset_dir <path> does not exist"``.
    """
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}': choose one of {DATASETS}")
    if not dataset_dir:
        raise ValueError(f"dataset '{dataset}' needs dataset_dir")
    if not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist")
    if name == "isic2018":
        return read_isic2018(dataset_dir)
    if name == "busi":
        return read_busi(dataset_dir, include_normal=include_normal)
    if name == "datalist":
        return read_datalist_json(dataset_dir)
    return read_unext_pytorch(dataset_dir)
