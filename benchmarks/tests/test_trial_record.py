"""benchmarks/accuracy/trial_record.py: a trial's record keeps each arm's command, epochs, best and final selection
scores and curve, read from the bundle's run folders, and refuses arms trained on different splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "accuracy"))
import trial_record  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "accuracy" / "trial_record.py"


def _run(folder: Path, dice: list[float], seed: int = 0, resumed: bool = False) -> tuple[str, str]:
    """A run folder as the bundle's training leaves it: eval/val_metrics.csv, eval/split.json, and its log."""
    (folder / "eval").mkdir(parents=True)
    rows = ["epoch,val_mean_dice,val_mean_iou"] + [f"{i + 1},{d},{d * 0.8}" for i, d in enumerate(dice)]
    (folder / "eval" / "val_metrics.csv").write_text("\n".join(rows) + "\n")
    split = {"training": [{}] * 6, "selection": [{}] * 2, "validation": [{}] * 2,
             "meta": {"dataset": "busi", "dataset_dir": "/data", "seed": seed, "val_fraction": 0.2,
                      "selection_fraction": 0.15, "include_normal": True}}
    (folder / "eval" / "split.json").write_text(json.dumps(split))
    log = [f"x - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[{i + 1}] Complete. Time taken: 00:00:30.000"
           for i in range(len(dice))]
    if resumed:
        log.insert(1, "x - INFO - Restored all variables from /ckpt.pt")
    log_file = folder.with_suffix(".log")
    log_file.write_text("\n".join(log) + "\n")
    return str(folder), str(log_file)


def test_record_keeps_best_final_curve_and_time(tmp_path):
    run, log = _run(tmp_path / "a", [0.5, 0.7, 0.6], resumed=True)
    record = trial_record.trial_record("t", [("arm", run, log, "cmd --x")], "kept", "m")
    arm = record["arms"]["arm"]
    assert arm["command"] == "cmd --x"
    assert arm["best_selection"] == {"epoch": 2, "val_mean_dice": 0.7, "val_mean_iou": 0.56}
    assert arm["final_selection"]["epoch"] == 3 and arm["final_selection"]["val_mean_dice"] == 0.6
    assert [p["epoch"] for p in arm["selection_curve"]] == [1, 2, 3]
    assert arm["epochs"] == 3 and arm["pieces"] == 2 and arm["hours_of_epochs"] == pytest.approx(0.03, abs=0.01)
    assert record["split"] == {"dataset": "busi", "seed": 0, "val_fraction": 0.2, "selection_fraction": 0.15,
                               "include_normal": True, "n_training": 6, "n_selection": 2, "n_validation": 2}
    assert record["decision"] == "kept"


def test_arms_on_different_splits_are_refused(tmp_path):
    a = _run(tmp_path / "a", [0.5])
    b = _run(tmp_path / "b", [0.6], seed=1)
    with pytest.raises(ValueError, match="another split"):
        trial_record.trial_record("t", [("a", *a, "c"), ("b", *b, "c")], "d", "m")


def test_a_run_without_metrics_names_the_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="val_metrics.csv"):
        trial_record.arm_record(str(tmp_path / "empty"), str(tmp_path / "empty.log"), "c")


def test_command_line_writes_the_record(tmp_path):
    run, log = _run(tmp_path / "a", [0.5, 0.7])
    out = tmp_path / "trials" / "t.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--trial", "t", "--arm", "arm", run, log,
                           "cmd", "--decision", "d"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["arms"]["arm"]["best_selection"]["epoch"] == 2
