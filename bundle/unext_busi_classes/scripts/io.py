# Generated from unext_monai 0.1.0 by `python -m unext_monai.release`: edit the package, not this copy.
"""The package's small file jobs: atomic writes and file stems.

Every file the package writes (checkpoints, splits, metrics, masks, reports, exports) goes through
:func:`write_atomic`: it is written to a hidden temporary file in the destination folder, flushed to disk, given the
permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), and renamed over the destination. A
process killed at any moment leaves either the old file or the new one, never a half-written one, and no temporary
file survives an exception.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
from typing import Any, Callable

__all__ = [
    "write_atomic",
    "write_json_atomic",
    "umask_mode",
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


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any], durable: bool = True) -> str:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it to ``path``; with ``durable``
    the file and the rename are flushed to disk (``fsync``) first, so that they also survive a power loss (outputs
    that a run can write again leave it out: it is the slowest part of writing a small file).

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
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if durable:
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


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its suffix (``.nii.gz`` counts as one): ``/a/case1.nii.gz`` -> ``case1``."""
    name = os.path.basename(os.fspath(path))
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return os.path.splitext(name)[0]
