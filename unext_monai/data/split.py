"""Seeded training/validation splits, written to ``split.json`` so that resumed runs and evaluation see the same one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile

from unext_monai.data.checks import check_datalist
from unext_monai.data.demo import existing_demo_dataset, make_demo_dataset
from unext_monai.data.layouts import _load_json, read_datalist_json, read_dataset

__all__ = ["prepare_split", "read_all", "SPLIT_FILE"]

logger = logging.getLogger("unext_monai")

SPLIT_FILE = "split.json"


def read_all(dataset: str, dataset_dir: str, include_normal: bool = False, skip_bad: bool = False) -> list[dict]:
    """Every checked item of a dataset, unsplit: for scoring a whole held-out folder.

    Reads ``dataset_dir`` with :func:`unext_monai.data.layouts.read_dataset` and runs
    :func:`unext_monai.data.checks.check_datalist` on the result. For ``"datalist"`` the items of the JSON file's
    ``"training"`` and (when present) ``"validation"`` lists are returned together, sorted by name.

    Raises:
        FileNotFoundError, ValueError: as the readers and ``check_datalist`` do (each naming the path).
    """
    if dataset_dir and not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist")
    if str(dataset).lower() == "datalist" and dataset_dir:
        data = _load_json(dataset_dir)
        items = read_datalist_json(dataset_dir, "training") if "training" in data else []
        if "validation" in data:
            items += read_datalist_json(dataset_dir, "validation")
        if not items:
            raise ValueError(f"{dataset_dir}: neither a 'training' nor a 'validation' list in the datalist")
        items.sort(key=lambda it: (it["name"], it["image"]))
    else:
        items = read_dataset(dataset, dataset_dir, include_normal=include_normal)
    return check_datalist(items, skip_bad=skip_bad)


def _files_exist(split: dict) -> bool:
    for key in ("training", "validation"):
        for item in split.get(key, []):
            if not os.path.isfile(item["image"]) or not all(os.path.isfile(p) for p in item["label"]):
                return False
    return True


def _load_previous(path: str, meta: dict) -> dict | None:
    """The split stored in ``path`` when it was made with ``meta`` and its files still exist, else ``None``."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        old_meta = previous["meta"]
        lists = {"training": previous["training"], "validation": previous["validation"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(f"{path} cannot be read ({e}): writing a new split")
        return None
    if old_meta != meta:
        changed = {k: (old_meta.get(k), v) for k, v in meta.items() if old_meta.get(k) != v}
        logger.info(f"{path} was made with other settings {changed} (old, new): writing a new split")
        return None
    if not _files_exist(lists):
        logger.warning(f"{path} lists files that no longer exist: writing a new split")
        return None
    return lists


def _write_atomic(path: str, data: dict) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _random_split(items: list[dict], val_fraction: float, seed: int) -> dict[str, list[dict]]:
    if len(items) < 2:
        raise ValueError(f"a training/validation split needs at least 2 image/mask pairs, got {len(items)}")
    n_val = min(max(round(len(items) * val_fraction), 1), len(items) - 1)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    return {
        "training": [it for i, it in enumerate(items) if i not in val_idx],
        "validation": [it for i, it in enumerate(items) if i in val_idx],
    }


def prepare_split(
    dataset: str = "demo",
    dataset_dir: str | None = None,
    output_dir: str = "eval",
    val_fraction: float = 0.2,
    seed: int = 0,
    include_normal: bool = False,
    skip_bad: bool = False,
    demo_dir: str | None = None,
) -> dict[str, list[dict]]:
    """Read, check and split a dataset; write the split to ``<output_dir>/split.json`` and return it.

    - ``dataset="demo"``, or no ``dataset_dir``: the synthetic demo set in ``demo_dir``, else ``dataset_dir`` when
      ``dataset="demo"``, else ``<output_dir>/demo_data``, is used (logged); a complete demo set already there is
      reused whatever its size, else the default one (40 images, 256x256, seed 0) is made.
    - ``dataset="datalist"`` whose JSON file has a ``"validation"`` list: its split is used as is.
    - otherwise the items (sorted by name) are checked with :func:`unext_monai.data.checks.check_datalist` and split at
      random with ``random.Random(seed)``: ``round(n * val_fraction)`` validation items, at least one in each part.

    ``split.json`` holds ``"training"``, ``"validation"`` (MONAI datalist format, items as the readers make them) and
    ``"meta"`` (dataset, absolute dataset_dir, seed, val_fraction, include_normal, and for ``"datalist"`` the
    SHA-256 of the JSON file); it is written atomically. When it already exists with the same meta and its files
    still exist, it is reused without reading the dataset again, so a resumed run or an evaluation sees the same
    split (files added to the dataset folder since are not picked up); with other meta it is replaced (logged).

    Returns:
        ``{"training": [...], "validation": [...]}``.

    Raises:
        ValueError: ``val_fraction`` not in (0, 1), fewer than 2 usable items, unknown dataset, or the problems found
            by ``check_datalist`` (unless ``skip_bad``, which leaves bad items out with a warning each).
        FileNotFoundError: ``dataset_dir`` does not exist.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}; use read_all to score a whole folder")
    name = str(dataset).lower()
    if name == "demo" or not dataset_dir:
        if name != "demo":
            logger.warning(f"dataset '{dataset}' has no dataset_dir: using the built-in synthetic demo set instead")
        folder = demo_dir or (dataset_dir if name == "demo" and dataset_dir else os.path.join(output_dir, "demo_data"))
        if existing_demo_dataset(folder) is None:
            make_demo_dataset(folder)
        name, dataset_dir = "demo", os.path.abspath(folder)
        logger.info(f"using the built-in synthetic demo set in {dataset_dir} (no real data involved)")
    elif not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist")
    meta = {
        "dataset": name,
        "dataset_dir": os.path.abspath(dataset_dir),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "include_normal": bool(include_normal),
    }
    if name == "datalist" and os.path.isfile(dataset_dir):  # the JSON file is the dataset: a new content, a new split
        with open(dataset_dir, "rb") as f:
            meta["datalist_sha256"] = hashlib.sha256(f.read()).hexdigest()
    split_path = os.path.join(output_dir, SPLIT_FILE)
    previous = _load_previous(split_path, meta)
    if previous is not None:
        logger.info(
            f"reusing the split in {split_path}: {len(previous['training'])} training, "
            f"{len(previous['validation'])} validation"
        )
        return previous

    if name == "datalist" and "validation" in _load_json(dataset_dir):
        split = {
            "training": check_datalist(read_datalist_json(dataset_dir, "training"), skip_bad=skip_bad),
            "validation": check_datalist(read_datalist_json(dataset_dir, "validation"), skip_bad=skip_bad),
        }
        logger.info(f"using the training/validation split given in {dataset_dir}")
    else:
        items = check_datalist(read_dataset(name, dataset_dir, include_normal=include_normal), skip_bad=skip_bad)
        split = _random_split(items, val_fraction, seed)
    _write_atomic(split_path, {**split, "meta": meta})
    logger.info(
        f"wrote {split_path}: {len(split['training'])} training, {len(split['validation'])} validation "
        f"({name}, seed {seed})"
    )
    return split
