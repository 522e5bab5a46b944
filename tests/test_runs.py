"""Start-up checks of a training run: unknown overrides, unwritable folders, earlier runs kept."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from unext_monai.runs import PREVIOUS_RUNS, check_command_line, prepare_training_run

ROOT = Path(__file__).resolve().parents[1]
MAIN = os.path.join(os.path.dirname(sys.executable), "..", "lib", "monai", "bundle", "__main__.py")


def argv(*args: str) -> list[str]:
    return [MAIN, "run", "training", "--config_file", str(ROOT / "configs" / "train.json"), *args]


def test_known_overrides_pass() -> None:
    check_command_line(argv("--max-epochs", "2", "--train#trainer#max_epochs=3", "--resume", "True",
                            "--deep_supervision=False", "--flush_denormal", "--meta_file", "m.json",
                            "--logging_file", "l.conf"))


@pytest.mark.parametrize("given", [["--resume", "false"], ["--resume=true"], ["--deep_supervision", "0"],
                                   ["--flush_denormal", "no"]])
def test_true_false_entries_take_only_true_or_false(given: list[str]) -> None:
    # python-fire passes `false` on as the text 'false', which counts as true: --resume false would resume
    with pytest.raises(ValueError, match="write True or False. Nothing was run.") as err:
        check_command_line(argv(*given))
    assert f"--{given[0].lstrip('-').partition('=')[0]} " in str(err.value)


@pytest.mark.parametrize(
    "given, expected",
    [
        (["--max_epoch", "2"], "--max_epoch (did you mean --max_epochs?)"),
        (["--learning-rat=0.1"], "--learning_rat (did you mean --learning_rate?)"),
        (["--train#trainer#max_epoch", "2"], "--train#trainer#max_epoch (did you mean --train#trainer#max_epochs?)"),
        (["--no_such_thing"], "--no_such_thing. Nothing was run."),
    ],
)
def test_unknown_overrides_are_named_with_the_nearest_key(given: list[str], expected: str) -> None:
    with pytest.raises(ValueError, match="unknown override") as err:
        check_command_line(argv(*given))
    assert expected in str(err.value)


def test_other_command_lines_are_not_checked() -> None:
    check_command_line(["pytest", "--max_epoch", "2"])
    check_command_line([MAIN, "verify_metadata", "--no_such_thing", "1"])


def test_unwritable_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="the output folder is not writable"):
        prepare_training_run(str(tmp_path / "models"), str(blocker / "eval"))


def test_earlier_outputs_are_moved_aside_and_resume_keeps_the_run_name(tmp_path: Path, caplog) -> None:
    models, out = tmp_path / "models", tmp_path / "eval"
    first = prepare_training_run(str(models), str(out))
    (out / "tensorboard" / first).mkdir(parents=True)
    (models / "model.pt").write_bytes(b"best")
    (models / "checkpoint_epoch=3.pt").write_bytes(b"resumable")
    (out / "val_metrics.csv").write_text("epoch\n1\n")
    assert prepare_training_run(str(models), str(out), resume=True) == first
    assert (models / "model.pt").read_bytes() == b"best"  # a resumed run keeps its files

    with pytest.raises(ValueError, match="copy it out of that folder first"):
        prepare_training_run(str(models), str(out), pretrained_checkpoint=str(models / "model.pt"))
    with caplog.at_level(logging.WARNING, logger="unext_monai"):
        second = prepare_training_run(str(models), str(out))
    assert second != first and "moved 3 of them aside" in caplog.text
    assert (models / PREVIOUS_RUNS / first / "model.pt").read_bytes() == b"best"
    assert (models / PREVIOUS_RUNS / first / "checkpoint_epoch=3.pt").read_bytes() == b"resumable"
    assert (out / PREVIOUS_RUNS / first / "val_metrics.csv").is_file()
    assert not (models / "model.pt").exists()
    # a later run never overwrites an archive of the same name
    (models / "model.pt").write_bytes(b"second best")
    prepare_training_run(str(models), str(out))
    assert (models / PREVIOUS_RUNS / first / "model.pt").read_bytes() == b"best"
    assert sorted(p.name for p in (models / PREVIOUS_RUNS).iterdir()) == [first, f"{first}-2"]
