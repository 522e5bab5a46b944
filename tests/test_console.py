"""The console: unknown or mistyped overrides of ``python -m monai.bundle run`` refused before anything runs, in the
repository's configs and a packaged bundle's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unext_monai.console import check_command_line

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
    with pytest.raises(ValueError) as err:
        check_command_line(argv(*given))
    assert f"--{given[0].lstrip('-').partition('=')[0]} " in str(err.value)


@pytest.mark.parametrize(
    "given, expected",
    [
        (["--max_epoch", "2"], ["--max_epoch ", "--max_epochs?"]),
        (["--learning-rat=0.1"], ["--learning_rat ", "--learning_rate?"]),
        (["--train#trainer#max_epoch", "2"], ["--train#trainer#max_epoch ", "--train#trainer#max_epochs?"]),
        (["--no_such_thing"], ["--no_such_thing "]),
    ],
)
def test_unknown_overrides_are_named_with_the_nearest_key(given: list[str], expected: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        check_command_line(argv(*given))
    assert all(e in str(err.value) for e in expected)


def test_other_command_lines_are_not_checked() -> None:
    check_command_line(["pytest", "--max_epoch", "2"])
    check_command_line([MAIN, "verify_metadata", "--no_such_thing", "1"])


@pytest.mark.slow
def test_a_packaged_bundle_refuses_a_mistyped_override_as_its_last_line(tmp_path: Path) -> None:
    """A released bundle carries the check in its scripts/: ``--max_epoch 1`` would run the whole schedule; the
    command ends on the message, exit status 1, nothing written."""
    bundle = Path(shutil.copytree(ROOT / "bundle" / "unext_isic2018", tmp_path / "bundle"))
    before = sorted(str(p) for p in bundle.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                           "--datalist", "d.json", "--max_epoch", "1"], cwd=bundle, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1] == ("ValueError: --max_epoch is no entry of configs/train.json (did "
                                                    "you mean --max_epochs?). Nothing was run.")
    assert sorted(str(p) for p in bundle.rglob("*") if "__pycache__" not in str(p)) == [
        p for p in before if "__pycache__" not in p]
