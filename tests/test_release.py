"""The release step: a bundle trained one epoch on the demo set, packaged, and loaded back with monai.bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from packaged_bundle import BUNDLE_NAME, REPO, real_images, released_bundle
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return released_bundle(tmp_path_factory)


def test_release_layout_and_metadata(released):
    bundle = released["bundle"]
    print(f"trained in {released['seconds']['train']:.1f} s, released in {released['seconds']['release']:.1f} s")
    for rel in ["configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/logging.conf", "models/model.pt", "models/model.ts", "models/model.onnx",
                "docs/README.md", "docs/data_license.txt", "LICENSE"]:
        assert (bundle / rel).is_file(), rel
    assert not list(bundle.parent.glob(f".{BUNDLE_NAME}.*")), "temporary build folders left behind"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    src_meta = json.loads((REPO / "configs" / "metadata.json").read_text())
    assert meta["version"] == src_meta["version"]
    assert meta["changelog"][meta["version"]] == "test release: one epoch on the demo set"
    assert list(meta["changelog"])[0] == meta["version"]
    import unext_monai

    assert meta["required_packages_version"]["unext-monai"] == unext_monai.__version__
    assert meta["monai_version"] == __import__("monai").__version__
    # model.pt is a plain state dict that loads strictly into the packaged network_def
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    net = unext_monai.UNeXt(spatial_dims=2, in_channels=3, out_channels=1)
    net.load_state_dict(state, strict=True)


def test_model_card_and_licences(released):
    bundle = released["bundle"]
    card = (bundle / "docs" / "README.md").read_text()
    for needle in ["trained on **demo**", "segment nothing real", "Training recipe", "learning_rate",
                   "Best validation during training", "verify_net_in_out", "Intended use", "Limits",
                   "not for clinical"]:
        assert needle in card, needle
    data_licence = (bundle / "docs" / "data_license.txt").read_text()
    assert "Synthetic demo set" in data_licence
    licence = (bundle / "LICENSE").read_text()
    assert "Apache License" in licence and "TERMS AND CONDITIONS" in licence
    assert "inherit that data's licence terms" in licence


def test_model_ts_embeds_configs_and_matches_pytorch(released):
    bundle = released["bundle"]
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    embedded_meta = json.loads(extra["metadata.json"])
    embedded_inference = json.loads(extra["inference.json"])
    print("embedded in model.ts:", sorted(extra), "metadata keys:", len(embedded_meta))
    assert embedded_meta["version"] == json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert embedded_inference == json.loads((bundle / "configs" / "inference.json").read_text())
    # the same through monai.bundle.load (TorchScript) and monai.bundle.load (state dict into network_def)
    from monai.bundle import load

    ts2, meta2, extra2 = load(BUNDLE_NAME, bundle_dir=str(bundle.parent), load_ts_module=True,
                              config_files=("inference.json",), device="cpu")
    assert meta2["network_data_format"]["outputs"]["pred"]["num_channels"] == 1
    assert "inference.json" in extra2
    net = load(BUNDLE_NAME, bundle_dir=str(bundle.parent), workflow_type="inference", device="cpu").eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        expected = net(x)
        assert expected.shape == (2, 1, 256, 256)
        assert torch.allclose(ts(x), expected, atol=1e-4)
        assert torch.allclose(ts2(x), expected, atol=1e-4)


def test_model_onnx_matches_pytorch(released):
    ort = pytest.importorskip("onnxruntime")
    bundle = released["bundle"]
    ts = torch.jit.load(str(bundle / "models" / "model.ts"))
    session = ort.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 256, 256), (3, 3, 160, 224)]:
        x = torch.rand(*shape)
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            diff = np.abs(out - ts(x).numpy()).max()
        print(f"ONNX Runtime vs PyTorch {shape}: max abs diff {diff:.2e}")
        assert diff < 1e-4


def test_packaged_inference_config_runs_on_real_images(released, shared_dir, tmp_path):
    """The packaged inference.json, run as a ConfigWorkflow from the bundle folder, writes a mask per picture at the
    picture's size."""
    from monai.bundle import ConfigWorkflow

    bundle = released["bundle"]
    images = real_images(shared_dir, tmp_path / "in", n_isic=2, n_busi=1)
    out = tmp_path / "out"
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                        bundle_root=str(bundle), input_path=str(tmp_path / "in"), output_dir=str(out))
    wf.initialize()
    wf.run()
    wf.finalize()
    for img in images:
        mask = Image.open(out / f"{img.stem}_mask.png")
        assert mask.size == Image.open(img).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def _failing_copy(tmp_path, edit):
    root = tmp_path / "src_bundle"
    shutil.copytree(REPO / "configs", root / "configs")
    edit(root)
    return root


def _release_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "unext_monai.release", *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_release_refuses_bundle_failing_verify_net_in_out(released, tmp_path):
    """metadata.json promising 2 output channels for a 1-channel network: verify_net_in_out fails, nothing appears."""

    def two_channels(root):
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
        (root / "configs" / "metadata.json").write_text(json.dumps(meta))

    root = _failing_copy(tmp_path, two_channels)
    out = tmp_path / "bundle" / "bad"
    proc = _release_cli(["--bundle_root", root, "--name", "bad", "--output", out,
                         "--ckpt", released["bundle"] / "models" / "model.pt",
                         "--train_dir", released["train_root"] / "eval"], cwd=tmp_path)
    print(proc.stdout[-600:])
    assert proc.returncode != 0
    assert "verify_net_in_out failed" in proc.stdout
    assert not out.exists() and not list(out.parent.iterdir())


def test_release_refuses_mismatched_checkpoint_and_existing_output(released, tmp_path):
    ckpt = tmp_path / "other.pt"
    torch.save(__import__("unext_monai").UNeXt(2, 3, 2).state_dict(), ckpt)  # two output channels
    out = tmp_path / "bundle" / "x"
    proc = _release_cli(["--bundle_root", REPO, "--name", "x", "--output", out, "--ckpt", ckpt,
                         "--train_dir", released["train_root"] / "eval"], cwd=tmp_path)
    assert proc.returncode != 0 and "does not fit inference.json's network_def" in proc.stdout
    assert not out.exists() and not list(out.parent.iterdir())
    # an existing release is not replaced without --overwrite
    proc = _release_cli(["--bundle_root", REPO, "--name", BUNDLE_NAME, "--output", released["bundle"],
                         "--ckpt", released["bundle"] / "models" / "model.pt"], cwd=tmp_path)
    assert proc.returncode != 0 and "pass --overwrite" in proc.stdout


def test_release_needs_data_licence_for_unknown_data(released, tmp_path):
    """Weights whose training data is not known (no split.json) need --data_license; with it the text is shipped."""
    ckpt = released["bundle"] / "models" / "model.pt"
    out = tmp_path / "bundle" / "y"
    proc = _release_cli(["--bundle_root", REPO, "--name", "y", "--output", out, "--ckpt", ckpt,
                         "--train_dir", tmp_path / "nowhere"], cwd=tmp_path)
    assert proc.returncode != 0 and "--data_license" in proc.stdout and not out.exists()
    terms = tmp_path / "terms.txt"
    terms.write_text("Private data set X, internal use only.\n")
    metrics = tmp_path / "metrics.json"  # as evaluate.json's MetricsJSON writes it
    metrics.write_text(json.dumps({"mean": {"val_mean_dice": 0.81, "val_mean_iou": 0.7, "val_hd95": None},
                                   "per_image": [{"image": "a.png"}, {"image": "b.png"}]}))
    proc = _release_cli(["--bundle_root", REPO, "--name", "y", "--output", out, "--ckpt", ckpt,
                         "--train_dir", tmp_path / "nowhere", "--data_license", terms, "--version", "0.2.0",
                         "--metrics", metrics], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "internal use only" in (out / "docs" / "data_license.txt").read_text()
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and list(meta["changelog"])[0] == "0.2.0"
    assert meta["eval_metrics"] == {"val_mean_dice": 0.81, "val_mean_iou": 0.7, "n_images": 2}
    assert "val_mean_dice 0.8100" in (out / "docs" / "README.md").read_text()
