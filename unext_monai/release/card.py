"""The model card (``docs/README.md``) of a packaged bundle, from the repository's card as a template.

The repository's ``docs/README.md`` is the development bundle's card in the model zoo's shape. Its sections between
``<!-- release:KEY -->`` and ``<!-- /release:KEY -->`` describe the development bundle; the release replaces each of
them with the text :func:`packaged_sections` makes for the packaged bundle (its data set, recipe, weights, metrics,
commands, licence), keeps the rest as written and drops the markers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from unext_monai.release.datasets import DatasetCard

__all__ = ["render_card", "packaged_sections", "recipe", "SECTION"]

SECTION = re.compile(r"<!-- release:(?P<key>\w+) -->\n(?P<body>.*?)<!-- /release:(?P=key) -->\n", re.S)


def render_card(template: str, sections: dict[str, str]) -> str:
    """``template`` with each marked section's body replaced by ``sections[key]``.

    Raises:
        ValueError: the template's sections and ``sections`` differ, a marker is left, or a line of the result ends
            in whitespace.
    """
    keys = [m.group("key") for m in SECTION.finditer(template)]
    if sorted(keys) != sorted(sections):
        raise ValueError(f"model card template sections {sorted(keys)} differ from the generated {sorted(sections)}")
    text = SECTION.sub(lambda m: sections[m.group("key")].rstrip("\n") + "\n", template)
    if "<!-- release:" in text or "<!-- /release:" in text:
        raise ValueError("model card template: unmatched section marker")
    bad = [i + 1 for i, line in enumerate(text.splitlines()) if line != line.rstrip()]
    if bad:
        raise ValueError(f"model card: trailing whitespace on lines {bad}")
    return text.rstrip("\n") + "\n"


def recipe(train: dict) -> dict[str, Any]:
    """The training recipe as the packaged ``train.json`` states it (values, or their expressions)."""
    from monai.bundle import ConfigParser

    p = ConfigParser(train)
    out: dict[str, Any] = {}
    for key in ("dataset_name", "include_normal", "train_on_normal", "learning_rate", "min_learning_rate",
                "weight_decay", "batch_size", "max_epochs", "spatial_size", "in_channels", "deep_supervision",
                "drop_path", "val_fraction", "selection_fraction", "seed", "training_seed"):
        if p.get(key) is not None:
            out[key] = p.get(key)
    for key in ("optimizer", "lr_scheduler", "base_loss"):
        item = p.get(key)
        if isinstance(item, dict) and "_target_" in item:
            out[key] = item["_target_"]
    aug = p.get("train#random_transforms")
    if isinstance(aug, list):
        out["augmentation"] = [t.get("_target_") for t in aug if isinstance(t, dict)]
    return out


def _value(v: Any) -> str:
    return f"`{v}`" if isinstance(v, str) else f"`{json.dumps(v)}`"


def _metrics_line(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def _block(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def packaged_sections(
    meta: dict,
    *,
    name: str,
    card: DatasetCard,
    dataset: str,
    train: dict,
    record: dict,
    checks: dict,
    n_params: int,
) -> dict[str, str]:
    """The text of each template section for the packaged bundle ``name``."""
    image_name, image = next(iter(meta["network_data_format"]["inputs"].items()))
    pred_name, pred = next(iter(meta["network_data_format"]["outputs"].items()))
    channels = ", ".join(image["channel_def"].values())
    split = record.get("split") or {}
    demo = dataset == "demo"
    overview = [
        f"{meta['description']} Bundle `{name}`, version {meta['version']}: {meta['task'].lower()}.",
        "",
        f"The network is UNeXt with {n_params:,} parameters. The bundle runs with MONAI and the packages "
        "`configs/metadata.json` lists (`required_packages_version`); the code its configs use (network, transforms, "
        "handlers, data readers) travels in `scripts/`, a copy of the `unext_monai` package it was released from, "
        "imported with the bundle folder on `sys.path` as in the MONAI model zoo.",
        "",
        "The weights are committed in `models/`: `model.pt` (state dict for `network_def`), `model.ts` (TorchScript "
        "with `metadata.json` and `inference.json` embedded) and `model.onnx`. There is no `large_files.yml`: no "
        "download host serves them, so they travel with the bundle.",
    ]
    if demo:
        overview += ["", "**These weights come from the built-in synthetic demo set: they segment nothing real and "
                         "exist to exercise the pipeline.**"]
    data = [
        f"Source: {meta['data_source']}.",
        "",
        f"Images: {meta['image_classes']}. Labels: {meta['label_classes']}.",
        "",
        f"Layout for training and evaluation: {card.layout} Every pair is opened and checked before training; the "
        "split into training, selection (picks the best epoch) and validation (held out, reported by evaluation) "
        "parts is written to `eval/split.json` and reused by later runs with the same settings.",
    ]
    if split:
        parts = ", ".join(f"{split[k]} {k[2:]}" for k in ("n_training", "n_selection", "n_validation") if k in split)
        data += ["", f"These weights were trained on **{split.get('dataset', dataset)}** ({parts} images; seeded "
                     f"split, seed {split.get('seed')})."]
    training = ["`configs/train.json` is the recipe for this data set (the repository's `train.json` with its "
                "overlay merged in):", "", "| setting | value |", "|---|---|"]
    training += [f"| {k} | {_value(v)} |" for k, v in recipe(train).items()]
    training += ["", "Any of these can be overridden on the command line (`--max_epochs 50`). Training writes the best "
                     "epoch's weights to `models/model.pt`, over the released ones: copy the bundle first to keep "
                     "them."]
    if record.get("epochs") and record.get("weights_epoch"):
        training += ["", f"These weights: {record['epochs']} epoch(s) trained; `models/model.pt` holds the weights of "
                         f"epoch {record['weights_epoch']['epoch']} (named at release; see the changelog)."]
    elif record.get("epochs"):
        training += ["", f"These weights: {record['epochs']} epoch(s) trained; `models/model.pt` holds the weights of "
                         "the best epoch on the selection part."]
    else:
        training += ["", "How these weights were trained (epochs and overrides of the recipe) is stated in the "
                         "changelog of `configs/metadata.json`."]
    inp = [f"`{image_name}`: {image['dtype']} ({image['num_channels']}, "
           f"{', '.join(map(str, image['spatial_shape']))}), {image['format']} ({channels}) in "
           f"{image['value_range']}: {meta['image_classes']}. PNG, JPEG, BMP, TIFF, DICOM and 2D NIfTI files are read "
           "and resized to the network's size by the bundle's preprocessing."]
    out = [f"`{pred_name}`: {pred['dtype']} ({pred['num_channels']}, {', '.join(map(str, pred['spatial_shape']))}), "
           "one lesion logit per pixel (any real value). The post-processing applies a sigmoid, resizes the "
           "probabilities back to the picture's own size and thresholds them at 0.5: 1 is lesion, 0 is background.",
           "",
           "Inference writes `<name>_mask.png` (0/255, the picture's size and orientation; `<name>_mask.nii.gz` with "
           "the input's affine for NIfTI) and `<name>_overlay.png` for every input, and `report.json` (what was "
           "segmented, where each output went, what was skipped and why)."]
    perf: list[str] = []
    best = record.get("best")
    if meta.get("eval_metrics"):
        perf += [f"Evaluation of these weights (`eval_metrics` in `configs/metadata.json`; per image at the picture's "
                 f"own size, mean over images): {_metrics_line(meta['eval_metrics'])}."]
    if best:
        perf += ["", f"Best score on the selection part during training (epoch {best.get('epoch')}): "
                     f"{_metrics_line({k: v for k, v in best.items() if k != 'epoch'})}."]
    if record.get("weights_epoch"):
        row = record["weights_epoch"]
        perf += ["", f"Score of these weights on the selection part during training (epoch {row['epoch']}): "
                     f"{_metrics_line({k: v for k, v in row.items() if k != 'epoch'})}."]
    if not perf:
        perf = ["No metrics were recorded for these weights."]
    perf += ["", f"Checked at release ({checks['date']}): `monai.bundle verify_net_in_out` passed; `models/model.ts` "
                 f"matches PyTorch within {checks['ts_max_abs_diff']:.1e}; `models/model.onnx` (opset "
                 f"{checks['onnx_opset']}, dynamic batch and size) matches it within {checks['onnx_max_abs_diff']:.1e} "
                 f"in ONNX Runtime {checks['onnxruntime']}."]
    if checks.get("negligible_zeroed"):
        perf[-1] += (f" {checks['negligible_zeroed']} weight values below {checks['negligible_below']:g} (units that "
                     "weight decay switched off) were set to 0 in all three files: float32 CPU arithmetic on them and "
                     "on their products (subnormal numbers) is many times slower, and they change no output.")
    data_dir = "/path/to/dataset"
    commands = [
        "Run these from the bundle folder: its `scripts/` is imported from there (from elsewhere, put the folder on "
        "`PYTHONPATH`).",
        "",
        "#### Execute training",
        "",
        "```",
        f"python -m monai.bundle run --config_file configs/train.json --dataset_dir {data_dir}",
        "```",
        "",
        "#### Override the `train` config to execute multi-GPU training",
        "",
        "```",
        "torchrun --standalone --nnodes=1 --nproc_per_node=2 -m monai.bundle run --config_file "
        f"\"['configs/train.json','configs/multi_gpu_train.json']\" --dataset_dir {data_dir}",
        "```",
        "",
        "#### Override the `train` config to execute evaluation with the trained model",
        "",
        "```",
        "python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" "
        f"--dataset_dir {data_dir}",
        "```",
        "",
        "It scores `models/model.pt` on the validation part of the split (made by training, or now with the same "
        "settings): mean Dice, IoU, sensitivity, specificity and 95% Hausdorff distance in "
        "`eval/evaluation/metrics.csv`, per image in `eval/evaluation/*_raw.csv` (MONAI's MetricsSaver).",
        "",
        "#### Execute inference",
        "",
        "```",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/pictures "
        "--output_dir /path/to/output",
        "python -m monai.bundle run --config_file configs/inference.json --input_path /path/to/picture.png",
        "```",
        "",
        "`--dataset_dir` is a folder: every picture in it and its subfolders is segmented, except hidden files and "
        "files named like masks or outputs (`*_mask*`, `*_segmentation*`, `*_overlay*`), which `report.json` lists "
        "as skipped. `--input_path` takes one file or folder instead. Outputs go to `--output_dir` (default "
        "`eval/predictions`), which must not be a folder holding inputs.",
        "",
        "`--engine fp32` runs `models/model.onnx` through ONNX Runtime in float32 (the network's masks), `--engine bf16` "
        "through OpenVINO in bfloat16 on CPUs that compute it natively (AVX-512 BF16, AMX), `--engine pytorch` the "
        "network itself; the default is this bundle's `engine` setting. The engines are optional (`pip install "
        "onnxruntime openvino`): without them the network runs, and one log line says so.",
        "",
        "#### Export checkpoint to TorchScript file",
        "",
        "```",
        "python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt "
        "--meta_file configs/metadata.json --config_file configs/inference.json",
        "```",
        "",
        "#### Check the network against the metadata",
        "",
        "```",
        "python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json "
        "--config_file configs/inference.json",
        "```",
    ]
    refs = [f"{i}. {r}" for i, r in enumerate(meta.get("references", []), 1)]
    licence = [
        f"{meta['copyright']}. The code and configuration files (`configs/`, `scripts/`) are licensed under the "
        "Apache License, Version 2.0 (`LICENSE`).",
        "",
        "The weights in `models/` were trained on data with terms of its own, which they inherit (they may be more "
        "restrictive, for example non-commercial): see `docs/data_license.txt`.",
    ]
    return {"overview": _block(overview), "data": _block(data), "training": _block(training), "input": _block(inp),
            "output": _block(out), "performance": _block(perf), "commands": _block(commands),
            "references": _block(refs), "license": _block(licence)}
