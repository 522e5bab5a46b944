"""The pre-flight check: every kind of bad input is reported with the file it concerns, or skipped on request."""

from __future__ import annotations

import json
import logging
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unext_monai.data import check_datalist, read_all, read_busi, read_dataset, read_isic2018, read_unext_pytorch

W, H = 24, 16


def _image(path: Path, mode: str = "RGB", size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # distinct pictures: repeated ones are used once
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16)).save(path)
    else:
        channels = {"RGB": 3, "RGBA": 4}[mode]
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, values: tuple[int, ...] = (0, 255), size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0]), np.uint8)
    for i, v in enumerate(values):
        a[:, i * size[0] // len(values):] = v
    Image.fromarray(a).save(path)
    return path


def _dataset(root: Path, n_good: int = 3) -> Path:
    """A UNeXt-pytorch layout with ``n_good`` good pairs named good_0, ..."""
    for i in range(n_good):
        _image(root / "images" / f"good_{i}.png")
        _mask(root / "masks" / "0" / f"good_{i}.png")
    return root


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _make_bad(root: Path, kind: str) -> Path:
    """Add one bad case of ``kind`` to the dataset at ``root``; return the file the error must name."""
    img, msk = root / "images" / "bad.png", root / "masks" / "0" / "bad.png"
    if kind == "truncated png":
        _image(img), _mask(msk)
        _truncate(img)
        return img
    if kind == "truncated jpeg":
        img = img.with_suffix(".jpg")
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
        _mask(msk, size=(64, 64))
        _truncate(img, 0.8)
        return img
    if kind == "truncated mask":
        _image(img), _mask(msk)
        _truncate(msk, 0.5)
        return msk
    if kind == "text named png":
        _mask(msk)
        img.parent.mkdir(parents=True, exist_ok=True)
        img.write_text("this is not an image\n")
        return img
    if kind == "empty file":
        _mask(msk)
        img.parent.mkdir(parents=True, exist_ok=True)
        img.write_bytes(b"")
        return img
    if kind == "orphan image":
        return _image(img)
    if kind == "orphan mask":
        return _mask(msk)
    if kind == "size mismatch":
        _image(img)
        return _mask(msk, size=(W + 1, H))
    if kind == "mask value 128":
        _image(img)
        return _mask(msk, values=(0, 128, 255))
    raise AssertionError(kind)


KINDS = ("truncated png", "truncated jpeg", "truncated mask", "text named png", "empty file", "orphan image",
         "orphan mask", "size mismatch", "mask value 128")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_named(tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    root = _dataset(tmp_path / "ds")
    bad_file = _make_bad(root, kind)
    items = read_unext_pytorch(str(root))
    assert len(items) == 4
    with pytest.raises(ValueError) as err:
        check_datalist(items)
    assert str(bad_file) in str(err.value) and str(root / "images" / "good_0.png") not in str(err.value)
    with caplog.at_level(logging.WARNING, logger="unext_monai"):
        good = check_datalist(items, skip_bad=True)
    assert [it["name"] for it in good] == ["good_0", "good_1", "good_2"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 1 and str(bad_file) in skipped[0]


def test_file_missing(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    items = read_unext_pytorch(str(root))
    (root / "masks" / "0" / "good_1.png").unlink()
    with pytest.raises(ValueError, match=re.escape(str(root / "masks" / "0" / "good_1.png"))):
        check_datalist(items)


def test_the_same_image_under_two_names_is_used_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A copy of an image under another name would land in two split parts (a training image scored)."""
    root = _dataset(tmp_path, n_good=3)
    (root / "images" / "copy.png").write_bytes((root / "images" / "good_1.png").read_bytes())
    _mask(root / "masks" / "0" / "copy.png")
    with caplog.at_level(logging.WARNING, logger="unext_monai"):
        good = check_datalist(read_unext_pytorch(str(root)))
    assert [it["name"] for it in good] == ["copy", "good_0", "good_2"]
    assert str(root / "images" / "good_1.png") in caplog.text


def test_all_problems_in_one_error_and_capped(tmp_path: Path) -> None:
    root = _dataset(tmp_path, n_good=1)
    for i in range(25):
        _image(root / "images" / f"lonely_{i:02d}.png")
    _make_bad(root, "mask value 128")
    with pytest.raises(ValueError) as err:
        check_datalist(read_unext_pytorch(str(root)))
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + 20 + 1 and "26" in lines[0] and "6" in lines[-1]
    assert str(root / "masks" / "0" / "bad.png") in str(err.value)


def test_rgba_16bit_palette_and_01_masks_pass(tmp_path: Path) -> None:
    root = _dataset(tmp_path, n_good=0)
    _image(root / "images" / "rgba.png", mode="RGBA")
    _mask(root / "masks" / "0" / "rgba.png")
    _image(root / "images" / "deep.png", mode="I;16")
    _mask(root / "masks" / "0" / "deep.png", values=(0, 1))
    _image(root / "images" / "pal.png")
    Image.new("P", (W, H), 0).save(root / "masks" / "0" / "pal.png")
    Image.open(root / "images" / "pal.png").convert("RGB").save(root / "images" / "jpg.jpg")
    _mask(root / "masks" / "0" / "jpg.png")
    items = read_unext_pytorch(str(root))
    assert check_datalist(items) == items


def test_skip_bad_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_bad(root, "orphan image")
    _image(root / "images" / "x.png"), _mask(root / "masks" / "0" / "x.png", values=(0, 1, 255))
    with pytest.raises(ValueError):
        check_datalist(read_unext_pytorch(str(root)), skip_bad=True)
    with pytest.raises(ValueError):
        check_datalist([])


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks" / "0").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "ds" / "images"))):
        read_unext_pytorch(str(tmp_path / "ds"))
    (tmp_path / "isic" / "X_Input").mkdir(parents=True)
    (tmp_path / "isic" / "X_GroundTruth").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs found in"):
        read_isic2018(str(tmp_path / "isic"))
    (tmp_path / "busi" / "benign").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "busi"))):
        read_busi(str(tmp_path / "busi"))
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_all("busi", str(missing))


def test_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "datalist.json"
    path.write_text('{\n  "training": [\n    {"image": "a.png", "label": "b.png"},\n  ]\n}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a JSON datalist")):
        read_dataset("datalist", str(path))
    path.write_text(json.dumps({"training": [{"label": "b.png"}]}))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_all("datalist", str(path))


def test_real_datasets_pass(shared_dir: Path) -> None:
    isic = read_isic2018(str(shared_dir / "data" / "isic2018"))
    assert check_datalist(isic) == isic  # all 2075 pairs, fully decoded
    busi = read_busi(str(shared_dir / "data" / "busi"), include_normal=True)
    # BUSI ships one picture twice: "malignant (145).png" is "benign (433).png"
    assert check_datalist(busi) == [it for it in busi if it["name"] != "malignant (145)"]
