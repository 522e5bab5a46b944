"""The repository root as a MONAI Bundle: train, evaluate and infer through ``monai.bundle``, as users run it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.networks.layers import DropPath
from PIL import Image

import unext_monai.data

pytestmark = pytest.mark.slow  # real trainings and bundle runs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
SMALL = {"spatial_size": [64, 64], "num_workers": 0, "batch_size": 4}


def workflow(config_files: list[str], workflow_type: str, bundle_root: Path, **override) -> ConfigWorkflow:
    files = [str(CONFIGS / f) for f in config_files]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=META,
        logging_file=LOGGING,
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **override,
    )
    wf.initialize()
    return wf


def run_workflow(wf: ConfigWorkflow) -> None:
    assert not wf.check_properties()
    wf.run()
    wf.finalize()


def val_rows(bundle_root: Path) -> list[dict]:
    with open(bundle_root / "eval" / "val_metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory) -> Path:
    """A bundle root trained for 2 epochs on the built-in demo set, through the command users type."""
    root = tmp_path_factory.mktemp("demo_bundle")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
           "--meta_file", META, "--logging_file", LOGGING, "--bundle_root", str(root), "--max_epochs", "2",
           "--spatial_size", "[64,64]", "--num_workers", "0"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root / "eval" / "demo_data" / "demo_dataset.json").is_file()  # no data given: the built-in demo set
    return root


def per_image(folder: Path, metric: str) -> list[dict]:
    """The rows of MONAI's MetricsSaver file ``<metric>_raw.csv`` (filename, class0, mean)."""
    with open(folder / f"{metric}_raw.csv") as f:
        return list(csv.DictReader(f))


def test_demo_training_writes_model_split_and_curve(demo_bundle):
    assert (demo_bundle / "models" / "model.pt").is_file()
    assert (demo_bundle / "models" / "checkpoint_epoch=2.pt").is_file()
    split = json.loads((demo_bundle / "eval" / "split.json").read_text())
    parts = [{i["name"] for i in split[k]} for k in ("training", "selection", "validation")]
    assert all(parts) and sum(len(p) for p in parts) == len(set().union(*parts))  # disjoint, none empty
    rows = val_rows(demo_bundle)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    assert list((demo_bundle / "eval" / "tensorboard").glob("run-*/events.out.tfevents.*")), "no TensorBoard file"
    state = torch.load(demo_bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "down_1.conv.weight" in state, "model.pt must be a plain state dict of UNeXt"


def test_the_demo_model_segments_in_eval_mode_from_its_first_epoch(demo_bundle):
    """The demo's BatchNorm keeps PyTorch's cumulative average (``batch_norm_momentum`` None): with its 3 batches an
    epoch, the default moving average still weighed the initial variance 1 after 8 epochs and the eval-mode network
    marked nothing (Dice 0.0 for 8 epochs, 2 here)."""
    dice = [float(r["val_mean_dice"]) for r in val_rows(demo_bundle)]
    assert len(dice) == 2 and min(dice) > 0.5, dice


def test_default_run_id_trains_too(tmp_path):
    wf = workflow(["train.json"], "train", tmp_path, max_epochs=1, **SMALL)
    assert wf.check_properties() == []
    assert wf.parser.get_parsed_content("dataset_name") == "demo"


def test_evaluate_as_the_model_zoo_runs_it_keeps_the_trained_model(demo_bundle):
    """The zoo runs train.json + evaluate.json as a train workflow and checks its properties first (which builds the
    training handlers): that must not start a new training run, which would move the trained model aside."""
    model = demo_bundle / "models" / "model.pt"
    before = model.read_bytes()
    wf = workflow(["train.json", "evaluate.json"], "train", demo_bundle, **SMALL)
    assert wf.check_properties() == []
    assert model.read_bytes() == before and not (demo_bundle / "models" / "previous_runs").exists()


def test_evaluate_writes_per_image_and_mean_metrics(demo_bundle):
    wf = workflow(["train.json", "evaluate.json"], "eval", demo_bundle, **SMALL)
    run_workflow(wf)
    out = demo_bundle / "eval" / "evaluation"
    means = dict(line.split(",") for line in (out / "metrics.csv").read_text().splitlines())
    assert sorted(means) == ["val_hd95", "val_mean_dice", "val_mean_iou", "val_sensitivity", "val_specificity"]
    validation = json.loads((demo_bundle / "eval" / "split.json").read_text())["validation"]
    for key in ("val_mean_dice", "val_mean_iou", "val_hd95"):  # MONAI's MetricsSaver: one row per image
        rows = per_image(out, key)
        assert sorted(r["filename"] for r in rows) == sorted(i["image"] for i in validation)
    dice = [float(r["mean"]) for r in per_image(out, "val_mean_dice")]
    assert float(means["val_mean_dice"]) == pytest.approx(np.nanmean(dice), abs=1e-4)


def test_evaluate_scores_a_whole_folder_without_split(demo_bundle, tmp_path):
    folder = demo_bundle / "eval" / "demo_data"
    wf = workflow(["train.json", "evaluate.json"], "eval", demo_bundle, eval_dir=str(folder), dataset_name="unext",
                  output_dir=str(tmp_path / "scores"), **SMALL)
    run_workflow(wf)
    assert len(per_image(tmp_path / "scores", "val_mean_dice")) == len(list((folder / "images").glob("*.png")))


def test_evaluate_with_flip_tta_and_post_processing_options(demo_bundle, tmp_path):
    """tta, min_lesion_confidence, keep_largest_component and min_lesion_area switch their parts in; the selection
    split can be scored."""
    wf = workflow(["train.json", "evaluate.json"], "eval", demo_bundle, output_dir=str(tmp_path / "tta"), tta=True,
                  keep_largest_component=True, min_lesion_area=30, min_lesion_confidence=0.6, eval_split="selection",
                  **SMALL)
    assert type(wf.parser.get_parsed_content("validate#inferer")).__name__ == "FlipTTAInferer"
    names = [type(t).__name__ for t in wf.parser.get_parsed_content("validate#postprocessing").transforms]
    assert names[-4:] == ["LesionConfidenceGated", "AsDiscreted", "KeepLargestConnectedComponentd",
                          "RemoveSmallObjectsd"]
    run_workflow(wf)
    selection = json.loads((demo_bundle / "eval" / "split.json").read_text())["selection"]
    assert sorted(r["filename"] for r in per_image(tmp_path / "tta", "val_mean_dice")) == sorted(
        i["image"] for i in selection)
    default = workflow(["train.json", "evaluate.json"], "eval", demo_bundle, **SMALL)
    assert type(default.parser.get_parsed_content("validate#inferer")).__name__ == "SimpleInferer"
    assert [type(t).__name__ for t in default.parser.get_parsed_content("validate#postprocessing").transforms] == [
        "Activationsd", "Invertd", "AsDiscreted"]


def test_inference_writes_masks_in_input_size_and_orientation(demo_bundle, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    # a non-square RGB image: a transposed mask would have the wrong shape
    Image.fromarray(rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)).save(inputs / "wide.png")
    Image.fromarray(rng.integers(0, 255, (120, 70), dtype=np.uint8)).save(inputs / "gray_tall.jpg")
    out = tmp_path / "out"
    wf = workflow(["inference.json"], "infer", demo_bundle, input_path=str(inputs), output_dir=str(out),
                  spatial_size=[64, 64])
    run_workflow(wf)
    wide = np.asarray(Image.open(out / "wide_mask.png"))
    tall = np.asarray(Image.open(out / "gray_tall_mask.png"))
    assert wide.shape == (90, 140) and tall.shape == (120, 70)
    assert set(np.unique(wide)) <= {0, 255}
    assert np.asarray(Image.open(out / "wide_overlay.png")).shape == (90, 140, 3)


def test_inference_orientation_matches_a_direct_prediction(demo_bundle, tmp_path):
    """The bundle's mask equals thresholding the network's output on the same picture, pixel for pixel."""
    from unext_monai import UNeXt

    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[:, :20] = 255  # bright band on the left only: a transpose would move it to the top
    Image.fromarray(picture).save(tmp_path / "band.png")
    out = tmp_path / "out"
    wf = workflow(["inference.json"], "infer", demo_bundle, input_path=str(tmp_path / "band.png"),
                  output_dir=str(out), spatial_size=[64, 64])
    run_workflow(wf)
    net = UNeXt(2, 3, 1).eval()
    net.load_state_dict(torch.load(demo_bundle / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        logits = net(torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255)
    expected = (torch.sigmoid(logits)[0, 0] > 0.5).numpy().astype(np.uint8) * 255
    assert np.array_equal(np.asarray(Image.open(out / "band_mask.png")), expected)


def test_inference_on_nifti_writes_nifti(demo_bundle, tmp_path):
    import nibabel as nib

    data = np.random.default_rng(1).random((80, 60)).astype(np.float32)
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "slice.nii.gz"))
    out = tmp_path / "out"
    wf = workflow(["inference.json"], "infer", demo_bundle, input_path=str(tmp_path / "slice.nii.gz"),
                  output_dir=str(out), spatial_size=[64, 64])
    run_workflow(wf)
    mask = nib.load(str(out / "slice_mask.nii.gz"))
    assert mask.shape == (80, 60)
    assert np.allclose(mask.affine, affine)


def _copy_pairs(shared: Path, tmp: Path) -> tuple[Path, Path]:
    """Tiny crops of the real layouts: 6 ISIC pairs and 6 BUSI images including multi-mask ones."""
    isic_src = shared / "data" / "isic2018"
    isic = tmp / "isic2018"
    (isic / "ISIC2018_Task1-2_Training_Input").mkdir(parents=True)
    (isic / "ISIC2018_Task1_Training_GroundTruth").mkdir(parents=True)
    for img in sorted((isic_src / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[:6]:
        shutil.copy(img, isic / "ISIC2018_Task1-2_Training_Input")
        mask = isic_src / "ISIC2018_Task1_Training_GroundTruth" / f"{img.stem}_segmentation.png"
        shutil.copy(mask, isic / "ISIC2018_Task1_Training_GroundTruth")
    busi_src = shared / "data" / "busi" / "Dataset_BUSI_with_GT"
    busi = tmp / "busi" / "Dataset_BUSI_with_GT"
    multi = sorted({p.name.split("_mask_")[0] for p in (busi_src / "benign").glob("*_mask_1.png")})[:2]
    for cls, names in (("benign", multi + ["benign (1)", "benign (2)"]), ("malignant", ["malignant (1)",
                                                                                      "malignant (2)"])):
        (busi / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            for f in (busi_src / cls).glob(f"{name}*.png"):
                if f.name == f"{name}.png" or f.name.startswith(f"{name}_mask"):
                    shutil.copy(f, busi / cls)
    return isic, busi.parent


def test_train_on_real_isic_and_busi_crops(shared_dir, tmp_path):
    isic, busi = _copy_pairs(shared_dir, tmp_path)
    for name, folder, extra in (("isic2018", isic, {}), ("busi", busi, {"in_channels": 1})):
        root = tmp_path / f"run_{name}"
        wf = workflow(["train.json", f"{name}.json"], "train", root, dataset_dir=str(folder), max_epochs=2,
                      val_fraction=0.34, **SMALL, **extra)
        run_workflow(wf)
        rows = val_rows(root)
        assert len(rows) == 2
        state = torch.load(root / "models" / "model.pt", weights_only=True)
        assert state["down_1.conv.weight"].shape[1] == extra.get("in_channels", 3)
    busi_split = json.loads((tmp_path / "run_busi" / "eval" / "split.json").read_text())
    items = busi_split["training"] + busi_split["selection"] + busi_split["validation"]
    assert len(items) == 6 and max(len(i["label"]) for i in items) >= 2


def test_busi_normal_scans_can_be_scored_without_being_fitted():
    def datalists(split: dict, overlays: list[str], **override) -> tuple[list[str], list[str]]:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / name) for name in overlays])
        parser.update({"split": split, **override})
        return tuple([item["image"] for item in parser.get_parsed_content(key)]
                     for key in ("train_datalist", "selection_datalist"))

    busi = {"training": [{"image": "b.png", "class": "benign"}, {"image": "n.png", "class": "normal"},
                         {"image": "m.png", "class": "malignant"}],
            "selection": [{"image": "s.png", "class": "normal"}, {"image": "t.png", "class": "benign"}]}
    # busi.json fits the normal scans; train_on_normal false keeps them for scoring only (selection, validation)
    assert datalists(busi, ["train.json", "busi.json"]) == (["b.png", "n.png", "m.png"], ["s.png", "t.png"])
    assert datalists(busi, ["train.json", "busi.json"], train_on_normal=False) == (["b.png", "m.png"],
                                                                                   ["s.png", "t.png"])
    # other data sets' items carry no class and are all fitted
    plain = {"training": [{"image": "a.png"}, {"image": "c.png"}], "selection": []}
    assert datalists(plain, ["train.json"], train_on_normal=False) == (["a.png", "c.png"], [])


def test_drop_path_reaches_every_shifted_mlp_block_and_is_off_by_default():
    def drop_probs(**override) -> list[float]:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update(override)
        net = parser.get_parsed_content("network_def")
        return [m.drop_prob for m in net.modules() if isinstance(m, DropPath)]

    assert drop_probs() == []  # the paper's network: no stochastic depth
    assert drop_probs(drop_path=0.1) == [0.1] * 4  # two encoder and two decoder shifted-MLP blocks


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "multi_gpu_train.json"]])
def test_training_seed_seeds_the_training_and_leaves_the_split_to_seed(configs, monkeypatch):
    """Run-to-run spread is measured by training the same split with other seeds: ``--training_seed``."""
    split_seeds = []
    monkeypatch.setattr(unext_monai.data, "prepare_split", lambda *a, **kw: split_seeds.append(kw["seed"]) or {})

    def first_draws(**override) -> torch.Tensor:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / name) for name in configs])
        parser.update({"dataset_dir": "/nowhere", **override})
        parser.get_parsed_content("split")
        seeding = [i for i, item in enumerate(parser["initialize"]) if "set_determinism" in item]
        assert len(seeding) == 1
        parser.get_parsed_content(f"initialize#{seeding[0]}")
        return torch.rand(4)

    default, seed_3, training_seed_3 = first_draws(), first_draws(seed=3), first_draws(training_seed=3)
    assert split_seeds == [0, 3, 0]
    assert torch.equal(training_seed_3, seed_3) and not torch.equal(training_seed_3, default)
    if "multi_gpu_train.json" in configs:  # the ranks' shares of the training data are shuffled with it too
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)

        def rank0_share(**override) -> list[int]:
            parser = ConfigParser()
            parser.read_config([str(CONFIGS / name) for name in configs])
            parser.update({"train_datalist": [{"image": i} for i in range(20)], **override})
            parser.get_parsed_content(f"initialize#{parser['initialize'].index('$import torch.distributed as dist')}")
            return [item["image"] for item in parser.get_parsed_content("train#dataset#data")]

        assert rank0_share(training_seed=3) == rank0_share(seed=3) != rank0_share()


def test_training_flushes_subnormal_numbers_in_every_thread_unless_told_not_to(tmp_path):
    # a fresh process, as `monai.bundle run` starts: initialize runs before the first parallel operation, so the
    # intra-op threads started later inherit the setting (threads that already exist would keep theirs)
    check = (
        "import sys, torch\n"
        "from monai.bundle import ConfigWorkflow\n"
        "torch.set_num_threads(2)\n"
        "override = {} if sys.argv[3] == 'default' else {'flush_denormal': sys.argv[3] == 'true'}\n"
        "wf = ConfigWorkflow(config_file=sys.argv[1], workflow_type='train', bundle_root=sys.argv[2], **override)\n"
        "wf.initialize()\n"
        "bits = torch.full((1 << 20,), 713624, dtype=torch.int32)  # 1e-39, below float32's normal numbers\n"
        "print(float(((bits.view(torch.float32) * 1.0).view(torch.int32) == 0).double().mean()))\n"
    )

    def flushed_fraction(setting: str) -> float:
        result = subprocess.run([sys.executable, "-c", check, str(CONFIGS / "train.json"), str(tmp_path), setting],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return float(result.stdout.split()[-1])

    # weights that weight decay drives below 1e-38 cost nothing (benchmarks/fp32_subnormal_training.py)
    assert flushed_fraction("default") == 1.0
    assert flushed_fraction("false") == 0.0


@pytest.mark.parametrize("configs, args", [(["inference.json"], ["--input_path", "."]),
                                           (["train.json", "evaluate.json"], [])])
def test_evaluation_and_inference_refuse_false_as_a_text(configs, args, tmp_path):
    # `--tta false` reaches the config as the text 'false', which counts as true: TTA would run
    files = json.dumps([str(CONFIGS / f) for f in configs])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(tmp_path),
           *args, "--tta", "false"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--tta false" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "eval").exists()


def test_verify_net_in_out_passes():
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", META,
           "--config_file", str(CONFIGS / "inference.json")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_inference_properties(tmp_path):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "x.png")
    wf = workflow(["inference.json"], "infer", tmp_path, input_path=str(tmp_path / "x.png"))
    assert wf.check_properties() == []


def test_metadata_has_the_specification_required_fields():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    required = ["version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright",
                "network_data_format", "name"]
    for key in required:
        assert meta.get(key), f"metadata.json lacks {key}"
    assert meta["version"] in meta["changelog"]
    assert "unext-monai" in meta["required_packages_version"]
    image = meta["network_data_format"]["inputs"]["image"]
    for key in ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                "is_patch_data", "channel_def"):
        assert key in image, f"inputs.image lacks {key}"
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["channel_def"] == {"0": "lesion"}
    assert pred["num_channels"] == 1


@pytest.mark.slow
def test_multi_process_training_with_gloo(tmp_path):
    """Distributed data-parallel training on CPU: 2 processes, gloo backend, disjoint shards."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "training", "--config_file",
           f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']", "--meta_file", META,
           "--logging_file", LOGGING, "--bundle_root", str(tmp_path), "--max_epochs", "2", "--spatial_size",
           "[64,64]", "--num_workers", "0", "--batch_size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert [int(r["epoch"]) for r in val_rows(tmp_path)] == [1, 2]
    ckpt = torch.load(tmp_path / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    # every rank stepped the scheduler: rank 0's saved scheduler state has seen 2 epochs
    assert ckpt["lr_scheduler"]["last_epoch"] == 2
