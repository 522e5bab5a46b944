"""Checkpoints of the bundle's trainings: read without running code and named when they fail, written so that a kill
loses nothing, and holding what a resumed run needs to continue exactly as an uninterrupted one."""

from __future__ import annotations

import logging
import math
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Randomizable, Transform

from unext_monai.distributed import is_rank0
from unext_monai.io import write_atomic

__all__ = ["load_checkpoint_file", "same_state", "NamedCheckpointLoader", "AtomicCheckpointSaver", "RandomStates",
           "BestModelState"]

logger = logging.getLogger("unext_monai")


def _check_file(path: str) -> None:
    """Refuse a missing or empty file, and one of neither of ``torch.save``'s formats (a zip archive, a pickle):
    PyTorch's weights-only unpickler would report a text or a picture as a pickle that holds code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise ValueError(f"{path}: not a PyTorch checkpoint (empty, or neither torch.save's zip archive nor a pickle)")


def _problem(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {' '.join(lines)[:400]}"


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers and plain containers only, nothing in the file runs.
    Raises ``FileNotFoundError`` or ``ValueError`` naming the file: missing, empty, not a checkpoint, damaged, or
    holding other Python objects (to re-save as a plain state dict, if its source is trusted)."""
    name = os.fspath(path)
    _check_file(name)
    try:
        return torch.load(name, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{name}: cannot be loaded as weights only ({_problem(e)})") from None


def same_state(a: Any, b: Mapping[str, torch.Tensor]) -> bool:
    """Whether the state dict ``a`` holds exactly the tensors of ``b``."""
    return isinstance(a, Mapping) and a.keys() == b.keys() and all(torch.equal(a[k], v) for k, v in b.items())


class NamedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (weights-only, same arguments) whose failures name the file and the problem, which
    MONAI's leave to PyTorch's messages; and a learning-rate scheduler keeps the length it was built with (its
    ``T_max``, from this run's ``max_epochs``), so a resume with another ``max_epochs`` follows the new schedule."""

    def __call__(self, engine: Any) -> None:
        path = os.fspath(self.load_path)
        lengths = {k: obj.T_max for k, obj in self.load_dict.items() if hasattr(obj, "T_max")}
        try:
            _check_file(path)
            super().__call__(engine)
        except Exception as e:
            hint = " (a UNeXt-pytorch checkpoint: convert it with unext_monai.from_unext_pytorch)" \
                if "encoder1.weight" in str(e) else ""
            raise ValueError(f"{path}: cannot be loaded into this bundle's objects{hint}: {_problem(e)}") from None
        for key, t_max in lengths.items():
            self.load_dict[key].T_max = t_max


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`unext_monai.io.write_atomic` and deleting a superseded file only
    once its successor is complete (ignite deletes first, so a kill while saving lost both)."""

    def __init__(self, dirname: str, filename: str | None = None, stale: re.Pattern | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename, self.stale, self._to_remove = filename, stale, []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint, name, metadata)
        removed, self._to_remove = self._to_remove, []
        if self.stale is not None:  # once: what a resumed run started from, or an earlier run's in the same folder
            removed += [f.name for f in self.dirname.iterdir() if self.stale.match(f.name)]
            self.stale = None
        for old in set(removed) - {name}:
            (self.dirname / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        self._to_remove.append(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        try:
            write_atomic(path, lambda tmp: func(checkpoint, tmp, **self.kwargs))
        except (OSError, RuntimeError) as e:  # a full disk fails inside torch.save: "unexpected pos 896 vs 790"
            free = shutil.disk_usage(self.dirname).free // 2**20
            raise OSError(f"{path}: the checkpoint could not be written ({_problem(e)}); {free} MiB free on its disk "
                          "(no space left?). The previous checkpoints are kept.") from e


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically, so a kill at any moment leaves
    the previous checkpoint and ``model.pt`` or the new ones, never a truncated file or none: MONAI's turns ignite's
    atomic writes off. The first interval checkpoint of a run removes the older ones in the folder, which
    ``--resume`` would take for the newest. An undefined key metric (NaN: no validation item has a lesion) writes no
    best model."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                stale = None
                if checkpoint is self._interval_checkpoint:
                    name = next(iter(self.save_dict)) if len(self.save_dict) == 1 else "checkpoint"
                    stale = re.compile(rf"^{re.escape(name)}_(epoch|iteration)=\d+\.pt$")
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename=fixed, stale=stale)

    def metrics_completed(self, engine: Any) -> None:
        value = engine.state.metrics.get(getattr(engine.state, "key_metric_name", None))
        if isinstance(value, float) and math.isnan(value):
            logger.warning(f"the key metric is undefined at epoch {engine.state.epoch} (no validation item has a "
                           "lesion): no best model written")
            return
        super().metrics_completed(engine)


def _randomizables(obj: Any, found: list, depth: int = 0) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from a transform or a list of them, in a fixed order, each once (``RandAffined``
    holds ``RandAffine`` which holds ``RandAffineGrid``, each with its own generator)."""
    if depth <= 6 and isinstance(obj, (list, tuple)):
        for item in obj:
            _randomizables(item, found, depth + 1)
    elif depth <= 6 and isinstance(obj, Transform) and all(obj is not f for f in found):
        if isinstance(obj, Randomizable):
            found.append(obj)
        for value in vars(obj).values():
            _randomizables(value, found, depth + 1)
    return found


def _to_tensors(state: tuple) -> list:
    return [state[0], torch.from_numpy(np.asarray(state[1], dtype=np.int64)), *state[2:]]


def _from_tensors(state: list) -> tuple:
    return (state[0], state[1].numpy().astype(np.uint32), *state[2:])


class RandomStates:
    """The random generators of a training run as a checkpoint entry (``"rng"``), so a resumed run draws the numbers of
    an uninterrupted one: Python's, NumPy's, PyTorch's (and CUDA's) and the own generator of every random MONAI
    transform in ``transforms``, which ``set_determinism`` does not reach. Tensors and numbers only: it loads weights
    only. No stock class keeps these."""

    def __init__(self, transforms: Any) -> None:
        self.transforms = _randomizables(transforms, [])

    def state_dict(self) -> dict[str, Any]:
        version, state, gauss = random.getstate()
        return {"python": [version, torch.tensor(state, dtype=torch.int64), gauss],
                "numpy": _to_tensors(np.random.get_state()), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "transforms": [_to_tensors(t.R.get_state()) for t in self.transforms]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(f"the checkpoint holds the random states of {len(state['transforms'])} random transforms, "
                             f"the training has {len(self.transforms)}: resume with the interrupted run's transforms")
        version, py_state, gauss = state["python"]
        random.setstate((version, tuple(int(v) for v in py_state.tolist()), gauss))
        np.random.set_state(_from_tensors(state["numpy"]))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for transform, transform_state in zip(self.transforms, state["transforms"]):
            transform.R.set_state(_from_tensors(transform_state))


class BestModelState:
    """The best model of ``saver`` (the key-metric saver, a fixed ``key_metric_filename``) with its record (the
    saver's and ``evaluator``'s best metric and epoch) as one checkpoint entry: on resume ``model.pt`` is rewritten
    from it where a kill left a newer one, so the best model and its record never disagree."""

    def __init__(self, saver: AtomicCheckpointSaver, evaluator: Any) -> None:
        self.saver, self.evaluator = saver, evaluator

    def _path(self) -> Path:
        return Path(self.saver.save_dir) / self.saver._key_metric_checkpoint.save_handler.filename

    def state_dict(self) -> dict[str, Any]:
        record = self.saver._key_metric_checkpoint.state_dict()
        path = self._path()
        return {"saver": record, "model": load_checkpoint_file(path, "cpu") if record["_saved"] else None,
                "best": [float(getattr(self.evaluator.state, "best_metric", -1)),
                         int(getattr(self.evaluator.state, "best_metric_epoch", -1))]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.saver.load_state_dict(state["saver"])
        self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = state["best"]
        path, model = self._path(), state["model"]
        if not is_rank0():  # the process that writes the checkpoints
            return
        if model is not None and not (path.is_file() and same_state(load_checkpoint_file(path, "cpu"), model)):
            write_atomic(path, lambda tmp: torch.save(model, tmp))
            logger.info(f"{path}: restored the best model of epoch {state['best'][1]} from the checkpoint")
