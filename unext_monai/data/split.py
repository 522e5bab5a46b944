"""Seeded training / selection / validation splits, kept in ``split.json`` so that resumed runs and evaluation see
the split the model was trained with."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence

from monai.data import partition_dataset, partition_dataset_classes

from unext_monai.data.checks import check_datalist
from unext_monai.data.layouts import read_datalist_json, read_dataset
from unext_monai.distributed import is_rank0
from unext_monai.io import write_json_atomic

__all__ = ["prepare_split", "read_all", "SPLIT_FILE", "SPLIT_PARTS"]

logger = logging.getLogger("unext_monai")

SPLIT_FILE = "split.json"
#: the parts of ``split.json``: fitted to; picks the best epoch; held out for ``evaluate.json``
SPLIT_PARTS = ("training", "selection", "validation")


def read_all(dataset: str, dataset_dir: str, include_normal: bool = False, skip_bad: bool = False,
             class_names: Sequence[str] = ("lesion",), class_key: str | None = None) -> list[dict]:
    """Every checked item of a data set, unsplit (scoring a whole held-out folder: ``evaluate.json``'s
    ``--eval_dir``); a datalist JSON file gives its ``training`` and ``validation`` lists together."""
    items = read_dataset(dataset, dataset_dir, include_normal=include_normal, keys=("training", "validation"))
    return check_datalist(items, skip_bad=skip_bad, class_names=class_names, class_key=class_key)


def _partition(items: list[dict], fractions: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Shuffle with ``seed`` and cut into the parts of ``fractions`` (per class when every item has one: BUSI)."""
    classes = [it.get("class") for it in items]
    parts: list = []
    if None not in classes and len(set(classes)) > 1:
        parts = partition_dataset_classes(items, classes, ratios=list(fractions.values()), shuffle=True, seed=seed)
    if not all(parts) or not parts:  # exact counts, as ratios that partition_dataset rounds to themselves
        counts = [max(1, round(len(items) * f)) for f in list(fractions.values())[:-1]]
        counts.append(len(items) - sum(counts))
        parts = partition_dataset(items, ratios=counts, shuffle=True, seed=seed) if min(counts) > 0 else []
    if len(parts) != len(fractions) or not all(parts):
        raise ValueError(f"{len(items)} image/mask pairs are too few for a training, a selection and a validation part "
                         f"({', '.join(f'{k} {v:.3f}' for k, v in fractions.items())}): use more data")
    return {name: sorted(part, key=lambda it: it["name"]) for name, part in zip(fractions, parts)}


def prepare_split(dataset: str, dataset_dir: str | None, output_dir: str, val_fraction: float = 0.2,
                  selection_fraction: float = 0.1, seed: int = 0, include_normal: bool = False,
                  skip_bad: bool = False, class_names: Sequence[str] = ("lesion",), class_key: str | None = None,
                  write: bool = True) -> dict[str, list[dict]]:
    """Read, check (:func:`~unext_monai.data.checks.check_datalist`) and split a data set, kept with its ``meta``
    (data set, folder, seed, fractions, a datalist file's digest) in ``<output_dir>/split.json``: ``validation``
    (``val_fraction``; a datalist file's own ``validation`` list) is held out for ``evaluate.json``, ``selection``
    (``selection_fraction`` of the rest) picks ``model.pt``, ``training`` is the rest; shuffled with ``seed``, per
    class where items have one (MONAI's ``partition_dataset(_classes)``). A ``split.json`` of the same meta is reused
    (checked again); of other meta, training (``write``) replaces it and evaluation refuses. Rank 0 writes it.
    Raises ``ValueError`` (fractions outside (0, 1), too few pairs, another split for evaluation, the data's
    problems) or ``FileNotFoundError``."""
    for label, fraction in (("val_fraction", val_fraction), ("selection_fraction", selection_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{label} must be in (0, 1), got {fraction}")
    if not dataset_dir or not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist: give --dataset_dir")
    meta = {"dataset": str(dataset).lower(), "dataset_dir": os.path.abspath(dataset_dir), "seed": int(seed),
            "val_fraction": float(val_fraction), "selection_fraction": float(selection_fraction),
            "include_normal": bool(include_normal)}
    if os.path.isfile(dataset_dir):
        with open(dataset_dir, "rb") as f:
            meta["datalist_sha256"] = hashlib.sha256(f.read()).hexdigest()
    path = os.path.join(output_dir, SPLIT_FILE)
    previous = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    if previous is not None and previous.get("meta") == meta:
        logger.info(f"using the split in {path}")
        return {k: check_datalist(previous[k], skip_bad, class_names, class_key) for k in SPLIT_PARTS}
    if previous is not None and not write:
        changed = {k: (previous.get("meta", {}).get(k), v) for k, v in meta.items()
                   if previous.get("meta", {}).get(k) != v}
        raise ValueError(f"{path} was made with other settings {changed} (trained, asked): evaluate with the "
                         "training's settings, so that no training image is scored (or --eval_dir for a whole folder)")
    checked = {"class_names": class_names, "class_key": class_key, "skip_bad": skip_bad}
    if "datalist_sha256" in meta and _has_list(dataset_dir, "validation"):  # a datalist's own held-out part
        training = check_datalist(read_datalist_json(dataset_dir, ("training",)), **checked)
        split = _partition(training, {"selection": selection_fraction, "training": 1 - selection_fraction}, seed)
        split["validation"] = check_datalist(read_datalist_json(dataset_dir, ("validation",)), **checked)
    else:
        items = check_datalist(read_dataset(dataset, dataset_dir, include_normal=include_normal), **checked)
        rest = 1.0 - val_fraction
        split = _partition(items, {"validation": val_fraction, "selection": rest * selection_fraction,
                                   "training": rest * (1 - selection_fraction)}, seed)
    split = {k: split[k] for k in SPLIT_PARTS}
    if write and is_rank0():
        write_json_atomic(path, {**split, "meta": meta})
    logger.info(f"{'wrote' if write else 'made (not written)'} {path}: "
                + ", ".join(f"{len(split[k])} {k}" for k in SPLIT_PARTS))
    return split


def _has_list(path: str, key: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get(key))
    except (OSError, ValueError, AttributeError):  # read_datalist_json names what is wrong with the file
        return False
