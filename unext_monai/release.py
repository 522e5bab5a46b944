"""Package the bundle into a self-contained, verified release folder.

Run ``python -m unext_monai.release --bundle_root . --name NAME [--output bundle/NAME]`` (console script
``unext-release``). It builds, in a temporary folder beside the output:

- ``configs/``: every file of ``<bundle_root>/configs`` (``metadata.json`` gets the release version, a changelog
  entry, the package versions it was exported with and, with ``--metrics``, evaluation metrics);
- ``models/model.pt``: the network's plain state dict (training-only entries such as the checkpointer's record are
  dropped; it must load with ``strict=True`` into the config's ``network_def``);
- ``models/model.ts``: written by ``python -m monai.bundle ckpt_export`` with ``metadata.json`` and the JSON configs
  embedded as extra files (what MONAI Deploy's bundle operator reads);
- ``models/model.onnx``: ``unext_monai.networks.export.export_onnx``, checked against PyTorch with ONNX Runtime;
- ``docs/README.md`` (model card), ``docs/data_license.txt`` and ``LICENSE``;

then checks it (``python -m monai.bundle verify_net_in_out``, TorchScript and ONNX parity with the eager network,
the inference config's components instantiate) and only then renames the folder to the output. A failed check exits
non-zero and leaves nothing behind. The packaged configs refer to code in ``unext_monai`` (the network, transforms,
handlers): the bundle needs that package installed, which ``required_packages_version`` in its metadata states.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata as importlib_metadata
from typing import Any

__all__ = ["release", "main", "ReleaseError"]

#: extra files MONAI Deploy and ``monai.bundle.load`` read from ``model.ts`` (``metadata.json`` is always embedded)
TS_CONFIG = "inference.json"
ONNX_ATOL = 1e-4
TS_ATOL = 1e-4  # the eager path folds BatchNorm on the fly in eval: float rounding differs from TorchScript


class ReleaseError(RuntimeError):
    """A release that cannot be built or fails one of its checks."""


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _package_version() -> str:
    from unext_monai import __version__

    return _version("unext-monai") or __version__


def _run(cmd: list[str], what: str, cwd: str) -> str:
    """Run a command of the bundle tool chain; raise with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
        raise ReleaseError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _state_dict(ckpt_file: str) -> dict:
    """The network weights of a checkpoint written by training: a plain state dict, ``{"model": state_dict, ...}``
    (ignite's layout), or a state dict carrying MONAI ``CheckpointSaver``'s ``checkpointer`` record."""
    import torch

    try:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled objects other than tensors and containers
        raise ReleaseError(f"{ckpt_file}: not loadable as weights only (torch.load(weights_only=True)): {e}") from e
    if not isinstance(ckpt, dict):
        raise ReleaseError(f"{ckpt_file}: expected a state dict, got {type(ckpt).__name__}")
    if isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    weights = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(set(ckpt) - set(weights))
    if not weights:
        raise ReleaseError(f"{ckpt_file}: no tensors in the checkpoint")
    if dropped:
        print(f"release: dropping non-weight checkpoint entries {dropped}")
    return weights


def _parser(config_files: list[str], meta_file: str, bundle_root: str | None = None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files)
    parser.read_meta(meta_file)
    if bundle_root is not None:
        parser["bundle_root"] = bundle_root
    return parser


def _val_history(train_dir: str | None) -> list[dict[str, str]]:
    path = os.path.join(train_dir, "val_metrics.csv") if train_dir else ""
    if not path or not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _split_meta(train_dir: str | None) -> dict[str, Any]:
    path = os.path.join(train_dir, "split.json") if train_dir else ""
    if not path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        split = json.load(f)
    return {**split.get("meta", {}), "n_training": len(split.get("training", [])),
            "n_validation": len(split.get("validation", []))}


def _training_record(train_dir: str | None, key_metric: str = "val_mean_dice") -> dict[str, Any]:
    """What the training run left in its output folder: the split's meta and the best validation row."""
    record: dict[str, Any] = {"split": _split_meta(train_dir)}
    history = _val_history(train_dir)
    if history:
        record["epochs"] = max(int(r["epoch"]) for r in history)
        if key_metric in history[0]:
            best = max(history, key=lambda r: float(r[key_metric] or "nan"))
            record["best"] = {k: (int(v) if k == "epoch" else float(v)) for k, v in best.items() if v != ""}
    return record


#: the published terms of the data sets the readers know; anything else must come with --data_license
DATA_TERMS = {
    "demo": (
        "Synthetic demo set made by unext_monai.data.demo (random blobs on smooth noise). It contains no third-party\n"
        "or patient data; it is generated by the Apache-2.0 code of unext-monai, so the weights carry no data\n"
        "licence beyond Apache-2.0. Weights trained on it segment nothing real: they only exercise the pipeline.\n"
    ),
    "isic2018": (
        "ISIC 2018 Challenge, Task 1 (lesion boundary segmentation) training data, published by the International\n"
        "Skin Imaging Collaboration under the Creative Commons Attribution-NonCommercial 4.0 International licence\n"
        "(CC BY-NC 4.0, https://creativecommons.org/licenses/by-nc/4.0/). Weights trained on it may be used for\n"
        "non-commercial purposes only, with attribution. Cite:\n"
        "  Codella N. et al., Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the\n"
        "  International Skin Imaging Collaboration (ISIC), arXiv:1902.03368, and\n"
        "  Tschandl P. et al., The HAM10000 dataset, Scientific Data 5, 180161 (2018).\n"
    ),
    "busi": (
        "BUSI, Dataset of breast ultrasound images (Al-Dhabyani W., Gomaa M., Khaled H., Fahmy A., Data in Brief 28,\n"
        "104863, 2020). Use it, and weights trained on it, under the terms its authors publish with the data set,\n"
        "and cite the article above.\n"
    ),
}


def _data_license_text(dataset: str | None, data_license_file: str | None) -> str:
    head = "Data licence of the model weights in models/ (model.pt, model.ts, model.onnx)\n\n"
    if data_license_file:
        with open(data_license_file) as f:
            return head + f.read()
    if dataset in DATA_TERMS:
        return head + f"Trained on: {dataset}\n\n" + DATA_TERMS[dataset]
    raise ReleaseError(
        f"the training data ({dataset or 'unknown: no split.json in --train_dir'}) has no known licence terms: "
        "pass --data_license FILE with the terms of the data the weights were trained on"
    )


def _update_metadata(meta: dict, *, version: str | None, changelog: str | None, name: str,
                     metrics: dict | None) -> dict:
    import monai
    import numpy
    import torch

    meta = dict(meta)
    version = version or meta.get("version")
    if not version or not re.fullmatch(r"\d+\.\d+\.\d+([.+-]\w+)*", str(version)):
        raise ReleaseError(f"version {version!r}: give --version MAJOR.MINOR.PATCH (metadata.json has none)")
    meta["version"] = version
    log = dict(meta.get("changelog") or {})
    if changelog or version not in log:
        log = {version: changelog or f"release {name}", **{k: v for k, v in log.items() if k != version}}
    meta["changelog"] = log
    meta["monai_version"] = monai.__version__
    meta["pytorch_version"] = torch.__version__.split("+")[0]
    meta["numpy_version"] = numpy.__version__
    required = dict(meta.get("required_packages_version") or {})
    required["unext-monai"] = _package_version()
    meta["required_packages_version"] = required
    if metrics:
        meta["eval_metrics"] = {**(meta.get("eval_metrics") or {}), **metrics}
    return meta


def _load_metrics(path: str | None) -> dict | None:
    if not path:
        return None
    with open(path) as f:
        data = json.load(f)
    # the evaluation's metrics.json ({"mean": {...}, "per_image": [...]}) or a flat {name: value}
    means = data.get("mean") if isinstance(data.get("mean"), dict) else data
    metrics = {k: v for k, v in means.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not metrics:
        raise ReleaseError(f"{path}: no numeric metrics (top level, or under 'mean')")
    if isinstance(data.get("per_image"), list):
        metrics["n_images"] = len(data["per_image"])
    return metrics


def _recipe(train_file: str, overlay: str | None = None) -> dict[str, Any]:
    """The training recipe as the train config states it (values, or their expressions), merged with the data set's
    recipe overlay (``configs/<dataset>.json``) where the bundle has one."""
    from monai.bundle import ConfigParser

    if not os.path.isfile(train_file):
        return {}
    p = ConfigParser()
    p.read_config([train_file, overlay] if overlay and os.path.isfile(overlay) else train_file)
    recipe: dict[str, Any] = {"configs": os.path.basename(train_file)}
    if overlay and os.path.isfile(overlay):
        recipe["configs"] += f" + {os.path.basename(overlay)}"
    for key in ("learning_rate", "min_learning_rate", "weight_decay", "batch_size", "max_epochs", "spatial_size",
                "deep_supervision", "val_fraction", "seed"):
        if p.get(key) is not None:
            recipe[key] = p.get(key)
    for key in ("optimizer", "lr_scheduler", "base_loss", "loss"):
        item = p.get(key)
        if isinstance(item, dict) and "_target_" in item:
            recipe[key] = {k: v for k, v in item.items() if k not in ("params", "optimizer")}
    aug = p.get("train#random_transforms")
    if isinstance(aug, list):
        recipe["augmentation"] = [t.get("_target_") for t in aug if isinstance(t, dict)]
    return recipe


def _fmt(v: Any) -> str:
    return f"`{json.dumps(v)}`" if not isinstance(v, str) else f"`{v}`"


def _model_card(meta: dict, *, name: str, recipe: dict, record: dict, checks: dict, n_params: int) -> str:
    """docs/README.md: the model card, from the metadata, the training record and the release checks."""
    inp = next(iter(meta["network_data_format"]["inputs"].values()))
    out = next(iter(meta["network_data_format"]["outputs"].values()))
    split = record.get("split") or {}
    dataset = split.get("dataset", "unknown")
    lines = [
        f"# {meta.get('name', name)} (bundle `{name}`, version {meta['version']})",
        "",
        meta.get("description", ""),
        "",
        f"**Task:** {meta.get('task', 'segmentation')}  ",
        f"**Intended use:** {meta.get('intended_use', 'research')}  ",
        f"**Authors:** {meta.get('authors', '')}. {meta.get('copyright', '')}",
        "",
        "## Model",
        "",
        f"UNeXt (Valanarasu and Patel, MICCAI 2022) from the `unext-monai` package "
        f"({meta['required_packages_version'].get('unext-monai')}), {n_params:,} parameters.",
        "",
        "| | input `" + next(iter(meta["network_data_format"]["inputs"])) + "` | output `"
        + next(iter(meta["network_data_format"]["outputs"])) + "` |",
        "|---|---|---|",
        f"| channels | {inp.get('num_channels')} ({', '.join(inp.get('channel_def', {}).values())}) | "
        f"{out.get('num_channels')} logit ({', '.join(f'{k}: {v}' for k, v in out.get('channel_def', {}).items())}) |",
        f"| spatial shape | {inp.get('spatial_shape')} | {out.get('spatial_shape')} |",
        f"| dtype, range | {inp.get('dtype')}, {inp.get('value_range')} | {out.get('dtype')}, logits "
        "(sigmoid and threshold 0.5 in `postprocessing`) |",
        "",
        f"Images: {meta.get('image_classes', '')}. Labels: {meta.get('label_classes', '')}. "
        f"Predictions: {meta.get('pred_classes', '')}.",
        "",
        "## Data",
        "",
        f"Sources the bundle is made for: {meta.get('data_source', '')}.",
        "",
    ]
    if split:
        lines += [
            f"These weights were trained on **{dataset}** ({split.get('n_training')} training, "
            f"{split.get('n_validation')} validation images; seeded split, seed {split.get('seed')}, validation "
            f"fraction {split.get('val_fraction')}).",
        ]
        if dataset == "demo":
            lines += ["", "**These weights come from the built-in synthetic demo set: they segment nothing real and "
                          "exist to exercise the pipeline. Train on real data before any use.**"]
    else:
        lines += ["The training run's record (split.json) was not given: the training data is stated only in "
                  "`docs/data_license.txt`."]
    lines += ["", "Licence terms of the data, which the weights inherit: `docs/data_license.txt`.", "",
              "## Training recipe", ""]
    if recipe:
        lines += ["| setting | value in the configs |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in recipe.items()]
        lines += ["", "Command-line overrides of a run (such as `--max_epochs`) are not in this table; the changelog "
                      "in `configs/metadata.json` states those of this release."]
    if record.get("epochs"):
        lines += ["", f"This checkpoint: {record['epochs']} epoch(s) trained; `models/model.pt` holds the weights "
                      "of the best validation epoch."]
    lines += ["", "## Metrics", ""]
    metrics = dict(meta.get("eval_metrics") or {})
    best = record.get("best")
    if best:
        lines += [f"Best validation during training (epoch {best.get('epoch')}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "epoch") + "."]
    if metrics:
        lines += ["", "Evaluation (`metadata.json` `eval_metrics`): "
                  + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
                  + "."]
    if not best and not metrics:
        lines += ["No metrics were recorded for these weights."]
    lines += [
        "",
        "## Files and checks",
        "",
        "| file | what |",
        "|---|---|",
        "| `models/model.pt` | state dict for `network_def` (loads with `strict=True`) |",
        f"| `models/model.ts` | TorchScript (`monai.bundle ckpt_export`), embeds `metadata.json` and "
        f"{', '.join(f'`{c}`' for c in checks['embedded'])}; max abs difference to PyTorch "
        f"{checks['ts_max_abs_diff']:.2e} |",
        f"| `models/model.onnx` | ONNX (opset {checks['onnx_opset']}, dynamic batch and size, input `image`, output "
        f"`pred`); ONNX Runtime {checks['onnxruntime']} vs PyTorch max abs difference "
        f"{checks['onnx_max_abs_diff']:.2e} over {checks['onnx_shapes']} |",
        "",
        f"Checked at release ({checks['date']}): `monai.bundle verify_net_in_out` passed; the inference config's "
        "components instantiate.",
        "",
        "## Use",
        "",
        "Needs `pip install unext-monai` (the configs use its network, transforms and handlers) with "
        f"MONAI {meta['monai_version']} and PyTorch {meta['pytorch_version']}.",
        "",
        "```bash",
        f"python -m monai.bundle run --config_file bundle/{name}/configs/inference.json "
        f"--bundle_root bundle/{name} --input_path IMAGE_OR_FOLDER --output_dir OUT",
        "```",
        "",
        "MONAI Label and MONAI Deploy: see `docs/integrations.md` of the unext-monai repository.",
        "",
        "## Limits",
        "",
        "- Not a medical device; not for diagnosis or any clinical decision.",
        "- One lesion class per image, 2D only; images are resized to 256x256, so thin structures and boundaries are "
        "approximate at the original resolution.",
        "- Expect lower accuracy on imaging devices, populations and modalities unlike the training data.",
        "",
        "## References",
        "",
    ]
    lines += [f"- {r}" for r in meta.get("references", [])]
    lines += ["", "## Changelog", ""] + [f"- {k}: {v}" for k, v in meta["changelog"].items()]
    return "\n".join(lines) + "\n"


def _license_text(dataset: str | None) -> str:
    return (
        "The code and configuration files of this bundle (configs/) are licensed under the Apache License,\n"
        "Version 2.0, whose text follows.\n\n"
        "The model weights (models/model.pt, models/model.ts, models/model.onnx) were produced by training on data\n"
        f"({dataset or 'see docs/data_license.txt'}) and inherit that data's licence terms, which may be more\n"
        "restrictive (for example non-commercial): see docs/data_license.txt.\n\n" + APACHE_2_0
    )


def _check_ts(ts_file: str, net, embedded: list[str]) -> float:
    import torch

    extra = {"metadata.json": "", **{c: "" for c in embedded}}
    ts = torch.jit.load(ts_file, map_location="cpu", _extra_files=extra)
    missing = [k for k, v in extra.items() if not v]
    if missing:
        raise ReleaseError(f"{ts_file}: embedded configs missing: {missing}")
    diff = 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        for shape in [(1, 3, 256, 256), (2, 3, 192, 256)]:
            x = torch.rand(*shape)
            diff = max(diff, float((ts(x) - net(x)).abs().max()))
    if diff > TS_ATOL:
        raise ReleaseError(f"{ts_file}: TorchScript output differs from PyTorch by {diff:.2e} > {TS_ATOL}")
    return diff


def _export_and_check_onnx(net, onnx_file: str, in_channels: int) -> tuple[float, list, int]:
    import torch

    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ReleaseError("ONNX export needs onnx and onnxruntime: pip install 'unext-monai[onnx]'") from e
    from unext_monai.networks.export import export_onnx

    opset = 18
    export_onnx(net, onnx_file, in_channels=in_channels, spatial_dims=2, opset=opset)
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    shapes = [(1, in_channels, 256, 256), (2, in_channels, 192, 320)]
    diff = 0.0
    torch.manual_seed(1)
    with torch.no_grad():
        for shape in shapes:
            x = torch.rand(*shape)
            (out,) = session.run(None, {"image": x.numpy()})
            diff = max(diff, float(abs(out - net(x).numpy()).max()))
    if diff > ONNX_ATOL:
        raise ReleaseError(f"{onnx_file}: ONNX Runtime output differs from PyTorch by {diff:.2e} > {ONNX_ATOL}")
    return diff, [list(s) for s in shapes], opset


def _check_inference_config(configs_dir: str, meta_file: str, bundle_dir: str) -> None:
    """The packaged inference config resolves from the bundle folder: its components instantiate and its checkpoint
    path points into the bundle."""
    parser = _parser([os.path.join(configs_dir, "inference.json")], meta_file, bundle_root=bundle_dir)
    for key in ("preprocessing", "postprocessing", "inferer"):
        if parser.get(key) is not None:
            parser.get_parsed_content(key)
    if parser.get("ckpt_dir") is not None:
        ckpt = os.path.join(parser.get_parsed_content("ckpt_dir"), "model.pt")
        if not os.path.isfile(ckpt):
            raise ReleaseError(f"inference.json's ckpt_dir does not hold the packaged model.pt ({ckpt})")


def release(
    bundle_root: str = ".",
    name: str = "unext",
    output: str | None = None,
    ckpt: str | None = None,
    version: str | None = None,
    changelog: str | None = None,
    train_dir: str | None = None,
    metrics: str | None = None,
    data_license: str | None = None,
    overwrite: bool = False,
) -> str:
    """Build the release folder of the bundle at ``bundle_root``; returns its path. See the module docstring.

    Args:
        bundle_root: the bundle (``configs/``, and ``models/model.pt`` unless ``ckpt`` is given).
        name: the release's folder name (letters, digits, ``.``, ``_``, ``-``).
        output: the folder to create; default ``<bundle_root>/bundle/<name>``.
        ckpt: the trained checkpoint; default ``<bundle_root>/models/model.pt``.
        version: the release version; default the one in ``metadata.json``.
        changelog: the changelog entry for this version.
        train_dir: the training run's output folder (``split.json``, ``val_metrics.csv``) for the model card and the
            data licence; default ``<bundle_root>/eval``.
        metrics: a JSON file whose numbers go into ``eval_metrics``: the evaluation's ``metrics.json`` (its ``mean``
            values and the image count) or a flat ``{name: value}``.
        data_license: a text file with the training data's licence terms (needed for data sets it does not know).
        overwrite: replace an existing output folder (only once the new one has passed its checks).

    Raises:
        ReleaseError: bad arguments, or a failed build step or check (nothing is left behind).
    """
    import torch

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ReleaseError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
    bundle_root = os.path.abspath(bundle_root)
    configs = os.path.join(bundle_root, "configs")
    meta_file = os.path.join(configs, "metadata.json")
    for required in (meta_file, os.path.join(configs, "inference.json")):
        if not os.path.isfile(required):
            raise ReleaseError(f"{required} not found: --bundle_root must be a bundle folder")
    ckpt = os.path.abspath(ckpt or os.path.join(bundle_root, "models", "model.pt"))
    if not os.path.isfile(ckpt):
        raise ReleaseError(f"checkpoint {ckpt} not found: train first or pass --ckpt")
    output = os.path.abspath(output or os.path.join(bundle_root, "bundle", name))
    if os.path.exists(output) and not overwrite:
        raise ReleaseError(f"{output} exists: pass --overwrite to replace it")
    train_dir = os.path.abspath(train_dir) if train_dir else os.path.join(bundle_root, "eval")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        out_configs = os.path.join(tmp, "configs")
        shutil.copytree(configs, out_configs, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        with open(meta_file) as f:
            meta = json.load(f)
        record = _training_record(train_dir)
        meta = _update_metadata(meta, version=version, changelog=changelog, name=name, metrics=_load_metrics(metrics))
        out_meta = os.path.join(out_configs, "metadata.json")
        with open(out_meta, "w") as f:
            json.dump(meta, f, indent=4)
            f.write("\n")

        # weights: plain state dict that loads strictly into the inference config's network_def
        os.makedirs(os.path.join(tmp, "models"))
        weights = _state_dict(ckpt)
        parser = _parser([os.path.join(out_configs, "inference.json")], out_meta, bundle_root=tmp)
        net = parser.get_parsed_content("network_def", instantiate=True)
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise ReleaseError(f"{ckpt} does not fit inference.json's network_def: {e}") from e
        net = net.eval()
        pt_file = os.path.join(tmp, "models", "model.pt")
        torch.save(weights, pt_file)

        # TorchScript through MONAI's own exporter, with metadata.json and inference.json embedded (what MONAI
        # Deploy's bundle operator and monai.bundle.load read; ckpt_export merges the configs it embeds, and the
        # training overlays do not merge on their own)
        embedded = [TS_CONFIG]
        ts_file = os.path.join(tmp, "models", "model.ts")
        _run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", ts_file,
              "--ckpt_file", pt_file, "--meta_file", out_meta, "--config_file", os.path.join(out_configs, TS_CONFIG)],
             "ckpt_export", cwd=tmp)
        ts_diff = _check_ts(ts_file, net, embedded)

        in_channels = int(next(iter(meta["network_data_format"]["inputs"].values()))["num_channels"])
        onnx_diff, onnx_shapes, opset = _export_and_check_onnx(net, os.path.join(tmp, "models", "model.onnx"),
                                                               in_channels)

        _run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", out_meta,
              "--config_file", os.path.join(out_configs, "inference.json")], "verify_net_in_out", cwd=tmp)
        _check_inference_config(out_configs, out_meta, tmp)

        dataset = (record.get("split") or {}).get("dataset")
        os.makedirs(os.path.join(tmp, "docs"))
        with open(os.path.join(tmp, "docs", "data_license.txt"), "w") as f:
            f.write(_data_license_text(dataset, data_license))
        checks = {"embedded": embedded, "ts_max_abs_diff": ts_diff, "onnx_max_abs_diff": onnx_diff,
                  "onnx_shapes": onnx_shapes, "onnx_opset": opset, "onnxruntime": _version("onnxruntime"),
                  "date": datetime.date.today().isoformat()}
        recipe = _recipe(os.path.join(out_configs, "train.json"),
                         os.path.join(out_configs, f"{dataset}.json") if dataset else None)
        card = _model_card(meta, name=name, recipe=recipe, record=record,
                           checks=checks, n_params=sum(p.numel() for p in net.parameters()))
        with open(os.path.join(tmp, "docs", "README.md"), "w") as f:
            f.write(card)
        with open(os.path.join(tmp, "LICENSE"), "w") as f:
            f.write(_license_text(dataset))

        if os.path.exists(output):
            if not overwrite:
                raise ReleaseError(f"{output} appeared while building: not replacing it")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(output, old)
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m unext_monai.release",
        description="Package the bundle into bundle/<name>/ (configs, model.pt/.ts/.onnx, model card, licences), "
        "verified before it appears.",
    )
    ap.add_argument("--bundle_root", default=".", help="the bundle folder (default: .)")
    ap.add_argument("--name", required=True, help="release folder name")
    ap.add_argument("--output", default=None, help="output folder (default: <bundle_root>/bundle/<name>)")
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: <bundle_root>/models/model.pt)")
    ap.add_argument("--version", default=None, help="release version (default: metadata.json's)")
    ap.add_argument("--changelog", default=None, help="changelog entry for this version")
    ap.add_argument("--train_dir", default=None,
                    help="training output folder with split.json and val_metrics.csv (default: <bundle_root>/eval)")
    ap.add_argument("--metrics", default=None, help="JSON file of evaluation metrics for eval_metrics")
    ap.add_argument("--data_license", default=None, help="text file: licence terms of the training data")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = ap.parse_args(argv)
    try:
        out = release(**vars(args))
    except ReleaseError as e:
        print(f"release: refused: {e}", file=sys.stderr)
        return 1
    print(f"release: wrote {out}")
    return 0


APACHE_2_0 = """                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.

      "Licensor" shall mean the copyright owner or entity authorized by
      the copyright owner that is granting the License.

      "Legal Entity" shall mean the union of the acting entity and all
      other entities that control, are controlled by, or are under common
      control with that entity. For the purposes of this definition,
      "control" means (i) the power, direct or indirect, to cause the
      direction or management of such entity, whether by contract or
      otherwise, or (ii) ownership of fifty percent (50%) or more of the
      outstanding shares, or (iii) beneficial ownership of such entity.

      "You" (or "Your") shall mean an individual or Legal Entity
      exercising permissions granted by this License.

      "Source" form shall mean the preferred form for making modifications,
      including but not limited to software source code, documentation
      source, and configuration files.

      "Object" form shall mean any form resulting from mechanical
      transformation or translation of a Source form, including but
      not limited to compiled object code, generated documentation,
      and conversions to other media types.

      "Work" shall mean the work of authorship, whether in Source or
      Object form, made available under the License, as indicated by a
      copyright notice that is included in or attached to the work
      (an example is provided in the Appendix below).

      "Derivative Works" shall mean any work, whether in Source or Object
      form, that is based on (or derived from) the Work and for which the
      editorial revisions, annotations, elaborations, or other modifications
      represent, as a whole, an original work of authorship. For the purposes
      of this License, Derivative Works shall not include works that remain
      separable from, or merely link (or bind by name) to the interfaces of,
      the Work and Derivative Works thereof.

      "Contribution" shall mean any work of authorship, including
      the original version of the Work and any modifications or additions
      to that Work or Derivative Works thereof, that is intentionally
      submitted to Licensor for inclusion in the Work by the copyright owner
      or by an individual or Legal Entity authorized to submit on behalf of
      the copyright owner. For the purposes of this definition, "submitted"
      means any form of electronic, verbal, or written communication sent
      to the Licensor or its representatives, including but not limited to
      communication on electronic mailing lists, source code control systems,
      and issue tracking systems that are managed by, or on behalf of, the
      Licensor for the purpose of discussing and improving the Work, but
      excluding communication that is conspicuously marked or otherwise
      designated in writing by the copyright owner as "Not a Contribution."

      "Contributor" shall mean Licensor and any individual or Legal Entity
      on behalf of whom a Contribution has been received by Licensor and
      subsequently incorporated within the Work.

   2. Grant of Copyright License. Subject to the terms and conditions of
      this License, each Contributor hereby grants to You a perpetual,
      worldwide, non-exclusive, no-charge, royalty-free, irrevocable
      copyright license to reproduce, prepare Derivative Works of,
      publicly display, publicly perform, sublicense, and distribute the
      Work and such Derivative Works in Source or Object form.

   3. Grant of Patent License. Subject to the terms and conditions of
      this License, each Contributor hereby grants to You a perpetual,
      worldwide, non-exclusive, no-charge, royalty-free, irrevocable
      (except as stated in this section) patent license to make, have made,
      use, offer to sell, sell, import, and otherwise transfer the Work,
      where such license applies only to those patent claims licensable
      by such Contributor that are necessarily infringed by their
      Contribution(s) alone or by combination of their Contribution(s)
      with the Work to which such Contribution(s) was submitted. If You
      institute patent litigation against any entity (including a
      cross-claim or counterclaim in a lawsuit) alleging that the Work
      or a Contribution incorporated within the Work constitutes direct
      or contributory patent infringement, then any patent licenses
      granted to You under this License for that Work shall terminate
      as of the date such litigation is filed.

   4. Redistribution. You may reproduce and distribute copies of the
      Work or Derivative Works thereof in any medium, with or without
      modifications, and in Source or Object form, provided that You
      meet the following conditions:

      (a) You must give any other recipients of the Work or
          Derivative Works a copy of this License; and

      (b) You must cause any modified files to carry prominent notices
          stating that You changed the files; and

      (c) You must retain, in the Source form of any Derivative Works
          that You distribute, all copyright, patent, trademark, and
          attribution notices from the Source form of the Work,
          excluding those notices that do not pertain to any part of
          the Derivative Works; and

      (d) If the Work includes a "NOTICE" text file as part of its
          distribution, then any Derivative Works that You distribute must
          include a readable copy of the attribution notices contained
          within such NOTICE file, excluding those notices that do not
          pertain to any part of the Derivative Works, in at least one
          of the following places: within a NOTICE text file distributed
          as part of the Derivative Works; within the Source form or
          documentation, if provided along with the Derivative Works; or,
          within a display generated by the Derivative Works, if and
          wherever such third-party notices normally appear. The contents
          of the NOTICE file are for informational purposes only and
          do not modify the License. You may add Your own attribution
          notices within Derivative Works that You distribute, alongside
          or as an addendum to the NOTICE text from the Work, provided
          that such additional attribution notices cannot be construed
          as modifying the License.

      You may add Your own copyright statement to Your modifications and
      may provide additional or different license terms and conditions
      for use, reproduction, or distribution of Your modifications, or
      for any such Derivative Works as a whole, provided Your use,
      reproduction, and distribution of the Work otherwise complies with
      the conditions stated in this License.

   5. Submission of Contributions. Unless You explicitly state otherwise,
      any Contribution intentionally submitted for inclusion in the Work
      by You to the Licensor shall be under the terms and conditions of
      this License, without any additional terms or conditions.
      Notwithstanding the above, nothing herein shall supersede or modify
      the terms of any separate license agreement you may have executed
      with Licensor regarding such Contributions.

   6. Trademarks. This License does not grant permission to use the trade
      names, trademarks, service marks, or product names of the Licensor,
      except as required for reasonable and customary use in describing the
      origin of the Work and reproducing the content of the NOTICE file.

   7. Disclaimer of Warranty. Unless required by applicable law or
      agreed to in writing, Licensor provides the Work (and each
      Contributor provides its Contributions) on an "AS IS" BASIS,
      WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
      implied, including, without limitation, any warranties or conditions
      of TITLE, NON-INFRINGEMENT, MERCHANTABILITY, or FITNESS FOR A
      PARTICULAR PURPOSE. You are solely responsible for determining the
      appropriateness of using or redistributing the Work and assume any
      risks associated with Your exercise of permissions under this License.

   8. Limitation of Liability. In no event and under no legal theory,
      whether in tort (including negligence), contract, or otherwise,
      unless required by applicable law (such as deliberate and grossly
      negligent acts) or agreed to in writing, shall any Contributor be
      liable to You for damages, including any direct, indirect, special,
      incidental, or consequential damages of any character arising as a
      result of this License or out of the use or inability to use the
      Work (including but not limited to damages for loss of goodwill,
      work stoppage, computer failure or malfunction, or any and all
      other commercial damages or losses), even if such Contributor
      has been advised of the possibility of such damages.

   9. Accepting Warranty or Additional Liability. While redistributing
      the Work or Derivative Works thereof, You may choose to offer,
      and charge a fee for, acceptance of support, warranty, indemnity,
      or other liability obligations and/or rights consistent with this
      License. However, in accepting such obligations, You may act only
      on Your own behalf and on Your sole responsibility, not on behalf
      of any other Contributor, and only if You agree to indemnify,
      defend, and hold each Contributor harmless for any liability
      incurred by, or claims asserted against, such Contributor by reason
      of your accepting any such warranty or additional liability.

   END OF TERMS AND CONDITIONS

   APPENDIX: How to apply the Apache License to your work.

      To apply the Apache License to your work, attach the following
      boilerplate notice, with the fields enclosed by brackets "[]"
      replaced with your own identifying information. (Don't include
      the brackets!)  The text should be enclosed in the appropriate
      comment syntax for the file format. We also recommend that a
      file or class name and description of purpose be included on the
      same "printed page" as the copyright notice for easier
      identification within third-party archives.

   Copyright [yyyy] [name of copyright owner]

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   You may obtain a copy of the License at

       http://www.apache.org/licenses/LICENSE-2.0

   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
   See the License for the specific language governing permissions and
   limitations under the License.
"""

if __name__ == "__main__":
    sys.exit(main())
