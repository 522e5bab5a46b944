"""Pictures from 3D Slicer and ITK tools (NRRD, MetaImage .mha/.mhd) train and check as PNG does, through MONAI's
ITKReader (unext_monai.transforms.picture_readers)."""

from __future__ import annotations

from pathlib import Path

import itk
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from unext_monai.data import check_datalist, read_unext_pytorch

ROOT = Path(__file__).resolve().parents[1]
FORMATS = [".nrrd", ".mha", ".mhd"]


def _pictures(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A gray picture (as ultrasound is; colour NRRD/MetaImage need ITK's vector pixel types, which the itk-io
    wheel does not wrap) and its 0/255 mask."""
    rgb = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[5:20, 10:30] = 255
    return rgb, mask


def _write(path: Path, pixels: np.ndarray) -> None:
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(pixels), is_vector=pixels.ndim == 3), str(path))


def _train_transforms(in_channels: int = 3):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser["in_channels"] = in_channels
    parser["spatial_size"] = [64, 64]
    return parser.get_parsed_content("validate#preprocessing")


@pytest.mark.parametrize("suffix", FORMATS)
def test_itk_pictures_load_as_their_png_twins(tmp_path: Path, suffix: str) -> None:
    rgb, mask = _pictures(np.random.default_rng(0))
    for folder in ("images", "masks/0"):
        (tmp_path / "png" / folder).mkdir(parents=True)
        (tmp_path / "itk" / folder).mkdir(parents=True)
    Image.fromarray(rgb, mode="L").save(tmp_path / "png" / "images" / "case.png")
    Image.fromarray(mask).save(tmp_path / "png" / "masks" / "0" / "case.png")
    _write(tmp_path / "itk" / "images" / f"case{suffix}", rgb)
    _write(tmp_path / "itk" / "masks" / "0" / f"case{suffix}", mask)
    png_items = check_datalist(read_unext_pytorch(str(tmp_path / "png")))
    itk_items = check_datalist(read_unext_pytorch(str(tmp_path / "itk")))
    assert [i["name"] for i in itk_items] == ["case"] and itk_items[0]["image"].endswith(suffix)
    transforms = _train_transforms()
    expected, got = transforms(png_items[0]), transforms(itk_items[0])
    assert got["image"].shape == (3, 64, 64) and got["label"].shape == (1, 64, 64)
    assert torch.equal(torch.as_tensor(got["image"]), torch.as_tensor(expected["image"]))
    assert torch.equal(torch.as_tensor(got["label"]), torch.as_tensor(expected["label"]))


def test_itk_problems_are_named(tmp_path: Path) -> None:
    rgb, mask = _pictures(np.random.default_rng(1))
    _write(tmp_path / "image.nrrd", rgb)
    values = (mask // 255 * 7).astype(np.uint8)
    values[0, :3] = 1
    _write(tmp_path / "mask.nrrd", values)  # two lesion values: not a binary mask
    _write(tmp_path / "small.mha", mask[:20])
    (tmp_path / "broken.mha").write_text("ObjectType = Image\nNDims = 2\nnot a MetaImage\n")
    items = [
        {"image": str(tmp_path / "image.nrrd"), "label": [str(tmp_path / "mask.nrrd")], "name": "values"},
        {"image": str(tmp_path / "image.nrrd"), "label": [str(tmp_path / "small.mha")], "name": "size"},
        {"image": str(tmp_path / "broken.mha"), "label": [str(tmp_path / "small.mha")], "name": "broken"},
    ]
    with pytest.raises(ValueError) as err:
        check_datalist(items)
    text = str(err.value)
    assert all(str(tmp_path / name) in text for name in ("mask.nrrd", "small.mha", "broken.mha"))
