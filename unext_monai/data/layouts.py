"""One reader per data set layout, each giving a MONAI datalist sorted by name: ``{"image": abs_path, "label":
[abs_mask_path, ...], "name": stem}`` (several masks only for BUSI's images with several lesions, merged by a union).
Readers open no image; files they cannot pair come back too (an image with no ``label``, masks with ``"image":
None``), for :func:`unext_monai.data.checks.check_datalist` to name. Errors name the path."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence

from monai.data import load_decathlon_datalist

from unext_monai.io import file_stem
from unext_monai.transforms import IMAGE_SUFFIXES

__all__ = ["DATASETS", "read_isic2018", "read_busi", "read_unext_pytorch", "read_datalist_json", "read_dataset"]

logger = logging.getLogger("unext_monai")

#: names :func:`read_dataset` takes (``demo``: the UNeXt-pytorch layout)
DATASETS = ("demo", "isic2018", "busi", "unext", "datalist")


BUSI_CLASSES = ("benign", "malignant", "normal")
_BUSI_FOLDER = "Dataset_BUSI_with_GT"
_BUSI_MASK = re.compile(r"^(?P<name>.+)_mask(?:_(?P<index>\d+))?$")


def _image_files(folder: str) -> list[str]:
    """Absolute paths of the image files directly inside ``folder``, sorted."""
    return [os.path.abspath(os.path.join(folder, n)) for n in sorted(os.listdir(folder))
            if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith(".") and os.path.isfile(os.path.join(folder, n))]


def _byfile_stem(files: Iterable[str], what: str, strip_suffix: str = "") -> dict[str, str]:
    """Map case name -> file; a name found twice (``a.png`` and ``a.jpg``) keeps the first and logs a warning."""
    out: dict[str, str] = {}
    for f in files:
        stem = file_stem(f)
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
    """ISIC 2018 Task 1: ``*_Input/ISIC_x.jpg`` with ``*_GroundTruth/ISIC_x_segmentation.png``, folders paired by
    the word before ``_Input`` (the ``Training`` pair where several are shipped; never Task 2's attribute masks)."""
    root = _require_dir(root)
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    inputs = [d for d in subdirs if d.lower().endswith("_input")]
    truths = [d for d in subdirs if d.lower().endswith("_groundtruth") and "task2" not in d.lower()]
    if not inputs or not truths:
        raise FileNotFoundError(f"no ISIC '*_Input' image folder and '*_GroundTruth' mask folder in {root} (found: "
                                f"{subdirs or 'nothing'})")
    pairs = [(i, t) for i in inputs for t in truths if _split_word(i, "_input") == _split_word(t, "_groundtruth")]
    if len(inputs) == len(truths) == 1:
        pairs = [(inputs[0], truths[0])]
    elif len(pairs) > 1:
        logger.info(f"{root} holds several ISIC splits: reading the training one")
        pairs = [p for p in pairs if _split_word(p[0], "_input") == "training"]
    if len(pairs) != 1:
        raise ValueError(f"{root}: no '*_Input' folder with a matching '*_GroundTruth' folder, or several splits "
                         f"without a training one: {subdirs}; point at one")
    image_dir, mask_dir = (os.path.join(root, d) for d in pairs[0])
    images = _byfile_stem(_image_files(image_dir), "image")
    masks = _byfile_stem(_image_files(mask_dir), "mask", strip_suffix="_segmentation")
    return _sorted_with_pairs(_join(images, {k: [v] for k, v in masks.items()}), f"{image_dir} and {mask_dir}")


def read_busi(root: str, include_normal: bool = False) -> list[dict]:
    """BUSI: ``[Dataset_BUSI_with_GT/]<benign|malignant|normal>/<name>.png`` with ``<name>_mask.png`` (and
    ``_mask_1.png``, ... for more lesions); items get their ``"class"``; ``normal`` only with ``include_normal``."""
    root = _require_dir(root)
    base = os.path.join(root, _BUSI_FOLDER) if os.path.isdir(os.path.join(root, _BUSI_FOLDER)) else root
    classes = BUSI_CLASSES if include_normal else BUSI_CLASSES[:2]
    present = [c for c in classes if os.path.isdir(os.path.join(base, c))]
    if not present:
        raise FileNotFoundError(f"no BUSI class folders {list(classes)} in {base} (expected {_BUSI_FOLDER}/<class>/ "
                                "under dataset_dir)")
    for c in classes:
        if c not in present:
            logger.warning(f"BUSI class folder {os.path.join(base, c)} does not exist: reading {present} only")
    items = []
    for cls in present:
        files = _image_files(os.path.join(base, cls))
        masks: dict[str, list[tuple[int, str]]] = {}
        for f in files:
            if m := _BUSI_MASK.match(file_stem(f)):
                masks.setdefault(m["name"], []).append((int(m["index"] or 0), f))
        images = _byfile_stem([f for f in files if not _BUSI_MASK.match(file_stem(f))], "image")
        masks_in_order = {k: [f for _, f in sorted(v)] for k, v in masks.items()}
        items += [{**it, "class": cls} for it in _join(images, masks_in_order)]
    return _sorted_with_pairs(items, base)


def _unext_root(root: str) -> str:
    """``root`` itself when it holds ``images/`` and ``masks/``, else its single sub-folder that does."""
    folders = [root] + sorted(os.path.join(root, d) for d in os.listdir(root))
    found = [d for d in folders if os.path.isdir(os.path.join(d, "images")) and os.path.isdir(os.path.join(d, "masks"))]
    if len(found) > 1 and found[0] != root:
        raise ValueError(f"{root} holds several datasets {[os.path.basename(c) for c in found]}: point at one")
    if not found:
        raise FileNotFoundError(f"no 'images/' and 'masks/0/' folders in {root} (UNeXt-pytorch layout expected)")
    return found[0]


def read_unext_pytorch(root: str) -> list[dict]:
    """The UNeXt-pytorch layout: ``images/<name>.*`` with ``masks/0/<name>.*`` (or ``masks/<name>.*``), in ``root``
    or in the one data set folder it holds."""
    root = _unext_root(_require_dir(root))
    image_dir = os.path.join(root, "images")
    mask_dir = os.path.join(root, "masks", "0")
    if not os.path.isdir(mask_dir):
        mask_dir = os.path.join(root, "masks")
    images = _byfile_stem(_image_files(image_dir), "image")
    masks = _byfile_stem(_image_files(mask_dir), "mask")
    return _sorted_with_pairs(_join(images, {k: [v] for k, v in masks.items()}), f"{image_dir} and {mask_dir}")


def read_datalist_json(path: str, keys: Sequence[str] = ("training",)) -> list[dict]:
    """The items of the ``keys`` lists of a MONAI datalist JSON file (``{"training": [{"image", "label"}]}``), paths
    made absolute by MONAI's ``load_decathlon_datalist``, ``"label"`` a list, ``"name"`` by default the image's stem.
    Raises ``FileNotFoundError`` or ``ValueError`` naming the file: missing, no JSON, no such list, an item without
    ``"image"``."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datalist {path} does not exist (dataset 'datalist' takes a JSON file)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON datalist: {e}") from None
    present = [k for k in keys if isinstance(data, dict) and isinstance(data.get(k), list) and data[k]]
    if not present:
        raise ValueError(f"{path}: no non-empty {' or '.join(repr(k) for k in keys)} list of items")
    items = []
    for key in present:
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise ValueError(f"{path}: {key}[{i}] needs an 'image' path, got {entry!r}")
        for entry in load_decathlon_datalist(path, data_list_key=key):
            label = entry.get("label", [])
            items.append({**entry, "label": [label] if isinstance(label, str) else list(label),
                          "name": str(entry.get("name") or file_stem(entry["image"]))})
    return sorted(items, key=lambda it: (it["name"], it["image"]))


def read_dataset(dataset: str, dataset_dir: str, include_normal: bool = False,
                 keys: Sequence[str] = ("training",)) -> list[dict]:
    """``dataset_dir`` read, unchecked, with the reader of ``dataset``, one of :data:`DATASETS` (``demo`` and
    ``unext``: the UNeXt-pytorch layout; ``datalist``: the ``keys`` lists of a JSON file); ``ValueError`` for another.
    """
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset_name {dataset!r}: choose one of {DATASETS}")
    if name == "isic2018":
        return read_isic2018(dataset_dir)
    if name == "busi":
        return read_busi(dataset_dir, include_normal=include_normal)
    if name == "datalist":
        return read_datalist_json(dataset_dir, keys)
    return read_unext_pytorch(dataset_dir)
