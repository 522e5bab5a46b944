"""The synthetic demo set: deterministic, written atomically, reused when complete, and easy to segment."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unext_monai.data import check_datalist, read_unext_pytorch
from unext_monai.data.demo import make_demo_dataset


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_demo_dataset(str(tmp_path / "a"), num_images=4, size=64, seed=3)
    b = make_demo_dataset(str(tmp_path / "b"), num_images=4, size=64, seed=3)
    c = make_demo_dataset(str(tmp_path / "c"), num_images=4, size=64, seed=4)
    assert a == str(tmp_path / "a")
    files_a = _files(Path(a))
    assert len(files_a) == 9 and files_a == _files(Path(b))
    assert files_a["images/demo_000.png"] != _files(Path(c))["images/demo_000.png"]
    # image i depends on (seed, i) only: a larger set starts with the same images
    d = _files(Path(make_demo_dataset(str(tmp_path / "d"), num_images=6, size=64, seed=3)))
    assert d["images/demo_003.png"] == files_a["images/demo_003.png"]


def test_layout_and_content(tmp_path: Path) -> None:
    directory = make_demo_dataset(str(tmp_path / "demo"), num_images=12, size=96)
    items = check_datalist(read_unext_pytorch(directory))
    assert [it["name"] for it in items] == [f"demo_{i:03d}" for i in range(12)]
    dice = []
    for it in items:
        image = np.asarray(Image.open(it["image"]))
        mask = np.asarray(Image.open(it["label"][0]))
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and mask.shape == (96, 96)
        assert set(np.unique(mask).tolist()) == {0, 255}
        assert 0.01 < (mask > 0).mean() < 0.5
        # learnable: the lesion is much darker, so even a fixed threshold on brightness segments it
        guess = image.mean(axis=2) < 140
        truth = mask > 0
        dice.append(2 * (guess & truth).sum() / (guess.sum() + truth.sum()))
    assert np.mean(dice) > 0.9


def test_reused_when_complete_and_rebuilt_otherwise(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    make_demo_dataset(str(directory), num_images=3, size=32)
    marker = directory / "images" / "demo_000.png"
    os.utime(marker, (1, 1))
    make_demo_dataset(str(directory), num_images=3, size=32)
    assert marker.stat().st_mtime == 1  # complete: nothing rewritten

    (directory / "masks" / "0" / "demo_002.png").unlink()  # incomplete: rebuilt
    make_demo_dataset(str(directory), num_images=3, size=32)
    assert (directory / "masks" / "0" / "demo_002.png").is_file() and marker.stat().st_mtime != 1

    make_demo_dataset(str(directory), num_images=2, size=32, seed=1)  # other arguments: replaced
    assert sorted(os.listdir(directory / "images")) == ["demo_000.png", "demo_001.png"]
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no temporary folders left


def test_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "demo"
    make_demo_dataset(str(directory), num_images=2, size=32)
    before = _files(directory)
    calls = {"n": 0}
    real_save = Image.Image.save

    def failing_save(self: Image.Image, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        make_demo_dataset(str(directory), num_images=4, size=32)
    assert _files(directory) == before  # the previous set is untouched
    with pytest.raises(OSError, match="disk full"):
        calls["n"] = 0
        make_demo_dataset(str(tmp_path / "new"), num_images=4, size=32)
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no partial set, no temporary folders


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a demo set"):
        make_demo_dataset(str(tmp_path), num_images=2, size=32)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="num_images"):
        make_demo_dataset(str(tmp_path / "x"), num_images=0)


def test_an_interrupted_build_leaves_nothing_behind_after_the_next(tmp_path, dead_pid):
    """A build killed mid-way leaves its temporary folder; the next build removes it (its process is gone), while a
    live process's folder is left alone."""
    abandoned = tmp_path / f".demo.build-{dead_pid}-abc123"
    (abandoned / "images").mkdir(parents=True)
    live = tmp_path / f".demo.build-{os.getpid()}-def456"
    live.mkdir()
    make_demo_dataset(str(tmp_path / "demo"), num_images=2, size=16)
    assert not abandoned.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "demo"])


def test_a_set_left_aside_by_an_interrupted_replacement_is_put_back_and_reused(tmp_path, dead_pid):
    """Killed between replace_folder's two renames, the previous set lies in a dead process's ``.old-`` folder: the
    next call puts it back before looking, finds it complete and rewrites nothing."""
    make_demo_dataset(str(tmp_path / "demo"), num_images=2, size=16)
    aside = tmp_path / f".demo.old-{dead_pid}-abc123"
    aside.mkdir()
    (tmp_path / "demo").rename(aside / "demo")
    marker = aside / "demo" / "images" / "demo_000.png"
    os.utime(marker, (1, 1))
    make_demo_dataset(str(tmp_path / "demo"), num_images=2, size=16)
    assert (tmp_path / "demo" / "images" / "demo_000.png").stat().st_mtime == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_processes_making_the_same_set_make_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranks of a training make the same set at once: the second waits for the first and uses its set, never
    renaming its own over it while the first reads it (rank 1 found no images/ in a two-node run)."""
    from unext_monai.data import demo

    entered, go, renames = threading.Event(), threading.Event(), []
    make_case = demo._make_case

    def slow_case(*args, **kwargs):
        entered.set()
        go.wait(10)
        return make_case(*args, **kwargs)

    monkeypatch.setattr(demo, "_make_case", slow_case)
    monkeypatch.setattr(demo, "replace_folder", lambda built, target: renames.append(target) or os.replace(built,
                                                                                                           target))
    first = threading.Thread(target=make_demo_dataset, args=(str(tmp_path / "set"), 2, 32))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=make_demo_dataset, args=(str(tmp_path / "set"), 2, 32))
    second.start()
    second.join(0.5)  # it waits for the first
    go.set()
    first.join(10)
    second.join(10)
    assert renames == [str(tmp_path / "set")]
    assert len(_files(tmp_path / "set")) == 5
