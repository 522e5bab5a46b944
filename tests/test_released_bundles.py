"""The packaged bundles with trained weights under bundle/: they load with monai.bundle and segment real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from unext_monai.transforms import LoadMaskd

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "unext_isic2018": ("isic2018/ISIC2018_Task1-2_Training_Input", "isic2018/ISIC2018_Task1_Training_GroundTruth"),
    "unext_busi": ("busi/Dataset_BUSI_with_GT/malignant", "busi/Dataset_BUSI_with_GT/malignant"),
}


def _first_pairs(bundle: Path, shared: Path, count: int) -> list[tuple[Path, list[Path]]]:
    """The first image/mask pairs of the dataset in ../shared/data (training or validation images alike: this checks
    that the packaged weights are the trained ones and load as users load them; docs/results.md has the accuracy)."""
    image_dir, mask_dir = (shared / "data" / p for p in CASES[bundle.name])
    pairs = []
    for image in sorted(image_dir.glob("*.*")):
        if "_mask" in image.name:
            continue
        masks = sorted(mask_dir.glob(f"{image.stem}_segmentation.png")) or sorted(
            mask_dir.glob(f"{image.stem}_mask*.png"))
        pairs.append((image, masks))
        if len(pairs) == count:
            break
    return pairs


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_bundle_segments_real_images(name, shared_dir, tmp_path):
    bundle = ROOT / "bundle" / name
    assert (bundle / "models" / "model.pt").is_file(), f"{bundle} is not packaged"
    pairs = _first_pairs(bundle, shared_dir, 4)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image, _ in pairs:
        (inputs / image.name).symlink_to(image)
    out = tmp_path / "out"
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="infer",
                        bundle_root=str(bundle), input_path=str(inputs), output_dir=str(out))
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    dices = []
    for image, masks in pairs:
        pred = np.asarray(Image.open(out / f"{image.stem}_mask.png")) > 127
        truth = LoadMaskd("label")({"label": [str(m) for m in masks]})["label"][0].numpy() > 0.5
        assert pred.shape == truth.shape == Image.open(image).size[::-1]
        dices.append(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))
    # trained weights, not random ones: real lesions are found (random weights score about 0)
    assert np.mean(dices) > 0.5, dices


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_torchscript_embeds_configs(name):
    bundle = ROOT / "bundle" / name
    extra = {"metadata.json": "", "inference.json": ""}
    net = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 1
    assert "network_def" in json.loads(extra["inference.json"])
    with torch.no_grad():
        assert net(torch.rand(1, 3, 256, 256)).shape == (1, 1, 256, 256)
