"""The one home of the package's small file jobs: atomic writes, weights-only loading, output file names.

Every file the package writes (checkpoints, splits, metrics, masks, reports, exports) goes through
:func:`write_atomic`: it is written to a hidden temporary file in the destination folder, flushed to disk, given the
permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), and renamed over the destination. A
process killed at any moment leaves either the old file or the new one, never a half-written one, and no temporary
file survives an exception. A folder built whole (the demo set, a release) is built in a folder from
:func:`make_build_folder` and put in place by :func:`replace_folder`: never a mix of the old folder and the new one,
and what a killed build left is removed by the next one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from typing import Any, Callable

import torch

__all__ = [
    "write_atomic",
    "write_json_atomic",
    "make_build_folder",
    "tidy_build_leftovers",
    "replace_folder",
    "umask_mode",
    "load_checkpoint_file",
    "NIFTI_SUFFIXES",
    "file_stem",
]

logger = logging.getLogger("unext_monai")

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask: the permissions a plain ``open``/``mkdir`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any]) -> str:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is ``.<name>.<random>.part``, never under the destination's suffix (a folder's ``*.pt`` or
    ``*.png`` never lists it), except for NIfTI, whose writer picks the compression from the name:
    ``.<name>.<random>.part.nii.gz``. The folder is created if needed. Returns ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    suffix = next((s for s in sorted(NIFTI_SUFFIXES, key=len, reverse=True) if name.lower().endswith(s)), "")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".part{suffix}")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(folder)
    # temporary files of this path left by a process killed while writing it
    for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.part{glob.escape(suffix)}")):
        with contextlib.suppress(OSError):
            os.remove(leftover)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 2) -> str:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_atomic`)."""

    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")

    return write_atomic(path, dump)


def make_build_folder(target: str | os.PathLike) -> str:
    """Make and return the empty folder ``.<name>.build-<pid>-<random>`` beside ``target``, in which a folder is
    built whole before :func:`replace_folder` puts it at ``target``. It gets a plain folder's permissions (``0o777``
    less the umask), which the built folder keeps at ``target``. First calls :func:`tidy_build_leftovers`.
    """
    target = os.path.abspath(target)
    tidy_build_leftovers(target)
    parent, name = os.path.split(target)
    built = tempfile.mkdtemp(prefix=f".{name}.build-{os.getpid()}-", dir=parent)
    os.chmod(built, umask_mode(0o777))  # mkdtemp makes 0700
    return built


def tidy_build_leftovers(target: str | os.PathLike) -> None:
    """Tidy what processes that are gone (killed mid-build) left beside ``target`` (its parent folder is created if
    missing): their build folders (:func:`make_build_folder`) are removed; their ``.<name>.old-<pid>-*`` folders
    (see :func:`replace_folder`) are removed where ``target`` exists (the replacement had finished), and where it does
    not (killed between the two renames) the old folder is put back at ``target``, with a warning. Folders of live
    processes are left alone. Call it before looking at ``target`` to decide what to do with it.
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    leftover = re.compile(rf"^\.{re.escape(name)}\.(build|old)-(\d+)-")
    for entry in sorted(os.listdir(parent)):
        m = leftover.match(entry)
        if not m or _process_alive(int(m.group(2))):
            continue
        path = os.path.join(parent, entry)
        if m.group(1) == "old" and not os.path.lexists(target):
            os.rename(os.path.join(path, name), target)  # the only copy of what was there
            os.rmdir(path)
            logger.warning(f"put {target} back from {path}: its replacement had been interrupted")
            continue
        shutil.rmtree(path, ignore_errors=True)
        logger.info(f"removed {path}, left by an interrupted build of {target}")


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_folder(built: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder ``built`` (a sibling of ``target``, on its file system) to ``target``, replacing
    the folder there, if any: ``target`` is the old folder or the new one, never a mix of the two.

    The old folder is first moved aside into ``.<name>.old-<pid>-<random>`` beside ``target`` and removed once the new
    one is in place (a process killed between the two renames leaves it there, whole, and the next
    :func:`tidy_build_leftovers` for ``target`` puts it back). If the rename fails, the old folder is put back (unless
    something else appeared at ``target`` meanwhile: the error then names where the old folder is kept) and the
    ``OSError`` is raised; ``built`` is left to the caller.
    """
    built, target = os.fspath(built), os.path.abspath(target)
    parent, name = os.path.split(target)
    aside = None
    if os.path.lexists(target):
        aside = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=parent)
        os.replace(target, os.path.join(aside, name))
    try:
        os.rename(built, target)
    except OSError as e:
        if aside is None:
            raise
        if os.path.lexists(target):
            raise OSError(e.errno, f"{e.strerror}; the folder that was at {target} is kept in {aside}", target) from e
        os.replace(os.path.join(aside, name), target)
        os.rmdir(aside)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(parent)


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    Only tensors, numbers, strings and plain containers are unpickled: a file holding any other Python object is
    refused before anything in it runs.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, truncated, not a PyTorch file, or holds objects other than tensors and
            plain containers.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name}: checkpoint file not found")
    if os.path.getsize(name) == 0:
        raise ValueError(f"{name}: checkpoint file is empty (0 bytes)")
    try:
        return torch.load(name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{name}: refusing to load: the file holds Python objects other than tensors and plain containers, and "
            f"loading them could run code from the file ({_first_sentence(e)}). Load it only if you trust its source, "
            "and re-save just the state dict (torch.save(model.state_dict(), path))."
        ) from None
    except Exception as e:
        raise ValueError(
            f"{name}: cannot be read as a PyTorch checkpoint (truncated, corrupt or not a .pt file): "
            f"{_first_sentence(e)}"
        ) from None


def _first_sentence(e: BaseException) -> str:
    """The exception's type and the first sentence of its message's first line, for a one-line error."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text.split('. ')[0]}" if text else type(e).__name__


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its suffix (``.nii.gz`` counts as one): ``/a/case1.nii.gz`` -> ``case1``."""
    name = os.path.basename(os.fspath(path))
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return os.path.splitext(name)[0]
