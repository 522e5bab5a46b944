"""Write a recipe trial's record from its training runs: the split, and per arm the command, the epochs and hours it
took, the best and final selection scores and the whole selection curve.

A trial compares training runs on one split (the selection split decides; the validation split is not scored for a
trial). The record keeps what the run folders hold, because run folders outside the repository do not last::

    python benchmarks/accuracy/trial_record.py --out benchmarks/results/trials/busi_deep_supervision.json \\
        --trial "deep supervision on busi.json's 300-epoch recipe" \\
        --arm "deep supervision" ../runs/busi_ds ../runs/busi_ds.log \\
            "python -m monai.bundle run training ... --deep_supervision True" \\
        --decision "adopted: best selection Dice ... against ..."

Each ``--arm LABEL RUN_FOLDER LOG_FILE COMMAND`` reads ``RUN_FOLDER/eval/val_metrics.csv`` (selection metrics per
epoch, written by the bundle's training) and ``RUN_FOLDER/eval/split.json``, and the training log for the epoch
times; every arm must have been trained on the same split.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))
from report import read_curve, training_account  # noqa: E402

from unext_monai.data.split import SPLIT_PARTS  # noqa: E402
from unext_monai.io import write_json_atomic  # noqa: E402

#: the per-epoch columns a run's val_metrics.csv must hold
CURVE_KEYS = ("val_mean_dice", "val_mean_iou")


def _point(curve: dict[str, np.ndarray], index: int) -> dict:
    return {"epoch": int(curve["epoch"][index]), **{k: round(float(curve[k][index]), 6) for k in CURVE_KEYS}}


def arm_record(run: str, log_file: str, command: str) -> tuple[dict, dict]:
    """One arm's record and the split it was trained on (``split.json``'s ``meta`` with the part sizes)."""
    csv_file = os.path.join(run, "eval", "val_metrics.csv")
    split_file = os.path.join(run, "eval", "split.json")
    for path in (csv_file, split_file, log_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; is {run} a finished training run of the bundle?")
    curve = read_curve(run)
    missing = [k for k in ("epoch", *CURVE_KEYS) if k not in curve]
    if missing:
        raise ValueError(f"{csv_file}: no column {', '.join(missing)}")
    if not len(curve["epoch"]):
        raise ValueError(f"{csv_file}: no epochs")
    split = json.load(open(split_file))
    split_meta = {k: split["meta"][k] for k in ("dataset", "seed", "val_fraction", "selection_fraction",
                                               "include_normal")}
    split_meta.update({f"n_{k}": len(split[k]) for k in SPLIT_PARTS})
    account = training_account(log_file)
    record = {
        "command": command,
        "epochs": int(curve["epoch"][-1]),
        "hours_of_epochs": round(account["hours"], 2),
        "pieces": account["resumes"] + 1,
        "best_selection": _point(curve, int(np.nanargmax(curve["val_mean_dice"]))),
        "final_selection": _point(curve, len(curve["epoch"]) - 1),
        "selection_curve": [_point(curve, i) for i in range(len(curve["epoch"]))],
    }
    return record, split_meta


def trial_record(trial: str, arms: list[tuple[str, str, str, str]], decision: str, machine: str) -> dict:
    """The record of a trial whose ``arms`` are ``(label, run folder, log file, command)``."""
    records, split = {}, None
    for label, run, log_file, command in arms:
        if label in records:
            raise ValueError(f"arm {label!r} given twice")
        records[label], arm_split = arm_record(run, log_file, command)
        if split is not None and arm_split != split:
            raise ValueError(f"{run}: trained on another split ({arm_split}) than the first arm ({split})")
        split = arm_split
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    return {"trial": trial, "revision": revision or "unknown", "date": datetime.date.today().isoformat(),
            "machine": machine, "split": split, "decision": decision, "arms": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON record to write")
    parser.add_argument("--trial", required=True, help="what the trial compares and why")
    parser.add_argument("--arm", nargs=4, action="append", required=True,
                        metavar=("LABEL", "RUN_FOLDER", "LOG_FILE", "COMMAND"))
    parser.add_argument("--decision", required=True, help="what was decided, on which selection numbers")
    parser.add_argument("--machine", default="2 cores of an AMD EPYC (Zen 5), AVX-512 BF16; bf16 autocast, "
                        "OMP_NUM_THREADS=1 per run, two runs side by side")
    args = parser.parse_args()
    record = trial_record(args.trial, [tuple(a) for a in args.arm], args.decision, args.machine)
    write_json_atomic(args.out, record)
    for label, arm in record["arms"].items():
        best = arm["best_selection"]
        print(f"{label}: best selection Dice {best['val_mean_dice']:.4f} (epoch {best['epoch']}), "
              f"final {arm['final_selection']['val_mean_dice']:.4f}, {arm['hours_of_epochs']} h")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
