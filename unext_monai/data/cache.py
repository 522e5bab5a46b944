"""The training cache within a memory budget: items in RAM up to ``memory_gb``, the rest on disk."""

from __future__ import annotations

import logging
import os
import shutil
import time
from copy import deepcopy

import psutil
import torch
from monai.data import MetaTensor, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import convert_to_contiguous

__all__ = ["available_memory_gb", "BudgetCacheDataset"]

logger = logging.getLogger("unext_monai")
GB = 1e9


def available_memory_gb() -> float:
    """GB of memory available now (``psutil``: on Linux ``MemAvailable``)."""
    return psutil.virtual_memory().available / GB


def _item_hash(item: dict) -> bytes:
    """The item with the size and time of each of its files: a changed file is cached afresh."""
    files = [p for v in item.values() for p in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(p, str)]
    return pickle_hashing({**item, "_files": [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files
                                              if os.path.isfile(p)]})


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.0f} MB"


def _nbytes(item: dict) -> int:
    return sum(v.nbytes for v in item.values() if isinstance(v, torch.Tensor))


class BudgetCacheDataset(PersistentDataset):
    """MONAI's ``CacheDataset`` keeps every item in RAM, its ``PersistentDataset`` every item on disk: this keeps the
    first items in RAM up to ``memory_gb`` (their tensors' bytes) and the rest in ``cache_dir`` (``None``: computed at
    every use), all built here, before training, up to the first random transform or non-MONAI callable. A file is
    named by its item, its files' sizes and times and the cached transforms, so changed data or transforms are not
    reused. Raises ``ValueError`` naming the sizes where the cache does not fit the available memory or disk."""

    def __init__(self, data, transform, cache_dir: str | None, memory_gb: float, name: str = "training") -> None:
        super().__init__(data, transform, cache_dir, hash_func=_item_hash, hash_transform=pickle_hashing)
        start, budget, used, size = time.perf_counter(), memory_gb * GB, 0, 0
        available = available_memory_gb() * GB
        self.memory: list[dict] = []
        for item in self.data:
            cached = self._pre_transform(deepcopy(item))
            size = _nbytes(cached)
            if used + size > budget:
                break
            if used + size > available:  # the system would end the run without a word
                raise ValueError(f"the {name} cache does not fit: more than the {_size(available)} of memory "
                                 f"available in a memory budget of {_size(budget)} (--cache_memory; by default half "
                                 "of what is available)")
            self.memory.append(cached)
            used += size
        rest = [] if cache_dir is None else [i for i in self.data[len(self.memory):] if not self._on_disk(i)]
        free = shutil.disk_usage(self.cache_dir).free if rest else 0
        if size * len(rest) > free:
            raise ValueError(
                f"the {name} cache does not fit: {len(self.data)} items of about {size / 1e6:.2f} MB, "
                f"{_size(used)} of them within the memory budget of {_size(budget)} (--cache_memory), "
                f"{_size(size * len(rest))} more to write but {_size(free)} free in {self.cache_dir} (--cache_dir)")
        for item in rest:
            self._cachecheck(item)
        n_disk = len(self.data) - len(self.memory)
        where = (f"on disk in {self.cache_dir} ({len(rest)} written, {n_disk - len(rest)} reused)" if cache_dir
                 else "computed at every use (cache_dir null)")
        logger.info(f"{name} cache: {len(self.memory)} items in memory ({_size(used)} of the {_size(budget)} budget), "
                    f"{n_disk} {where}, in {time.perf_counter() - start:.1f} s")

    def _on_disk(self, item: dict) -> bool:
        return (self.cache_dir / f"{self.hash_func(item).decode('utf-8')}{self.transform_hash}.pt").is_file()

    def _pre_transform(self, item: dict) -> dict:
        """Contiguous, as CacheDataset keeps them (the same tensors after it), and plain tensors: a MetaTensor's
        metadata takes more memory and loading time than the pixels of a small picture."""
        item = convert_to_contiguous(super()._pre_transform(item), memory_format=torch.contiguous_format)
        return {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in item.items()}

    def _transform(self, index: int):
        index %= len(self.data)
        cached = deepcopy(self.memory[index]) if index < len(self.memory) else self._cachecheck(self.data[index])
        for key, value in cached.items():  # the file name, all the transforms after the cache read (ToModelChannelsd)
            path = self.data[index].get(key)
            path = path[0] if isinstance(path, (list, tuple)) and path else path
            if isinstance(value, torch.Tensor) and isinstance(path, str):
                cached[key] = MetaTensor(value, meta={"filename_or_obj": path})
        return self._post_transform(cached)
