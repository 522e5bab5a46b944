"""The start of a training run: its settings and folders checked before anything is written, one training per folder,
and an earlier run's outputs moved aside (never overwritten) only once training really starts."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time
from typing import Any

from unext_monai.distributed import is_rank0, on_rank0
from unext_monai.folders import cannot_write

__all__ = ["prepare_training_run", "move_earlier_run_aside",
           "latest_checkpoint", "reuse_freed_memory", "PREVIOUS_RUNS", "LOCK_FILE"]

logger = logging.getLogger("unext_monai")

#: folder (inside the checkpoint and output folders) keeping the outputs of earlier runs
PREVIOUS_RUNS = "previous_runs"
#: file (inside the checkpoint folder) that the training using the folder holds locked; it names the process
LOCK_FILE = ".training.lock"
_held_locks: dict[str, int] = {}  # lock file -> descriptor, open (so locked) until this process ends


def _earlier_outputs(ckpt_dir: str, output_dir: str) -> list[str]:
    checkpoints = sorted(glob.glob(os.path.join(glob.escape(ckpt_dir), "checkpoint_*")))
    found = [os.path.join(ckpt_dir, "model.pt"), *checkpoints]
    return [p for p in found + [os.path.join(output_dir, n) for n in ("val_metrics.csv", "evaluation")]
            if os.path.exists(p)]


def _runs(output_dir: str) -> list[str]:
    folder = os.path.join(output_dir, "tensorboard")
    return sorted(d for d in os.listdir(folder) if d.startswith("run-")) if os.path.isdir(folder) else []


def _lock(ckpt_dir: str) -> None:
    """Hold ``<ckpt_dir>/.training.lock`` (``flock``: released when this process ends, however it ends) naming this
    process; refuse if another process holds it."""
    import fcntl

    path = os.path.realpath(os.path.join(ckpt_dir, LOCK_FILE))
    if path in _held_locks:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BlockingIOError(f"{ckpt_dir} is in use by another training (process {holder}): one training per "
                              "checkpoint folder. Nothing was changed; wait for it to end, or give this run another "
                              "--bundle_root.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[path] = fd


def prepare_training_run(ckpt_dir: str, output_dir: str, resume: bool = False, pretrained_checkpoint: str | None = None,
                         max_epochs: Any = 1) -> str:
    """Check a run before anything is written (``max_epochs`` a whole number >= 1, writable folders, no other
    training on ``ckpt_dir``: this process holds it until it ends; a ``pretrained_checkpoint`` that is no earlier
    output :func:`move_earlier_run_aside` will move) on rank 0, and return its name on every rank: ``run-<date>-<time>``
    (its TensorBoard folder; a resumed run keeps the newest one's). Errors name the setting, folder or process."""
    return on_rank0(_prepare, ckpt_dir, output_dir, resume, pretrained_checkpoint, max_epochs)


def _prepare(ckpt_dir: str, output_dir: str, resume: bool, pretrained_checkpoint: str | None, max_epochs: Any) -> str:
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"--max_epochs {max_epochs!r}: give a whole number of epochs, 1 or more. Nothing was run.")
    for folder in (ckpt_dir, output_dir):
        if why := cannot_write(folder):
            raise PermissionError(f"{folder}: cannot be written ({why}); choose another --bundle_root")
    _lock(ckpt_dir)
    if resume:
        return (_runs(output_dir) or [f"run-{time.strftime('%Y%m%d-%H%M%S')}"])[-1]
    if pretrained_checkpoint and any(os.path.samefile(pretrained_checkpoint, p)
                                     for p in _earlier_outputs(ckpt_dir, output_dir) if os.path.isfile(p)):
        raise ValueError(f"pretrained_checkpoint {pretrained_checkpoint} is an earlier run's output, which a new run "
                         "moves aside: copy it out of that folder and point pretrained_checkpoint at the copy")
    name, n = f"run-{time.strftime('%Y%m%d-%H%M%S')}", 1
    while os.path.exists(os.path.join(output_dir, "tensorboard", name + (f"-{n}" if n > 1 else ""))):
        n += 1
    return name + (f"-{n}" if n > 1 else "")


def move_earlier_run_aside(engine: Any, ckpt_dir: str, output_dir: str, run_name: str) -> None:
    """Move an earlier run's outputs (``model.pt``, ``checkpoint_*``, ``val_metrics.csv``, ``evaluation/``) to
    ``<folder>/previous_runs/<its run name>/``, with a warning saying where. An ``Events.STARTED`` handler of the
    trainer, attached after the checkpoint loaders: a run refused before it trains moves nothing. Rank 0 only."""
    earlier = _earlier_outputs(ckpt_dir, output_dir)
    if not earlier or not is_rank0():
        return
    name = ([r for r in _runs(output_dir) if r != run_name] or [f"before-{run_name[len('run-'):]}"])[-1]
    archive, n = name, 1
    while any(os.path.exists(os.path.join(os.path.dirname(p), PREVIOUS_RUNS, archive)) for p in earlier):
        n += 1
        archive = f"{name}-{n}"
    for path in earlier:
        target = os.path.join(os.path.dirname(path), PREVIOUS_RUNS, archive)
        os.makedirs(target, exist_ok=True)
        shutil.move(path, os.path.join(target, os.path.basename(path)))
    logger.warning(f"a new run where an earlier one left its outputs: moved them to {PREVIOUS_RUNS}/{archive} in "
                   f"{ckpt_dir} and {output_dir} (to continue that run instead, move them back and add --resume True)")


def latest_checkpoint(ckpt_dir: str) -> str:
    """The newest ``checkpoint_epoch=N.pt`` in ``ckpt_dir``, to resume from (ignite's ``Checkpoint.last_checkpoint``
    knows only what its own process saved)."""
    found = glob.glob(os.path.join(glob.escape(ckpt_dir), "checkpoint_epoch=*.pt"))
    if not found:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint_epoch=N.pt to resume from; train without --resume first")
    return max(found, key=lambda p: int(p.rsplit("=", 1)[1][:-3]))


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Let glibc keep freed memory for reuse (``mallopt``): its default hands large blocks back at every free and
    zeroes fresh pages again at every allocation, which a CPU training step of dozens of large tensors pays each
    time (``benchmarks/train_speed.py`` measures it). Returns whether it was applied (glibc only)."""
    if not enabled or sys.platform != "linux":
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(-3, 1 << 30) and libc.mallopt(-1, (1 << 31) - 1))  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError, TypeError):
        return False
