"""Start-up checks of a training run: bad settings, unwritable folders, one training per folder, earlier runs kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from unext_monai.runs import PREVIOUS_RUNS, move_earlier_run_aside, prepare_training_run

ROOT = Path(__file__).resolve().parents[1]
MAIN = os.path.join(os.path.dirname(sys.executable), "..", "lib", "monai", "bundle", "__main__.py")


def test_unwritable_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=str(blocker / "eval")):
        prepare_training_run(str(tmp_path / "models"), str(blocker / "eval"))


@pytest.mark.parametrize("max_epochs", ["abc", 0, 2.5, True])
def test_max_epochs_that_is_no_number_of_epochs_stops_before_anything_is_written(tmp_path: Path, max_epochs) -> None:
    with pytest.raises(ValueError, match="--max_epochs"):
        prepare_training_run(str(tmp_path / "models"), str(tmp_path / "eval"), max_epochs=max_epochs)
    assert not list(tmp_path.iterdir())


def test_one_training_per_checkpoint_folder_until_the_first_process_dies(tmp_path: Path) -> None:
    models, out = tmp_path / "models", tmp_path / "eval"
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from unext_monai.runs import prepare_training_run; "
         "prepare_training_run(sys.argv[1], sys.argv[2]); print('ready', flush=True); time.sleep(300)",
         str(models), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "ready\n"
        with pytest.raises(BlockingIOError, match=f"process {first.pid}"):
            prepare_training_run(str(models), str(out))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    prepare_training_run(str(models), str(out))  # the system released the dead process's lock
    prepare_training_run(str(models), str(out))  # a later run of the same process


def test_earlier_outputs_are_moved_aside_at_the_start_and_resume_keeps_the_run_name(tmp_path: Path, caplog) -> None:
    models, out = tmp_path / "models", tmp_path / "eval"

    def new_run(**kw) -> str:  # train.json: prepare_training_run, then move_earlier_run_aside at the trainer's start
        name = prepare_training_run(str(models), str(out), **kw)
        (out / "tensorboard" / name).mkdir(parents=True, exist_ok=True)  # made when the trainer is built
        move_earlier_run_aside(None, str(models), str(out), name)
        return name

    first = new_run()
    (models / "model.pt").write_bytes(b"best")
    (models / "checkpoint_epoch=3.pt").write_bytes(b"resumable")
    (out / "val_metrics.csv").write_text("epoch\n1\n")
    assert prepare_training_run(str(models), str(out), resume=True) == first
    assert (models / "model.pt").read_bytes() == b"best"  # a resumed run keeps its files

    with pytest.raises(ValueError, match=str(models / "model.pt")):
        prepare_training_run(str(models), str(out), pretrained_checkpoint=str(models / "model.pt"))
    second = prepare_training_run(str(models), str(out))
    assert second != first and (models / "model.pt").read_bytes() == b"best"  # nothing moved before the start
    (out / "tensorboard" / second).mkdir()
    move_earlier_run_aside(None, str(models), str(out), second)
    assert (models / PREVIOUS_RUNS / first / "model.pt").read_bytes() == b"best"
    assert (models / PREVIOUS_RUNS / first / "checkpoint_epoch=3.pt").read_bytes() == b"resumable"
    assert (out / PREVIOUS_RUNS / first / "val_metrics.csv").is_file()
    assert not (models / "model.pt").exists()
    # a later run never overwrites an archive of the same name (here: the first run's files, moved back)
    shutil.move(models / PREVIOUS_RUNS / first / "model.pt", models / "model.pt")
    move_earlier_run_aside(None, str(models), str(out), "run-99999999-999999")
    assert (models / PREVIOUS_RUNS / second / "model.pt").read_bytes() == b"best"
    (models / "model.pt").write_bytes(b"again")
    move_earlier_run_aside(None, str(models), str(out), "run-99999999-999999")
    assert (models / PREVIOUS_RUNS / f"{second}-2" / "model.pt").read_bytes() == b"again"
