"""Readers of the dataset layouts: the real ISIC 2018 and BUSI copies, and small layouts built in tmp_path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unext_monai.data import (
    DATASETS,
    read_busi,
    read_datalist_json,
    read_dataset,
    read_isic2018,
    read_unext_pytorch,
)


def _save(path: Path, value: int = 255, mode: str = "L", size: tuple[int, int] = (8, 6)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,)}[mode]
    Image.fromarray(np.full((size[1], size[0], *channels), value, np.uint8)).save(path)
    return str(path)


def _assert_contract(items: list[dict]) -> None:
    assert [it["name"] for it in items] == sorted(it["name"] for it in items)
    for it in items:
        assert os.path.isabs(it["image"]) and isinstance(it["label"], list) and it["label"]
        assert all(os.path.isabs(p) for p in it["label"])
        assert it["name"] == os.path.splitext(os.path.basename(it["image"]))[0]


def test_isic2018_real(shared_dir: Path) -> None:
    root = shared_dir / "data" / "isic2018"
    items = read_isic2018(str(root))
    assert len(items) == 2075
    _assert_contract(items)
    for it in items:
        assert len(it["label"]) == 1
        assert os.path.basename(it["label"][0]) == it["name"] + "_segmentation.png"
        assert it["name"].startswith("ISIC_") and it["image"].endswith(".jpg")
    assert read_dataset("ISIC2018", str(root)) == items


def test_busi_real(shared_dir: Path) -> None:
    root = shared_dir / "data" / "busi"
    items = read_busi(str(root))
    assert len(items) == 518
    _assert_contract(items)
    assert {it["class"] for it in items} == {"benign", "malignant"}
    multi = [it for it in items if len(it["label"]) > 1]
    assert multi and all(len(it["label"]) in (2, 3) for it in multi)
    for it in multi:  # <name>_mask.png first, then _mask_1, _mask_2
        suffixes = [os.path.basename(p)[len(it["name"]):] for p in it["label"]]
        assert suffixes == ["_mask.png"] + [f"_mask_{i}.png" for i in range(1, len(suffixes))]
    assert next(it for it in items if it["name"] == "benign (1)")["image"].endswith("benign/benign (1).png")

    with_normal = read_busi(str(root / "Dataset_BUSI_with_GT"), include_normal=True)
    assert len(with_normal) == 624
    assert sum(it["class"] == "normal" for it in with_normal) == 106
    assert read_dataset("busi", str(root), include_normal=True) == with_normal


def test_isic2018_validation_folder_and_extras(tmp_path: Path) -> None:
    inp, gt = tmp_path / "ISIC2018_Task1-2_Validation_Input", tmp_path / "ISIC2018_Task1_Validation_GroundTruth"
    for i in range(3):
        _save(inp / f"ISIC_{i:07d}.png", mode="RGB")
        _save(gt / f"ISIC_{i:07d}_segmentation.png")
    (inp / "LICENSE.txt").write_text("licence")
    (gt / "ATTRIBUTION.txt").write_text("attribution")
    items = read_isic2018(str(tmp_path))
    assert [it["name"] for it in items] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    _assert_contract(items)

    # several splits and a Task 2 ground truth: the Task 1 Training pair is read
    _save(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000009.jpg", mode="RGB")
    _save(tmp_path / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000009_segmentation.png")
    _save(tmp_path / "ISIC2018_Task2_Training_GroundTruth" / "ISIC_0000009_attribute_globules.png")
    assert [it["name"] for it in read_isic2018(str(tmp_path))] == ["ISIC_0000009"]


def test_isic2018_orphans_are_returned(tmp_path: Path) -> None:
    _save(tmp_path / "A_Input" / "ISIC_1.jpg", mode="RGB")
    _save(tmp_path / "A_Input" / "ISIC_2.jpg", mode="RGB")
    _save(tmp_path / "A_GroundTruth" / "ISIC_1_segmentation.png")
    _save(tmp_path / "A_GroundTruth" / "ISIC_3_segmentation.png")
    items = {it["name"]: it for it in read_isic2018(str(tmp_path))}
    assert items["ISIC_2"]["label"] == []  # image without mask
    assert items["ISIC_3"]["image"] is None and items["ISIC_3"]["label"][0].endswith("ISIC_3_segmentation.png")


def test_unext_pytorch_layout(tmp_path: Path) -> None:
    ds = tmp_path / "inputs" / "busi"
    for name, ext in (("b", ".jpg"), ("a", ".png"), ("c d", ".png")):
        _save(ds / "images" / f"{name}{ext}", mode="RGB")
        _save(ds / "masks" / "0" / f"{name}.png")
    items = read_unext_pytorch(str(ds))
    assert [it["name"] for it in items] == ["a", "b", "c d"]
    assert items[1]["image"].endswith("b.jpg") and items[1]["label"] == [str(ds / "masks" / "0" / "b.png")]
    _assert_contract(items)
    assert read_unext_pytorch(str(tmp_path / "inputs")) == items  # the folder holding one dataset
    assert read_dataset("unext", str(ds)) == items

    _save(tmp_path / "inputs" / "isic" / "images" / "x.png", mode="RGB")
    _save(tmp_path / "inputs" / "isic" / "masks" / "0" / "x.png")
    with pytest.raises(ValueError, match="several datasets"):
        read_unext_pytorch(str(tmp_path / "inputs"))


def test_datalist_json(tmp_path: Path) -> None:
    a_img, a_mask = _save(tmp_path / "img" / "a.png", mode="RGB"), _save(tmp_path / "lab" / "a.png")
    b_img = _save(tmp_path / "img" / "b.png", mode="RGB")
    b_masks = [_save(tmp_path / "lab" / "b_1.png"), _save(tmp_path / "lab" / "b_2.png")]
    (tmp_path / "lists").mkdir()
    path = tmp_path / "lists" / "datalist.json"
    path.write_text(json.dumps({
        "training": [
            {"image": "../img/b.png", "label": ["../lab/b_1.png", "../lab/b_2.png"], "extra": 1},
            {"image": a_img, "label": "../lab/a.png", "name": "case_a"},
        ],
        "validation": [{"image": "../img/a.png", "label": "../lab/a.png"}],
    }))
    items = read_datalist_json(str(path))
    assert items == [
        {"image": b_img, "label": b_masks, "name": "b", "extra": 1},
        {"image": a_img, "label": [a_mask], "name": "case_a"},
    ]
    assert read_datalist_json(str(path), ("validation",)) == [{"image": a_img, "label": [a_mask], "name": "a"}]
    assert read_dataset("datalist", str(path)) == items
    with pytest.raises(ValueError, match="testing"):
        read_datalist_json(str(path), ("testing",))


def test_read_dataset_errors(tmp_path: Path) -> None:
    assert DATASETS == ("demo", "isic2018", "busi", "unext", "datalist")
    with pytest.raises(ValueError, match="kvasir"):
        read_dataset("kvasir", str(tmp_path))
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        read_dataset("isic2018", missing)
    for reader in (read_isic2018, read_busi, read_unext_pytorch):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            reader(missing)
    with pytest.raises(FileNotFoundError, match="no BUSI class folders"):
        read_busi(str(tmp_path))
