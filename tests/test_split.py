"""Seeded splits: reproducible, written to split.json, reused when the settings match, replaced when they do not."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from unext_monai.data import prepare_split, read_all, read_unext_pytorch
from unext_monai.data.demo import make_demo_dataset


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_demo_dataset(str(tmp_path_factory.mktemp("demo") / "demo_data"), num_images=10, size=32)


def _names(split: dict) -> tuple[list[str], ...]:
    return tuple([it["name"] for it in split[key]] for key in ("training", "selection", "validation"))


def test_demo_split_written_and_reused(
    tmp_path: Path, demo_dir: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "eval"
    split = prepare_split("demo", demo_dir, str(out))
    train, selection, val = _names(split)
    assert (len(train), len(selection), len(val)) == (7, 1, 2)
    assert not (set(train) & set(val) or set(train) & set(selection) or set(selection) & set(val))
    assert train == sorted(train) and val == sorted(val)
    stored = json.loads((out / "split.json").read_text())
    assert stored["meta"] == {
        "dataset": "demo", "dataset_dir": demo_dir, "seed": 0, "val_fraction": 0.2, "selection_fraction": 0.1,
        "include_normal": False,
    }
    assert {k: stored[k] for k in ("training", "selection", "validation")} == split
    assert [f for f in os.listdir(out)] == ["split.json"]  # no temporary file left

    monkeypatch.setattr("unext_monai.data.split.read_dataset", lambda *a, **k: pytest.fail("split.json not reused"))
    assert prepare_split("demo", demo_dir, str(out)) == split


def test_evaluation_scores_the_split_the_model_was_trained_with(tmp_path: Path, demo_dir: str) -> None:
    """Evaluating with another seed must not re-split (it would score training images) nor rewrite split.json."""
    out = tmp_path / "eval"
    split = prepare_split("demo", demo_dir, str(out), seed=0)
    before = (out / "split.json").read_bytes()
    assert prepare_split("demo", demo_dir, str(out), seed=0, write=False) == split
    with pytest.raises(ValueError, match=str(out / "split.json")):
        prepare_split("demo", demo_dir, str(out), seed=1, write=False)
    assert (out / "split.json").read_bytes() == before
    fresh = prepare_split("demo", demo_dir, str(tmp_path / "none"), seed=1, write=False)  # no training: not written
    assert fresh and not (tmp_path / "none" / "split.json").exists()


def test_same_seed_same_split(tmp_path: Path, demo_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    a = prepare_split("demo", demo_dir, output_dir=str(tmp_path / "a"), seed=7)
    b = prepare_split("unext", demo_dir, output_dir=str(tmp_path / "b"), seed=7)
    assert _names(a) == _names(b)
    c = prepare_split("unext", demo_dir, output_dir=str(tmp_path / "b"), seed=8, val_fraction=0.3)
    assert _names(c) != _names(a) and len(c["validation"]) == 3
    assert json.loads((tmp_path / "b" / "split.json").read_text())["meta"]["seed"] == 8


def test_bounds(tmp_path: Path, demo_dir: str) -> None:
    tiny = prepare_split("unext", demo_dir, output_dir=str(tmp_path / "x"), val_fraction=0.01, selection_fraction=0.01)
    assert [len(tiny[k]) for k in ("training", "selection", "validation")] == [8, 1, 1]  # at least one in each part
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            prepare_split("demo", demo_dir, str(tmp_path / "y"), val_fraction=bad)
        with pytest.raises(ValueError, match="selection_fraction"):
            prepare_split("demo", demo_dir, str(tmp_path / "y"), selection_fraction=bad)
    with pytest.raises(FileNotFoundError, match="absent"):
        prepare_split("busi", str(tmp_path / "absent"), output_dir=str(tmp_path / "y"))


def test_too_few_items_and_skip_bad(tmp_path: Path, demo_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    items = read_unext_pytorch(demo_dir)
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"training": items[:1]}))
    with pytest.raises(ValueError, match="too few"):
        prepare_split("datalist", str(path), output_dir=str(tmp_path / "out"))
    path.write_text(json.dumps({"training": items[:4] + [{"image": items[4]["image"], "label": "gone.png"}]}))
    with pytest.raises(ValueError, match="gone.png"):
        prepare_split("datalist", str(path), output_dir=str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING, logger="unext_monai"):
        split = prepare_split("datalist", str(path), output_dir=str(tmp_path / "out"), skip_bad=True)
    assert sum(len(split[k]) for k in ("training", "selection", "validation")) == 4
    assert any("gone.png" in r.getMessage() for r in caplog.records)


def test_datalist_with_validation_used_as_is(tmp_path: Path, demo_dir: str) -> None:
    items = read_unext_pytorch(demo_dir)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": items[3:], "validation": items[:3]}))
    split = prepare_split("datalist", str(path), output_dir=str(tmp_path / "out"))
    assert split["validation"] == items[:3]  # held out as given; the selection part comes from the training list
    assert sorted(split["training"] + split["selection"], key=lambda it: it["name"]) == items[3:]
    assert len(split["selection"]) == 1
    path.write_text(json.dumps({"training": items[2:], "validation": items[:2]}))  # edited: not the stale split
    assert prepare_split("datalist", str(path), output_dir=str(tmp_path / "out"))["validation"] == items[:2]
    assert read_all("datalist", str(path)) == items
    assert read_all("unext", demo_dir) == items


def test_busi_split_real(shared_dir: Path, tmp_path: Path) -> None:
    root = str(shared_dir / "data" / "busi")
    split = prepare_split("busi", root, output_dir=str(tmp_path / "a"), seed=1)
    # 517 pairs: BUSI's benign and malignant ones, "malignant (145)" being "benign (433)" once more
    assert [len(split[k]) for k in ("training", "selection", "validation")] == [372, 41, 103]
    for key in ("training", "selection", "validation"):  # each part keeps the class mix (about 2:1)
        classes = [it["class"] for it in split[key]]
        assert set(classes) == {"benign", "malignant"}
        assert 1.9 < classes.count("benign") / classes.count("malignant") < 2.3
    again = json.loads((tmp_path / "a" / "split.json").read_text())
    assert _names(again) == _names(split) and again["meta"]["dataset_dir"] == root
