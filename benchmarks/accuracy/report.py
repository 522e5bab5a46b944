"""Write the accuracy results page, ``docs/results.md``, from finished runs and their evaluations.

Inputs per data set NAME (``--runs NAME=RUN_FOLDER:LOG_FILE``):
- ``benchmarks/results/accuracy_NAME.json``: ``benchmarks/accuracy/evaluate_run.py``'s output (post-processing chosen
  on the selection split; validation metrics with and without TTA; lesion-free images marked);
- ``RUN_FOLDER/eval/val_metrics.csv`` (selection metrics per epoch), ``RUN_FOLDER/eval/split.json``,
  ``RUN_FOLDER/models/model.pt``; ``LOG_FILE``: the training log (epoch times, resumes).
``--precision_runs FP32_RUN BF16_RUN`` adds the curves of the fp32 / bf16 comparison (and their validation Dice where
``evaluate.json`` was run on them: ``python -m monai.bundle run evaluating --bundle_root RUN --config_file
"['configs/train.json','configs/evaluate.json','configs/busi.json']" --dataset_dir ...``).
``--keep NAME ...`` copies sections (a data set's, or ``precision``: the fp32 / bf16 one) from the existing page
unchanged, for runs whose folders are gone.

Outputs: ``docs/results.md`` and PNGs in ``docs/results/`` (matplotlib: ``pip install -e ".[results]"``)::

    python benchmarks/accuracy/report.py --runs isic2018=../runs/isic2018_r1:../runs/isic2018_r1.log \\
        busi=../runs/busi_r1:../runs/busi_r1.log --precision_runs ../runs/busi_fp32 ../runs/busi_bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from evaluate_run import config_files  # noqa: E402  (this script's folder)
from train_speed import epoch_times  # noqa: E402

sys.path.insert(0, str(ROOT))
from unext_monai.io import write_atomic  # noqa: E402

PAPER = {"isic2018": {"Dice": 0.8970, "IoU": 0.8170}, "busi": {"Dice": 0.7937, "IoU": 0.6695}}
TARGET = {"isic2018": ("Dice", 0.90), "busi": ("IoU", 0.68)}
TITLE = {"isic2018": "ISIC 2018 Task 1", "busi": "BUSI, benign + malignant (normal images in training)"}


def read_curve(run: str) -> dict[str, np.ndarray]:
    with open(os.path.join(run, "eval", "val_metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def plot_curves(curves: dict[str, dict[str, np.ndarray]], title: str, ylabel: str, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, curve in curves.items():
        ax.plot(curve["epoch"], curve["val_mean_dice"], label=f"Dice{label}")
        ax.plot(curve["epoch"], curve["val_mean_iou"], "--", label=f"IoU{label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def overlays(title: str, weights: str, cases: list[dict], out_png: str) -> None:
    """Image with ground truth (green) and prediction (red) outlines, one panel per case, at the image's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image
    from scipy.ndimage import binary_erosion

    from unext_monai import UNeXt
    from unext_monai.checkpoint import load_checkpoint_file
    from unext_monai.transforms import LoadMaskd

    net = UNeXt(2, 3, 1).eval()  # the inference network: a run's deep-supervision heads are left out
    net.load_state_dict(load_checkpoint_file(weights, map_location="cpu"))
    fig, axes = plt.subplots(1, len(cases), figsize=(3 * len(cases), 3.2))
    for ax, case in zip(np.atleast_1d(axes), cases):
        rgb = np.asarray(Image.open(case["image"]).convert("RGB"))
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        small = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        with torch.no_grad():
            prob = torch.sigmoid(net(small))
        prob = torch.nn.functional.interpolate(prob, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        pred = prob[0, 0].numpy() > 0.5
        label = LoadMaskd("label")({"label": case["label"]})["label"][0].numpy() > 0.5
        shown = rgb.astype(float) / 255
        for mask, colour in ((label, (0, 1, 0)), (pred, (1, 0, 0))):
            shown[mask & ~binary_erosion(mask, iterations=2)] = colour
        ax.imshow(shown)
        ax.set_title(f"{case['name']}\nDice {case['dice']:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{title}: green = ground truth, red = UNeXt (no post-processing)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def training_account(log_file: str) -> dict:
    text = open(log_file, errors="replace").read()
    times = epoch_times(text)
    starts = text.count("Restored all variables from")
    return {"epochs": len(times), "hours": sum(times) / 3600.0, "resumes": starts}


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _tta_passes(name: str) -> int:
    """How many flipped passes the evaluation's ``--tta True`` ran for data set ``name``: the ``tta_flips`` of its
    configs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(name))
    return len(parser.get("tta_flips"))


def dataset_section(name: str, run: str, log_file: str, docs: str, weights_epoch: int | None = None) -> str:
    """The page's section of one data set; ``weights_epoch``: the epoch the run's ``model.pt`` holds when it is not
    the best selection epoch (a resumed run that restarted its best-model record)."""
    acc = json.load(open(ROOT / "benchmarks" / "results" / f"accuracy_{name}.json"))
    split = json.load(open(os.path.join(run, "eval", "split.json")))
    val = acc["validation"]
    sel = acc["selection"]
    curve = read_curve(run)
    best_epoch = int(curve["epoch"][int(np.nanargmax(curve["val_mean_dice"]))])
    account = training_account(log_file)
    plot_curves({"": curve}, f"UNeXt on {name}: selection split", "selection split (256x256)",
                os.path.join(docs, "results", f"{name}_val_curve.png"))
    dice = {k: v for k, v in val["per_image_dice"].items() if np.isfinite(v)}
    ranked = sorted(dice, key=dice.get)
    items = {it["image"]: it for it in split["validation"]}
    cases = [{**items[p], "dice": dice[p]} for p in ranked[-3:][::-1] + ranked[:3] if p in items]
    overlays(name, os.path.join(run, "models", "model.pt"), cases, os.path.join(docs, "results", f"{name}_cases.png"))
    metric, target = TARGET[name]
    key = {"Dice": "val_mean_dice", "IoU": "val_mean_iou"}[metric]
    got = val["plain"][key]["mean"]
    rows = []
    for label, k in (("Dice", "val_mean_dice"), ("IoU", "val_mean_iou"), ("HD95 (pixels)", "val_hd95")):
        p, t = val["plain"][k], val["tta"][k]
        rows.append(f"| {label} | {p['mean']:.4f} ± {p['std']:.4f} | {t['mean']:.4f} ± {t['std']:.4f} | "
                    f"{p['images']} |")
    sel_tta = acc["selection_tta"]
    cand_rows = []
    for label, m in sel["candidates"].items():
        t = sel_tta["candidates"][label]
        cand_rows.append(f"| {label} | {m['val_mean_dice']:.4f} | {m['val_mean_iou']:.4f} | "
                         f"{_share(m.get('marked_lesion_free'))} | {t['val_mean_dice']:.4f} | "
                         f"{t['val_mean_iou']:.4f} | {_share(t.get('marked_lesion_free'))} |")
    cands = "\n".join(cand_rows)
    normal = ""
    if "normal" in acc:
        n, nt = acc["normal"], acc["normal_tta"]
        normal = (f"\nLesion-free (normal) images of the validation split: the model, with the chosen post-processing, "
                  f"marks lesion pixels on **{n['marked']} of {n['images']}** "
                  f"({n['marked'] / max(n['images'], 1):.0%}; target at most 15%), mean marked area "
                  f"{n['mean_marked_area']:.2%} of the image where it does; with flip TTA and its post-processing, "
                  f"{nt['marked']} of {nt['images']} ({nt['marked'] / max(nt['images'], 1):.0%}).\n")
    paper = PAPER[name]
    released = (f"; the run's `models/model.pt`, the released weights, holds epoch {weights_epoch}"
                if weights_epoch is not None and weights_epoch != best_epoch else "")
    if sel.get("rule_pick") and sel["rule_pick"] != sel["chosen"]:
        released += (f". Post-processing: the selection rule picks {sel['rule_pick']}; the release takes "
                     f"{sel['chosen']}: {sel['why_not_the_rule']}")
    sizes = ", ".join(f"{len(split[k])} {k}" for k in ("training", "selection", "validation"))
    tta_gain = val["tta"]["val_mean_dice"]["mean"] - val["plain"]["val_mean_dice"]["mean"]
    return f"""## {TITLE[name]}

Split (seed {split['meta']['seed']}, `eval/split.json`): {sizes}. Trained {account['epochs']} epochs
({account['hours']:.1f} hours of epochs on the machine below, in {account['resumes'] + 1} piece(s)); the best
selection Dice was at epoch {best_epoch}{released}.

Post-processing chosen on the selection split (by {sel['key']}), then applied to the validation split; with flip
TTA, whose averaged probabilities are less extreme, it is chosen again the same way:

| candidate | selection Dice | selection IoU | lesion-free images marked | with TTA: Dice | IoU | marked |
|---|---|---|---|---|---|---|
{cands}

Chosen: **{sel['chosen']}**; with flip TTA: **{sel_tta['chosen']}**.

Validation split ({val['images']} images; per image at the image's own size, mean ± standard deviation over images):

| metric | plain | with flip TTA | images |
|---|---|---|---|
{chr(10).join(rows)}

Target: {metric} >= {target:.2f} on the validation split: **{got:.4f}, {'met' if got >= target else 'missed'}**.
Paper (its own 80/20 protocol, 3 runs): Dice {paper['Dice']:.4f}, IoU {paper['IoU']:.4f}.
Flip TTA ({_tta_passes(name)} passes, with its own post-processing) changes Dice by {tta_gain:+.4f}
and costs {val['seconds_per_image']['tta'] / val['seconds_per_image']['plain']:.1f}x the time per image
({val['seconds_per_image']['plain'] * 1000:.0f} ms -> {val['seconds_per_image']['tta'] * 1000:.0f} ms of the whole
evaluation per image); it is off by default (`--tta True`).
{normal}
![selection curve](results/{name}_val_curve.png)

Best three and worst three validation cases (Dice without post-processing):

![cases](results/{name}_cases.png)
"""


def precision_section(fp32_run: str, bf16_run: str, docs: str) -> str:
    curves = {" fp32": read_curve(fp32_run), " bf16": read_curve(bf16_run)}
    plot_curves(curves, "BUSI, the same recipe in fp32 and bf16", "selection split (256x256)",
                os.path.join(docs, "results", "busi_fp32_bf16.png"))
    last = {k: (c["val_mean_dice"][-1], np.nanmax(c["val_mean_dice"])) for k, c in curves.items()}
    epochs = {k: int(c["epoch"][-1]) for k, c in curves.items()}
    validation = {k: _evaluation(run) for k, run in ((" fp32", fp32_run), (" bf16", bf16_run))}
    held_out = ""
    if all(validation.values()):
        f32, b16 = validation[" fp32"], validation[" bf16"]
        held_out = (f"\nOn the validation split (`evaluate.json`, each run's `model.pt`, no post-processing): Dice "
                    f"{f32['val_mean_dice']:.4f} (fp32) and {b16['val_mean_dice']:.4f} (bf16), a difference of "
                    f"{abs(f32['val_mean_dice'] - b16['val_mean_dice']) * 100:.2f} points; IoU "
                    f"{f32['val_mean_iou']:.4f} and {b16['val_mean_iou']:.4f}.\n")
    return f"""## fp32 and bf16 training, side by side

The same BUSI recipe and seed, shortened to {epochs[' bf16']} epochs (the cosine schedule over them), once in float32
and once under bfloat16 autocast (the default on this CPU): final selection Dice {last[' fp32'][0]:.4f} (fp32) and
{last[' bf16'][0]:.4f} (bf16), a difference of {abs(last[' fp32'][0] - last[' bf16'][0]) * 100:.2f} points; best
{last[' fp32'][1]:.4f} and {last[' bf16'][1]:.4f}.
{held_out}
![fp32 and bf16](results/busi_fp32_bf16.png)
"""


def _evaluation(run: str) -> dict[str, float] | None:
    """The means of ``<run>/eval/evaluation/metrics.csv`` (MONAI's MetricsSaver), if the run was evaluated."""
    from unext_monai.release.configs import load_metrics

    path = os.path.join(run, "eval", "evaluation", "metrics.csv")
    return load_metrics(path) if os.path.isfile(path) else None


PRECISION_TITLE = "fp32 and bf16 training, side by side"


def kept_section(page: str, title: str) -> str:
    """The section ``## <title>`` of an existing results page (up to the next ``## `` heading), for a data set whose
    run folder is gone; a ``ValueError`` if the page has none."""
    lines = page.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == f"## {title}"]
    if not starts:
        raise ValueError(f"the existing page has no section '## {title}' to keep")
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[starts[0]:end]).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=[], help="NAME=RUN_FOLDER:LOG_FILE")
    parser.add_argument("--precision_runs", nargs=2, default=None, metavar=("FP32_RUN", "BF16_RUN"))
    parser.add_argument("--weights_epoch", nargs="*", default=[], metavar="NAME=EPOCH",
                        help="the epoch a run's model.pt holds, where it is not the best selection epoch")
    parser.add_argument("--keep", nargs="*", default=[], choices=[*TITLE, "precision"],
                        help="sections to copy from the existing docs/results.md (their run folders are gone)")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--header", default=str(ROOT / "benchmarks" / "accuracy" / "results_header.md"))
    parser.add_argument("--footer", default=str(ROOT / "benchmarks" / "accuracy" / "results_protocol.md"))
    args = parser.parse_args()
    os.makedirs(os.path.join(args.docs, "results"), exist_ok=True)
    page_file = Path(args.docs, "results.md")
    kept = {}
    for name in args.keep:
        title = PRECISION_TITLE if name == "precision" else TITLE[name]
        kept[name] = kept_section(page_file.read_text() if page_file.is_file() else "", title)
    built = dict(kept)
    epochs = dict(spec.split("=", 1) for spec in args.weights_epoch)
    for spec in args.runs:
        name, rest = spec.split("=", 1)
        if name in kept:
            parser.error(f"{name}: both --runs and --keep")
        run, log_file = rest.rsplit(":", 1)
        built[name] = dataset_section(name, run, log_file, args.docs, int(epochs[name]) if name in epochs else None)
    sections = [built[name] for name in TITLE if name in built]  # the page's order: ISIC 2018, BUSI
    if args.precision_runs:
        sections.append(precision_section(*args.precision_runs, args.docs))
    elif "precision" in kept:
        sections.append(kept["precision"])
    text = open(args.header).read() + "\n" + "\n".join(sections) + "\n" + open(args.footer).read()
    write_atomic(page_file, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {page_file}")


if __name__ == "__main__":
    main()
