"""What a packaged bundle says: its configs (``bundle_configs/`` with the repository's and the data set's overlay
values for the entries they define), its ``metadata.json`` and its data set's card (``datasets.json``; a variant,
``variant_of``, layers its overlay after its data set's and takes the fields it does not give). JSON is written as
the model zoo's pre-commit formats it."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Sequence
from importlib import metadata as importlib_metadata

from monai.bundle import ConfigParser

__all__ = ["ReleaseError", "CONFIG_FILES", "DATASET_CARDS", "zoo_json", "apply_known_entries", "dataset_layers",
           "packaged_configs", "training_config", "packaged_classes", "dataset_card", "packaged_metadata",
           "load_metrics"]

#: the packaged bundle's configs: MONAI, Ignite and PyTorch parts and the ``scripts`` copy of the network and of what
#: MONAI lacks; they fine-tune from and evaluate a datalist (MONAI's ``load_decathlon_datalist``)
BUNDLE_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundle_configs")
#: the configs that a release packages besides ``metadata.json`` (:func:`packaged_metadata`)
CONFIG_FILES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf")
#: the fields of a data set's card that go into ``metadata.json``; all of them, and the model card's and licence's
META_FIELDS = ("name", "task", "description", "data_source", "data_type", "image_classes", "label_classes")
CARD_FIELDS = (*META_FIELDS, "layout", "data_terms")
UNEXT_REFERENCE = ("Valanarasu, J. M. J. and Patel, V. M. UNeXt: MLP-based Rapid Medical Image Segmentation Network. "
                   "MICCAI 2022. https://arxiv.org/abs/2203.04967")
with open(os.path.join(os.path.dirname(__file__), "datasets.json"), encoding="utf-8") as _f:
    #: the card of each built-in data set: CARD_FIELDS and ``references`` (besides UNeXt's); a variant's card names
    #: its data set (``variant_of``) and gives only the fields that differ
    DATASET_CARDS: dict[str, dict] = json.load(_f)


class ReleaseError(RuntimeError):
    """A release that cannot be built or fails one of its checks."""


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


def dataset_layers(dataset: str | None) -> list[str]:
    """The data sets whose overlays make ``dataset``'s configs, in order: ``[dataset]``, or for a variant its data set
    first (``["busi", "busi_classes"]``). A training record naming any of them is a training on ``dataset``'s data."""
    base = (DATASET_CARDS.get(dataset) or {}).get("variant_of")
    return [base, dataset] if base else [dataset]


def _overlay_files(configs_dir: str, dataset: str) -> list[str]:
    """The overlays of ``dataset`` in ``configs_dir`` (``<d>.json`` of :func:`dataset_layers`) that exist, in order."""
    return [p for p in (os.path.join(configs_dir, f"{d}.json") for d in dataset_layers(dataset)) if os.path.isfile(p)]


def _literal_values(config: dict) -> dict:
    """The top-level settings of ``config`` given as plain values: no part, ``$`` expression, ``@`` or ``%`` link."""
    return {k: v for k, v in config.items()
            if not isinstance(v, dict) and not any(c in json.dumps(v) for c in ('"$', '"@', '"%'))}


def packaged_configs(configs_dir: str, dataset: str) -> dict[str, str]:
    """``{file name: text}`` of the packaged bundle's configs (all but ``metadata.json``): :data:`BUNDLE_CONFIGS`'
    files with the values, for the entries they define, of the repository's config of the same name (its plain
    settings, over the files' plain settings: ``in_channels``, ``spatial_size``...) and then of the data set's
    overlays (``<dataset>.json``)."""
    overlays = [ConfigParser.load_config_file(p) for p in _overlay_files(configs_dir, dataset)]
    out = {}
    for name in CONFIG_FILES:
        path = os.path.join(BUNDLE_CONFIGS, name)
        if name == "logging.conf":
            with open(path, encoding="utf-8") as f:
                out[name] = f.read()
            continue
        config = ConfigParser.load_config_file(path)
        plain = _literal_values(config)  # the repository's values replace settings, never the bundle's expressions
        repo = _literal_values(ConfigParser.load_config_file(os.path.join(configs_dir, name)))
        for layer in [{k: v for k, v in repo.items() if k in plain}, *overlays]:
            config = apply_known_entries(config, layer)
        out[name] = zoo_json(config)
    return out


def training_config(configs_dir: str, dataset: str) -> dict:
    """The repository's ``train.json`` with the data set's overlays merged in: the recipe that trains its weights."""
    return ConfigParser.load_config_files([os.path.join(configs_dir, "train.json"),
                                           *_overlay_files(configs_dir, dataset)])


def packaged_classes(configs: dict[str, str]) -> list[str]:
    """The foreground classes of packaged ``configs`` (:func:`packaged_configs`): ``class_names`` of ``train.json``
    and ``inference.json``, which must agree (one name: binary)."""
    names = {f: json.loads(configs[f]).get("class_names", ["lesion"]) for f in ("train.json", "inference.json")}
    train = names["train.json"]
    if not (isinstance(train, list) and train and all(isinstance(n, str) and n for n in train)):
        raise ReleaseError(f"train.json's class_names {train!r}: give a list of names")
    if names["inference.json"] != train:
        raise ReleaseError(f"class_names: train.json has {train}, inference.json {names['inference.json']}")
    return train


def dataset_card(dataset: str | None, card_file: str | None = None) -> dict:
    """The card of ``dataset``, or the one in ``card_file`` (a JSON object of CARD_FIELDS and ``references``)."""
    if not card_file:
        if dataset not in DATASET_CARDS:
            raise ReleaseError(f"no card for the training data ({dataset or 'unknown: no split.json in --train_dir'}):"
                               f" pass --dataset {'|'.join(DATASET_CARDS)} or --dataset_card FILE")
        card = {**DATASET_CARDS.get(DATASET_CARDS[dataset].get("variant_of"), {}), **DATASET_CARDS[dataset]}
        return {k: v for k, v in card.items() if k != "variant_of"}
    with open(card_file, encoding="utf-8") as f:
        card = json.load(f)
    missing, unknown = set(CARD_FIELDS) - set(card), set(card) - {*CARD_FIELDS, "references"}
    if missing or unknown:
        raise ReleaseError(f"{card_file}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    return card


def load_metrics(path: str) -> dict[str, float]:
    """The finite numbers of an evaluation: MONAI's ``MetricsSaver`` ``metrics.csv`` (``name,value`` lines; the image
    count from ``val_mean_dice_raw.csv`` beside it) or a flat ``{name: value}`` JSON file."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if not path.endswith(".csv"):
                values = json.load(f)
            else:
                values = {}
                for row in csv.reader(f):
                    if len(row) == 2:
                        with contextlib.suppress(ValueError):
                            values[row[0]] = float(row[1])
        per_image = os.path.join(os.path.dirname(path), "val_mean_dice_raw.csv")
        if path.endswith(".csv") and os.path.isfile(per_image):
            with open(per_image, encoding="utf-8", newline="") as f:
                values["n_images"] = len(list(csv.DictReader(f)))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ReleaseError(f"{path}: not an evaluation's metrics.csv nor a JSON file of metrics ({e})") from None
    metrics = {k: v for k, v in (values.items() if isinstance(values, dict) else ())
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not metrics:
        raise ReleaseError(f"{path}: no numeric metrics")
    return metrics


def _outputs(meta: dict, class_names: Sequence[str]) -> dict:
    """``pred_classes`` and the output tensors of ``meta`` for ``class_names``: one name, the repository's binary
    output named; K names, K+1 logits (background first) and, post-processed, a label map of the values 0..K."""
    fmt = meta["network_data_format"]
    if len(class_names) == 1:
        return {part: {k: {**t, "channel_def": {"0": class_names[0]}} for k, t in fmt[part].items()}
                for part in ("outputs", "post_processed_outputs") if part in fmt}
    values = ["background", *class_names]
    label_map = ", ".join(f"{i} is {name}" for i, name in enumerate(values))
    out = {"outputs": {k: {**t, "num_channels": len(values), "channel_def": {str(i): n for i, n in enumerate(values)}}
                       for k, t in fmt["outputs"].items()},
           "pred_classes": f"network output: {len(values)} logits per pixel, one per class ({', '.join(values)}); "
                           "after the bundle's post-processing (softmax, resized back to the picture's size, argmax) "
                           f"a single channel label map: {label_map}"}
    if "post_processed_outputs" in fmt:
        out["post_processed_outputs"] = {k: {**t, "num_channels": 1, "value_range": [0, len(class_names)],
                                             "channel_def": {"0": f"label map: {label_map}"}}
                                         for k, t in fmt["post_processed_outputs"].items()}
    return out


def packaged_metadata(meta: dict, *, card: dict, version: str, changelog: dict, in_channels: int,
                      metrics: dict, class_names: Sequence[str] = ("lesion",)) -> dict:
    """The repository's ``meta`` made true for this release: version, changelog, installed package versions (the
    declared ones but ``unext-monai``, whose code travels in ``scripts/``), the data set's card, the input channels,
    the output classes (``class_names``, :func:`packaged_classes`), the metrics. Key order follows ``meta``."""
    import monai
    import numpy
    import torch

    if not re.fullmatch(r"\d+\.\d+\.\d+([.+-]\w+)*", version or ""):
        raise ReleaseError(f"version {version!r}: give --version MAJOR.MINOR.PATCH")
    try:
        required = {d: importlib_metadata.version(d) for d in meta.get("required_packages_version") or {}
                    if d.lower().replace("_", "-") != "unext-monai"}
    except importlib_metadata.PackageNotFoundError as e:
        raise ReleaseError(f"required package {e} is not installed: the release states installed versions") from None
    (image_name, image), = meta["network_data_format"]["inputs"].items()
    channels = {3: {"0": "R", "1": "G", "2": "B"}, 1: {"0": "gray"}}.get(
        in_channels, {str(i): f"channel {i}" for i in range(in_channels)})
    image = {**image, "num_channels": in_channels, "format": "RGB" if in_channels == 3 else "magnitude",
             "channel_def": channels}
    image_classes = card["image_classes"]
    if in_channels == 1:
        image_classes = image_classes.replace("three channel", "one channel")
    outputs = _outputs(meta, class_names)
    pred_classes = {"pred_classes": outputs.pop("pred_classes")} if "pred_classes" in outputs else {}
    return {**meta, "version": version, "changelog": changelog, "monai_version": monai.__version__,
            "pytorch_version": torch.__version__.split("+")[0], "numpy_version": numpy.__version__,
            "required_packages_version": required, **{k: card[k] for k in META_FIELDS},
            "image_classes": image_classes, **pred_classes, "eval_metrics": metrics or {},
            "references": [UNEXT_REFERENCE, *card.get("references", ())],
            "network_data_format": {**meta["network_data_format"], "inputs": {image_name: image}, **outputs}}
