"""Reliability of the training bundle: bad data is named before training (or skipped on request), odd pictures train,
a run killed with SIGKILL resumes to the same end state, and runs with the same seed give the same numbers."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from unext_monai.data import make_demo_dataset
from unext_monai.handlers import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
# small and quick: 64x64 pictures, UNeXt-S widths, no worker processes
SMALL = {"spatial_size": [64, 64], "num_workers": 0, "batch_size": 4, "network_def#features": [8, 16, 32, 64, 128]}
# the config entries that issue 7 switches to unext_monai.checkpoint (overrides until the configs carry them)
SAVER = "unext_monai.checkpoint.AtomicCheckpointSaver"
LOADER = "unext_monai.checkpoint.ModelCheckpointLoader"
RELIABLE = {
    "train#interval_saver#_target_": SAVER,
    "validate#best_saver#_target_": SAVER,
    "train#checkpoint_loader#_target_": LOADER,
    "train#pretrained_loader#_target_": LOADER,
}


def train(bundle_root: Path, log_handler: logging.Handler | None = None, **override) -> None:
    """Run train.json in this process as ``monai.bundle run`` does; ``log_handler`` also gets the package's log."""
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=META, logging_file=LOGGING,
                        workflow_type="train", bundle_root=str(bundle_root), **{**SMALL, **override})
    package_logger = logging.getLogger("unext_monai")
    if log_handler is not None:  # logging.conf replaced the root logger's handlers, pytest's among them
        package_logger.addHandler(log_handler)
    try:
        wf.initialize()
        wf.run()
        wf.finalize()
    finally:
        if log_handler is not None:
            package_logger.removeHandler(log_handler)


def messages(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A small demo set (12 pictures of 64x64: 10 training, 2 validation) shared by the runs of this module."""
    return Path(make_demo_dataset(str(tmp_path_factory.mktemp("data") / "demo"), num_images=12, size=64))


# --- 1. bad data ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_folder(demo, tmp_path_factory) -> Path:
    """UNeXt-pytorch layout: 6 demo pairs, an RGBA and a 16-bit gray image (good), and a truncated PNG (bad)."""
    root = tmp_path_factory.mktemp("bad") / "busi_like"
    images, masks = root / "images", root / "masks" / "0"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(6):
        shutil.copy(demo / "images" / f"demo_{i:03d}.png", images / f"case_{i}.png")
        shutil.copy(demo / "masks" / "0" / f"demo_{i:03d}.png", masks / f"case_{i}.png")
    picture = Image.open(demo / "images" / "demo_006.png")
    picture.convert("RGBA").save(images / "rgba.png")
    gray16 = (np.asarray(picture.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(images / "gray16.png")
    data = (demo / "images" / "demo_007.png").read_bytes()
    (images / "truncated.png").write_bytes(data[: len(data) // 2])
    for name, src in (("rgba", 6), ("gray16", 6), ("truncated", 7)):
        shutil.copy(demo / "masks" / "0" / f"demo_{src:03d}.png", masks / f"{name}.png")
    return root


def test_bad_file_stops_training_before_any_epoch(bad_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception) as err:
        train(out, dataset_name="unext", dataset_dir=str(bad_folder), max_epochs=1)
    text = messages(err.value)
    bad = bad_folder / "images" / "truncated.png"
    assert "1 problem(s) in 1 of 9 datalist item(s); fix or remove these files, or pass skip_bad=True" in text
    assert f"{bad}: corrupt or truncated image file" in text
    assert not (out / "models").exists() or not list((out / "models").iterdir()), "training started"
    assert not (out / "eval" / "val_metrics.csv").exists()


def test_skip_bad_trains_on_the_rest_including_rgba_and_16_bit(bad_folder, tmp_path, caplog):
    out = tmp_path / "run"
    train(out, log_handler=caplog.handler, dataset_name="unext", dataset_dir=str(bad_folder), max_epochs=1,
          skip_bad=True, val_fraction=0.25)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"skipping case 'truncated': {bad_folder / 'images' / 'truncated.png'}: corrupt or truncated image file: " \
           "Truncated File Read" in warnings
    assert "left out 1 of 9 item(s) with problems; 8 remain" in warnings
    split = ConfigParser.load_config_file(str(out / "eval" / "split.json"))
    names = {i["name"] for i in split["training"] + split["validation"]}
    assert names == {f"case_{i}" for i in range(6)} | {"rgba", "gray16"}
    assert (out / "models" / "checkpoint_epoch=1.pt").is_file()


def test_rgba_16_bit_palette_and_gray_through_the_train_transforms(tmp_path):
    """train.json's transform chain turns every kind of picture into (3, 64, 64) float in [0, 1], scaled by bit depth,
    alpha dropped."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"spatial_size": [64, 64], "train_datalist": [], "val_datalist": []})
    transform = parser.get_parsed_content("validate#preprocessing")  # train#deterministic_transforms, no random ones
    train_transform = parser.get_parsed_content("train#preprocessing")
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    full16 = np.full((32, 48), 65535, np.uint16)
    full16[:, 24:] = 32768
    cases = {
        "rgba.png": (Image.new("RGBA", (48, 32), (255, 0, 0, 40)), (1.0, 0.0, 0.0)),
        "la.png": (Image.new("LA", (48, 32), (255, 0)), (1.0, 1.0, 1.0)),
        "gray16.png": (Image.fromarray(full16), None),
        "gray8.png": (Image.new("L", (48, 32), 51), (0.2, 0.2, 0.2)),
        "palette.png": (Image.new("RGB", (48, 32), (0, 0, 255)).convert("P"), None),
        "bilevel.png": (Image.new("1", (48, 32), 1), (1.0, 1.0, 1.0)),
    }
    for name, (picture, colour) in cases.items():
        picture.save(tmp_path / name)
        item = {"image": str(tmp_path / name), "label": [str(tmp_path / "mask.png")]}
        for chain in (transform, train_transform):
            out = chain(item)
            image, label = out["image"], out["label"]
            assert tuple(image.shape) == (3, 64, 64) and image.dtype == torch.float32, name
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0, name
            assert tuple(label.shape) == (1, 64, 64) and set(torch.unique(label).tolist()) <= {0.0, 1.0}, name
        image = transform(item)["image"]
        if colour is not None:
            assert torch.allclose(image.mean(dim=(1, 2)), torch.tensor(colour), atol=1e-3), (name, image.mean((1, 2)))
        if name == "gray16.png":  # 16 bit: 65535 -> 1.0, 32768 -> 0.5, not each picture's own min/max
            assert float(image[0, 0, 0]) == pytest.approx(1.0) and float(image[0, 0, -1]) == pytest.approx(0.5, 1e-3)


def test_pretrained_checkpoint_of_another_network_is_refused_before_any_epoch(demo, tmp_path):
    """train.json's pretrained_loader switched to ModelCheckpointLoader: a 1-channel checkpoint for a 3-channel run."""
    from unext_monai import UNeXt

    pretrained = tmp_path / "gray_model.pt"
    torch.save(UNeXt(2, 1, 1, features=(8, 16, 32, 64, 128)).state_dict(), pretrained)
    out = tmp_path / "run"
    with pytest.raises(Exception) as err:
        train(out, dataset_dir=str(demo), max_epochs=1, pretrained_checkpoint=str(pretrained), **RELIABLE)
    assert f"{pretrained}: checkpoint is for a network with in_channels=1, out_channels=1, features=(8, 16, 32, 64, " \
           "128) but the bundle's network_def has in_channels=3, out_channels=1, features=(8, 16, 32, 64, 128); set " \
           "network_def to match or use another checkpoint" in messages(err.value)
    assert not list((out / "models").glob("*.pt")) if (out / "models").exists() else True


# --- 3. SIGKILL and resume --------------------------------------------------------------------------------------------

EPOCHS = 4


def _cli(bundle_root: Path, demo: Path, **override) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
           "--meta_file", META, "--logging_file", LOGGING, "--bundle_root", str(bundle_root),
           "--dataset_dir", str(demo)]
    for key, value in {**SMALL, **RELIABLE, **override}.items():
        cmd += [f"--{key}", str(value).replace(" ", "")]
    return cmd


def _checkpoint(bundle_root: Path, epoch: int) -> dict:
    return torch.load(bundle_root / "models" / f"checkpoint_epoch={epoch}.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, dataset_dir=str(demo), max_epochs=EPOCHS, **RELIABLE)
    return root


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(demo, uninterrupted, tmp_path):
    root = tmp_path / "killed"
    log = tmp_path / "training.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_cli(root, demo, max_epochs=EPOCHS), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        # after epoch 2's checkpoint, wait until epoch 3 has run an iteration, then kill: mid-epoch
        while not ((root / "models" / "checkpoint_epoch=2.pt").exists() and f"Epoch [3/{EPOCHS}]" in log.read_text()):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint_epoch=2.pt in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    models = root / "models"
    for f in models.glob("*.pt"):  # every file under a .pt name loads: nothing half-written
        torch.load(f, map_location="cpu", weights_only=True)
    last = latest_checkpoint(str(models))
    state = _checkpoint(root, int(last.rsplit("=", 1)[1][:-3]))["trainer"]
    done = state["iteration"] // state["epoch_length"]
    assert 2 <= done < EPOCHS, f"killed after epoch {done}: not mid-run"

    train(root, dataset_dir=str(demo), max_epochs=EPOCHS, resume=True, **RELIABLE)

    resumed, reference = _checkpoint(root, EPOCHS), _checkpoint(uninterrupted, EPOCHS)
    assert resumed["trainer"] == reference["trainer"]  # iteration, epoch_length, max_epochs
    assert resumed["trainer"]["iteration"] // resumed["trainer"]["epoch_length"] == EPOCHS
    assert resumed["lr_scheduler"]["last_epoch"] == reference["lr_scheduler"]["last_epoch"] == EPOCHS
    assert resumed["lr_scheduler"]["_last_lr"] == pytest.approx(reference["lr_scheduler"]["_last_lr"], rel=1e-12)
    lrs = [g["lr"] for g in resumed["optimizer"]["param_groups"]]
    assert lrs == pytest.approx([g["lr"] for g in reference["optimizer"]["param_groups"]], rel=1e-12)
    with open(root / "eval" / "val_metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    assert torch.load(models / "model.pt", weights_only=True).keys() == resumed["model"].keys()
    # the checkpoint the run resumed from is superseded and removed, so a later --resume cannot pick an old one
    assert sorted(f.name for f in models.iterdir()) == [f"checkpoint_epoch={EPOCHS}.pt", "model.pt"]


# --- 4. determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_numbers(demo, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for root in runs:
        train(root, dataset_dir=str(demo), max_epochs=2, learning_rate=0.01, **RELIABLE)
    rows = []
    for root in runs:
        with open(root / "eval" / "val_metrics.csv") as f:
            rows.append(list(csv.DictReader(f)))
    assert [r["epoch"] for r in rows[0]] == ["1", "2"]
    for a, b in zip(*rows):
        assert a.keys() == b.keys()
        for key in a:
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
    weights = [_checkpoint(root, 2)["model"] for root in runs]
    for key, value in weights[0].items():
        assert torch.allclose(value.float(), weights[1][key].float(), atol=1e-6), key
    assert os.path.getsize(runs[0] / "models" / "model.pt") > 0
