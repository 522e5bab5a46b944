"""Inference inputs: unreadable files are skipped with a per-file error in a report; the rest are segmented; input
files are never overwritten; outputs and the report are written atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from unext_monai import UNeXt
from unext_monai.data.inputs import check_image_file, list_images

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
REPORT_EXPR = "$unext_monai.data.inputs.list_images(@input_path, report_path=@output_dir + '/report.json')"


def _dicom(path: Path, frames: int = 1, pixels: bool = True) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = 50, 70
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels:
        ds.PixelData = np.random.default_rng(0).integers(0, 255, (frames, 50, 70), dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


# file name -> (writer, expected error or None for a readable file)
def _make_inputs(folder: Path) -> dict[str, str | None]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    Image.fromarray(rgb).save(folder / "good.jpg", quality=90)
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16)).save(folder / "gray16.png")
    _dicom(folder / "us.dcm")
    nib.save(nib.Nifti1Image(rng.random((40, 30)).astype(np.float32), np.eye(4)), str(folder / "slice.nii.gz"))
    Image.fromarray(rgb[..., 0]).save(folder / "good_mask.png")  # a ground-truth mask beside: not an input
    png = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    jpg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not a picture\n")
    (folder / "head_only.png").write_bytes(png[:20])
    _dicom(folder / "no_pixels.dcm", pixels=False)
    _dicom(folder / "cine.dcm", frames=3)
    (folder / "text.dcm").write_text("not dicom")
    nib.save(nib.Nifti1Image(rng.random((20, 20, 4)).astype(np.float32), np.eye(4)), str(folder / "volume.nii.gz"))
    gz = (folder / "slice.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    return {
        "good.png": None, "good.jpg": None, "rgba.png": None, "gray16.png": None, "us.dcm": None,
        "slice.nii.gz": None,
        "truncated.png": "corrupt or truncated image: ",
        "truncated.jpg": "corrupt or truncated image: OSError: image file is truncated",
        "empty.png": "file is empty (0 bytes)",
        "notes.png": "not an image file: PIL cannot identify it",
        "head_only.png": "corrupt or truncated image: OSError: Truncated File Read",
        "no_pixels.dcm": "DICOM pixel data cannot be decoded: ",
        "cine.dcm": "multi-frame DICOM (3 frames): inference segments single 2-D images",
        "text.dcm": "not a readable DICOM file: InvalidDicomError: ",
        "volume.nii.gz": "NIfTI image of shape (20, 20, 4): inference segments 2-D images (H, W) only",
        "cut.nii.gz": "not a readable NIfTI file: ",
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("inputs") / "in"
    return folder, _make_inputs(folder)


def test_each_bad_file_is_named_with_its_problem(inputs, tmp_path, caplog):
    folder, expected = inputs
    report = tmp_path / "out" / "report.json"
    with caplog.at_level("WARNING", logger="unext_monai"):
        files = list_images(str(folder), report_path=str(report))
    good = sorted(str(folder / n) for n, e in expected.items() if e is None)
    assert files == good
    data = json.loads(report.read_text())
    assert data["segmented"] == good
    errors = {Path(s["file"]).name: s["error"] for s in data["skipped"]}
    assert set(errors) == {n for n, e in expected.items() if e is not None}
    for name, error in errors.items():
        assert error.startswith(expected[name]), (name, error)
        assert f"skipping {folder / name}: {error}" in caplog.text
    assert "left out 10 unreadable file(s) of 16; segmenting 6" in caplog.text
    assert [p.name for p in report.parent.iterdir()] == ["report.json"]  # no temp file left


def test_single_file_and_all_bad(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"a\.png: not an image file: PIL cannot identify it; see .*report\.json"):
        list_images(str(tmp_path / "a.png"), report_path=str(tmp_path / "r" / "report.json"))
    assert json.loads((tmp_path / "r" / "report.json").read_text())["segmented"] == []
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"none of the 2 image file\(s\) can be read"):
        list_images(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(str(tmp_path / "nothing"))
    assert list_images(str(tmp_path), check=False) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert check_image_file(str(tmp_path)) == "not a file"


def test_same_output_name_is_warned(tmp_path, caplog):
    for name in ("scan.png", "scan.jpg", "other.png"):
        Image.new("L", (8, 8), 100).save(tmp_path / name)
    with caplog.at_level("WARNING", logger="unext_monai"):
        assert len(list_images(str(tmp_path))) == 3
    assert "scan.jpg, scan.png all give scan_mask.png: only the last one's mask is kept; rename one" in caplog.text
    assert "other" not in caplog.text


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_inference_on_a_folder_skips_bad_files_and_finishes(inputs, tmp_path):
    """inference.json with ``datalist`` passing ``report_path``: writes a mask for every readable file, the report,
    no temp file, and leaves every input byte for byte as it was, also when writing into the input folder."""
    folder, expected = inputs
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(UNeXt(2, 3, 1).state_dict(), root / "models" / "model.pt")
    before = _digests(folder)
    good = sorted(n for n, e in expected.items() if e is None)
    stems = [n.split(".")[0] for n in good]

    def run(out: Path) -> None:
        wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"),
                            workflow_type="infer", bundle_root=str(root), input_path=str(folder), output_dir=str(out),
                            spatial_size=[64, 64], datalist=REPORT_EXPR)
        wf.initialize()
        wf.run()

    out = tmp_path / "out"
    run(out)
    report = json.loads((out / "report.json").read_text())
    assert [Path(f).name for f in report["segmented"]] == good
    assert len(report["skipped"]) == 10
    for stem in stems:
        mask = out / (f"{stem}_mask.nii.gz" if stem == "slice" else f"{stem}_mask.png")
        assert mask.is_file(), mask
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    assert _digests(folder) == before, "an input file was changed"
    # into the input folder: good_mask.png beside good.png (a ground-truth mask) is never overwritten
    with pytest.raises(Exception) as failure:
        run(folder)
    chain, e = [], failure.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("good_mask.png: exists beside the input" in m for m in chain), chain
    assert {k: v for k, v in _digests(folder).items() if k in before} == before, "an input file was changed"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temp files left behind"
    assert np.asarray(Image.open(tmp_path / "out" / "good_mask.png")).shape == (48, 64)
