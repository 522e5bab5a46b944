"""The paper's comparison and ablation, re-run from the bundle's configs: one row per overlay of ``configs/compare/``.

Every row trains and evaluates one network on BUSI (benign + malignant, as the paper: ``include_normal`` false) with
the bundle's own commands, each in its own process, all rows with one split, one seed and one schedule::

    python -m monai.bundle run training --meta_file configs/metadata.json \\
        --config_file '["configs/train.json","configs/busi.json","configs/compare/<row>.json"]' \\
        --logging_file configs/logging.conf --bundle_root <work_dir>/<row> --dataset_dir <busi> \\
        --include_normal False --max_epochs <epochs>
    python -m monai.bundle run evaluating --meta_file configs/metadata.json --config_file \\
        '["configs/train.json","configs/evaluate.json","configs/busi.json","configs/compare/<row>.json"]' \\
        --logging_file configs/logging.conf --bundle_root <work_dir>/<row> --dataset_dir <busi> --include_normal False

(``--spatial_size`` and ``--seed`` are added where the schedule's differ from 256x256 and 0.) Training picks
``model.pt`` on the selection split; evaluation reports the mean per-image Dice and IoU on the held-out validation
split (``evaluate.json``: at the original image size, threshold 0.5, no test-time augmentation or post-processing).
Then, in this process, on the network the same configs build (``train.json`` + ``busi.json`` + the overlay,
``network_def``):

- parameters;
- GFLOPs per 256x256 image: ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in eval mode. It counts
  the matrix products and convolutions (including transposed ones and attention), 2 FLOPs per multiply-add, and
  nothing else (no normalisation, activation, pooling or interpolation); the paper's "GFLOPs" (fvcore) count one per
  multiply-add, so the tables also give GMACs = GFLOPs / 2;
- CPU latency: batch 1, 256x256, float32, eval mode, ``torch.inference_mode``, 1 thread, the median of
  ``--latency_runs`` runs after 3 warm-up runs;
- training throughput: forward + backward + Adam step at batch 8, 256x256, with the bundle's loss and inferer (bf16
  autocast on CPUs with native bf16, as the bundle trains), ``--threads`` threads, the median of ``--train_steps``
  steps after 2 warm-up steps; the bundle's own per-epoch times (training + selection, from MONAI's log) are kept
  too.

Results: ``<out>.json`` (every row, its commands, schedule, timings and the split's digest) and ``<out>.md``; the
table of ``docs/comparison.md`` (between its markers) is rewritten from the JSON. Resumable: a row already in
``<out>.json`` with the same schedule is skipped unless ``--force``, so the table can be built in pieces::

    python benchmarks/compare.py --dataset_dir ../shared/data/busi --work_dir ../compare_runs          # every row
    python benchmarks/compare.py --dataset_dir ../shared/data/busi --work_dir ../compare_runs --rows unet unext
    python benchmarks/compare.py --table_only                                      # re-render the tables from JSON
    python benchmarks/compare.py --remeasure      # only the cost columns of the trained rows, on an idle machine

``--max_items N`` trains, selects and evaluates on the first N images of each split only: a smoke test of the
pipeline, whose rows are marked as such and never go into ``docs/comparison.md``. ``--plan HOURS`` reads rows run
with ``--epochs 1`` and prints how many epochs of every row fit HOURS (how :data:`EPOCHS` was chosen)::

    OMP_NUM_THREADS=1 python benchmarks/compare.py --dataset_dir ../shared/data/busi --work_dir /tmp/plan_runs \
        --epochs 1 --threads 1 --out /tmp/plan --doc ''
    python benchmarks/compare.py --out /tmp/plan --plan 3
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # this tree's package and train_speed.py, also when imported by the tests
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from train_speed import epoch_times  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "comparison.md"
TABLE_START = "<!-- compare.py table: start -->"
TABLE_END = "<!-- compare.py table: end -->"

#: the schedule of the full table (see docs/comparison.md, "Schedule", for how it was chosen)
EPOCHS = 8
SPATIAL_SIZE = 256
SEED = 0

#: row -> (what it is, the paper's network it stands for or None); the table's order
ROWS: dict[str, tuple[str, str | None]] = {
    "unet": ("MONAI UNet (16-256, 2 residual units)", "UNet"),
    "unetplusplus": ("MONAI BasicUNetPlusPlus (32-256)", "UNet++"),
    "attention_unet": ("MONAI AttentionUnet (16-256)", "Attention UNet"),
    "swin_unetr": ("MONAI SwinUNETR 2D (feature size 24)", "TransUNet"),
    "unext": ("UNeXt (16, 32, 128, 160, 256)", "UNeXt"),
    "unext_conv_stages": ("ablation: stages 4-5 convolutional (ConvStagesUNeXt)", None),
    "unext_noshift": ("ablation: tokenized MLP, shift off (shift_size 1)", None),
    "unext_s": ("widths: UNeXt-S (8, 16, 32, 64, 128)", None),
    "unext_l": ("widths: UNeXt-L (32, 64, 128, 256, 512)", None),
}

#: the paper's Table 1 (Valanarasu & Patel, MICCAI 2022): params (M), CPU inference ms, GFLOPs, BUSI F1 and IoU (%)
PAPER: dict[str, dict[str, Any]] = {
    "UNet": {"params_m": 31.13, "ms": 223, "gflops": 55.84, "busi_f1": "76.35 ± 0.89", "busi_iou": "63.85 ± 1.12"},
    "UNet++": {"params_m": 9.16, "ms": 173, "gflops": 34.65, "busi_f1": "77.54 ± 0.74", "busi_iou": "64.33 ± 0.75"},
    "Attention UNet": {"params_m": 34.88, "ms": 240, "gflops": 66.63, "busi_f1": "77.68 ± 0.85",
                       "busi_iou": "64.91 ± 0.92"},
    "TransUNet": {"params_m": 105.32, "ms": 246, "gflops": 38.52, "busi_f1": "79.30 ± 0.65",
                  "busi_iou": "66.92 ± 0.75"},
    "MedT": {"params_m": 1.60, "ms": 751, "gflops": 21.24, "busi_f1": "76.93 ± 0.11", "busi_iou": "63.89 ± 0.55"},
    "UNeXt": {"params_m": 1.47, "ms": 25, "gflops": 0.57, "busi_f1": "79.37 ± 0.57", "busi_iou": "66.95 ± 1.22"},
}


# --------------------------------------------------------------------------------------------------------------------
# the bundle's commands


#: the evaluation scores the network's own masks: busi.json's post-processing (largest component, lesion-confidence
#: gate), chosen for the released UNeXt, would judge the other networks by a gate tuned to UNeXt's confidence
NO_POST_PROCESSING = ["--keep_largest_component", "False", "--min_lesion_area", "0", "--min_lesion_confidence", "0"]


def config_files(row: str, evaluate: bool) -> list[str]:
    """The bundle's config files of ``row``, relative to the repository root, in the order they apply."""
    files = ["configs/train.json"] + (["configs/evaluate.json"] if evaluate else [])
    return files + ["configs/busi.json", f"configs/compare/{row}.json"]


def schedule_overrides(schedule: dict) -> list[str]:
    """The overrides both commands of a row take: the paper's protocol (no normal images), and the seed and size
    where they are not the defaults."""
    overrides = ["--include_normal", "False"]
    if schedule["seed"] != SEED:  # the split's and the training's seed
        overrides += ["--seed", str(schedule["seed"])]
    if schedule["spatial_size"] != SPATIAL_SIZE:
        overrides += ["--spatial_size", json.dumps([schedule["spatial_size"]] * 2)]
    return overrides


def smoke_overrides(max_items: int | None, evaluate: bool) -> list[str]:
    """Overrides that cut every split to its first ``max_items`` images (a smoke test), or none."""
    if not max_items:
        return []
    if evaluate:
        return ["--eval_datalist", f"$@split[@eval_split][:{max_items}]"]
    return ["--train_datalist", f"$@split['training'][:{max_items}]",
            "--selection_datalist", f"$@split['selection'][:{max_items}]"]


def bundle_command(row: str, evaluate: bool, bundle_root: str, dataset_dir: str, schedule: dict) -> list[str]:
    """``python -m monai.bundle run training|evaluating`` of ``row``, to run from the repository root."""
    command = [
        "python", "-m", "monai.bundle", "run", "evaluating" if evaluate else "training",
        "--meta_file", "configs/metadata.json",
        "--config_file", json.dumps(config_files(row, evaluate), separators=(",", ":")),
        "--logging_file", "configs/logging.conf",
        "--bundle_root", bundle_root,
        "--dataset_dir", dataset_dir,
        *schedule_overrides(schedule),
    ]
    if evaluate:
        command += NO_POST_PROCESSING
    else:
        command += ["--max_epochs", str(schedule["epochs"])]
    return command + smoke_overrides(schedule.get("max_items"), evaluate)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(command: list[str], log_path: Path) -> dict[str, float]:
    """Run ``command`` (``python`` = this interpreter) from the repository root with this tree first on the path;
    its output goes to ``log_path``. Returns its wall and CPU (user + system, all threads) seconds; raises with the
    log's tail if it fails. On a loaded machine the CPU seconds are the steadier measure of the work."""
    path = [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    cpu, start = _children_cpu_seconds(), time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = {"wall": time.perf_counter() - start, "cpu": _children_cpu_seconds() - cpu}
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(command)} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return seconds


def read_metrics(path: Path) -> dict[str, float]:
    """MONAI's ``MetricsSaver`` summary (``metrics.csv``: one ``name,value`` line per metric)."""
    with open(path) as f:
        return {name: float(value) for name, value in csv.reader(f)}


def best_selection(path: Path) -> dict:
    """The best epoch of the selection split in the training's ``val_metrics.csv`` (the one ``model.pt`` holds)."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["val_mean_dice"] not in ("", "nan")]
    if not rows:
        raise ValueError(f"{path}: no epoch with a selection Dice")
    best = max(rows, key=lambda r: float(r["val_mean_dice"]))
    return {"epoch": int(best["epoch"]), "dice": float(best["val_mean_dice"]), "iou": float(best["val_mean_iou"])}


def split_summary(path: Path) -> dict:
    """The sizes of the split's parts and a digest of its image lists (equal digests: the same split)."""
    with open(path) as f:
        split = json.load(f)
    parts = {part: [item["image"] for item in split[part]] for part in ("training", "selection", "validation")}
    digest = hashlib.sha256(json.dumps({k: [os.path.basename(p) for p in v] for k, v in parts.items()}).encode())
    return {**{part: len(images) for part, images in parts.items()}, "digest": digest.hexdigest()[:16]}


# --------------------------------------------------------------------------------------------------------------------
# measurements of the network the configs build


def parse_bundle(row: str):
    """The bundle's ``ConfigParser`` for training ``row`` on BUSI (train.json + busi.json + the overlay)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in config_files(row, evaluate=False)])
    return parser


def network_of(row: str):
    """The network ``row``'s configs build (``network_def``), on the CPU."""
    return parse_bundle(row).get_parsed_content("network_def")


def count_flops(net, size: int = 256) -> int:
    """FLOPs of one forward pass on a (1, 3, size, size) input in eval mode (FlopCounterMode: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.rand(1, 3, size, size))
    return int(counter.get_total_flops())


def cpu_latency_ms(net, runs: int, size: int = 256, warmup: int = 3) -> float:
    """Median milliseconds of a float32 forward pass at batch 1, 1 thread, eval mode, inference mode."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net.eval()
        x = torch.rand(1, 3, size, size)
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                start = time.perf_counter()
                net(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1e3


def train_images_per_second(row: str, steps: int, threads: int, batch: int = 8, size: int = 256) -> dict:
    """Images per second of forward + backward + Adam step with the bundle's network, loss and training inferer
    (its precision), on random images and masks; the median of ``steps`` steps after 2 warm-up steps."""
    import torch

    parser = parse_bundle(row)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def").train()
    loss_fn = parser.get_parsed_content("loss")
    inferer = parser.get_parsed_content("train#inferer")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=generator)
    y = (torch.rand(batch, 1, size, size, generator=generator) > 0.5).float()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        for i in range(2 + steps):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(inferer(x, net), y)
            loss.backward()
            optimizer.step()
            if i >= 2:
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {"images_per_second": batch / statistics.median(times), "precision": inferer.precision,
            "threads": threads, "batch": batch, "size": size, "steps": steps}


def measure(row: str, args: argparse.Namespace) -> dict:
    """Parameters, GFLOPs, 1-thread CPU latency and training throughput of ``row``'s network."""
    net = network_of(row)
    flops = count_flops(net)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "gflops_256": flops / 1e9,
        "gmacs_256": flops / 2e9,
        "cpu_ms_1_thread": cpu_latency_ms(net, args.latency_runs),
        "training_throughput": train_images_per_second(row, args.train_steps, args.threads),
    }


def _timed(fn):
    """``fn()`` and its wall and CPU seconds (this process, all threads)."""
    cpu, start = time.process_time(), time.perf_counter()
    value = fn()
    return value, {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def measure_row(row: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """:func:`measure` of ``row`` with when and under what load it ran (``measured``), and its wall and CPU seconds."""
    print(f"[{row}] measuring", flush=True)
    measured, seconds = _timed(lambda: measure(row, args))
    measured["measured"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_average": list(os.getloadavg())}
    return measured, seconds


# --------------------------------------------------------------------------------------------------------------------
# a row


def _from_root(path: str | os.PathLike) -> str:
    """``path`` as the commands (run from the repository root) take it: relative to the root when it lies in the root
    or beside it (``../shared/data/busi``), else absolute."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path, ROOT)
    return path if relative.startswith(os.path.join(os.pardir, os.pardir)) else relative


def run_row(row: str, args: argparse.Namespace, schedule: dict) -> dict:
    """Train, evaluate and measure ``row``; returns its result (see the module's docstring)."""
    import torch

    bundle_root = Path(args.work_dir).resolve() / row
    bundle_root.mkdir(parents=True, exist_ok=True)
    train_cmd = bundle_command(row, False, _from_root(bundle_root), _from_root(args.dataset_dir), schedule)
    eval_cmd = bundle_command(row, True, _from_root(bundle_root), _from_root(args.dataset_dir), schedule)
    print(f"[{row}] training: {shlex.join(train_cmd)}", flush=True)
    train_seconds = run_logged(train_cmd, bundle_root / "training.log")
    epochs = epoch_times((bundle_root / "training.log").read_text())
    print(f"[{row}] evaluating: {shlex.join(eval_cmd)}", flush=True)
    eval_seconds = run_logged(eval_cmd, bundle_root / "evaluating.log")
    metrics = read_metrics(bundle_root / "eval" / "evaluation" / "metrics.csv")
    split = split_summary(bundle_root / "eval" / "split.json")

    measured, measure_seconds = measure_row(row, args)
    return {
        "row": row,
        "label": ROWS[row][0],
        "paper_network": ROWS[row][1],
        "overlay": f"configs/compare/{row}.json",
        "schedule": schedule,
        "commands": {"training": shlex.join(train_cmd), "evaluation": shlex.join(eval_cmd)},
        "split": split,
        "validation": {"dice": metrics["val_mean_dice"], "iou": metrics["val_mean_iou"],
                       "hd95": metrics.get("val_hd95")},
        "selection_best": best_selection(bundle_root / "eval" / "val_metrics.csv"),
        **measured,
        "bundle_epoch_seconds": epochs,
        "bundle_images_per_second": split["training"] / statistics.median(epochs[1:] or epochs),
        "training_seconds": train_seconds,
        "evaluation_seconds": eval_seconds,
        "measurement_seconds": measure_seconds,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": list(os.getloadavg()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}",
    }


def plan(rows: dict[str, dict], budget_hours: float, cores: int) -> str:
    """How many epochs of every row fit ``budget_hours``, from rows measured with a short schedule (e.g. 1 epoch).

    Each row costs a fixed part (the training process's start-up and caching, evaluation, measurements) plus its
    epochs (MONAI's epoch times, training + selection). Two projections: from wall seconds, as measured on this
    machine in its state then; and for ``cores`` idle cores, from the CPU seconds the processes used (their wall
    time on idle cores is at least CPU / cores: a lower bound, reached with perfect parallelism).
    """
    lines = ["| row | epoch wall s | fixed wall s | epoch CPU s | fixed CPU s |", "|---|---|---|---|---|"]
    totals = {"epoch_wall": 0.0, "fixed_wall": 0.0, "epoch_cpu": 0.0, "fixed_cpu": 0.0}
    for row in [r for r in ROWS if r in rows] + [r for r in rows if r not in ROWS]:
        r = rows[row]
        epochs = r["bundle_epoch_seconds"]
        train, evaluation, measurement = r["training_seconds"], r["evaluation_seconds"], r["measurement_seconds"]
        epoch_wall = statistics.median(epochs)
        epoch_share = sum(epochs) / train["wall"]  # the part of the training process's time spent in epochs
        cost = {
            "epoch_wall": epoch_wall,
            "fixed_wall": train["wall"] - sum(epochs) + evaluation["wall"] + measurement["wall"],
            "epoch_cpu": train["cpu"] * epoch_share / len(epochs),
            "fixed_cpu": train["cpu"] * (1 - epoch_share) + evaluation["cpu"] + measurement["cpu"],
        }
        for k, v in cost.items():
            totals[k] += v
        lines.append(f"| `{row}` | {cost['epoch_wall']:.0f} | {cost['fixed_wall']:.0f} | {cost['epoch_cpu']:.0f} | "
                     f"{cost['fixed_cpu']:.0f} |")
    budget = budget_hours * 3600
    fit_wall = int((budget - totals["fixed_wall"]) // totals["epoch_wall"])
    fit_idle = int((budget * cores - totals["fixed_cpu"]) // totals["epoch_cpu"])
    lines += [
        f"| all | {totals['epoch_wall']:.0f} | {totals['fixed_wall']:.0f} | {totals['epoch_cpu']:.0f} | "
        f"{totals['fixed_cpu']:.0f} |",
        "",
        f"Epochs that fit {budget_hours:g} h: {fit_wall} at the measured wall times; at most {fit_idle} on {cores} "
        "idle cores (from CPU seconds, perfect parallelism).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# tables


def _paper_cells(name: str | None) -> list[str]:
    if name is None:
        return ["-"] * 5
    p = PAPER[name]
    return [f"{name}: {p['params_m']:.2f} M", f"{p['gflops']:.2f}", str(p["ms"]), p["busi_f1"], p["busi_iou"]]


def render_table(rows: dict[str, dict]) -> str:
    """The Markdown table of the measured rows (in :data:`ROWS` order) beside the paper's Table 1."""
    lines = [
        "| row | network | params | GMACs (256x256) | CPU ms (1 thread) | training images/s | bundle s/epoch | "
        "validation Dice % | validation IoU % | best selection Dice % (epoch) | paper: network, params | "
        "paper GFLOPs | paper ms | paper BUSI F1 % | paper BUSI IoU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [r for r in ROWS if r in rows] + [r for r in rows if r not in ROWS]:
        r = rows[row]
        marker = " (smoke test, not a result)" if r["schedule"].get("max_items") else ""
        sel = r["selection_best"]
        epochs = r["bundle_epoch_seconds"]
        cells = [
            f"`{row}`{marker}", r["label"], _count(r["params"]), f"{r['gmacs_256']:.2f}", f"{r['cpu_ms_1_thread']:.1f}",
            f"{r['training_throughput']['images_per_second']:.1f}",
            f"{statistics.median(epochs[1:] or epochs):.0f}",
            f"{100 * r['validation']['dice']:.2f}", f"{100 * r['validation']['iou']:.2f}",
            f"{100 * sel['dice']:.2f} ({sel['epoch']})",
        ]
        lines.append("| " + " | ".join(cells + _paper_cells(r.get("paper_network"))) + " |")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def render_context(rows: dict[str, dict]) -> str:
    """Schedule, split, machine and commands of the measured rows, under the table."""
    schedules = {json.dumps(r["schedule"], sort_keys=True) for r in rows.values()}
    splits = {r["split"]["digest"] for r in rows.values()}
    first = next(iter(rows.values()))
    s, split, tp = first["schedule"], first["split"], first["training_throughput"]
    lines = [
        "",
        f"Schedule: epochs {s['epochs']}, {s['spatial_size']}x{s['spatial_size']}, seed {s['seed']}, batch 8, "
        f"busi.json's recipe (Adam, lr 1e-3 cosine to 1e-5, its augmentations) without deep supervision, benign + "
        f"malignant; split "
        f"{split['training']} training / {split['selection']} selection / {split['validation']} validation images"
        + ("" if len(splits) == 1 else " (**the rows' splits differ**)")
        + ("" if len(schedules) == 1 else "; **the rows' schedules differ**") + ".",
        f"Training images/s: batch {tp['batch']}, {tp['size']}x{tp['size']}, {tp['precision']}, {tp['threads']} "
        f"threads, median of {tp['steps']} steps on random data; bundle s/epoch: MONAI's epoch time (training + "
        "selection), median after the first epoch.",
        f"Machine: {first['machine']}; load average at each row's end: "
        + ", ".join(f"{r['row']} {r['load_average'][0]:.1f}" for r in rows.values()) + ".",
    ]
    measured = [r for r in rows.values() if "measured" in r]
    if measured:
        lines.append("Cost columns (params, GMACs, CPU ms, training images/s) measured: " + ", ".join(
            f"{r['row']} {r['measured']['date']} (load average {r['measured']['load_average'][0]:.1f})"
            for r in measured) + ".")
    lines += [
        "",
        "Commands of each row (from the repository root):",
        "",
    ]
    for row in [r for r in ROWS if r in rows]:
        c = rows[row]["commands"]
        lines += [f"- `{row}`, by `{rows[row]['compare_command']}`:", f"  - `{c['training']}`",
                  f"  - `{c['evaluation']}`"]
    return "\n".join(lines)


def write_outputs(result: dict, out: str, doc: str | None) -> None:
    """``<out>.json``, ``<out>.md`` and, unless a row is a smoke test, the table of ``doc``."""
    from unext_monai.io import write_atomic, write_json_atomic

    write_json_atomic(out + ".json", result)
    rows = result["rows"]
    if not rows:
        return
    table = render_table(rows) + "\n" + render_context(rows) + "\n"
    header = f"# Comparison and ablation on BUSI\n\nWritten by `{result['command']}`.\n\n"
    write_atomic(out + ".md", lambda tmp: Path(tmp).write_text(header + table))
    if not doc:
        return
    if any(r["schedule"].get("max_items") for r in rows.values()):
        print(f"not writing {doc}: smoke-test rows (--max_items) are not results", flush=True)
        return
    write_atomic(doc, lambda tmp: Path(tmp).write_text(replace_table(Path(doc).read_text(), table, doc)))


def replace_table(text: str, table: str, name: str = "the document") -> str:
    """``text`` with what lies between :data:`TABLE_START` and :data:`TABLE_END` replaced by ``table``."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{name}: no '{TABLE_START}' ... '{TABLE_END}' markers around the table")
    return text[: start + len(TABLE_START)] + "\n" + table + text[end:]


# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", help="BUSI (Dataset_BUSI_with_GT); required unless --table_only")
    parser.add_argument("--work_dir", help="one bundle folder per row (models, logs, evaluation); not in the repo")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                        help=f"rows to run, of {list(ROWS)} (default: all)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--spatial_size", type=int, default=SPATIAL_SIZE, help="training size (square), a multiple "
                        "of 32")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the split and of every training (the table "
                        "has one; another seed is another split: write it to another --out)")
    parser.add_argument("--max_items", type=int, default=None, help="smoke test: the first N images of each split")
    parser.add_argument("--force", action="store_true", help="re-run rows already measured with this schedule")
    parser.add_argument("--threads", type=int, default=2, help="threads of the training-throughput measurement")
    parser.add_argument("--latency_runs", type=int, default=20)
    parser.add_argument("--train_steps", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "compare"), help="results path without suffix")
    parser.add_argument("--doc", default=str(DOC), help="the document whose table is rewritten ('' for none)")
    parser.add_argument("--table_only", action="store_true", help="only re-render the tables from <out>.json")
    parser.add_argument("--remeasure", action="store_true", help="only re-measure the cost columns (params, GMACs, "
                        "CPU ms, training images/s) of --rows already in <out>.json, without training: for rows "
                        "trained on a busy machine, measure all of them together on an idle one")
    parser.add_argument("--plan", type=float, metavar="HOURS", default=None,
                        help="print how many epochs of the rows in <out>.json fit HOURS (run them with --epochs 1 "
                        "first), then stop")
    parser.add_argument("--cores", type=int, default=2, help="idle cores assumed by --plan's CPU-time projection")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    out_json = Path(args.out + ".json")
    result = json.loads(out_json.read_text()) if out_json.exists() else {"rows": {}}
    if args.plan is not None:
        print(plan(result["rows"], args.plan, args.cores))
        return
    if args.table_only:
        write_outputs(result, args.out, args.doc)
        return
    if args.remeasure:
        for row in args.rows:
            if row not in result["rows"]:
                print(f"[{row}] not in {out_json}: nothing to re-measure (train it first)", flush=True)
                continue
            measured, seconds = measure_row(row, args)
            result["rows"][row].update(measured, measurement_seconds=seconds)
            write_outputs(result, args.out, args.doc)
        return
    if not args.dataset_dir or not args.work_dir:
        parser.error("--dataset_dir and --work_dir are required (unless --table_only)")
    if args.spatial_size % 32:
        parser.error(f"--spatial_size must be a multiple of 32 (SwinUNETR, UNet++), got {args.spatial_size}")
    schedule = {"epochs": args.epochs, "spatial_size": args.spatial_size, "seed": args.seed, "include_normal": False,
                "max_items": args.max_items}
    result["command"] = "python " + shlex.join([os.path.relpath(__file__, ROOT)] + argv)
    for row in args.rows:
        done = result["rows"].get(row)
        if done and done["schedule"] == schedule and not args.force:
            print(f"[{row}] already measured with this schedule: skipped (--force to re-run)", flush=True)
            continue
        start = time.perf_counter()
        result["rows"][row] = {**run_row(row, args, schedule), "compare_command": result["command"]}
        print(f"[{row}] done in {time.perf_counter() - start:.0f} s: validation Dice "
              f"{result['rows'][row]['validation']['dice']:.4f}", flush=True)
        write_outputs(result, args.out, args.doc)


if __name__ == "__main__":
    main()
