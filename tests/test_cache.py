"""The training cache: uint8 items give the batches of the float32 cache; a memory budget spills to disk, which a
resumed run reuses and changed data or transforms invalidate; a cache that fits nowhere is refused before training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_training import train
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from monai.utils import set_determinism
from PIL import Image

import unext_monai.data.cache
from unext_monai.data import read_unext_pytorch
from unext_monai.data.cache import BudgetCacheDataset, available_memory_gb
from unext_monai.data.demo import make_demo_dataset
from unext_monai.transforms import LoadMaskd

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return read_unext_pytorch(make_demo_dataset(str(tmp_path_factory.mktemp("demo") / "demo"), num_images=10, size=48))


def _batches(parser: ConfigParser, dataset, epochs: int = 3) -> list[dict]:
    set_determinism(seed=0)
    loader = DataLoader(dataset(), batch_size=4, shuffle=True)
    return [batch for _ in range(epochs) for batch in loader]


def test_uint8_cache_gives_the_batches_of_the_float_cache(items: list[dict], tmp_path: Path) -> None:
    """What the network gets from the cache of uint8 pictures, in memory or on disk, equals what it got from the float32
    cache before (the ISIC 2018 augmentation, resized 48 -> 40)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "isic2018.json")])
    parser.update({"spatial_size": [40, 40], "train_datalist": items, "selection_datalist": []})
    cached = parser.get_parsed_content("train#deterministic_transforms")
    to_model = parser.get_parsed_content("train#to_model_input")
    after = parser.get_parsed_content("train#random_transforms") + parser.get_parsed_content("train#to_plain_tensors")
    # the float32 pipeline before: ToModelChannelsd and Resized cached
    before = Compose(cached[:2] + [to_model[0], cached[2]] + to_model[1:] + after)
    expected = _batches(parser, lambda: CacheDataset(items, before, progress=False))
    transform = parser.get_parsed_content("train#preprocessing")
    item_gb = 4 * 48 * 48 / 1e9  # RGB and mask, uint8
    for memory_gb, in_memory in ((1.0, 10), (0.0, 0), (4.5 * item_gb, 4)):
        cache_dir = tmp_path / str(in_memory)
        dataset = BudgetCacheDataset(items, transform, str(cache_dir), memory_gb)
        assert len(dataset.memory) == in_memory and len(list(cache_dir.glob("*.pt"))) == 10 - in_memory
        assert all(item["image"].dtype == item["label"].dtype == torch.uint8 for item in dataset.memory)
        got = _batches(parser, lambda d=dataset: d)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a["image"].dtype == torch.float32 and torch.equal(a["image"], b["image"]), memory_gb
            assert torch.equal(a["label"], b["label"]), memory_gb
    item = dataset.memory[0]
    assert item["image"].nbytes + item["label"].nbytes == 4 * 48 * 48  # a 256x256 item: 0.26 MB


def _pipeline(channel_dim="no_channel") -> Compose:
    return Compose([LoadImaged("image", image_only=True, dtype=None),
                    EnsureChannelFirstd("image", channel_dim=channel_dim), LoadMaskd("label")])


def test_changed_data_or_transforms_are_cached_afresh(tmp_path: Path) -> None:
    gray = tmp_path / "gray"
    gray.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(gray / f"{i}.png")
    data = [{"image": str(gray / f"{i}.png"), "label": [str(gray / "mask.png")]} for i in range(3)]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gray / "mask.png")
    cache = tmp_path / "cache"
    BudgetCacheDataset(data, _pipeline(), str(cache), 0.0)
    files = set(cache.iterdir())
    assert len(files) == 3
    BudgetCacheDataset(data, _pipeline(), str(cache), 0.0)  # the same: reused
    assert set(cache.iterdir()) == files
    BudgetCacheDataset(data, _pipeline(channel_dim=None), str(cache), 0.0)  # other cached transforms
    assert len(set(cache.iterdir()) - files) == 3
    files = set(cache.iterdir())
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(gray / "1.png")  # a changed picture
    dataset = BudgetCacheDataset(data, _pipeline(), str(cache), 0.0)
    assert len(set(cache.iterdir()) - files) == 1
    assert int(dataset[1]["image"].max()) == 200 and int(dataset[2]["image"].max()) == 20


@pytest.mark.slow
def test_a_budget_spills_to_disk_and_a_resumed_run_reuses_it(tmp_path: Path) -> None:
    logs: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())
    train(tmp_path, handler, max_epochs=1, cache_memory=0.001)  # 1 MB: 3 demo items of 0.26 MB
    cache = tmp_path / "eval" / "cache"
    training, selection = ([m for m in logs if m.startswith(f"{part} cache")] for part in ("training", "selection"))
    assert training[0].startswith("training cache: 3 items in memory (1 MB of the 1 MB budget), 26 on disk"), training
    assert f"26 on disk in {cache} (26 written, 0 reused)" in training[0]
    assert "0 items in memory" in selection[0] and "3 on disk" in selection[0]
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 29
    logs.clear()
    train(tmp_path, handler, max_epochs=2, cache_memory=0.001, resume=True)
    training = [m for m in logs if m.startswith("training cache")]
    assert "26 on disk" in training[0] and "(0 written, 26 reused)" in training[0], training
    assert sorted(cache.glob("*.pt")) == files
    assert (tmp_path / "models" / "checkpoint_epoch=2.pt").is_file()


def test_a_cache_that_fits_nowhere_is_refused_before_the_first_epoch(tmp_path: Path, monkeypatch) -> None:
    free = type("Usage", (), {"free": 1_000_000})
    monkeypatch.setattr(unext_monai.data.cache.shutil, "disk_usage", lambda path: free)
    with pytest.raises(Exception) as refused:
        train(tmp_path, max_epochs=1, cache_memory=0.0)
    cause = refused.value
    while not isinstance(cause, ValueError):
        cause = cause.__cause__ or cause.__context__
    assert "the training cache does not fit" in str(cause) and "1 MB free in" in str(cause), str(cause)
    assert "--cache_memory" in str(cause) and "--cache_dir" in str(cause)
    assert not list((tmp_path / "models").glob("checkpoint_*"))


def test_a_budget_beyond_the_available_memory_is_refused(items: list[dict], monkeypatch) -> None:
    monkeypatch.setattr(unext_monai.data.cache, "available_memory_gb", lambda: 3e-5)  # 30 kB: three 48x48 items
    with pytest.raises(ValueError, match="more than the 0 MB of memory available in a memory budget of 1.00 GB"):
        BudgetCacheDataset(items, _pipeline(channel_dim=None), None, 1.0)
    assert len(BudgetCacheDataset(items, _pipeline(channel_dim=None), None, 2e-5).memory) == 2


def test_the_default_budget_is_a_share_of_the_available_memory() -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    available = available_memory_gb()
    assert 0 < parser.get_parsed_content("cache_memory") <= available / 2 * 1.05
