"""Train the ISIC 2018 and BUSI bundles on one GPU inside a fixed wall-clock budget.

It times two short ISIC epochs first, then starts both trainings side by side (``configs/train.json`` merged with
``configs/isic2018.json`` / ``configs/busi.json``) with as many epochs as fit the budget, so that the cosine schedule
completes. Each run's best ``models/model.pt``, ``eval/split.json`` and ``eval/val_metrics.csv`` are copied to
``<out>`` as ``<name>_model.pt`` etc., and the logs packed into ``<out>/logs.tgz``.
``--pretrained busi=PATH`` starts a run from
earlier weights (a second cosine cycle).

Usage (on the GPU machine, from the repository root):
    python benchmarks/accuracy/device_train.py --data .device/data --out $OUT --budget 330
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time

DATASETS = {"isic2018": "isic2018", "busi": "busi"}
TRAIN_SIZE = {"isic2018": 1660, "busi": 415}  # 80% of the pairs in ../shared/data


def command(name: str, data_dir: str, root: str, epochs: int, workers: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--meta_file", "configs/metadata.json",
        "--config_file", f"['configs/train.json','configs/{name}.json']",
        "--logging_file", "configs/logging.conf",
        "--bundle_root", root,
        "--dataset_dir", os.path.join(data_dir, DATASETS[name]),
        "--max_epochs", str(epochs),
        "--num_workers", str(workers),
        *extra,
    ]


def epoch_seconds(log_path: str) -> list[float]:
    """Trainer epoch durations from MONAI's 'Epoch[N] Complete. Time taken: HH:MM:SS.mmm' lines."""
    times = []
    with open(log_path) as f:
        for line in f:
            if "SupervisedTrainer" in line and "Complete. Time taken:" in line:
                h, m, s = line.rsplit("Time taken: ", 1)[1].strip().split(":")
                times.append(int(h) * 3600 + int(m) * 60 + float(s))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/unext_runs")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for the two trainings together")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--max_epochs", type=int, default=400)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--pretrained", nargs="*", default=[], help="NAME=PATH: start NAME from these weights")
    parser.add_argument("--learning_rate", type=float, default=None)
    args = parser.parse_args()
    pretrained = dict(p.split("=", 1) for p in args.pretrained)

    def extra(name: str) -> list[str]:
        out = ["--pretrained_checkpoint", os.path.abspath(pretrained[name])] if name in pretrained else []
        return out + (["--learning_rate", str(args.learning_rate)] if args.learning_rate else [])

    os.makedirs(args.work, exist_ok=True)
    summary: dict = {"budget_s": args.budget}

    calib_root = os.path.join(args.work, "calibration")
    calib_log = os.path.join(args.work, "calibration.log")
    start = time.time()
    first = args.datasets[0]
    with open(calib_log, "w") as log:
        subprocess.run(command(first, args.data, calib_root, 3, args.workers, extra(first)), stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    times = epoch_seconds(calib_log)
    summary["calibration_wall_s"] = time.time() - start
    summary["calibration_epoch_s"] = times
    per_epoch = min(times[1:]) if len(times) > 1 else times[0]
    # runs that share the GPU slow each other down: assume by half
    slowdown = 1.5 if len(args.datasets) > 1 else 1.0
    epochs = {}
    for name in args.datasets:
        t = per_epoch * TRAIN_SIZE[name] / TRAIN_SIZE[first] * slowdown
        epochs[name] = max(5, min(args.max_epochs, int(math.floor(args.budget / t))))
    summary["epochs"] = epochs
    print(json.dumps(summary), flush=True)

    procs = {}
    for name in args.datasets:
        root = os.path.join(args.work, name)
        log = open(os.path.join(args.work, f"{name}.log"), "w")
        cmd = command(name, args.data, root, epochs[name], args.workers, extra(name))
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.time())
    for name, (proc, log, t0) in procs.items():
        proc.wait()
        log.close()
        summary[f"{name}_returncode"] = proc.returncode
        summary[f"{name}_wall_s"] = time.time() - t0
        summary[f"{name}_epoch_s"] = epoch_seconds(os.path.join(args.work, f"{name}.log"))
    with open(os.path.join(args.work, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("epoch_s")}), flush=True)

    # the device tool returns at most 8 files of 16 MiB: the weights, the split and the curve of each run, and logs
    os.makedirs(args.out, exist_ok=True)
    for name in args.datasets:
        for sub, suffix in (("models/model.pt", "model.pt"), ("eval/split.json", "split.json"),
                            ("eval/val_metrics.csv", "val_metrics.csv")):
            path = os.path.join(args.work, name, sub)
            if os.path.exists(path):
                shutil.copy2(path, os.path.join(args.out, f"{name}_{suffix}"))
    with tarfile.open(os.path.join(args.out, "logs.tgz"), "w:gz") as tar:
        for name in ["summary.json", "calibration.log"] + [f"{n}.log" for n in args.datasets]:
            path = os.path.join(args.work, name)
            if os.path.exists(path):
                tar.add(path, arcname=name)


if __name__ == "__main__":
    main()
