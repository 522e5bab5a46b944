# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""Seeded training/selection/validation splits, written to ``split.json`` so that resumed runs and evaluation see the
same one."""

from __future__ import annotations

import hashlib
import json
import logging
import os

from monai.data import partition_dataset, partition_dataset_classes

from ..data.checks import check_datalist
from ..data.demo import existing_demo_dataset, make_demo_dataset
from ..data.layouts import _load_json, read_datalist_json, read_dataset
from ..distributed import is_rank0, on_rank0
from ..io import write_json_atomic

__all__ = ["prepare_split", "read_all", "SPLIT_FILE", "SPLIT_PARTS"]

logger = logging.getLogger("unext_monai")

SPLIT_FILE = "split.json"
SPLIT_PARTS = ("training", "selection", "validation")
"""The lists of ``split.json``: fitted to, picks the checkpoint, held out and reported."""


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
    for key in SPLIT_PARTS:
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
        lists = {key: previous[key] for key in SPLIT_PARTS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(f"{path} cannot be read as a split of this version ({e}): writing a new split")
        return None
    if old_meta != meta:
        changed = {k: (old_meta.get(k), v) for k, v in meta.items() if old_meta.get(k) != v}
        logger.info(f"{path} was made with other settings {changed} (old, new): writing a new split")
        return None
    if not _files_exist(lists):
        logger.warning(f"{path} lists files that no longer exist: writing a new split")
        return None
    return lists


def _by_name(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda it: (it["name"], it["image"]))


def _partition(items: list[dict], fractions: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Shuffle ``items`` with ``seed`` and cut them into the parts named in ``fractions`` (in that order; the last part
    takes what rounding leaves, every part gets at least one item), per class when the items carry one (BUSI's
    benign/malignant/normal)."""
    classes = [it.get("class") for it in items]
    parts: list = []
    if all(c is not None for c in classes) and len(set(classes)) > 1:
        parts = partition_dataset_classes(items, classes, ratios=list(fractions.values()), shuffle=True, seed=seed)
        if not all(parts):
            logger.info(f"too few pairs per class ({len(items)}) to split each class: splitting them all together")
            parts = []
    if not parts:  # exact counts, as ratios that partition_dataset rounds to themselves
        counts = [max(1, round(len(items) * fraction)) for fraction in list(fractions.values())[:-1]]
        counts.append(len(items) - sum(counts))
        parts = partition_dataset(items, ratios=counts, shuffle=True, seed=seed) if min(counts) > 0 else []
    split = {name: _by_name(part) for name, part in zip(fractions, parts)}
    empty = [name for name in fractions if not split.get(name)]
    if empty:
        shares = ", ".join(f"{name} {fraction:.3f}" for name, fraction in fractions.items())
        raise ValueError(
            f"splitting {len(items)} image/mask pairs as {shares} leaves no pair for {empty}: a training, a selection "
            "and a validation part need at least 3 pairs (use more data, or other val_fraction / selection_fraction)"
        )
    return split


def prepare_split(
    dataset: str = "demo",
    dataset_dir: str | None = None,
    output_dir: str = "eval",
    val_fraction: float = 0.2,
    selection_fraction: float = 0.1,
    seed: int = 0,
    include_normal: bool = False,
    skip_bad: bool = False,
    demo_dir: str | None = None,
) -> dict[str, list[dict]]:
    """Read, check and split a dataset into training, selection and validation parts; write ``split.json``.

    - ``"validation"``: ``val_fraction`` of the pairs, held out. Nothing in training looks at it: it is what
      ``evaluate.json`` reports. It depends only on the data, ``val_fraction`` and ``seed``.
    - ``"selection"``: ``selection_fraction`` of the rest, carved from the training part: the validation handler
      scores it after every epoch and the best epoch's weights become ``model.pt``.
    - ``"training"``: the rest, which the network is fitted to.

    The pairs (sorted by name) are shuffled with ``seed`` by MONAI's ``partition_dataset``, or per class with
    ``partition_dataset_classes`` when the items carry one (BUSI: benign, malignant, normal), so that each part keeps
    the class mix. A ``"datalist"`` JSON file with a ``"validation"`` list keeps it as the held-out part and only the
    selection part is carved from its ``"training"`` list.

    - ``dataset="demo"``, or no ``dataset_dir``: the synthetic demo set in ``demo_dir``, else ``dataset_dir`` when
      ``dataset="demo"``, else ``<output_dir>/demo_data``, is used (logged); a complete demo set already there is
      reused whatever its size, else the default one (40 images, 256x256, seed 0) is made.

    Every call runs :func:`unext_monai.data.checks.check_datalist` on every pair, also when ``split.json`` is
    reused, so a file damaged since the split was made is named before training starts. ``split.json`` holds the three
    lists (MONAI datalist format, items as the readers make them) and ``"meta"`` (dataset, absolute dataset_dir, seed,
    fractions, include_normal, and for ``"datalist"`` the SHA-256 of the JSON file); it is written atomically. When it
    exists with the same meta and its files still exist, its lists are reused without reading the dataset folder
    again (files added since are not picked up); with other meta it is replaced (logged).

    In a distributed run (``torch.distributed`` initialised) only rank 0 reads, makes and writes all this; the other
    ranks receive its split from it and check every file on their own machine before they use it.

    Returns:
        ``{"training": [...], "selection": [...], "validation": [...]}``.

    Raises:
        ValueError: a fraction not in (0, 1), a part left empty, unknown dataset, or the problems found by
            ``check_datalist`` (unless ``skip_bad``, which leaves bad items out with a warning each).
        FileNotFoundError: ``dataset_dir`` does not exist.
    """
    split = on_rank0(_prepare_split, **locals())
    if not is_rank0():
        split = {key: check_datalist(split[key]) for key in SPLIT_PARTS}
    return split


def _prepare_split(
    dataset: str, dataset_dir: str | None, output_dir: str, val_fraction: float, selection_fraction: float, seed: int,
    include_normal: bool, skip_bad: bool, demo_dir: str | None,
) -> dict[str, list[dict]]:
    """:func:`prepare_split` in one process."""
    for label, fraction in (("val_fraction", val_fraction), ("selection_fraction", selection_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{label} must be in (0, 1), got {fraction}; use read_all to score a whole folder")
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
        "selection_fraction": float(selection_fraction),
        "include_normal": bool(include_normal),
    }
    if name == "datalist" and os.path.isfile(dataset_dir):  # the JSON file is the dataset: a new content, a new split
        with open(dataset_dir, "rb") as f:
            meta["datalist_sha256"] = hashlib.sha256(f.read()).hexdigest()
    split_path = os.path.join(output_dir, SPLIT_FILE)
    previous = _load_previous(split_path, meta)
    if previous is not None:
        checked = {key: check_datalist(previous[key], skip_bad=skip_bad) for key in SPLIT_PARTS}
        logger.info(f"reusing the split in {split_path}: {_sizes(checked)}")
        return checked

    if name == "datalist" and "validation" in _load_json(dataset_dir):
        training = check_datalist(read_datalist_json(dataset_dir, "training"), skip_bad=skip_bad)
        split = _partition(training, {"selection": selection_fraction, "training": 1.0 - selection_fraction}, seed)
        split["validation"] = check_datalist(read_datalist_json(dataset_dir, "validation"), skip_bad=skip_bad)
        logger.info(f"holding out the validation list given in {dataset_dir}")
    else:
        items = check_datalist(read_dataset(name, dataset_dir, include_normal=include_normal), skip_bad=skip_bad)
        rest = 1.0 - val_fraction
        fractions = {"validation": val_fraction, "selection": rest * selection_fraction,
                     "training": rest * (1.0 - selection_fraction)}
        split = _partition(items, fractions, seed)
    split = {key: split[key] for key in SPLIT_PARTS}
    write_json_atomic(split_path, {**split, "meta": meta})
    logger.info(f"wrote {split_path}: {_sizes(split)} ({name}, seed {seed})")
    return split


def _sizes(split: dict[str, list]) -> str:
    return ", ".join(f"{len(split[key])} {key}" for key in SPLIT_PARTS)
