"""A K-class model's per-class scores and diagnosis confusion, beside a binary model's lesion IoU on the same images.

Both models run through the repository's ``evaluate.json`` pipeline (preprocessing, network, post-processing, at the
picture's own size) on one part of a training run's ``split.json``. Per image: Dice and IoU of each class present in
the ground truth, the lesion IoU (any class against any class), and the predicted class of the lesion (the class of
most lesion pixels, or "no lesion"), tabulated against the image's diagnosis. The K-class model's post-processing
is chosen on the selection part as ``evaluate_run.py`` chooses it; the binary model keeps its data set's defaults.

    python benchmarks/accuracy/class_confusion.py --split ../runs/busi_k/eval/split.json \\
        --classes_ckpt ../runs/busi_k/models/model.pt --binary_ckpt bundle/unext_busi/models/model.pt \\
        --class_names benign malignant --out benchmarks/results/busi_classes

Writes ``<out>.json`` (per image and summary) and ``<out>.md`` (the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_run import CANDIDATES, MAX_MARKED  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def _parser(split: str, part: str, overrides: dict, overlay: str):
    from monai.bundle import ConfigParser

    with open(split, encoding="utf-8") as f:
        dataset_dir = json.load(f)["meta"]["dataset_dir"]
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in ("train.json", "evaluate.json", overlay)])
    parser.update({"split_dir": os.path.dirname(os.path.abspath(split)), "eval_split": part, "bundle_root": "/tmp",
                   "dataset_dir": dataset_dir, "device": "$torch.device('cpu')", **overrides})
    return parser


def network_outputs(ckpt: str, split: str, part: str, overrides: dict, overlay: str = "busi.json") -> list[dict]:
    """The preprocessed items of ``part`` of ``split`` with ``ckpt``'s logits as ``pred``."""
    from unext_monai.checkpoint import load_checkpoint_file

    parser = _parser(split, part, overrides, overlay)
    network = parser.get_parsed_content("network")
    state = load_checkpoint_file(ckpt, map_location="cpu")
    network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    network.eval()
    inferer, dataset = parser.get_parsed_content("validate#inferer"), parser.get_parsed_content("validate#dataset")
    with torch.no_grad():
        return [{**item, "pred": inferer(item["image"][None], network)[0], "preprocessing": dataset.transform}
                for item in dataset]


def label_maps(items: list[dict], split: str, part: str, overrides: dict, overlay: str = "busi.json") -> list[dict]:
    """The post-processed label maps (numpy, values 0..K) of :func:`network_outputs` and the ground truth."""
    from monai.transforms import Invertd

    # the last transform one-hot encodes both for the metrics: the label maps are wanted here
    post = _parser(split, part, overrides, overlay).get_parsed_content("validate#postprocessing").transforms[:-1]
    out = []
    for item in items:
        pre, item = item["preprocessing"], deepcopy({k: v for k, v in item.items() if k != "preprocessing"})
        for t in post:
            if isinstance(t, Invertd):  # the inverse is of the very transforms that made the item
                t.transform = pre
            item = t(item)
        out.append({"name": item.get("name"), "class": item.get("class"),
                    "pred": np.asarray(item["pred"][0]).astype(np.int64),
                    "label": np.asarray(item["label"][0]).astype(np.int64)})
    return out


def _overlap(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    inter, total = float(np.logical_and(p, t).sum()), float(p.sum() + t.sum())
    return 2 * inter / total, inter / (total - inter)


def score(items: list[dict], class_names: list[str]) -> list[dict]:
    """Per image: ``dice``/``iou`` per class in the ground truth, ``lesion_iou`` (NaN without lesion), the predicted
    class of the lesion."""
    rows = []
    for it in items:
        p, t = it["pred"], it["label"]
        row = {"name": it["name"], "diagnosis": it["class"], "dice": {}, "iou": {}}
        for k, c in enumerate(class_names, 1):
            if (t == k).any():
                row["dice"][c], row["iou"][c] = _overlap(p == k, t == k)
        row["lesion_iou"] = _overlap(p > 0, t > 0)[1] if (t > 0).any() else float("nan")
        counts = np.bincount(p[p > 0], minlength=len(class_names) + 1)[1:]
        row["predicted"] = class_names[int(counts.argmax())] if counts.sum() else "no lesion"
        rows.append(row)
    return rows


def per_class_mean(rows: list[dict], what: str, class_names: list[str]) -> dict[str, float]:
    means = {c: float(np.mean([r[what][c] for r in rows if c in r[what]])) for c in class_names}
    means["mean"] = float(np.mean(list(means.values())))
    return means


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", required=True, help="the K-class run's eval/split.json")
    ap.add_argument("--classes_ckpt", required=True)
    ap.add_argument("--binary_ckpt", required=True)
    ap.add_argument("--class_names", nargs="+", required=True)
    ap.add_argument("--class_key", default="class")
    ap.add_argument("--out", required=True, help="output path without suffix")
    args = ap.parse_args(argv)
    names = list(args.class_names)
    classes = {"class_names": names, "class_key": args.class_key}

    # post-processing chosen on the selection part as evaluate_run.py chooses it: the best mean foreground Dice
    # among the candidates that mark at most MAX_MARKED of its lesion-free images
    selection = network_outputs(args.classes_ckpt, args.split, "selection", classes)
    choice = {}
    for name, candidate in CANDIDATES.items():
        rows = score(label_maps(selection, args.split, "selection", {**classes, **candidate}), names)
        free = [r for r in rows if r["diagnosis"] == "normal"]
        choice[name] = {"dice": per_class_mean(rows, "dice", names)["mean"],
                        "marked lesion-free": sum(r["predicted"] != "no lesion" for r in free) / max(1, len(free))}
    fewest = min(c["marked lesion-free"] for c in choice.values())
    allowed = [n for n, c in choice.items() if c["marked lesion-free"] <= max(MAX_MARKED, fewest)]
    chosen = max(allowed, key=lambda n: choice[n]["dice"])
    overrides = {**classes, **CANDIDATES[chosen]}
    k_rows = score(label_maps(network_outputs(args.classes_ckpt, args.split, "validation", classes), args.split,
                              "validation", overrides), names)
    binary = network_outputs(args.binary_ckpt, args.split, "validation", {})
    b_rows = score(label_maps(binary, args.split, "validation", {}), ["lesion"])
    for k, b in zip(k_rows, b_rows):
        assert k["name"] == b["name"]
        k["binary_lesion_iou"], k["binary_predicted"] = b["lesion_iou"], b["predicted"]

    diagnoses = sorted({r["diagnosis"] for r in k_rows})
    columns = [*names, "no lesion"]
    confusion = {d: Counter(r["predicted"] for r in k_rows if r["diagnosis"] == d) for d in diagnoses}
    with_lesion = [r for r in k_rows if not np.isnan(r["lesion_iou"])]
    free_rows = [r for r in k_rows if np.isnan(r["lesion_iou"])]
    matched = sum(r["predicted"] == r["diagnosis"] for r in with_lesion)
    summary = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "post-processing": {"chosen": chosen, **CANDIDATES[chosen], "selection": choice},
        "dice": per_class_mean(k_rows, "dice", names), "iou": per_class_mean(k_rows, "iou", names),
        "lesion_iou": {"classes model": float(np.mean([r["lesion_iou"] for r in with_lesion])),
                       "binary model": float(np.mean([r["binary_lesion_iou"] for r in with_lesion]))},
        "class_of_lesion_matches_diagnosis": {"matched": matched, "images with a lesion": len(with_lesion)},
        "confusion": {d: {c: confusion[d].get(c, 0) for c in columns} for d in diagnoses},
        "lesion-free images marked": {"classes model": sum(r["predicted"] != "no lesion" for r in free_rows),
                                      "binary model": sum(r["binary_predicted"] != "no lesion" for r in free_rows),
                                      "of": len(free_rows)},
        "torch": torch.__version__,
    }
    marked = summary["lesion-free images marked"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "per_image": k_rows}, indent=1) + "\n")
    lines = [
        f"The validation part of the training run's split ({len(k_rows)} images: "
        + ", ".join(f"{sum(r['diagnosis'] == d for r in k_rows)} {d}" for d in diagnoses) + "), per image at the "
        f"picture's own size; post-processing `{chosen}` (chosen on the selection part as `evaluate_run.py` chooses).",
        "", "| class | Dice | IoU |", "|---|---:|---:|",
        *[f"| {c} | {summary['dice'][c]:.4f} | {summary['iou'][c]:.4f} |" for c in [*names, "mean"]],
        "", "Lesion IoU (any class against the lesion), images with a lesion: "
        f"{summary['lesion_iou']['classes model']:.4f} for this model, "
        f"{summary['lesion_iou']['binary model']:.4f} for the binary `unext_busi` on the same images. "
        f"Lesion-free images marked with a lesion: {marked['classes model']} of {len(free_rows)} "
        f"(binary: {marked['binary model']}).",
        "", f"Predicted class of the lesion (the class of most lesion pixels) against the diagnosis: {matched} of "
        f"{len(with_lesion)} images with a lesion match.",
        "", "| diagnosis \\ predicted | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
        *[f"| {d} | " + " | ".join(str(summary["confusion"][d][c]) for c in columns) + " |" for d in diagnoses],
        "", f"`{summary['command']}`", "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
