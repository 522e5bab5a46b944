"""Inference inputs and outputs: sorted out before anything is written (refusals up front, distinct output names,
writable locations), unreadable or mask-named files skipped with the reason, the report written last and true."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.inferers import SimpleInferer
from PIL import Image

from unext_monai import UNeXt
from unext_monai.data.inputs import check_image_file, list_images, plan_inference
from unext_monai.io import mask_file_name, output_stems

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _dicom(path: Path, frames: int = 1, pixels: bool = True, rows: int = 50, cols: int = 70) -> None:
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
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels:
        ds.PixelData = np.random.default_rng(0).integers(0, 255, (frames, rows, cols), dtype=np.uint8).tobytes()
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


UNREADABLE = 10


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
    assert set(errors) == {n for n, e in expected.items() if e is not None} | {"good_mask.png", "readme.txt"}
    for name, error in errors.items():
        assert error.startswith(expected.get(name) or ""), (name, error)
        assert f"skipping {folder / name}: {error}" in caplog.text
    assert errors["good_mask.png"].startswith("named like a mask")
    assert errors["readme.txt"].startswith("not a file type inference reads")
    assert f"left out {UNREADABLE} unreadable file(s) of 16; segmenting 6" in caplog.text
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


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory) -> Path:
    """A bundle root with random weights for the repository's inference.json."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(UNeXt(2, 3, 1).state_dict(), root / "models" / "model.pt")
    return root


class FailOnSecondImage(SimpleInferer):
    """An inferer that fails on its second call: inference stopped half-way."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, inputs, network, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("stopped on purpose")
        return super().__call__(inputs, network, *args, **kwargs)


def _infer(root: Path, **override) -> None:
    wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type="infer", bundle_root=str(root), spatial_size=[64, 64],
                        **override)
    wf.initialize()
    wf.run()
    wf.finalize()


def test_inference_on_a_folder_skips_bad_files_reports_and_logs(inputs, bundle_root, tmp_path, caplog):
    """dataset_dir is read: a mask (and overlay) for every readable file; report.json, written at the end, lists each
    input with its outputs and each skipped file with the reason; the log says where and how many; inputs unchanged;
    a second run into the same folder works."""
    folder, expected = inputs
    before = _digests(folder)
    good = sorted(n for n, e in expected.items() if e is None)
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="unext_monai"):
        _infer(bundle_root, dataset_dir=str(folder), output_dir=str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["error"] is None and report["not_segmented"] == []
    assert [Path(s["input"]).name for s in report["segmented"]] == good
    stems = output_stems([s["input"] for s in report["segmented"]])  # good.png and good.jpg share a stem
    assert stems[str(folder / "good.png")] == "good_png"
    for item in report["segmented"]:
        stem = stems[item["input"]]
        names = [Path(p).name for p in item["outputs"]]
        assert names == [mask_file_name(stem, item["input"]), f"{stem}_overlay.png"]
        assert all(Path(p).is_file() for p in item["outputs"])
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {n for n, e in expected.items() if e is not None} | {"good_mask.png", "readme.txt"}
    assert f"wrote {2 * len(good)} file(s) for {len(good)} of {len(good)} input(s) to {out}" in caplog.text
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    assert _digests(folder) == before, "an input file was changed"
    _infer(bundle_root, dataset_dir=str(folder), output_dir=str(out))  # a re-run into the same folder
    assert json.loads((out / "report.json").read_text())["status"] == "completed"


def test_output_folder_in_the_input_folder_is_refused_before_anything_is_written(inputs, bundle_root):
    folder, _ = inputs
    before = _digests(folder)
    for out in (folder, folder / "predictions"):
        with pytest.raises(Exception) as failure:
            _infer(bundle_root, dataset_dir=str(folder), output_dir=str(out))
        assert "is inside the input folder" in _messages(failure.value)
        assert _digests(folder) == before and not (folder / "predictions").exists()
    with pytest.raises(Exception) as failure:  # one file: not into its own folder either
        _infer(bundle_root, input_path=str(folder / "good.png"), output_dir=str(folder))
    assert "is the folder of the input" in _messages(failure.value)
    assert _digests(folder) == before


def _messages(e: BaseException | None) -> str:
    chain = []
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    return "\n".join(chain)


def test_inputs_sharing_a_stem_get_distinct_outputs(bundle_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(src / "scan.png")
    Image.new("RGB", (52, 24), (10, 200, 10)).save(src / "scan.jpg")
    _dicom(src / "scan.dcm", rows=20, cols=36)
    (src / "sub").mkdir()
    Image.new("L", (16, 12), 100).save(src / "sub" / "scan.png")  # subfolders keep their structure
    out = tmp_path / "out"
    _infer(bundle_root, dataset_dir=str(src), output_dir=str(out))
    sizes = {p.relative_to(out).as_posix(): Image.open(p).size for p in out.rglob("*_mask.png")}
    assert sizes == {"scan_png_mask.png": (40, 30), "scan_jpg_mask.png": (52, 24), "scan_dcm_mask.png": (36, 20),
                     "sub/scan_mask.png": (16, 12)}


def test_report_of_a_run_that_fails_half_way_is_true(bundle_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (20, 20), 50).save(src / name)
    out = tmp_path / "out"
    with pytest.raises(Exception) as failure:
        _infer(bundle_root, dataset_dir=str(src), output_dir=str(out),
               inferer={"_target_": f"{__name__}.FailOnSecondImage"})
    assert "stopped on purpose" in _messages(failure.value)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and "stopped on purpose" in report["error"]
    assert [Path(s["input"]).name for s in report["segmented"]] == ["a.png"]
    assert [Path(p).name for p in report["not_segmented"]] == ["b.png", "c.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "report.json"]


def test_unwritable_output_location_is_refused_before_anything_is_written(bundle_root, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20), 50).save(src / "a.png")
    Image.new("RGB", (20, 20), 50).save(src / "sub" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the outputs of sub/ would go")
    with pytest.raises(ValueError, match=r"output folder .*sub: .*is a file, not a folder; nothing was written"):
        plan_inference(str(src), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["sub"]
    (out / "a_overlay.png").mkdir()  # an output path taken by a folder
    (out / "sub").unlink()
    with pytest.raises(ValueError, match="are folders"):
        plan_inference(str(src), str(out))
    with pytest.raises(ValueError, match="no input: set dataset_dir"):
        plan_inference(None, str(out))


def test_files_named_like_masks_are_reported_not_dropped(bundle_root, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("patient.png", "patient_mask.png", "patient_mask_1.png", "ISIC_1_segmentation.png", "x_overlay.png"):
        Image.new("RGB", (20, 20), 50).save(src / name)
    plan = plan_inference(str(src), str(tmp_path / "out"))
    assert [Path(it["image"]).name for it in plan.datalist] == ["patient.png"]
    assert sorted(Path(s["file"]).name for s in plan.skipped) == [
        "ISIC_1_segmentation.png", "patient_mask.png", "patient_mask_1.png", "x_overlay.png"]
    assert all(s["error"].startswith("named like a mask") for s in plan.skipped)
    # named explicitly, such a file is segmented
    with caplog.at_level("INFO", logger="unext_monai"):
        _infer(bundle_root, input_path=str(src / "patient_mask.png"), output_dir=str(tmp_path / "one"))
    assert (tmp_path / "one" / "patient_mask_mask.png").is_file()
    assert "wrote 2 file(s) for 1 of 1 input(s)" in caplog.text


def test_dicom_input_gets_an_overlay(bundle_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _dicom(src / "us.dcm", rows=30, cols=44)
    out = tmp_path / "out"
    _infer(bundle_root, dataset_dir=str(src), output_dir=str(out))
    overlay = np.asarray(Image.open(out / "us_overlay.png"))
    mask = np.asarray(Image.open(out / "us_mask.png"))
    assert overlay.shape == (30, 44, 3) and mask.shape == (30, 44)
    import pydicom

    gray = pydicom.dcmread(src / "us.dcm").pixel_array
    outside = mask == 0
    assert outside.any()
    assert np.array_equal(overlay[outside][:, 0], gray[outside]), "the overlay shows the DICOM's pixels"
