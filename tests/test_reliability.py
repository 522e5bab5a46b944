"""Reliability of the training bundle: bad data is named before training (or skipped on request), odd pictures train,
a run killed with SIGKILL resumes to the same end state, runs with the same seed give the same numbers, and nothing a
run made is lost (one training per folder, a refused run changes nothing)."""

from __future__ import annotations

import csv
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
from bundle_training import CONFIGS, LOGGING, META, ROOT, SMALL, train
from monai.bundle import ConfigParser
from PIL import Image

from unext_monai.data.demo import make_demo_dataset
from unext_monai.runs import LOCK_FILE, latest_checkpoint

pytestmark = pytest.mark.slow  # real trainings and bundle runs

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
    assert str(bad) in text and str(bad_folder / "images" / "case_0.png") not in text
    assert not list((out / "models").glob("*.pt")) if (out / "models").exists() else True, "training started"
    assert not (out / "eval" / "val_metrics.csv").exists()


def test_skip_bad_trains_on_the_rest_including_rgba_and_16_bit(bad_folder, tmp_path, caplog):
    out = tmp_path / "run"
    train(out, log_handler=caplog.handler, dataset_name="unext", dataset_dir=str(bad_folder), max_epochs=1,
          skip_bad=True, val_fraction=0.25)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(bad_folder / "images" / "truncated.png") in w for w in warnings)
    split = ConfigParser.load_config_file(str(out / "eval" / "split.json"))
    names = {i["name"] for i in split["training"] + split["selection"] + split["validation"]}
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
    """train.json's pretrained_loader is ModelCheckpointLoader: a 1-channel checkpoint for a 3-channel run."""
    from unext_monai import UNeXt

    pretrained = tmp_path / "gray_model.pt"
    torch.save(UNeXt(2, 1, 1, features=(8, 16, 32, 64, 128)).state_dict(), pretrained)
    out = tmp_path / "run"
    with pytest.raises(Exception) as err:
        train(out, dataset_dir=str(demo), max_epochs=1, pretrained_checkpoint=str(pretrained))
    assert str(pretrained) in messages(err.value) and "down_1.conv.weight" in messages(err.value)
    assert not list((out / "models").glob("*.pt")) if (out / "models").exists() else True


# --- 3. SIGKILL and resume --------------------------------------------------------------------------------------------

EPOCHS = 4


def _cli(bundle_root: Path, demo: Path, **override) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
           "--meta_file", META, "--logging_file", LOGGING, "--bundle_root", str(bundle_root),
           "--dataset_dir", str(demo)]
    for key, value in {**SMALL, **override}.items():
        cmd += [f"--{key}", str(value).replace(" ", "")]
    return cmd


def _checkpoint(bundle_root: Path, epoch: int) -> dict:
    return torch.load(bundle_root / "models" / f"checkpoint_epoch={epoch}.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, dataset_dir=str(demo), max_epochs=EPOCHS)
    return root


def _max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(demo, uninterrupted, tmp_path, caplog):
    root = tmp_path / "killed"
    log = tmp_path / "training.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_cli(root, demo, max_epochs=EPOCHS), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        # once epoch 2's checkpoint is written, epoch 3 runs: kill it then, mid-epoch
        while not (root / "models" / "checkpoint_epoch=2.pt").exists():
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

    train(root, log_handler=caplog.handler, dataset_dir=str(demo), max_epochs=EPOCHS, resume=True)

    resumed, reference = _checkpoint(root, EPOCHS), _checkpoint(uninterrupted, EPOCHS)
    assert resumed["trainer"] == reference["trainer"]  # iteration, epoch_length, max_epochs
    # exact: the same weights, optimizer moments and best model as the run that was never interrupted
    assert _max_weight_difference(resumed["model"], reference["model"]) <= 1e-6
    assert _max_weight_difference(resumed["best_metric"]["model"], reference["best_metric"]["model"]) <= 1e-6
    moments = [(s["exp_avg"], r["exp_avg"]) for s, r in zip(resumed["optimizer"]["state"].values(),
                                                             reference["optimizer"]["state"].values())]
    assert max(float((a - b).abs().max()) for a, b in moments) <= 1e-6
    assert resumed["lr_scheduler"]["_last_lr"] == pytest.approx(reference["lr_scheduler"]["_last_lr"], rel=1e-12)
    rows = [list(csv.DictReader(open(r / "eval" / "val_metrics.csv"))) for r in (root, uninterrupted)]
    assert [int(r["epoch"]) for r in rows[0]] == list(range(1, EPOCHS + 1))
    for a, b in zip(*rows):
        assert float(a["val_mean_dice"]) == pytest.approx(float(b["val_mean_dice"]), abs=1e-6)
    # the log tells the true best after the resume, as the uninterrupted run does
    best = reference["best_metric"]
    assert f"{best['best'][0]:.4f}, epoch {best['best'][1]}" in caplog.text
    assert torch.load(models / "model.pt", weights_only=True).keys() == resumed["model"].keys()
    # the checkpoint the run resumed from is superseded and removed, so a later --resume cannot pick an old one
    assert sorted(f.name for f in models.iterdir() if f.name != LOCK_FILE) == [f"checkpoint_epoch={EPOCHS}.pt",
                                                                                 "model.pt"]


def test_best_model_and_its_record_are_restored_together(demo, uninterrupted, tmp_path, caplog):
    """A run killed after writing a newer model.pt but before its checkpoint: resuming restores model.pt from the
    checkpoint, which carries the best weights with their record, and the run ends as the uninterrupted one."""
    root = tmp_path / "run"
    # the 4-epoch schedule stopped after epoch 2, as a kill during epoch 3 leaves it
    train(root, dataset_dir=str(demo), max_epochs=EPOCHS, **{"train#trainer#max_epochs": 2})
    assert (root / "models" / "checkpoint_epoch=2.pt").is_file()
    stranger = {k: torch.rand_like(v.float()).to(v.dtype) for k, v in _checkpoint(root, 2)["model"].items()}
    torch.save(stranger, root / "models" / "model.pt")  # a newer model.pt whose checkpoint was never written

    train(root, log_handler=caplog.handler, dataset_dir=str(demo), max_epochs=EPOCHS, resume=True)

    final = _checkpoint(root, EPOCHS)["best_metric"]
    assert _max_weight_difference(torch.load(root / "models" / "model.pt", weights_only=True), final["model"]) == 0
    reference = _checkpoint(uninterrupted, EPOCHS)["best_metric"]
    assert final["best"][1] == reference["best"][1]
    assert final["best"][0] == pytest.approx(reference["best"][0], abs=1e-6)
    assert _max_weight_difference(final["model"], reference["model"]) <= 1e-6


def test_resume_with_a_new_max_epochs_follows_the_new_schedule_length(demo, tmp_path):
    """The cosine schedule of a run resumed with another max_epochs ends at the new last epoch; before, it kept the
    checkpoint's length and cycled back up (lr 1e-4, then 1e-5, then 1e-4 again)."""
    root = tmp_path / "run"
    train(root, dataset_dir=str(demo), max_epochs=1)
    train(root, dataset_dir=str(demo), max_epochs=2, resume=True)
    schedule = _checkpoint(root, 2)["lr_scheduler"]
    assert schedule["T_max"] == 2
    assert schedule["_last_lr"] == pytest.approx([1e-5])  # min_learning_rate at the end, not learning_rate again


# --- 4. determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_numbers(demo, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for root in runs:
        train(root, dataset_dir=str(demo), max_epochs=2, learning_rate=0.01)
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


# --- 5. nothing a run made is lost; every start checks before it writes -------------------------------------------


def test_rerun_without_resume_moves_the_finished_run_aside(demo, tmp_path, caplog):
    root = tmp_path / "run"
    train(root, dataset_dir=str(demo), max_epochs=1)
    first = torch.load(root / "models" / "model.pt", weights_only=True)
    first_history = (root / "eval" / "val_metrics.csv").read_text()
    train(root, log_handler=caplog.handler, dataset_dir=str(demo), max_epochs=1, learning_rate=0.05)
    archives = list((root / "models" / "previous_runs").iterdir())
    assert len(archives) == 1
    kept = archives[0]
    assert _max_weight_difference(torch.load(kept / "model.pt", weights_only=True), first) == 0
    assert (kept / "checkpoint_epoch=1.pt").is_file()
    assert (root / "eval" / "previous_runs" / kept.name / "val_metrics.csv").read_text() == first_history
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "checkpoint_epoch=1.pt").is_file()
    assert f"previous_runs/{kept.name}" in caplog.text
    # one TensorBoard folder per run, named as the archive of the earlier run
    runs = sorted(p.name for p in (root / "eval" / "tensorboard").iterdir())
    assert len(runs) == 2 and runs[0] == kept.name


def test_preflight_check_runs_on_every_start(demo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    root = tmp_path / "run"
    train(root, dataset_dir=str(data), max_epochs=1)
    split = ConfigParser.load_config_file(str(root / "eval" / "split.json"))
    damaged = Path(split["training"][0]["image"])
    damaged.write_bytes(damaged.read_bytes()[:200])  # damaged since the split was made
    with pytest.raises(Exception) as err:
        train(root, dataset_dir=str(data), max_epochs=2, resume=True)
    assert str(damaged) in messages(err.value)
    assert not (root / "models" / "checkpoint_epoch=2.pt").exists()


def test_unknown_override_stops_the_run_before_anything_is_written(demo, tmp_path):
    root = tmp_path / "run"
    proc = subprocess.run(_cli(root, demo, max_epoch=2), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]  # the message, not the tracebacks MONAI wraps it in
    assert "--max_epoch " in last and "--max_epochs?" in last
    assert not root.exists() or not any(root.rglob("*")), sorted(root.rglob("*"))


def test_unwritable_checkpoint_folder_stops_before_the_first_epoch(demo, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint folder should be")
    root = tmp_path / "run"
    with pytest.raises(Exception) as err:
        train(root, dataset_dir=str(demo), max_epochs=1, ckpt_dir=str(blocker / "models"))
    assert str(blocker / "models") in messages(err.value)
    assert not (root / "eval" / "val_metrics.csv").exists()


def test_all_empty_ground_truth_is_undefined_not_zero(demo, tmp_path, caplog):
    data = tmp_path / "empty_masks"
    shutil.copytree(demo, data)
    for mask in (data / "masks" / "0").glob("*.png"):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    root = tmp_path / "run"
    train(root, log_handler=caplog.handler, dataset_dir=str(data), max_epochs=2)
    assert "metric of val_mean_dice: 0.0" not in caplog.text
    assert not (root / "models" / "model.pt").exists()
    with open(root / "eval" / "val_metrics.csv") as f:
        assert all(np.isnan(float(r["val_mean_dice"])) for r in csv.DictReader(f))


def test_outputs_have_normal_file_modes(demo, tmp_path):
    old = os.umask(0o022)
    try:
        root = tmp_path / "run"
        train(root, max_epochs=1)  # the demo set made in eval/demo_data
    finally:
        os.umask(old)
    assert (root / "eval" / "split.json").stat().st_mode & 0o777 == 0o644
    assert (root / "eval" / "demo_data").stat().st_mode & 0o777 == 0o755
    assert (root / "models" / "model.pt").stat().st_mode & 0o777 == 0o644
    assert not [p for p in (root / "eval").iterdir() if p.name.startswith(".")]


def test_a_second_training_on_a_folder_in_use_is_refused_and_changes_nothing(demo, tmp_path):
    root = tmp_path / "run"
    log = tmp_path / "first.log"
    with open(log, "w") as f:  # a long first run, stopped once the second was refused
        first = subprocess.Popen(_cli(root, demo, max_epochs=300), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not list((root / "models").glob("checkpoint_epoch=*.pt")):
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        with pytest.raises(Exception) as err:
            train(root, dataset_dir=str(demo), max_epochs=1)
        assert first.poll() is None, "the first training ended before the second was refused"
        assert f"process {first.pid}" in messages(err.value)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not list(root.rglob("previous_runs")), "the second run moved the first's outputs aside"
    assert list((root / "models").glob("checkpoint_epoch=*.pt")) and (root / "eval" / "val_metrics.csv").is_file()


def test_a_refused_run_leaves_the_trained_model_in_place(demo, tmp_path):
    """A new run that stops before it trains (a bad setting, a damaged picture) moves nothing aside: the trained model
    stays where inference and --resume True look for it."""
    data = tmp_path / "data"
    shutil.copytree(demo, data)
    root = tmp_path / "run"
    train(root, dataset_dir=str(data), max_epochs=1)
    trained = {p.name: p.read_bytes() for p in (root / "models").glob("*.pt")}
    history = (root / "eval" / "val_metrics.csv").read_bytes()
    assert "model.pt" in trained

    def unchanged() -> None:
        assert {p.name: p.read_bytes() for p in (root / "models").glob("*.pt")} == trained
        assert (root / "eval" / "val_metrics.csv").read_bytes() == history
        assert not list(root.rglob("previous_runs"))

    with pytest.raises(Exception) as err:
        train(root, dataset_dir=str(data), max_epochs="abc")
    unchanged()
    assert "--max_epochs 'abc'" in messages(err.value)
    split = ConfigParser.load_config_file(str(root / "eval" / "split.json"))
    damaged = Path(split["training"][0]["image"])
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(Exception) as err:
        train(root, dataset_dir=str(data), max_epochs=1)
    unchanged()
    assert str(damaged) in messages(err.value)
    damaged.write_bytes((demo / "images" / damaged.name).read_bytes())
    from unext_monai import UNeXt

    torch.save(UNeXt(2, 1, 1, features=(8, 16, 32, 64, 128)).state_dict(), tmp_path / "gray.pt")
    with pytest.raises(Exception) as err:  # refused by its loader when the trainer starts
        train(root, dataset_dir=str(data), max_epochs=1, pretrained_checkpoint=str(tmp_path / "gray.pt"))
    unchanged()
    assert str(tmp_path / "gray.pt") in messages(err.value)


def test_a_max_epochs_that_is_no_number_stops_the_run_before_anything_is_written(demo, tmp_path):
    root = tmp_path / "run"
    proc = subprocess.run(_cli(root, demo, max_epochs="abc"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ValueError: --max_epochs 'abc': give a whole number" in proc.stdout + proc.stderr  # MONAI's own error last
    assert not root.exists() or not any(root.rglob("*")), sorted(root.rglob("*"))
