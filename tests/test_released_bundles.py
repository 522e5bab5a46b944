"""The packaged bundles with trained weights under bundle/: true metadata, one data set each, their scripts/ copy is
the package's code, the model card in the zoo's shape; they load with monai.bundle and segment real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from packaged_bundle import bundle_on_path, negligible_values
from PIL import Image

from unext_monai.release.configs import dataset_card, dataset_layers, packaged_configs, zoo_json
from unext_monai.release.vendor import vendored_files
from unext_monai.transforms import LoadMaskd

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "unext_isic2018": ("isic2018", "isic2018/ISIC2018_Task1-2_Training_Input",
                       "isic2018/ISIC2018_Task1_Training_GroundTruth"),
    "unext_busi": ("busi", "busi/Dataset_BUSI_with_GT/malignant", "busi/Dataset_BUSI_with_GT/malignant"),
    "unext_busi_classes": ("busi_classes", "busi/Dataset_BUSI_with_GT/malignant",
                           "busi/Dataset_BUSI_with_GT/malignant"),
}
RELEASE_COMMAND = ("python -m unext_monai.release --name NAME --dataset DATASET --ckpt bundle/NAME/models/model.pt "
                   "--version NEW_VERSION --changelog TEXT --overwrite (docs/integrations.md)")


def _meta(name: str) -> dict:
    return json.loads((ROOT / "bundle" / name / "configs" / "metadata.json").read_text())


def _first_pairs(name: str, shared: Path, count: int) -> list[tuple[Path, list[Path]]]:
    """The first image/mask pairs of the dataset in ../shared/data (training or validation images alike: this checks
    that the packaged weights are the trained ones and load as users load them; docs/results.md has the accuracy)."""
    _, image_dir, mask_dir = CASES[name]
    image_dir, mask_dir = shared / "data" / image_dir, shared / "data" / mask_dir
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
def test_released_scripts_are_the_package_code(name):
    bundle = ROOT / "bundle" / name
    configs = [p.read_text() for p in (bundle / "configs").glob("*.json") if p.name != "metadata.json"]
    shipped = {str(p.relative_to(bundle)): p.read_text() for p in (bundle / "scripts").rglob("*.py")}
    expected = vendored_files(configs)
    changed = sorted(set(shipped) ^ set(expected) | {p for p in shipped if shipped[p] != expected.get(p)})
    assert not changed, f"{bundle}/scripts differs from the package in {changed}: re-release it: {RELEASE_COMMAND}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_configs_are_the_repository_recipe(name):
    """The packaged configs are what the release makes of today's bundle_configs/ and the data set's overlay: a change
    to them (a post-processing default, an augmentation) reaches the bundles users fine-tune and run."""
    bundle, dataset = ROOT / "bundle" / name, CASES[name][0]
    expected = packaged_configs(str(ROOT / "configs"), dataset)
    changed = sorted(f for f, text in expected.items() if (bundle / "configs" / f).read_text() != text)
    assert not changed, f"{bundle}/configs differs from the repository's in {changed}: re-release it: {RELEASE_COMMAND}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_metadata_and_configs_are_true(name):
    bundle = ROOT / "bundle" / name
    dataset = CASES[name][0]
    meta = _meta(name)
    card = dataset_card(dataset)
    assert (meta["name"], meta["task"], meta["data_source"]) == (card["name"], card["task"], card["data_source"])
    assert meta["version"] in meta["changelog"]
    assert "unext-monai" not in meta["required_packages_version"]
    for part in ("inputs", "outputs", "post_processed_outputs"):
        for tensor in meta["network_data_format"][part].values():
            assert len(tensor["channel_def"]) == tensor["num_channels"]
    assert meta["network_data_format"]["outputs"]["pred"]["value_range"] == []
    assert sorted(p.name for p in (bundle / "configs").iterdir()) == [
        "evaluate.json", "inference.json", "logging.conf", "metadata.json", "multi_gpu_train.json", "train.json"]
    assert sum(len(p.read_text().splitlines()) for p in (bundle / "scripts").rglob("*.py")) <= 1200
    for path in (bundle / "configs").glob("*.json"):
        text = path.read_text()
        assert zoo_json(json.loads(text)) == text, path
        assert path.name == "metadata.json" or "unext_monai" not in text, path
    card_text = (bundle / "docs" / "README.md").read_text()
    assert not [line for line in card_text.splitlines() if line != line.rstrip()]
    assert "## MONAI Bundle Commands" in card_text and "large_files.yml" in card_text
    assert (bundle / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_released_bundles_differ_in_what_they_say():
    metas = [_meta(name) for name in sorted(CASES)]
    for key in ("name", "task", "description"):
        assert len({m[key] for m in metas}) == len(metas), key
    assert len({m["data_source"] for m in metas}) == len({dataset_layers(CASES[n][0])[0] for n in CASES})


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_bundle_segments_real_images(name, shared_dir, tmp_path):
    from monai.bundle import ConfigWorkflow

    bundle = ROOT / "bundle" / name
    pairs = _first_pairs(name, shared_dir, 4)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image, _ in pairs:
        (inputs / image.name).symlink_to(image)
    out = tmp_path / "out"
    with bundle_on_path(bundle):
        wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="infer",
                            bundle_root=str(bundle), dataset_dir=str(inputs), output_dir=str(out))
        wf.initialize()
        assert wf.check_properties() == []
        wf.run()
        wf.finalize()
    classes = json.loads((bundle / "configs" / "inference.json").read_text())["class_names"]
    dices = []
    for image, masks in pairs:
        labels = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        assert set(np.unique(labels)) <= ({0, 255} if len(classes) == 1 else set(range(len(classes) + 1)))
        pred = labels > 0  # the lesion, of any class
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
    assert json.loads(extra["metadata.json"]) == _meta(name)
    assert json.loads(extra["inference.json"]) == json.loads((bundle / "configs" / "inference.json").read_text())
    with torch.no_grad():
        channels = _meta(name)["network_data_format"]["outputs"]["pred"]["num_channels"]
        assert net(torch.rand(1, 3, 256, 256)).shape == (1, channels, 256, 256)


@pytest.mark.parametrize("name", sorted(CASES))
def test_released_weights_have_no_negligible_values(name):
    """Weight values below 1e-30 make float32 inference on CPUs many times slower (their products are subnormal
    numbers; the ISIC 2018 weights of 0.4.0 before release: 279 ms instead of 19 ms per 256x256 image): the release
    sets them to 0 in all three files (benchmarks/results/released_speed.md)."""
    assert not negligible_values(ROOT / "bundle" / name)


def _card_block(card: str, heading: str) -> list[str]:
    """The command lines of the code block under ``#### heading`` of a model card."""
    return [line for line in card.split(f"#### {heading}\n", 1)[1].split("```")[1].splitlines() if line.strip()]


@pytest.mark.slow
def test_card_inference_commands_run_as_written(shared_dir, tmp_path):
    """The card's inference commands, as a user copies them, from a copy of the bundle folder."""
    import shlex
    import shutil
    import subprocess
    import sys

    bundle = Path(shutil.copytree(ROOT / "bundle" / "unext_busi", tmp_path / "unext_busi"))
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for image, _ in _first_pairs("unext_busi", shared_dir, 2):
        shutil.copy2(image, pictures / image.name)
    one = sorted(pictures.iterdir())[0]
    paths = {"/path/to/pictures": pictures, "/path/to/output": tmp_path / "out", "/path/to/picture.png": one}
    for line in _card_block((bundle / "docs" / "README.md").read_text(), "Execute inference"):
        for placeholder, path in paths.items():
            line = line.replace(placeholder, shlex.quote(str(path)))
        args = shlex.split(line)
        proc = subprocess.run([sys.executable, *args[1:]] if args[0] == "python" else args, cwd=bundle,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == sorted(
        f"{p.stem}_mask.png" for p in pictures.iterdir())
    assert (bundle / "eval" / "predictions" / f"{one.stem}_mask.png").is_file()  # the default output_dir
