"""Start-up checks of a training run, before anything is written.

- :func:`check_command_line`: every ``--key`` given to ``python -m monai.bundle run`` names an entry of the configs;
  MONAI adds unknown keys silently, so ``--max_epoch 2`` (for ``max_epochs``) would run the full schedule; and a
  true/false entry gets ``True`` or ``False``: ``--resume false`` would pass the text ``'false'``, which counts as true.
- :func:`prepare_training_run`: ``max_epochs`` is a number of epochs, no other training uses the checkpoint folder
  (a lock held until this process ends, however it ends), and the output folders are writable. Returns the run's
  name, which names its TensorBoard folder.
- :func:`move_earlier_run_aside`: at the trainer's start, once every input was read and every check passed, the
  outputs of an earlier run in the same folders (its best model, resumable checkpoint, metric history, evaluation)
  are moved aside, never overwritten, unless the run resumes it.
- :func:`reuse_freed_memory`: glibc keeps freed memory for reuse (a CPU training speed setting).
"""

from __future__ import annotations

import ast
import difflib
import glob
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from unext_monai.distributed import is_rank0, on_rank0

__all__ = ["check_command_line", "prepare_training_run", "move_earlier_run_aside", "reuse_freed_memory",
           "PREVIOUS_RUNS", "TENSORBOARD", "LOCK_FILE"]

logger = logging.getLogger("unext_monai")

PREVIOUS_RUNS = "previous_runs"
"""Folder (inside the checkpoint and output folders) where the outputs of earlier runs are kept."""
TENSORBOARD = "tensorboard"
"""Folder (inside the output folder) holding one TensorBoard folder per run."""
LOCK_FILE = ".training.lock"
"""File (inside the checkpoint folder) that the training using the folder holds locked; it names the process."""
_held_locks: dict[str, int] = {}  # lock file -> descriptor, open (so locked) until this process ends


def _command_line_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(run arguments, overrides)`` of a ``python -m monai.bundle run ...`` command line, else ``None``."""
    if len(argv) < 2 or not os.path.normpath(argv[0]).endswith(os.path.join("monai", "bundle", "__main__.py")):
        return None
    if argv[1] != "run":
        return None
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import run

    own = set(inspect.signature(run).parameters) | set(inspect.signature(ConfigWorkflow.__init__).parameters)
    own -= {"self", "override"}
    values: dict[str, Any] = {}
    tokens = list(argv[2:])
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            continue  # the positional run_id
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i < len(tokens) and not tokens[i].startswith("--"):
                value = tokens[i]
                i += 1
            else:
                value = "True"
        values[key.replace("-", "_")] = value  # as fire, which runs monai.bundle, reads flags
    if "args_file" in values:
        from monai.bundle import ConfigParser

        values = {**ConfigParser.load_config_file(values["args_file"]), **values}
    run_args = {k: v for k, v in values.items() if k in own}
    overrides = {k: v for k, v in values.items() if k not in own}
    return run_args, overrides


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        value = parsed
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


def _all_keys(config: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return keys
    for k, v in items:
        key = f"{prefix}{k}"
        keys.append(key)
        keys += _all_keys(v, key + "#")
    return keys


def _command_line_value(token: Any) -> Any:
    """The value ``monai.bundle run`` (python-fire) makes of a ``--key value`` token; ``--args_file`` values are
    already typed."""
    if not isinstance(token, str):
        return token
    try:
        from fire.parser import DefaultParseValue
    except ImportError:  # monai.bundle's command line needs fire; without it nothing here runs
        return token
    return DefaultParseValue(token)


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse ``--key`` overrides that name no entry of the run's configs, and texts given to true/false entries,
    before anything runs or is written.

    Applies to ``python -m monai.bundle run ...`` (``argv`` defaults to ``sys.argv``); other callers (scripts,
    ``ConfigWorkflow`` in Python) pass their overrides as they mean them and are not checked. Keys of nested entries
    use MONAI's ``#`` paths (``--train#trainer#max_epochs``); ``monai.bundle run``'s own arguments are allowed.
    The command line reads only ``True`` and ``False`` as booleans: ``--resume false`` passes the text ``'false'``,
    which counts as true (it would resume, ``--tta false`` would run TTA), so such values are refused.

    Raises:
        ValueError: naming each unknown key and the nearest known keys, or each true/false entry given a text.
    """
    parsed = _command_line_overrides(sys.argv if argv is None else argv)
    if parsed is None:
        return
    run_args, overrides = parsed
    if not overrides or "config_file" not in run_args:
        return
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_files(_as_list(run_args["config_file"]))
    files = ", ".join(_as_list(run_args["config_file"]))
    known = set(_all_keys(config))
    unknown = [k for k in overrides if k not in known]
    if unknown:
        top_level = sorted(k for k in known if "#" not in k)
        lines = []
        for key in unknown:
            near = difflib.get_close_matches(key, top_level if "#" not in key else sorted(known), n=1, cutoff=0.6)
            lines.append(f"--{key}" + (f" (did you mean --{near[0]}?)" if near else ""))
        raise ValueError(f"unknown override(s) on the command line, not an entry of {files}: {'; '.join(lines)}. "
                         "Nothing was run.")
    entries = ConfigParser(config)
    not_bool = [f"--{key} {token}" for key, token in overrides.items()
                if isinstance(entries[key], bool) and not isinstance(_command_line_value(token), bool)]
    if not_bool:
        raise ValueError(
            f"{'; '.join(not_bool)}: true/false entries of {files}, and the command line reads only True and False "
            "as booleans (anything else is passed on as a text or number, and the text 'false' counts as true): "
            "write True or False. Nothing was run."
        )


def _check_writable(folder: str, what: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(
            f"{folder}: the {what} folder is not writable ({e.strerror or e}); the run would fail at its first save. "
            "Choose another --bundle_root (or ckpt_dir / output_dir), or fix the folder's permissions."
        ) from None


def _earlier_outputs(ckpt_dir: str, output_dir: str) -> list[tuple[str, str]]:
    """``(folder, path)`` of the files and folders of an earlier training run in these folders."""
    found = [(ckpt_dir, os.path.join(ckpt_dir, "model.pt"))]
    found += [(ckpt_dir, p) for p in sorted(glob.glob(os.path.join(glob.escape(ckpt_dir), "checkpoint_*.pt")))]
    found += [(output_dir, os.path.join(output_dir, name)) for name in ("val_metrics.csv", "evaluation")]
    return [(folder, p) for folder, p in found if os.path.exists(p)]


def _new_run_name(output_dir: str) -> str:
    base = "run-" + time.strftime("%Y%m%d-%H%M%S")
    name, n = base, 1
    while os.path.exists(os.path.join(output_dir, TENSORBOARD, name)):
        n += 1
        name = f"{base}-{n}"
    return name


def _latest_run_name(output_dir: str, other_than: str = "") -> str | None:
    folder = os.path.join(output_dir, TENSORBOARD)
    runs = sorted(d for d in os.listdir(folder) if d.startswith("run-")) if os.path.isdir(folder) else []
    runs = [r for r in runs if r != other_than]
    return runs[-1] if runs else None


def _lock(ckpt_dir: str) -> None:
    """Lock ``<ckpt_dir>/.training.lock`` for this process (``flock``: the system releases it when the process ends,
    a kill included) and write the process id into it; refuse if another process holds it."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return
    path = os.path.realpath(os.path.join(ckpt_dir, LOCK_FILE))
    if path in _held_locks:  # an earlier run of this process
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RuntimeError(
            f"{ckpt_dir} is in use by another training (process {holder}, which holds {path}): one training per "
            "checkpoint folder at a time. Nothing was changed. Wait for it to end or stop it, or give this run another "
            "--bundle_root (or ckpt_dir)."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[path] = fd


def prepare_training_run(
    ckpt_dir: str, output_dir: str, resume: bool = False, pretrained_checkpoint: str | None = None,
    max_epochs: Any = 1,
) -> str:
    """Check a training run's settings and folders before anything is written, and return the run's name.

    1. ``max_epochs`` is a whole number of at least 1 (``--max_epochs abc`` stops here, not in the trainer).
    2. ``ckpt_dir`` and ``output_dir`` are created and checked writable, so a read-only or full folder stops the run
       now, not at the first save after an epoch; and this process locks ``ckpt_dir`` (:data:`LOCK_FILE`) until it
       ends: a second training on the same folder stops here, naming the first.
    3. A ``pretrained_checkpoint`` that is one of the earlier outputs, which a new run moves aside, is refused.
    4. The name is ``run-<date>-<time>`` for a new run; a resumed run keeps the name of the newest run under
       ``<output_dir>/tensorboard/``, so its curves continue in the same TensorBoard folder.

    The earlier outputs are moved aside later, by :func:`move_earlier_run_aside` at the trainer's start. In a
    distributed run only rank 0 does this (it alone writes checkpoints and logs); every rank gets the name.

    Raises:
        ValueError: ``max_epochs`` is not a whole number of at least 1; ``pretrained_checkpoint`` is an earlier output.
        PermissionError: a folder is not writable.
        RuntimeError: another process trains in ``ckpt_dir``.
    """
    return on_rank0(_prepare_training_run, ckpt_dir, output_dir, resume, pretrained_checkpoint, max_epochs)


def _prepare_training_run(
    ckpt_dir: str, output_dir: str, resume: bool = False, pretrained_checkpoint: str | None = None,
    max_epochs: Any = 1,
) -> str:
    """:func:`prepare_training_run` in one process."""
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"--max_epochs {max_epochs!r}: give a whole number of epochs, 1 or more. Nothing was run.")
    _check_writable(ckpt_dir, "checkpoint")
    _lock(ckpt_dir)
    _check_writable(output_dir, "output")
    if resume:
        return _latest_run_name(output_dir) or _new_run_name(output_dir)
    if pretrained_checkpoint and any(
        os.path.exists(pretrained_checkpoint) and os.path.samefile(pretrained_checkpoint, p)
        for _, p in _earlier_outputs(ckpt_dir, output_dir) if os.path.isfile(p)
    ):
        raise ValueError(
            f"pretrained_checkpoint {pretrained_checkpoint} is the output of an earlier run in {ckpt_dir}, which a new "
            "run moves aside: copy it out of that folder first and point pretrained_checkpoint at the copy"
        )
    return _new_run_name(output_dir)


def move_earlier_run_aside(engine: Any, ckpt_dir: str, output_dir: str, run_name: str) -> None:
    """Move the outputs of an earlier run in these folders (``model.pt``, ``checkpoint_*.pt``, ``val_metrics.csv``,
    ``evaluation/``) to ``<folder>/previous_runs/<its run name>/``, with a warning that says where: a new run never
    replaces a trained model. An ``Events.STARTED`` handler of the trainer (``engine``), attached after the checkpoint
    loaders: by then every input was read and every check passed, so a run refused before it trains moves nothing.
    Only rank 0 of a distributed run moves; archives are never overwritten."""
    earlier = _earlier_outputs(ckpt_dir, output_dir)
    if not earlier or not is_rank0():
        return
    previous = _latest_run_name(output_dir, other_than=run_name) or f"before-{run_name[len('run-'):]}"
    archive, n = previous, 1
    while any(os.path.exists(os.path.join(folder, PREVIOUS_RUNS, archive)) for folder, _ in earlier):
        n += 1
        archive = f"{previous}-{n}"
    moved = []
    for folder, path in earlier:
        target = os.path.join(folder, PREVIOUS_RUNS, archive)
        os.makedirs(target, exist_ok=True)
        shutil.move(path, os.path.join(target, os.path.basename(path)))
        moved.append(os.path.join(target, os.path.basename(path)))
    logger.warning(
        f"this is a new run (resume false) in folders that hold an earlier run's outputs: moved {len(moved)} of "
        f"them aside, to {sorted({os.path.dirname(m) for m in moved})} (to continue that run instead, move them "
        "back and add --resume True; delete the folder when you no longer need it)"
    )


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Let glibc keep and reuse freed memory for large tensors instead of returning it to the system at every free.

    PyTorch's CPU allocator asks glibc for every tensor; glibc serves blocks above its mmap threshold (128 KiB to
    32 MiB, adaptive) with fresh pages from the kernel, which zeroes each page on first touch, and gives them back on
    free. A training step of batch 8 at 256x256 allocates and frees dozens of such tensors, so each step pays the
    zeroing of hundreds of MB again. Raising the mmap and trim thresholds (``mallopt``) keeps them in the heap, for
    reuse. Returns whether the setting was applied (glibc only; elsewhere nothing changes).
    """
    if not enabled:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False
