import numpy as np
import pytest
import torch
from monai.data import MetaTensor, PILReader
from monai.transforms import EnsureChannelFirstd, LoadImaged
from PIL import Image

from unext_monai.transforms import (
    LesionConfidenceGated,
    LoadMaskd,
    SavePredictiond,
    ToModelChannelsd,
    standard_pil_mode,
)


def load(path, channels=3):
    reader = PILReader(reverse_indexing=False, converter=standard_pil_mode)
    d = LoadImaged("image", reader=reader, dtype=None, image_only=True)({"image": str(path)})
    d = EnsureChannelFirstd("image")(d)
    return ToModelChannelsd("image", channels=channels)(d)["image"]


def test_pictures_become_unit_range_network_input(tmp_path):
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((10, 20), 128, dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((10, 20), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    red = load(tmp_path / "rgb.png")
    assert red.shape == (3, 10, 20) and red.dtype == torch.float32
    assert torch.allclose(red[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(load(tmp_path / "gray.png")[:, 0, 0], torch.full((3,), 128 / 255))
    assert torch.allclose(load(tmp_path / "rgba.png"), red)
    assert torch.allclose(load(tmp_path / "g16.png"), torch.ones(3, 10, 20))
    assert torch.allclose(load(tmp_path / "palette.png"), red, atol=1e-6), "palette indices read as intensities"
    assert load(tmp_path / "rgb.png", channels=1).shape == (1, 10, 20)
    assert torch.allclose(load(tmp_path / "rgb.png", channels=1), torch.full((1, 10, 20), 0.299))


def test_masks_are_binarised_and_merged_by_union(tmp_path):
    a = np.zeros((8, 12), dtype=np.uint8)
    a[:2] = 255
    b = np.zeros((8, 12), dtype=np.uint8)
    b[-1] = 1
    Image.fromarray(a).save(tmp_path / "m.png")
    Image.fromarray(b).save(tmp_path / "m_1.png")
    mask = LoadMaskd("label")({"label": [str(tmp_path / "m.png"), str(tmp_path / "m_1.png")]})["label"]
    assert mask.shape == (1, 8, 12) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.sum() == 3 * 12
    Image.fromarray(np.zeros((9, 12), np.uint8)).save(tmp_path / "other.png")
    with pytest.raises(ValueError, match="other.png: mask size"):
        LoadMaskd("label")({"label": [str(tmp_path / "m.png"), str(tmp_path / "other.png")]})


def test_save_writes_mask_and_overlay_and_never_over_inputs(tmp_path):
    src = tmp_path / "in" / "case.png"
    src.parent.mkdir()
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(src)
    pred = MetaTensor(torch.zeros(1, 6, 9), meta={"filename_or_obj": str(src)})
    pred[0, 2:4, 3:5] = 1
    out = SavePredictiond("pred", output_dir=str(tmp_path / "out"))({"pred": pred})
    mask = np.asarray(Image.open(tmp_path / "out" / "case_mask.png"))
    assert mask.shape == (6, 9) and mask.sum() == 4 * 255
    assert [p.split("/")[-1] for p in out["pred_files"]] == ["case_mask.png", "case_overlay.png"]
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "in" / "case_mask.png")
    before = (tmp_path / "in" / "case_mask.png").read_bytes()
    with pytest.raises(ValueError, match="case_mask.png: exists beside the input"):
        SavePredictiond("pred", output_dir=str(tmp_path / "in"))({"pred": pred})
    assert (tmp_path / "in" / "case_mask.png").read_bytes() == before
    assert not [p for p in (tmp_path / "in").iterdir() if p.name.startswith(".")]


def test_colour_picture_without_channel_axis_and_output_permissions(tmp_path):
    rgb = torch.zeros(1, 5, 7, 3, dtype=torch.uint8)  # as EnsureChannelFirstd leaves an RGB DICOM
    rgb[..., 1] = 255
    out = ToModelChannelsd("image")({"image": MetaTensor(rgb)})["image"]
    assert out.shape == (3, 5, 7) and torch.allclose(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    pred = MetaTensor(torch.ones(1, 5, 7), meta={"filename_or_obj": str(tmp_path / "x.png")})
    SavePredictiond("pred", output_dir=str(tmp_path / "out"), overlay=False)({"pred": pred})
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(os.stat(tmp_path / "out" / "x_mask.png").st_mode)
    assert mode == 0o666 & ~umask


def test_save_writes_to_planned_paths_and_overlays_nifti(tmp_path):
    import nibabel as nib

    src = tmp_path / "in" / "slice.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(np.arange(6 * 9, dtype=np.float32).reshape(6, 9), np.diag([2.0, 3.0, 1.0, 1.0])),
             str(src))
    pred = MetaTensor(torch.zeros(1, 6, 9), meta={"filename_or_obj": str(src), "original_affine": np.eye(4)})
    pred[0, 1:3, 2:6] = 1
    planned = {"mask_file": str(tmp_path / "out" / "a" / "x_mask.nii.gz"),
               "overlay_file": str(tmp_path / "out" / "a" / "x_overlay.png")}
    out = SavePredictiond("pred", output_dir=str(tmp_path / "unused"))({"pred": pred, **planned})
    assert out["pred_files"] == [planned["mask_file"], planned["overlay_file"]]
    assert not (tmp_path / "unused").exists()
    overlay = np.asarray(Image.open(planned["overlay_file"]))
    assert overlay.shape == (6, 9, 3)
    assert (overlay[1:3, 2:6, 0] > overlay[1:3, 2:6, 2]).all()  # tinted where the mask is
    assert np.asarray(__import__("nibabel").load(planned["mask_file"]).dataobj).sum() == 8


def test_lesion_confidence_gate_clears_weak_lesions_only():
    """The mean probability over the largest region above 0.5 decides: a weak lesion (0.7) is cleared under a 0.9
    gate, a confident one (0.97) is kept as it is, even beside a weak speck; an empty map stays empty."""
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
    assert float(gate({"pred": torch.full((1, 8, 8), 0.2)})["pred"].sum()) == 0
    with pytest.raises(ValueError, match="min_confidence"):
        LesionConfidenceGated("pred", min_confidence=1.5)


def test_picture_readers_without_itk(monkeypatch):
    """A packaged bundle runs without ITK: the readers are built, PIL and pydicom only."""
    monkeypatch.setattr("monai.utils.optional_import", lambda name, *a, **k: (None, False))
    from unext_monai.transforms import picture_readers

    assert [type(r).__name__ for r in picture_readers(dicom=True)] == ["PydicomReader", "PILReader"]
