"""The one reading of pictures and masks (the mask rule through every consumer) and the one writer."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from PIL import Image

from unext_monai.bundle_scripts import scripts_from_package
from unext_monai.data import check_datalist
from unext_monai.release.configs import packaged_configs
from unext_monai.transforms import (
    OVERLAY_COLOURS,
    LesionConfidenceGated,
    LoadMaskd,
    SavePredictiond,
    ToModelChannelsd,
    picture_readers,
    read_picture,
    write_segmentation,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
H, W = 8, 12


def test_a_damaged_picture_or_mask_is_named(tmp_path):
    """PIL decodes a file when its pixels are asked for, where MONAI names no file: the readers name it, for a picture
    (``LoadImaged``, ``read_picture``) and for a mask (``LoadMaskd``)."""
    from monai.transforms import LoadImaged

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    Image.fromarray(rng.integers(0, 2, (64, 64), dtype=np.uint8) * 255).save(tmp_path / "whole.png")
    for suffix in (".jpg", ".png"):
        data = (tmp_path / f"whole{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    cut_jpg, cut_png = (re.escape(str(tmp_path / f"cut{suffix}")) for suffix in (".jpg", ".png"))
    with pytest.raises(ValueError, match=f"^{cut_jpg}: damaged"):
        LoadImaged("image", reader=picture_readers(), image_only=True)({"image": str(tmp_path / "cut.jpg")})
    with pytest.raises(ValueError, match=f"^{cut_jpg}: damaged"):
        read_picture(str(tmp_path / "cut.jpg"))
    with pytest.raises(ValueError, match=f"^{cut_png}: damaged"):
        LoadMaskd("label")({"label": str(tmp_path / "cut.png")})


def test_pictures_become_unit_range_network_input(tmp_path):
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((10, 20), 128, dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((10, 20), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    red = read_picture(str(tmp_path / "rgb.png"))
    assert red.shape == (3, 10, 20) and red.dtype == torch.float32
    assert torch.allclose(red[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(read_picture(str(tmp_path / "gray.png"))[:, 0, 0], torch.full((3,), 128 / 255))
    assert torch.allclose(read_picture(str(tmp_path / "rgba.png")), red)
    assert torch.allclose(read_picture(str(tmp_path / "g16.png")), torch.ones(3, 10, 20))
    assert torch.allclose(read_picture(str(tmp_path / "palette.png")), red, atol=1e-6), "palette read as indices"
    gray = ToModelChannelsd("image", channels=1)({"image": red})["image"]
    assert gray.shape == (1, 10, 20) and torch.allclose(gray, torch.full((1, 10, 20), 0.299))


def _case(folder: Path, name: str, mask: Image.Image) -> dict:
    """An image and its mask file, as a datalist item."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    mask.save(folder / f"{name}_mask.png")
    return {"image": str(folder / f"{name}.png"), "label": [str(folder / f"{name}_mask.png")], "name": name}


def _gray(values: list[tuple[slice, slice, int]], mode: str = "L") -> Image.Image:
    a = np.zeros((H, W), np.uint8)
    for rows, cols, v in values:
        a[rows, cols] = v
    return Image.fromarray(a).convert(mode) if mode != "L" else Image.fromarray(a)


def _palette(background: tuple, lesion: tuple) -> Image.Image:
    """Palette index 0 coloured ``background``, index 1 ``lesion``: what the mask means is its indices."""
    a = np.zeros((H, W), np.uint8)
    a[2:4, 3:6] = 1
    im = Image.fromarray(a, mode="P")
    im.putpalette([*background, *lesion] + [0, 0, 0] * 254)
    return im


LESION = np.zeros((H, W), np.uint8)
LESION[2:4, 3:6] = 1
#: mask case -> the label map every consumer must read, or None where every consumer must refuse it
CASES = {
    "0/255": (_gray([(slice(2, 4), slice(3, 6), 255)]), LESION),
    "0/1": (_gray([(slice(2, 4), slice(3, 6), 1)]), LESION),
    "palette, white background": (_palette((255, 255, 255), (0, 0, 0)), LESION),
    "palette, dark lesion colour": (_palette((0, 0, 0), (10, 10, 10)), LESION),
    "gray saved as RGB": (_gray([(slice(2, 4), slice(3, 6), 255)], "RGB"), LESION),
    "empty": (_gray([]), np.zeros((H, W), np.uint8)),
    "0/1/255": (_gray([(slice(2, 4), slice(3, 6), 255), (slice(6, 8), slice(0, 4), 1)]), None),
    "colour": (Image.fromarray(np.dstack([LESION * 255, LESION * 0, LESION * 0]).astype(np.uint8)), None),
}


def _consumers() -> dict:
    """The mask-reading pipelines of the pre-flight check, training (train.json) and evaluation (evaluate.json), and
    of a packaged bundle's fine-tuning and evaluation (their ``scripts`` served by the package)."""
    train = ConfigParser()
    train.read_config(str(CONFIGS / "train.json"))
    evaluate = ConfigParser()
    evaluate.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    packaged = {name: json.loads(text) for name, text in packaged_configs(str(CONFIGS), "demo").items()
                if name.endswith(".json")}
    packaged_train, packaged_evaluate = ConfigParser(packaged["train.json"]), ConfigParser(packaged["train.json"])
    packaged_evaluate.update(packaged["evaluate.json"])

    def pipeline(parser: ConfigParser, key: str):
        transforms = parser.get_parsed_content(key, instantiate=True)
        transforms = transforms.transforms if hasattr(transforms, "transforms") else transforms
        keep = [t for t in transforms if type(t).__name__ in ("LoadImaged", "EnsureChannelFirstd", "ToModelChannelsd",
                                                                "LoadMaskd")]
        return lambda item: _apply(keep, item)

    return {"check": lambda item: np.asarray(LoadMaskd("label")({**item, "image": read_picture(item["image"])})
                                              ["label"])[0] if check_datalist([item]) else None,
            "training": pipeline(train, "train#deterministic_transforms"),
            "evaluation": pipeline(evaluate, "validate#preprocessing"),
            "packaged fine-tuning": pipeline(packaged_train, "train#deterministic_transforms"),
            "packaged evaluation": pipeline(packaged_evaluate, "validate#preprocessing")}


def _apply(transforms, item):
    for t in transforms:
        item = t(item)
    return np.asarray(item["label"])[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_consumer_reads_a_mask_the_same_way_or_refuses_it(tmp_path, case):
    mask, expected = CASES[case]
    item = _case(tmp_path, "case", mask)
    with scripts_from_package():
        consumers = _consumers()
    for consumer, read in consumers.items():
        if expected is None:
            with pytest.raises(Exception) as failure:
                read(dict(item))
            assert item["label"][0] in str(failure.value), (consumer, str(failure.value))
        else:
            assert np.array_equal(read(dict(item)), expected), consumer


def test_masks_are_merged_by_union_and_sizes_checked(tmp_path):
    a, b = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    a[:2], b[-1] = 255, 1
    Image.fromarray(a).save(tmp_path / "m.png")
    Image.fromarray(b).save(tmp_path / "m_1.png")
    mask = LoadMaskd("label")({"label": [str(tmp_path / "m.png"), str(tmp_path / "m_1.png")]})["label"]
    assert mask.shape == (1, H, W) and mask.dtype == torch.uint8 and int(mask.sum()) == 3 * W
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(tmp_path / "other.png")
    with pytest.raises(ValueError, match="other.png"):
        LoadMaskd("label")({"label": [str(tmp_path / "m.png"), str(tmp_path / "other.png")]})
    with pytest.raises(ValueError, match="m.png"):  # another size than its image
        LoadMaskd("label")({"label": str(tmp_path / "m.png"), "image": torch.zeros(3, H, W + 2)})
    # an RGB DICOM as read, before ToModelChannelsd moves its colour axis first (train.json caches it so)
    assert LoadMaskd("label")({"label": str(tmp_path / "m.png"), "image": torch.zeros(1, H, W, 3)})["label"].any()


def test_label_maps_of_several_classes(tmp_path):
    a = np.zeros((H, W), np.uint8)
    a[0, :2], a[1, :3] = 1, 2
    Image.fromarray(a).save(tmp_path / "classes.png")
    two = LoadMaskd("label", class_names=("benign", "malignant"))
    assert np.array_equal(np.asarray(two({"label": str(tmp_path / "classes.png")})["label"])[0], a)
    with pytest.raises(ValueError, match="classes.png"):
        LoadMaskd("label", class_names=("lesion",))({"label": str(tmp_path / "classes.png")})
    a[2, 0] = 3
    Image.fromarray(a).save(tmp_path / "three.png")
    with pytest.raises(ValueError, match="three.png"):
        two({"label": str(tmp_path / "three.png")})
    # a binary mask whose lesion takes the number of the item's class (BUSI's class folders)
    by_class = LoadMaskd("label", class_names=("benign", "malignant"), class_key="class")
    binary = _gray([(slice(2, 4), slice(3, 6), 255)])
    binary.save(tmp_path / "lesion.png")
    assert set(np.unique(by_class({"label": str(tmp_path / "lesion.png"), "class": "malignant"})["label"])) == {0, 2}
    with pytest.raises(ValueError, match="lesion.png"):  # a lesion in a "normal" image
        by_class({"label": str(tmp_path / "lesion.png"), "class": "normal"})


def test_writer_writes_mask_and_overlay_atomically_with_plain_permissions(tmp_path):
    src = tmp_path / "in" / "case.png"
    src.parent.mkdir()
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(src)
    pred = MetaTensor(torch.zeros(1, 6, 9))
    pred[0, 2:4, 3:5] = 1
    item = {"pred": pred, "image": MetaTensor(torch.zeros(3, 6, 9), meta={"filename_or_obj": str(src)}),
            "mask_file": str(tmp_path / "out" / "case_mask.png"), "overlay_file": str(tmp_path / "out" / "o.png")}
    out = SavePredictiond("pred")(item)
    assert out["pred_files"] == [item["mask_file"], item["overlay_file"]]
    mask = np.asarray(Image.open(item["mask_file"]))
    assert mask.shape == (6, 9) and mask.sum() == 4 * 255
    overlay = np.asarray(Image.open(item["overlay_file"]))
    assert overlay.shape == (6, 9, 3) and (overlay[2:4, 3:5, 0] > overlay[2:4, 3:5, 2]).all()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(item["mask_file"]).st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_mask.png", "o.png"]
    classes = np.zeros((6, 9), np.uint8)
    classes[0, 0], classes[1, 1] = 1, 2
    write_segmentation(classes, str(src), str(tmp_path / "k.png"), class_names=("benign", "malignant"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "k.png")), classes)


def test_writer_keeps_nifti_in_its_space(tmp_path):
    import nibabel as nib

    src = tmp_path / "slice.nii.gz"
    affine = np.diag([2.0, 3.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.arange(6 * 9, dtype=np.float32).reshape(6, 9), affine), str(src))
    labels = np.zeros((6, 9), np.uint8)
    labels[1:3, 2:6] = 1
    written = write_segmentation(labels, str(src), str(tmp_path / "m.nii.gz"), str(tmp_path / "o.png"), affine)
    assert written == [str(tmp_path / "m.nii.gz"), str(tmp_path / "o.png")]
    saved = nib.load(written[0])
    assert np.asarray(saved.dataobj).sum() == 8 and np.allclose(saved.affine, affine)


def test_lesion_confidence_gate_clears_weak_lesions_only():
    gate = LesionConfidenceGated("pred", min_confidence=0.9)
    weak = torch.zeros(1, 32, 32)
    weak[0, 4:14, 4:14] = 0.7
    out = gate({"pred": MetaTensor(weak, meta={"filename_or_obj": "w.png"})})["pred"]
    assert float(out.abs().sum()) == 0 and isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "w.png"
    confident = torch.zeros(1, 32, 32)
    confident[0, 10:30, 10:30] = 0.97
    confident[0, 1:3, 1:3] = 0.6  # a weak speck apart from the lesion
    assert torch.equal(gate({"pred": confident})["pred"], confident)
    assert gate.confidence(confident) == pytest.approx(0.97)
    with pytest.raises(ValueError):
        LesionConfidenceGated("pred", min_confidence=1.5)


def test_lesion_confidence_gate_takes_softmax_lesion_of_any_class():
    gate = LesionConfidenceGated("pred", min_confidence=0.9)
    weak = torch.zeros(3, 32, 32)
    weak[0], weak[1, 4:14, 4:14], weak[2, 4:14, 4:14] = 1.0, 0.4, 0.3  # lesion 0.7, split between two classes
    weak[0, 4:14, 4:14] = 0.3
    out = gate({"pred": weak})["pred"]
    assert torch.equal(out[0], torch.ones(32, 32)) and float(out[1:].abs().sum()) == 0
    confident = weak.clone()
    confident[0, 4:14, 4:14], confident[2, 4:14, 4:14] = 0.02, 0.58  # lesion 0.98
    assert torch.equal(gate({"pred": confident})["pred"], confident)


def test_picture_readers_without_itk(monkeypatch):
    """A packaged bundle runs without ITK: the readers are built, PIL and pydicom only."""
    monkeypatch.setattr("unext_monai.transforms.optional_import", lambda name, *a, **k: (None, False))
    assert [type(r).__name__ for r in picture_readers()] == ["_DicomReader", "_PILPictureReader"]


def test_the_overlay_of_several_classes_carries_their_legend(tmp_path: Path):
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "black.png")
    labels = np.zeros((64, 96), np.uint8)
    labels[40:60, 60:90] = 2
    for names, legend in ((("benign", "malignant"), True), (("lesion",), False)):
        write_segmentation(labels, str(tmp_path / "black.png"), str(tmp_path / "m.png"), str(tmp_path / "o.png"),
                           class_names=names)
        overlay = np.asarray(Image.open(tmp_path / "o.png"))
        swatches = [overlay[9 + 14 * i, 9].tolist() for i in range(2)]  # inside each class's colour square
        assert swatches == ([list(OVERLAY_COLOURS[0][1]), list(OVERLAY_COLOURS[1][1])] if legend else [[0, 0, 0]] * 2)
        assert (overlay[4:30, 18:90].max() > 200) == legend  # the names, in white
