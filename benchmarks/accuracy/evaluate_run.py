"""Evaluate a finished training run with the bundle's own evaluate.json, as the results page reports it.

1. Post-processing is chosen on the *selection* split (the split that picked the checkpoint), never on the validation
   split: each candidate of ``--candidates`` (``keep_largest_component`` / ``min_lesion_area`` /
   ``min_lesion_confidence``) is scored there and
   the best mean of ``--key`` wins; with ``--normal``, among the candidates that mark lesion pixels on at most 15% of
   the selection split's lesion-free images (or, if none does, the one that marks fewest).
   With flip test-time augmentation (``--tta True``), whose averaged probabilities move the best gate, the
   post-processing is chosen again, the same way (``selection_tta``); ``--choose`` overrides only the plain pick.
2. The validation split is scored with the chosen post-processing, without and with flip test-time augmentation
   (each with its own pick; TTA's gain and its cost in seconds per image).
3. With ``--normal``, the images of the validation split that have no lesion (BUSI's normal class) are run through
   the same pipeline (plain and with TTA) and the ones where the model marks any lesion pixel are counted.

Writes ``<out>/accuracy_<name>.json`` (and keeps MONAI's CSV reports under ``<run>/eval/evaluation_*``)::

    python benchmarks/accuracy/evaluate_run.py --name busi --run ../runs/busi_r1 --dataset_dir ../shared/data/busi \\
        --key val_mean_iou --normal
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
#: every candidate sets every post-processing option (a data set's overlay may set other defaults)
CANDIDATES = {
    "none": {"keep_largest_component": False, "min_lesion_area": 0, "min_lesion_confidence": 0},
    **{"largest component" + (f" >= {a} px" if a else ""): {"keep_largest_component": True, "min_lesion_area": a,
                                                            "min_lesion_confidence": 0}
       for a in (0, 100, 400, 1000, 2000, 4000)},
    **{f"largest component, confidence >= {c}": {"keep_largest_component": True, "min_lesion_area": 0,
                                                 "min_lesion_confidence": c} for c in (0.85, 0.88, 0.9, 0.92, 0.94)},
}
#: the most lesion-free images a chosen post-processing may mark on the selection split (with --normal)
MAX_MARKED = 0.15


def config_files(name: str) -> list[str]:
    """The configs the evaluation runs for data set ``name``, in the order they apply."""
    return [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), str(CONFIGS / f"{name}.json")]


def evaluate(args: argparse.Namespace, out_name: str, **override) -> dict:
    """Run evaluate.json (train.json + evaluate.json + the data set's overlay) in this process; return the means,
    the per-image values and the seconds per image."""
    from monai.bundle import ConfigWorkflow

    out = Path(args.run) / "eval" / out_name
    wf = ConfigWorkflow(
        config_file=config_files(args.name),
        workflow_type="eval", bundle_root=str(args.run), dataset_dir=os.path.abspath(args.dataset_dir),
        output_dir=str(out), num_workers=0, **override,
    )
    wf.initialize()
    n_images = len(wf.parser.get_parsed_content("eval_datalist"))
    start = time.perf_counter()
    wf.run()
    seconds = time.perf_counter() - start
    wf.finalize()
    means = {}
    with open(out / "metrics.csv") as f:
        for name, value in csv.reader(f):
            means[name] = float(value)
    per_image = {}
    for metric in ("val_mean_dice", "val_mean_iou", "val_hd95"):
        with open(out / f"{metric}_raw.csv") as f:
            per_image[metric] = {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}
    return {"means": means, "per_image": per_image, "images": n_images, "seconds_per_image": seconds / n_images}


def summary(per_image: dict[str, float]) -> dict:
    values = np.array([v for v in per_image.values() if np.isfinite(v)])
    return {"mean": float(values.mean()), "std": float(values.std()), "images": int(values.size)}


def marked_normals(args: argparse.Namespace, chosen: dict, part: str = "validation") -> dict:
    """How many lesion-free images of the split's ``part`` get lesion pixels from inference.json with ``chosen``."""
    from monai.bundle import ConfigParser, ConfigWorkflow
    from PIL import Image

    from unext_monai.release.configs import apply_known_entries

    split = json.load(open(Path(args.run) / "eval" / "split.json"))
    normals = [it for it in split[part] if it.get("class") == "normal"]
    tag = "_".join(f"{k}{v}" for k, v in sorted(chosen.items()))
    folder = Path(args.run) / "eval" / f"normal_inputs_{part}"
    folder.mkdir(parents=True, exist_ok=True)
    for item in normals:
        link = folder / os.path.basename(item["image"])
        if not link.exists():
            link.symlink_to(item["image"])
    out = Path(args.run) / "eval" / f"normal_predictions_{part}_{tag}"
    # inference.json with the overlay's values for its own entries, as the packaged bundle has them
    config = apply_known_entries(ConfigParser.load_config_file(str(CONFIGS / "inference.json")),
                                 ConfigParser.load_config_file(str(CONFIGS / f"{args.name}.json")))
    config_file = Path(args.run) / "eval" / "inference_config.json"
    config_file.write_text(json.dumps(config, indent=2))
    wf = ConfigWorkflow(config_file=str(config_file), workflow_type="infer", bundle_root=str(args.run),
                        input_path=str(folder), output_dir=str(out), overlay=False, **chosen)
    wf.initialize()
    wf.run()
    wf.finalize()
    areas = {}
    for item in normals:
        mask = out / (Path(item["image"]).stem + "_mask.png")
        areas[item["name"]] = float((np.asarray(Image.open(mask)) > 127).mean())
    marked = sorted(name for name, area in areas.items() if area > 0)
    return {"images": len(areas), "marked": len(marked), "marked_names": marked,
            "mean_marked_area": float(np.mean([areas[n] for n in marked])) if marked else 0.0}


def choose_post_processing(args: argparse.Namespace, tta: bool) -> dict:
    """Score every candidate of ``--candidates`` on the selection split, with or without flip TTA, and pick one: the
    best mean of ``--key`` (with ``--normal``, among those that mark at most :data:`MAX_MARKED` of the split's
    lesion-free images; if none does, the one that marks fewest). TTA averages probabilities, which moves the
    lesion-confidence gate's best value, so TTA gets its own pick."""
    scores, marked = {}, {}
    for label in args.candidates:
        options = {**CANDIDATES[label], **({"tta": True} if tta else {})}
        folder = ("selection_tta_" if tta else "selection_") + label.replace(" ", "_").replace(">=", "min")
        scores[label] = evaluate(args, folder, eval_split="selection", **options)["means"]
        if args.normal:
            counted = marked_normals(args, options, "selection")
            marked[label] = counted["marked"] / max(counted["images"], 1)
            scores[label]["marked_lesion_free"] = marked[label]
        print(f"selection{' with TTA' if tta else ''}, {label}: {scores[label]}", flush=True)
    allowed = [label for label in args.candidates if not args.normal or marked[label] <= MAX_MARKED]
    if allowed:
        best = max(allowed, key=lambda label: scores[label][args.key])
    else:
        best = min(args.candidates, key=lambda label: (marked[label], -scores[label][args.key]))
    return {"key": args.key, "candidates": scores, "chosen": best, "options": CANDIDATES[best]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the data set's overlay: configs/NAME.json")
    parser.add_argument("--run", required=True, help="the training run's bundle_root (models/, eval/)")
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--key", default="val_mean_dice", help="the metric that picks the post-processing")
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), help=f"of {list(CANDIDATES)}")
    parser.add_argument("--normal", action="store_true", help="count lesion-free validation images marked")
    parser.add_argument("--choose", default=None,
                        help="release this candidate instead of the rule's pick (recorded with --why, and the rule's "
                             "pick beside it)")
    parser.add_argument("--why", default="", help="why --choose departs from the rule (recorded)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    plain_choice = choose_post_processing(args, tta=False)
    rule_pick = plain_choice["chosen"]
    if args.choose:
        if args.choose not in args.candidates:
            parser.error(f"--choose {args.choose!r} is not one of --candidates")
        plain_choice["chosen"], plain_choice["options"] = args.choose, CANDIDATES[args.choose]
    chosen = plain_choice["options"]
    tta_choice = choose_post_processing(args, tta=True)
    tta_chosen = {**tta_choice["options"], "tta": True}  # the overlay's tta_flips: the training's flips
    plain = evaluate(args, "evaluation", **chosen)
    tta = evaluate(args, "evaluation_tta", **tta_chosen)
    result = {
        "command": "python " + shlex.join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "selection": {**plain_choice, "rule_pick": rule_pick,
                      "why_not_the_rule": args.why if plain_choice["chosen"] != rule_pick else ""},
        "selection_tta": tta_choice,
        "validation": {
            "images": plain["images"],
            "plain": {m: summary(v) for m, v in plain["per_image"].items()},
            "plain_means": plain["means"],
            "tta": {m: summary(v) for m, v in tta["per_image"].items()},
            "tta_means": tta["means"],
            "seconds_per_image": {"plain": plain["seconds_per_image"], "tta": tta["seconds_per_image"]},
            "per_image_dice": plain["per_image"]["val_mean_dice"],
        },
    }
    if args.normal:
        result["normal"] = marked_normals(args, chosen)
        result["normal_tta"] = marked_normals(args, tta_chosen)
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"accuracy_{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result["validation"].items() if k != "per_image_dice"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
