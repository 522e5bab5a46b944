"""``metadata.json`` of a packaged bundle: the repository's, made true for these weights and this data set."""

from __future__ import annotations

import ast
import os
import re
import sys
from importlib import metadata as importlib_metadata
from typing import Any

from unext_monai.release.datasets import UNEXT_REFERENCE, DatasetCard

__all__ = ["packaged_metadata", "required_packages", "load_metrics", "BASE_PACKAGES"]

#: what MONAI's own install brings (``monai_version``, ``pytorch_version``, ``numpy_version`` state these)
BASE_PACKAGES = {"monai", "torch", "numpy"}
_VERSION = re.compile(r"\d+\.\d+\.\d+([.+-]\w+)*")


def _installed(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _third_party_imports(sources: dict[str, str]) -> set[str]:
    """Top-level names of the modules that the vendored code imports from outside itself and the standard library."""
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    names: set[str] = set()
    for path, text in sources.items():
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in stdlib and n != "scripts"}


def required_packages(declared: list[str], sources: dict[str, str]) -> dict[str, str]:
    """``{distribution: installed version}`` for the packages a bundle needs beyond MONAI, PyTorch and NumPy.

    ``declared`` (the repository metadata's ``required_packages_version`` names, ``unext-monai`` left out: the bundle
    carries its code) is checked against the imports of the vendored ``sources``: every third-party module they import
    must come from a declared distribution.

    Raises:
        ValueError: a declared distribution is not installed, or the vendored code imports one that is not declared.
    """
    declared = [d for d in declared if d.lower() not in ("unext-monai", "unext_monai")]
    versions = {d: _installed(d) for d in declared}
    missing = sorted(d for d, v in versions.items() if v is None)
    if missing:
        raise ValueError(f"required packages {missing} are not installed: the release states installed versions")
    owners = importlib_metadata.packages_distributions()
    wanted = {d.lower().replace("_", "-") for d in declared} | BASE_PACKAGES
    undeclared = {}
    for module in sorted(_third_party_imports(sources)):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & wanted:
            undeclared[module] = sorted(dists)
    if undeclared:
        raise ValueError(f"the bundle's code imports {undeclared} (module: distributions), which metadata.json's "
                         "required_packages_version does not list")
    return {d: versions[d] for d in declared}


def load_metrics(path: str | None) -> dict[str, float | int] | None:
    """The numbers of an evaluation: MONAI's ``MetricsSaver`` output ``metrics.csv`` (``name,value`` lines, as
    ``evaluate.json`` writes it; the image count from ``val_mean_dice_raw.csv`` beside it), or a flat
    ``{name: value}`` JSON file. Undefined (NaN) values are left out. ``None`` without a path."""
    if not path:
        return None
    import csv
    import json
    import math

    try:
        if path.endswith(".csv"):
            with open(path, encoding="utf-8", newline="") as f:
                rows = [r for r in csv.reader(f) if len(r) == 2]
            values: dict = {}
            for name, value in rows:
                try:
                    values[name] = float(value)
                except ValueError:
                    continue
            per_image = os.path.join(os.path.dirname(path), "val_mean_dice_raw.csv")
            if os.path.isfile(per_image):
                with open(per_image, encoding="utf-8", newline="") as f:
                    values["n_images"] = sum(1 for _ in csv.DictReader(f))
        else:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not an evaluation's metrics.csv nor a JSON file of metrics ({e})") from None
    metrics = {k: v for k, v in (values.items() if isinstance(values, dict) else ())
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not metrics:
        raise ValueError(f"{path}: no numeric metrics")
    return metrics


def _input_format(in_channels: int) -> dict[str, Any]:
    if in_channels == 3:
        return {"format": "RGB", "channel_def": {"0": "R", "1": "G", "2": "B"}}
    if in_channels == 1:
        return {"format": "magnitude", "channel_def": {"0": "gray"}}
    return {"format": "magnitude", "channel_def": {str(i): f"channel {i}" for i in range(in_channels)}}


def packaged_metadata(
    meta: dict,
    *,
    card: DatasetCard,
    version: str,
    changelog: dict[str, str],
    in_channels: int,
    required: dict[str, str],
    metrics: dict | None,
) -> dict:
    """The repository's ``meta`` with this release's version, changelog, package versions, data set card, input
    channels and metrics. Key order follows ``meta``.

    Raises:
        ValueError: a version that is not ``MAJOR.MINOR.PATCH``, or one missing from ``changelog``.
    """
    import monai
    import numpy
    import torch

    if not _VERSION.fullmatch(version or ""):
        raise ValueError(f"version {version!r}: give --version MAJOR.MINOR.PATCH")
    if version not in changelog:
        raise ValueError(f"version {version} has no changelog entry")
    image = dict(next(iter(meta["network_data_format"]["inputs"].values())))
    image.update(num_channels=in_channels, **_input_format(in_channels))
    if in_channels == 1:
        image_classes = card.image_classes.replace("three channel", "one channel")
    else:
        image_classes = card.image_classes
    fmt = dict(meta["network_data_format"])
    fmt["inputs"] = {next(iter(meta["network_data_format"]["inputs"])): image}
    out = dict(meta)
    out.update(
        version=version,
        changelog=changelog,
        monai_version=monai.__version__,
        pytorch_version=torch.__version__.split("+")[0],
        numpy_version=numpy.__version__,
        required_packages_version=required,
        name=card.name,
        task=card.task,
        description=card.description,
        data_source=card.data_source,
        data_type=card.data_type,
        image_classes=image_classes,
        label_classes=card.label_classes,
        eval_metrics=dict(metrics or {}),
        references=[UNEXT_REFERENCE, *card.references],
        network_data_format=fmt,
    )
    return out
