"""The configs of a packaged bundle, generated from the repository's ``configs/``.

- ``train.json`` is the repository's ``train.json`` with the training data set's overlay (``configs/<dataset>.json``)
  merged in, so that the packaged bundle trains on its own data set's layout from ``--dataset_dir`` alone; the other
  configs take the overlay's values of the entries they define (input channels, post-processing); no overlay is
  shipped.
- ``initialize`` of the repository's ``train.json`` prepares nothing on disk (the run's folders and the split are made
  at the start of ``run``), so that loading the bundle (``monai.bundle.load``, which initialises the train workflow)
  writes nothing.
- The release then points every reference to ``unext_monai`` to the bundle's own ``scripts`` copy
  (:func:`.vendor.rewrite_config`).
- JSON is written as the model zoo's pre-commit formats it (4-space indent, ASCII, keys in their order, final
  newline).
"""

from __future__ import annotations

import json
import os
from typing import Any

from monai.bundle import ConfigParser

from unext_monai.release.datasets import DATASET_CARDS
from unext_monai.release.vendor import rewrite_config

__all__ = ["zoo_json", "packaged_configs", "packaged_texts", "apply_known_entries", "CONFIG_FILES"]

#: the configs a packaged bundle carries (when the repository has them), besides metadata.json and logging.conf
CONFIG_FILES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json")


def zoo_json(data: Any) -> str:
    """JSON text as the model zoo's ``pretty-format-json --no-sort-keys --indent=4`` hook leaves it."""
    return json.dumps(data, indent=4, ensure_ascii=True) + "\n"


def apply_known_entries(config: dict, overlay: dict) -> dict:
    """``config`` with the overlay's values for the entries it already defines (``keep_largest_component`` of a data
    set's overlay reaches inference.json; its training entries do not)."""
    parser = ConfigParser(config)
    for key, value in overlay.items():
        if key in parser:
            parser[key] = value
    return parser.get()


def packaged_configs(configs_dir: str, dataset: str, overlays: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``{file name: config}`` of the packaged bundle (JSON configs as objects, ``logging.conf`` as text).

    Args:
        configs_dir: the repository's ``configs/``.
        dataset: the training data set; ``configs/<dataset>.json``, where it exists, is merged into ``train.json``.
        overlays: names of the data set overlays in ``configs_dir`` (none of them is shipped as a file); default
            the names of :data:`~unext_monai.release.datasets.DATASET_CARDS` and ``dataset``, as the release has it.
    """
    if overlays is None:
        overlays = (*DATASET_CARDS, dataset)
    out: dict[str, Any] = {}
    train_file = os.path.join(configs_dir, "train.json")
    overlay = os.path.join(configs_dir, f"{dataset}.json")
    for name in CONFIG_FILES:
        path = os.path.join(configs_dir, name)
        if not os.path.isfile(path):
            continue
        if name == "train.json":
            files = [path, overlay] if os.path.isfile(overlay) else [path]
            config = ConfigParser.load_config_files(files)
        else:
            config = ConfigParser.load_config_file(path)
            if os.path.isfile(overlay):
                config = apply_known_entries(config, ConfigParser.load_config_file(overlay))
        out[name] = config
    if "train.json" not in out and os.path.isfile(overlay):
        raise ValueError(f"{overlay} exists but {train_file} does not: nothing to merge it into")
    extra = sorted(
        n for n in os.listdir(configs_dir)
        if n.endswith(".json") and n not in (*CONFIG_FILES, "metadata.json") and n[: -len(".json")] not in overlays
    )
    if extra:
        raise ValueError(f"{configs_dir}: configs {extra} are neither packaged nor data set overlays ({overlays})")
    with open(os.path.join(configs_dir, "logging.conf"), encoding="utf-8") as f:
        out["logging.conf"] = f.read()
    return out


def packaged_texts(configs: dict[str, Any]) -> dict[str, str]:
    """The text of each file of :func:`packaged_configs`'s ``configs`` as the release writes it: the JSON configs
    pointing to the bundle's ``scripts`` copy, in the zoo's JSON format; ``logging.conf`` as it is."""
    return {name: c if isinstance(c, str) else zoo_json(rewrite_config(c)) for name, c in configs.items()}
