"""Inference inputs and outputs: sorted out before anything is written (refusals up front, distinct output names,
writable locations), unreadable or mask-named files skipped with the reason, the report written last and true."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.inferers import SimpleInferer
from PIL import Image

from unext_monai import UNeXt
from unext_monai.data.checks import check_image_file
from unext_monai.data.inputs import find_inputs, output_stems, plan_inference

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


def _make_inputs(folder: Path) -> dict[str, bool]:
    """Files of every kind in ``folder``: name -> whether inference can read it."""
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
    (folder / "readme.txt").write_text("not an image suffix")
    os.symlink(folder / "gone.png", folder / "broken_link.png")
    os.symlink(folder / "loop_b.png", folder / "loop_a.png")
    os.symlink(folder / "loop_a.png", folder / "loop_b.png")
    return {"good.png": True, "good.jpg": True, "rgba.png": True, "gray16.png": True, "us.dcm": True,
            "slice.nii.gz": True, "good_mask.png": False, "truncated.png": False, "truncated.jpg": False,
            "empty.png": False, "notes.png": False, "head_only.png": False, "no_pixels.dcm": False,
            "cine.dcm": False, "text.dcm": False, "volume.nii.gz": False, "cut.nii.gz": False, "readme.txt": False,
            "broken_link.png": False, "loop_a.png": False, "loop_b.png": False}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict[str, bool]]:
    folder = tmp_path_factory.mktemp("inputs") / "in"
    return folder, _make_inputs(folder)


def test_every_file_found_is_an_input_or_skipped_with_its_problem(inputs):
    folder, readable = inputs
    found, skipped = find_inputs(str(folder))
    assert [Path(f).name for f in found] == sorted(n for n, ok in readable.items() if ok)
    assert sorted(Path(s["input"]).name for s in skipped) == sorted(n for n, ok in readable.items() if not ok)
    assert all(s["error"] for s in skipped)
    assert check_image_file(str(folder)) == "not a file"
    assert find_inputs(str(folder / "notes.png"))[0] == []
    with pytest.raises(FileNotFoundError):
        find_inputs(str(folder / "nothing"))


def test_symlinked_folders_are_read_once_and_loops_reported(tmp_path):
    src = tmp_path / "in"
    (src / "real").mkdir(parents=True)
    Image.new("RGB", (20, 20), 50).save(src / "real" / "a.png")
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (20, 20), 50).save(tmp_path / "elsewhere" / "b.png")
    os.symlink(tmp_path / "elsewhere", src / "outside")  # a symlinked folder outside: read
    os.symlink(src / "real", src / "linked")  # a link to a folder inside: read once, as real/
    os.symlink(src, src / "real" / "up")  # a link back up: reported, not followed for ever
    found, skipped = find_inputs(str(src))
    assert sorted(Path(f).relative_to(src).as_posix() for f in found) == ["outside/b.png", "real/a.png"]
    assert sorted(Path(s["input"]).relative_to(src).as_posix() for s in skipped) == ["linked", "real/up"]


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
    folder, readable = inputs
    before = _digests(folder)
    good = sorted(n for n, ok in readable.items() if ok)
    out = tmp_path / "out"
    _infer(bundle_root, dataset_dir=str(folder), output_dir=str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["error"] is None
    assert report["counts"] == {"total": len(readable), "segmented": len(good), "skipped": len(readable) - len(good),
                                "failed": 0, "pending": 0}
    by_status = {s: sorted(Path(e["input"]).name for e in report["inputs"] if e["status"] == s)
                 for s in ("segmented", "skipped")}
    assert by_status == {"segmented": good, "skipped": sorted(n for n, ok in readable.items() if not ok)}
    stems = output_stems([str(folder / n) for n in good])  # good.png and good.jpg share a stem
    assert stems[str(folder / "good.png")] == "good_png"
    for entry in report["inputs"]:
        if entry["status"] == "segmented":
            stem = stems[entry["input"]]
            mask = f"{stem}_mask.nii.gz" if entry["input"].endswith(".nii.gz") else f"{stem}_mask.png"
            assert [Path(p).name for p in entry["outputs"]] == [mask, f"{stem}_overlay.png"]
            assert all(Path(p).is_file() for p in entry["outputs"]) and entry["lesion_pixels"] >= 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    assert _digests(folder) == before, "an input file was changed"


def test_existing_outputs_are_never_replaced_unless_asked(bundle_root, tmp_path):
    """A file this run did not write is not replaced (a ground-truth mask where an output would go: BUSI's
    ``<case>_mask.png`` when output_dir is the class folder of another run); the refusal names it, before any
    work; with overwrite True the outputs are replaced."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 20), 50).save(src / name)
    out.mkdir()
    (out / "b_mask.png").write_bytes(b"the user's own mask")
    with pytest.raises(Exception) as failure:
        _infer(bundle_root, dataset_dir=str(src), output_dir=str(out))
    assert str(out / "b_mask.png") in _messages(failure.value)
    assert sorted(p.name for p in out.iterdir()) == ["b_mask.png"]
    assert (out / "b_mask.png").read_bytes() == b"the user's own mask"
    _infer(bundle_root, dataset_dir=str(src), output_dir=str(out), overwrite=True)
    assert np.asarray(Image.open(out / "b_mask.png")).shape == (20, 20)


def test_output_folder_in_the_input_folder_is_refused_before_anything_is_written(inputs, bundle_root):
    folder, _ = inputs
    before = _digests(folder)
    for out in (folder, folder / "predictions"):
        with pytest.raises(Exception) as failure:
            _infer(bundle_root, dataset_dir=str(folder), output_dir=str(out))
        assert str(out) in _messages(failure.value)
        assert _digests(folder) == before and not (folder / "predictions").exists()


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
    assert {Path(e["input"]).name: e["status"] for e in report["inputs"]} == {
        "a.png": "segmented", "b.png": "pending", "c.png": "pending"}
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "report.json"]


def test_a_report_left_by_an_earlier_run_never_stands_beside_new_outputs(bundle_root, tmp_path):
    """SIGTERM during inference: report.json says the run was interrupted and which inputs got new files (the
    earlier run's "completed" report is replaced when the run starts)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        Image.new("RGB", (300, 300), i).save(src / f"{i:02d}.png")
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"status": "completed", "counts": {"segmented": 40}}))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_inputs as t; "
            f"from pathlib import Path; t._infer(Path({str(bundle_root)!r}), dataset_dir={str(src)!r}, "
            f"output_dir={str(out)!r}, overwrite=True)")
    run = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*_mask.png")):
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 128 + signal.SIGTERM
    report = json.loads((out / "report.json").read_text())
    statuses = {Path(e["input"]).name: e["status"] for e in report["inputs"]}
    assert report["status"] == "interrupted" and "pending" in statuses.values()
    written = {Path(p).name for e in report["inputs"] for p in e["outputs"]}
    assert written == {p.name for p in out.iterdir() if p.name != "report.json"}


def test_unwritable_output_location_is_refused_before_anything_is_written(bundle_root, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20), 50).save(src / "a.png")
    Image.new("RGB", (20, 20), 50).save(src / "sub" / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the outputs of sub/ would go")
    with pytest.raises(ValueError, match=r"output folder .*sub"):
        plan_inference(str(src), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["sub"]
    (out / "a_overlay.png").mkdir()  # an output path taken by a folder
    (out / "sub").unlink()
    with pytest.raises(ValueError, match="a_overlay.png"):
        plan_inference(str(src), str(out))
    with pytest.raises(ValueError, match="no input"):
        plan_inference(None, str(out))


def test_files_named_like_masks_are_reported_not_dropped(bundle_root, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("patient.png", "patient_mask.png", "patient_mask_1.png", "ISIC_1_segmentation.png", "x_overlay.png"):
        Image.new("RGB", (20, 20), 50).save(src / name)
    plan = plan_inference(str(src), str(tmp_path / "out"))
    assert [Path(it["image"]).name for it in plan.datalist] == ["patient.png"]
    assert plan.counts()["skipped"] == 4
    # named explicitly, such a file is segmented
    _infer(bundle_root, input_path=str(src / "patient_mask.png"), output_dir=str(tmp_path / "one"))
    assert (tmp_path / "one" / "patient_mask_mask.png").is_file()


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
