"""The MONAI Deploy app (real monai-deploy-app-sdk 4.0.0, holoscan on CPU, in the env .ci/deploy_env.sh builds) run as
a subprocess on real pictures (JPEG, PNG) and on DICOM and NIfTI files made from them: its masks must equal a direct
PyTorch prediction pixel for pixel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from packaged_bundle import BUNDLE_NAME, REPO, integration_python, real_images, released_bundle, run
from PIL import Image

pytestmark = pytest.mark.slow

PROBE = "import holoscan, monai.deploy.core, highdicom, unext_monai.deploy_app"


@pytest.fixture(scope="module")
def deploy_python():
    return integration_python("UNEXT_DEPLOY_PYTHON", ".venv-deploy", ".ci/deploy_env.sh", PROBE)


def write_gray_dicom(src: Path, dst: Path) -> None:
    """A single-frame 8-bit MONOCHROME2 DICOM (ultrasound, secondary capture) of the picture ``src``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    gray = np.asarray(Image.open(src).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(dst), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "US", "anonymous", "anonymous"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = gray.tobytes()
    ds.save_as(str(dst), enforce_file_format=True)


@pytest.fixture(scope="module")
def inputs(shared_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("deploy_in")
    real_images(shared_dir, folder, n_isic=3, n_busi=2)
    busi3 = shared_dir / "data" / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (3).png"
    write_gray_dicom(busi3, folder / "benign_3_us.dcm")
    import nibabel as nib  # a 2D NIfTI of another ultrasound picture (array axes: columns, rows)

    gray = np.asarray(Image.open(busi3.with_name("benign (4).png")).convert("L")).T.copy()
    nib.save(nib.Nifti1Image(gray, np.diag([0.1, 0.1, 1.0, 1.0])), str(folder / "benign_4_us.nii.gz"))
    return folder


def _preprocessed(bundle: Path, files: list[Path]) -> torch.Tensor:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    pre = parser.get_parsed_content("preprocessing")
    return torch.stack([torch.as_tensor(pre({"image": str(f)})["image"]) for f in files])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, inputs) -> Path:
    """The packaged demo bundle with its output bias re-centred on these inputs, released again.

    One epoch on the synthetic demo set predicts an empty mask on real pictures, and an empty mask equals an empty
    mask whatever the pipeline does; with the last layer's bias moved to the median logit about half of each picture
    is lesion, so the comparison is decided pixel by pixel, many of them near the threshold.
    """
    released = released_bundle(tmp_path_factory)
    from unext_monai import UNeXt

    state = torch.load(released["bundle"] / "models" / "model.pt", weights_only=True)
    net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1)
    net.load_state_dict(state)
    with torch.no_grad():
        logits = net.eval()(_preprocessed(released["bundle"], sorted(inputs.iterdir())))
    state["final_conv.bias"] = state["final_conv.bias"] - float(logits.median())
    base = tmp_path_factory.mktemp("recentred")
    torch.save(state, base / "model.pt")
    out = base / "bundle" / BUNDLE_NAME
    run([sys.executable, "-m", "unext_monai.release", "--bundle_root", REPO, "--name", BUNDLE_NAME,
         "--ckpt", base / "model.pt", "--train_dir", released["train_root"] / "eval", "--output", out,
         "--changelog", "test: demo weights with the output bias re-centred"], cwd=base)
    return out


def _pytorch_masks(bundle: Path, inputs: Path, out: Path) -> None:
    """Direct PyTorch prediction: the packaged inference.json as a ConfigWorkflow (model.pt in the eager network)."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                        bundle_root=str(bundle), input_path=str(inputs), output_dir=str(out), overlay=False)
    wf.initialize()
    wf.run()
    wf.finalize()


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def _size(path: Path) -> tuple[int, int]:
    """(width, height) as the mask is written: PNG (columns, rows); NIfTI masks keep the input's array shape."""
    if path.suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        return int(ds.Columns), int(ds.Rows)
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        return tuple(nib.load(str(path)).shape[::-1])
    return Image.open(path).size


def _mask(folder: Path, source: Path) -> np.ndarray:
    if source.name.endswith(".nii.gz"):
        import nibabel as nib

        img = nib.load(str(folder / f"{_stem(source)}_mask.nii.gz"))
        assert np.allclose(img.affine, nib.load(str(source)).affine)
        return np.asarray(img.dataobj) * 255
    return np.asarray(Image.open(folder / f"{_stem(source)}_mask.png"))


def test_deploy_app_masks_equal_pytorch(deploy_python, bundle, inputs, tmp_path):
    out = tmp_path / "deploy_out"
    log = run([deploy_python, "-m", "unext_monai.deploy_app", "-i", inputs, "-o", out, "-m", bundle], cwd=tmp_path,
              timeout=600)
    assert "Graph execution finished" in log
    _pytorch_masks(bundle, inputs, tmp_path / "torch_out")
    files = sorted(inputs.iterdir())
    assert len(files) == 7 and {f.suffix for f in files} == {".jpg", ".png", ".dcm", ".gz"}
    for f in files:
        ours = _mask(out, f)
        ref = _mask(tmp_path / "torch_out", f)
        w, h = _size(f)
        print(f"{f.name}: {w}x{h} in, deploy mask {ours.shape[::-1]}, lesion {np.mean(ours > 0):.2%}, "
              f"differing pixels vs PyTorch: {int((ours != ref).sum())}")
        assert ours.shape == (h, w) == ref.shape
        assert set(np.unique(ours)) <= {0, 255}
        assert 0.02 < np.mean(ours > 0) < 0.98, "a trivial mask would not test the pipeline"
        assert np.array_equal(ours, ref)


def test_deploy_app_from_sdk_environment_variables(deploy_python, bundle, inputs, tmp_path):
    """As in a MONAI Application Package: no arguments, HOLOSCAN_*_PATH variables, the .ts file as the model, one
    DICOM file as the input."""
    dicom = next(inputs.glob("*.dcm"))
    env = {**os.environ, "HOLOSCAN_INPUT_PATH": str(dicom), "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "out"),
           "HOLOSCAN_MODEL_PATH": str(bundle / "models" / "model.ts")}
    run([deploy_python, "-m", "unext_monai.deploy_app"], cwd=tmp_path, env=env, timeout=600)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"{dicom.stem}_mask.png"]
    assert Image.open(tmp_path / "out" / written[0]).size == _size(dicom)


def test_deploy_app_refuses_missing_model(deploy_python, inputs, tmp_path):
    proc = subprocess.run([deploy_python, "-m", "unext_monai.deploy_app", "-i", str(inputs), "-o", str(tmp_path),
                           "-m", str(tmp_path / "nothing")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={k: v for k, v in os.environ.items() if not k.startswith("HOLOSCAN_")})
    assert proc.returncode != 0 and "no model.ts there" in proc.stdout
