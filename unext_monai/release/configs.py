"""The configs of a packaged bundle, generated from the repository's ``configs/``.

``train.json`` is the repository's with the data set's overlay (``configs/<dataset>.json``) merged in, so that the
packaged bundle trains on its own data set's layout from ``--dataset_dir`` alone; the other configs take the overlay's
values of the entries they define (input channels, post-processing). Every reference to ``unext_monai`` points to the
bundle's ``scripts`` copy, and JSON is written as the model zoo's pre-commit formats it.
"""

from __future__ import annotations

import json
import os
import re

from monai.bundle import ConfigParser

from unext_monai.bundle_scripts import SCRIPTS

__all__ = ["CONFIG_FILES", "zoo_json", "apply_known_entries", "packaged_configs"]

#: the repository's configs that a release packages besides ``metadata.json``
CONFIG_FILES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf")


def zoo_json(data) -> str:
    """JSON text as the model zoo's ``pretty-format-json --no-sort-keys --indent=4`` hook leaves it."""
    return json.dumps(data, indent=4, ensure_ascii=True) + "\n"


def apply_known_entries(config: dict, overlay: dict) -> dict:
    """``config`` with the overlay's values for the entries it already defines."""
    parser = ConfigParser(config)
    for key, value in overlay.items():
        if key in parser:
            parser[key] = value
    return parser.get()


def packaged_configs(configs_dir: str, dataset: str) -> dict[str, str]:
    """``{file name: text}`` of the packaged bundle's configs (all but ``metadata.json``)."""
    overlay = os.path.join(configs_dir, f"{dataset}.json")
    overlay = overlay if os.path.isfile(overlay) else None
    out = {}
    for name in CONFIG_FILES:
        path = os.path.join(configs_dir, name)
        if name == "logging.conf":
            with open(path, encoding="utf-8") as f:
                out[name] = f.read()
            continue
        if name == "train.json":
            config = ConfigParser.load_config_files([path, overlay] if overlay else [path])
        else:
            config = ConfigParser.load_config_file(path)
            if overlay:
                config = apply_known_entries(config, ConfigParser.load_config_file(overlay))
        out[name] = re.sub(r"\bunext_monai\b", SCRIPTS, zoo_json(config))
    return out
