"""Package the bundle into a stand-alone, verified release folder that the MONAI model zoo's checks accept.

Run ``python -m unext_monai.release --name NAME [--dataset DATASET] [--version V --changelog TEXT]
[--train_dir eval] [--metrics eval/evaluation/metrics.csv]`` (console script ``unext-release``). It builds, in a
temporary folder beside the output (default ``bundle/NAME``):

- ``configs/``: ``train.json`` with the data set's overlay merged in, ``evaluate.json``, ``inference.json``,
  ``multi_gpu_train.json`` and ``logging.conf`` (:mod:`.configs`), every reference to ``unext_monai`` pointing to
  ``scripts``; ``metadata.json`` for these weights (:mod:`.metadata`): version and changelog (an existing release's
  older entries are kept), installed package versions, only packages from the package index, the data set's name,
  task, description and source (:mod:`.datasets`), evaluation metrics;
- ``scripts/``: the code of ``unext_monai`` those configs use (:mod:`.vendor`);
- ``models/model.pt`` (a plain state dict that loads with ``strict=True``), ``models/model.ts`` (``monai.bundle
  ckpt_export``, ``metadata.json`` and ``inference.json`` embedded), ``models/model.onnx``;
- ``docs/README.md`` (the repository's model card as a template, :mod:`.card`), ``docs/data_license.txt``,
  ``docs/training_record.json`` (what the card says of the training run: split sizes, epochs, the selection row of
  the released weights) and the repository's ``LICENSE``;

then checks it (``verify_net_in_out``, TorchScript and ONNX parity with PyTorch, the inference config's components
instantiate) and only then moves it to the output. A failed step exits non-zero and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import sys
from typing import Any

from unext_monai.bundle_scripts import bundle_on_path
from unext_monai.checkpoint import load_checkpoint_file
from unext_monai.folders import make_build_folder, replace_folder, tidy_build_leftovers
from unext_monai.release.card import packaged_sections, render_card
from unext_monai.release.checks import (
    ReleaseError,
    check_inference_config,
    check_torchscript,
    export_and_check_onnx,
    run_tool,
)
from unext_monai.release.configs import CONFIG_FILES, packaged_configs, zoo_json
from unext_monai.release.datasets import DATASET_CARDS, dataset_card
from unext_monai.release.metadata import load_metrics, packaged_metadata, required_packages
from unext_monai.release.vendor import vendored_files

__all__ = ["release", "main", "ReleaseError"]

#: configs embedded in ``model.ts`` besides ``metadata.json`` (what MONAI Deploy and ``monai.bundle.load`` read)
TS_CONFIG = "inference.json"
#: the training run's record in a release: read back when the same weights are released again without their run
RECORD_FILE = os.path.join("docs", "training_record.json")


def _state_dict(ckpt_file: str) -> dict:
    """The network weights of a checkpoint written by training: a plain state dict, ``{"model": state_dict, ...}``
    (ignite's layout), or a state dict carrying MONAI ``CheckpointSaver``'s ``checkpointer`` record; without the
    deep-supervision heads (``heads.*``) of a network trained with them."""
    import torch

    try:
        ckpt = load_checkpoint_file(ckpt_file, map_location="cpu")
    except (FileNotFoundError, ValueError) as e:
        raise ReleaseError(str(e)) from e
    if not isinstance(ckpt, dict):
        raise ReleaseError(f"{ckpt_file}: expected a state dict, got {type(ckpt).__name__}")
    if isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    weights = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise ReleaseError(f"{ckpt_file}: no tensors in the checkpoint")
    dropped = sorted(set(ckpt) - set(weights))
    if dropped:
        print(f"release: dropping non-weight checkpoint entries {dropped}")
    heads = [k for k in weights if k.startswith("heads.")]
    if heads:  # the released weights are inference.json's network: its forward never uses the heads
        print(f"release: dropping the deep-supervision heads ({len(heads)} tensors), which only training uses")
        weights = {k: v for k, v in weights.items() if k not in heads}
    return weights


def _training_record(train_dir: str | None, key_metric: str = "val_mean_dice",
                     weights_epoch: int | None = None) -> dict[str, Any]:
    """What the training run left in its output folder: the split's meta and sizes, and the selection row of the
    released weights: the best row, or the row of ``weights_epoch`` when given (``record["weights_epoch"]``)."""
    record: dict[str, Any] = {}
    split_file = os.path.join(train_dir, "split.json") if train_dir else ""
    if split_file and os.path.isfile(split_file):
        with open(split_file, encoding="utf-8") as f:
            split = json.load(f)
        record["split"] = {**split.get("meta", {}),
                           **{f"n_{k}": len(split[k]) for k in ("training", "selection", "validation") if k in split}}
    history_file = os.path.join(train_dir, "val_metrics.csv") if train_dir else ""
    if history_file and os.path.isfile(history_file):
        with open(history_file, newline="", encoding="utf-8") as f:
            history = list(csv.DictReader(f))
        if history:
            record["epochs"] = max(int(r["epoch"]) for r in history)
            if weights_epoch is not None:
                rows = [r for r in history if int(r["epoch"]) == weights_epoch]
                if not rows:
                    raise ReleaseError(f"--weights_epoch {weights_epoch}: {history_file} has no such epoch")
                record["weights_epoch"] = {k: (int(v) if k == "epoch" else float(v)) for k, v in rows[0].items()
                                           if v != ""}
            elif key_metric in history[0]:
                best = max(history, key=lambda r: float(r[key_metric] or "nan"))
                record["best"] = {k: (int(v) if k == "epoch" else float(v)) for k, v in best.items() if v != ""}
    return record


def _changelog(meta: dict, previous_meta: dict | None, version: str, entry: str | None, name: str) -> dict[str, str]:
    """The new entry first, then an existing release's entries (else the repository's), newest first."""
    older = dict((previous_meta or meta).get("changelog") or {})
    if previous_meta and version in older and entry and older[version] != entry:
        raise ReleaseError(f"version {version} is already released with another changelog entry: give a new --version")
    text = entry or older.get(version) or f"release {name}"
    return {version: text, **{k: v for k, v in older.items() if k != version}}


def _same_weights(pt_file: str, weights: dict) -> bool:
    """Whether ``pt_file`` (an existing release's ``model.pt``) holds exactly ``weights``."""
    import torch

    try:
        old = load_checkpoint_file(pt_file, map_location="cpu")
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(old, dict) and old.keys() == weights.keys() and all(
        isinstance(old[k], torch.Tensor) and old[k].shape == v.shape and torch.equal(old[k], v)
        for k, v in weights.items())


def _check_output_apart(output: str, bundle_root: str, train_dir: str, ckpt_dir: str) -> None:
    """Refuse an output that is or contains the bundle root, the training folder or the checkpoint's folder, or lies
    inside the bundle root (but for its ``bundle/`` folder of releases) or the training folder: replacing it would
    delete what the release is made from (the repository and its ``.git``, the run, its checkpoints, earlier
    releases). A release beside its checkpoint (``X/model.pt``, ``X/bundle/<name>``) is fine."""
    def within(path: str, folder: str) -> bool:
        return os.path.commonpath([path, folder]) == folder

    output = os.path.realpath(output)
    releases = os.path.realpath(os.path.join(bundle_root, "bundle"))
    for what, folder, or_inside in (("the bundle root", bundle_root, True), ("the training folder", train_dir, True),
                                     ("the checkpoint's folder", ckpt_dir, False)):
        folder = os.path.realpath(folder)
        inside = or_inside and within(output, folder) and not within(os.path.dirname(output), releases)
        if within(folder, output) or inside:
            raise ReleaseError(f"--output {output} is, contains or lies inside {what} {folder}: choose an output "
                               "apart from it (default: <bundle_root>/bundle/<name>; copy a checkpoint out of the "
                               "output first)")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def release(
    bundle_root: str = ".",
    name: str = "unext",
    output: str | None = None,
    ckpt: str | None = None,
    dataset: str | None = None,
    dataset_card_file: str | None = None,
    version: str | None = None,
    changelog: str | None = None,
    train_dir: str | None = None,
    metrics: str | None = None,
    weights_epoch: int | None = None,
    overwrite: bool = False,
) -> str:
    """Build the release folder of the bundle at ``bundle_root``; returns its path. See the module docstring.

    Args:
        bundle_root: the repository (``configs/``, ``docs/README.md``, ``LICENSE``; ``models/model.pt`` unless
            ``ckpt`` is given).
        name: the release's folder name (letters, digits, ``.``, ``_``, ``-``).
        output: the folder to create; default ``<bundle_root>/bundle/<name>``. Never one that would delete what the
            release is made from (see :func:`_check_output_apart`).
        ckpt: the trained checkpoint; default ``<bundle_root>/models/model.pt``.
        dataset: the training data set (a name of :data:`~unext_monai.release.datasets.DATASET_CARDS`); default the
            one in ``<train_dir>/split.json``.
        dataset_card_file: a JSON file with the data set's card, for data sets without a built-in one.
        version: the release version; default the existing release's or the repository's.
        changelog: the changelog entry for this version.
        train_dir: the training run's output folder (``split.json``, ``val_metrics.csv``) for the model card;
            default ``<bundle_root>/eval``, except when ``output`` is a release of the same weights: then its
            ``docs/training_record.json`` is the record (the run's folder may be long gone; the weights have not
            changed, so neither has how they were trained).
        metrics: the evaluation's ``metrics.csv`` (MONAI's MetricsSaver; means and image count) or a flat JSON file,
            for ``eval_metrics``; without it, an existing release's ``eval_metrics`` are kept when its ``model.pt``
            holds the same weights.
        weights_epoch: the epoch whose weights ``ckpt`` holds, when they are not the best row of
            ``val_metrics.csv`` (a run resumed on a revision that restarted its best-model record); the card then
            names that epoch and its selection scores.
        overwrite: replace an existing output folder (only once the new one has passed its checks); its changelog's
            older entries are kept.

    Raises:
        ReleaseError: bad arguments, or a failed build step or check (nothing is left behind).
    """
    import torch

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ReleaseError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
    bundle_root = os.path.abspath(bundle_root)
    configs_dir = os.path.join(bundle_root, "configs")
    meta_file = os.path.join(configs_dir, "metadata.json")
    template_file = os.path.join(bundle_root, "docs", "README.md")
    licence_file = os.path.join(bundle_root, "LICENSE")
    for required in (meta_file, *(os.path.join(configs_dir, f) for f in CONFIG_FILES), template_file, licence_file):
        if not os.path.isfile(required):
            raise ReleaseError(f"{required} not found: --bundle_root must be the repository's bundle folder")
    ckpt = os.path.abspath(ckpt or os.path.join(bundle_root, "models", "model.pt"))
    if not os.path.isfile(ckpt):
        raise ReleaseError(f"checkpoint {ckpt} not found: train first or pass --ckpt")
    output = os.path.abspath(output or os.path.join(bundle_root, "bundle", name))
    tidy_build_leftovers(output)  # a release whose replacement was killed midway is back before it is looked at
    if os.path.exists(output) and not overwrite:
        raise ReleaseError(f"{output} exists: pass --overwrite to replace it")
    _check_output_apart(output, bundle_root, train_dir or os.path.join(bundle_root, "eval"), os.path.dirname(ckpt))
    previous_meta = None
    if os.path.isfile(os.path.join(output, "configs", "metadata.json")):
        with open(os.path.join(output, "configs", "metadata.json"), encoding="utf-8") as f:
            previous_meta = json.load(f)
    weights = _state_dict(ckpt)
    from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT, zero_negligible_weights

    negligible = zero_negligible_weights(weights.values())  # the packaged files run at full float32 speed
    if negligible:
        print(f"release: {negligible} weight values below {NEGLIGIBLE_WEIGHT:g} set to 0")
    same_weights = previous_meta is not None and _same_weights(os.path.join(output, "models", "model.pt"), weights)
    previous_record = os.path.join(output, RECORD_FILE)
    if same_weights and not train_dir and weights_epoch is None and os.path.isfile(previous_record):
        with open(previous_record, encoding="utf-8") as f:
            record = json.load(f)
        print(f"release: same weights as {output}: keeping its training record ({RECORD_FILE})")
    else:
        train_dir = os.path.abspath(train_dir) if train_dir else os.path.join(bundle_root, "eval")
        record = _training_record(train_dir, weights_epoch=weights_epoch)
    recorded = (record.get("split") or {}).get("dataset")
    if dataset and recorded and dataset != recorded:
        raise ReleaseError(f"--dataset {dataset}, but the training record ({train_dir or previous_record}) says the "
                           f"weights were trained on {recorded}")
    dataset = dataset or recorded
    try:
        card = dataset_card(dataset, dataset_card_file)
    except ValueError as e:
        raise ReleaseError(str(e)) from e
    dataset = dataset or "custom"
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    version = version or (previous_meta or meta).get("version")
    log = _changelog(meta, previous_meta, version, changelog, name)
    configs = packaged_configs(configs_dir, dataset)
    json_configs = {k: json.loads(v) for k, v in configs.items() if k.endswith(".json")}
    in_channels = int(json_configs["inference.json"].get("in_channels", 3))
    if "train.json" in json_configs and int(json_configs["train.json"].get("in_channels", 3)) != in_channels:
        raise ReleaseError("train.json and inference.json state different in_channels")
    try:
        evaluation = load_metrics(metrics)
        if evaluation is None and same_weights:
            evaluation = previous_meta.get("eval_metrics") or None  # the same weights: their evaluation stands
            print(f"release: same weights as {output}: keeping its eval_metrics")
        scripts = vendored_files(text for k, text in configs.items() if k.endswith(".json"))
        required = required_packages(list(meta.get("required_packages_version") or {}), scripts)
        meta = packaged_metadata(meta, card=card, version=version, changelog=log, in_channels=in_channels,
                                 required=required, metrics=evaluation)
    except ValueError as e:
        raise ReleaseError(str(e)) from e

    tmp = make_build_folder(output)
    try:
        for rel, text in scripts.items():
            _write(os.path.join(tmp, rel), text)
        for file_name, text in configs.items():
            _write(os.path.join(tmp, "configs", file_name), text)
        out_meta = os.path.join(tmp, "configs", "metadata.json")
        _write(out_meta, zoo_json(meta))
        shutil.copyfile(licence_file, os.path.join(tmp, "LICENSE"))

        with bundle_on_path(tmp):
            from monai.bundle import ConfigParser

            parser = ConfigParser()
            parser.read_config(os.path.join(tmp, "configs", "inference.json"))
            parser.read_meta(out_meta)
            parser["bundle_root"] = tmp
            net = parser.get_parsed_content("network_def", instantiate=True)
            try:
                net.load_state_dict(weights, strict=True)
            except RuntimeError as e:
                raise ReleaseError(f"{ckpt} does not fit inference.json's network_def: {e}") from e
            net = net.eval()
            pt_file = os.path.join(tmp, "models", "model.pt")
            os.makedirs(os.path.dirname(pt_file))
            torch.save(weights, pt_file)
            # the metadata's promise about shapes first: a network that breaks it is not worth exporting
            run_tool("verify_net_in_out", tmp, net_id="network_def", meta_file=out_meta,
                     config_file=os.path.join(tmp, "configs", "inference.json"))

            ts_file = os.path.join(tmp, "models", "model.ts")
            run_tool("ckpt_export", tmp, net_id="network_def", filepath=ts_file, ckpt_file=pt_file, meta_file=out_meta,
                     config_file=os.path.join(tmp, "configs", TS_CONFIG))
            ts_diff = check_torchscript(ts_file, net, in_channels, [TS_CONFIG])
            onnx_diff, onnx_shapes, opset = export_and_check_onnx(net, os.path.join(tmp, "models", "model.onnx"),
                                                                  in_channels)
            check_inference_config(tmp)
            n_params = sum(p.numel() for p in net.parameters())

        _write(os.path.join(tmp, RECORD_FILE), json.dumps(record, indent=2) + "\n")
        _write(os.path.join(tmp, "docs", "data_license.txt"),
               "Data licence of the model weights in models/ (model.pt, model.ts, model.onnx)\n\n"
               f"Trained on: {dataset}\n\n{card.data_terms}")
        checks = {"ts_max_abs_diff": ts_diff, "onnx_max_abs_diff": onnx_diff, "onnx_shapes": onnx_shapes,
                  "onnx_opset": opset, "onnxruntime": _installed_version("onnxruntime"),
                  "negligible_zeroed": negligible, "negligible_below": NEGLIGIBLE_WEIGHT,
                  "date": datetime.date.today().isoformat()}
        with open(template_file, encoding="utf-8") as f:
            template = f.read()
        train = json_configs["train.json"]
        sections = packaged_sections(meta, name=name, card=card, dataset=dataset, train=train, record=record,
                                     checks=checks, n_params=n_params)
        try:
            _write(os.path.join(tmp, "docs", "README.md"), render_card(template, sections))
        except ValueError as e:
            raise ReleaseError(str(e)) from e

        if os.path.exists(output) and not overwrite:
            raise ReleaseError(f"{output} appeared while building: not replacing it")
        try:
            replace_folder(tmp, output)
        except OSError as e:
            raise ReleaseError(f"could not put the release in place: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _installed_version(dist: str) -> str | None:
    from importlib import metadata as importlib_metadata

    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m unext_monai.release",
        description="Package the bundle into bundle/<name>/ (configs for one data set, scripts/, model.pt/.ts/.onnx, "
        "model card, licences), verified before it appears.",
    )
    ap.add_argument("--bundle_root", default=".", help="the repository's bundle folder (default: .)")
    ap.add_argument("--name", required=True, help="release folder name")
    ap.add_argument("--output", default=None, help="output folder (default: <bundle_root>/bundle/<name>)")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: <bundle_root>/models/model.pt)")
    ap.add_argument("--dataset", default=None, choices=sorted(DATASET_CARDS),
                    help="training data set (default: the one in <train_dir>/split.json)")
    ap.add_argument("--dataset_card", dest="dataset_card_file", default=None,
                    help="JSON file with the card of a data set without a built-in one")
    ap.add_argument("--version", default=None, help="release version (default: the existing release's)")
    ap.add_argument("--changelog", default=None, help="changelog entry for this version")
    ap.add_argument("--train_dir", default=None,
                    help="training output folder with split.json and val_metrics.csv (default: <bundle_root>/eval)")
    ap.add_argument("--metrics", default=None, help="evaluation metrics.csv (or flat JSON) for eval_metrics")
    ap.add_argument("--weights_epoch", type=int, default=None,
                    help="the epoch whose weights --ckpt holds, when not the best row of val_metrics.csv")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = ap.parse_args(argv)
    try:
        out = release(**vars(args))
    except ReleaseError as e:
        print(f"release: refused: {e}", file=sys.stderr)
        return 1
    print(f"release: wrote {out}")
    return 0
