"""The model card (``docs/README.md``) of a packaged bundle: the repository's card, each section marked
``<!-- release:KEY -->`` ... ``<!-- /release:KEY -->`` replaced by the same section of ``card.md`` filled in from the
metadata, the data set's card, the training record and the release's checks. A bundle of K classes takes card.md's
``output_classes`` section as its ``output``: softmax, argmax, the label map's values and the overlay's colours."""

from __future__ import annotations

import json
import os
import re

from monai.bundle import ConfigParser

from unext_monai.release.configs import ReleaseError, dataset_layers
from unext_monai.transforms import OVERLAY_COLOURS

__all__ = ["SECTION", "recipe", "model_card"]

SECTION = re.compile(r"<!-- release:(\w+) -->\n(.*?)<!-- /release:\1 -->\n", re.S)
#: the settings of the packaged train.json that the card's recipe table states
RECIPE = ("dataset_name", "include_normal", "train_on_normal", "learning_rate", "min_learning_rate", "weight_decay",
          "batch_size", "max_epochs", "spatial_size", "in_channels", "deep_supervision", "drop_path", "val_fraction",
          "selection_fraction", "seed", "training_seed", "class_names", "class_key", "cache_memory", "cache_dir")


def recipe(train: dict) -> dict:
    """The training recipe as the packaged ``train.json`` states it (values, or their expressions)."""
    p = ConfigParser(train)
    out = {k: p.get(k) for k in RECIPE if p.get(k) is not None}
    out.update({k: p.get(k)["_target_"] for k in ("optimizer", "lr_scheduler", "base_loss")
                if isinstance(p.get(k), dict) and "_target_" in p.get(k)})
    if isinstance(p.get("train#random_transforms"), list):
        out["augmentation"] = [t.get("_target_") for t in p.get("train#random_transforms") if isinstance(t, dict)]
    return out


def _scores(row: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch")


def postprocessing(inference: dict) -> str:
    """What the packaged ``inference.json`` does by default after the threshold or argmax, in a sentence."""
    keys = ("keep_largest_component", "min_lesion_area", "min_lesion_confidence")
    defaults = []
    for tta in (False, True):
        parser = ConfigParser(inference)
        parser["tta"] = tta
        defaults.append({k: parser.get_parsed_content(k) if k in parser else None for k in keys})
    (keep, area, plain), tta = defaults[0].values(), defaults[1]["min_lesion_confidence"]
    done = []
    if keep:
        done.append("keeps only the largest connected region, per class (`keep_largest_component`)")
    if area:
        done.append(f"removes regions under {area} pixels (`min_lesion_area`)")
    if plain:
        done.append(f"marks no lesion where the mean lesion probability over the largest region is under {plain:g} "
                    f"(`min_lesion_confidence`{f'; {tta:g} with `--tta True`' if tta != plain else ''})")
    if not done:
        return "Nothing else by default (`--keep_largest_component True`, `--min_lesion_area N` and " \
               "`--min_lesion_confidence C` are there to be set)."
    return "By default it also " + ", ".join(done[:-1]) + (" and " if len(done) > 1 else "") + done[-1] + \
        "; each can be set on the command line."


def model_card(repo_card: str, meta: dict, *, name: str, card: dict, dataset: str, train: dict, record: dict,
               checks: dict, n_params: int, notes: str = "", inference: dict | None = None) -> str:
    """The packaged bundle's card from the repository's ``repo_card``; ``checks``: ``date``, ``ts_diff``,
    ``onnx_diff``, ``opset``, ``onnxruntime``, ``zeroed`` (weight values set to 0) and ``zeroed_below``; ``notes``:
    markdown for the Performance section, as it is."""
    with open(os.path.join(os.path.dirname(__file__), "card.md"), encoding="utf-8") as f:
        sections = dict(SECTION.findall(f.read()))
    fmt = meta["network_data_format"]
    (image_name, image), (pred_name, pred) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    output_classes = sections.pop("output_classes")
    if pred["num_channels"] > 1:
        sections["output"] = output_classes
    if sorted(sections) != sorted(key for key, _ in SECTION.findall(repo_card)):
        raise ReleaseError(f"the marked sections of the repository's model card are not card.md's {sorted(sections)}")
    classes = [pred["channel_def"][str(i)] for i in range(pred["num_channels"])]
    split = record.get("split") or {}
    fields = dict(meta=meta, card=card, name=name, task=meta["task"].lower(), n_params=n_params, **checks,
                  image_name=image_name, image=image, image_shape=", ".join(map(str, image["spatial_shape"])),
                  channels=", ".join(image["channel_def"].values()), pred_name=pred_name, pred=pred,
                  pred_shape=", ".join(map(str, pred["spatial_shape"])), postprocessing=postprocessing(inference or {}),
                  references="\n".join(f"{i}. {r}" for i, r in enumerate(meta["references"], 1)),
                  recipe="\n".join(f"| {k} | `{v if isinstance(v, str) else json.dumps(v)}` |"
                                   for k, v in recipe(train).items()),
                  classes=", ".join(classes), notes=notes, limit_classes="One lesion class", legend="", demo_note="",
                  trained_on="", negligible="")
    if len(classes) > 1:
        fields["limit_classes"] = (f"{len(classes) - 1} classes ({', '.join(classes[1:])}), one per pixel: the pixels "
                                   "of one lesion may fall in different classes")
        fields["legend"] = "\n".join(f"| {value} | {c} | {OVERLAY_COLOURS[(value - 1) % len(OVERLAY_COLOURS)][0]} |"
                                     for value, c in enumerate(classes[1:], 1))
    if "demo" in dataset_layers(dataset):
        fields["demo_note"] = ("**These weights come from the built-in synthetic demo set: they segment nothing real "
                               "and exist to exercise the pipeline.**")
    if split:
        parts = ", ".join(f"{split[k]} {k[2:]}" for k in ("n_training", "n_selection", "n_validation") if k in split)
        fields["trained_on"] = (f"These weights were trained on **{split.get('dataset', dataset)}** ({parts} images; "
                                f"seeded split, seed {split.get('seed')}).")
    fields["epochs"] = (f"These weights: {record['epochs']} epoch(s) trained; `models/model.pt` holds the weights of "
                        "the best epoch on the selection part." if record.get("epochs") else "How these weights were "
                        "trained (epochs and overrides of the recipe) is stated in the changelog of "
                        "`configs/metadata.json`.")
    best = record.get("best")
    performance = [f"Best score on the selection part during training (epoch {best['epoch']}): {_scores(best)}."] \
        if best else []
    if meta["eval_metrics"]:
        performance.insert(0, "Evaluation of these weights (`eval_metrics` in `configs/metadata.json`; per image at "
                           f"the picture's own size, mean over images): {_scores(meta['eval_metrics'])}.")
    fields["performance"] = "\n\n".join(performance) or "No metrics were recorded for these weights."
    if checks["zeroed"]:
        fields["negligible"] = (f" {checks['zeroed']} weight values below {checks['zeroed_below']:g} (units that "
                                "weight decay switched off) were set to 0 in all three files: float32 CPU arithmetic "
                                "on them and on their products (subnormal numbers) is many times slower, and they "
                                "change no output.")
    text = SECTION.sub(lambda m: sections[m.group(1)].format_map(fields), repo_card)
    text = re.sub(r"\n{3,}", "\n\n", text)  # the paragraphs of empty fields
    return "".join(line.rstrip() + "\n" for line in text.strip("\n").splitlines())
