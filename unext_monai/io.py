"""Atomic writes and file stems. Every file the package writes goes through :func:`write_atomic`: a process killed at
any moment leaves the old file or the new one, never a half-written one, and no temporary file survives an exception.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["write_atomic", "write_json_atomic", "umask_mode", "NIFTI_SUFFIXES", "file_stem"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask: the permissions a plain ``open``/``mkdir`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any], durable: bool = True) -> str:
    """Fill a temporary file beside ``path`` with ``write(tmp_path)``, give it a plain file's permissions and rename it
    to ``path`` (returned as a string); ``durable`` flushes both to disk first and removes a killed writer's leftovers
    (outputs a run writes again skip both). The temporary ``.<name>.<random>.part`` never has the destination's suffix
    (but ``.part.nii.gz``: NIfTI writers pick the compression from the name), so a folder's ``*.png`` never lists it."""
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
    if durable:  # and this path's temporary files left by a killed writer (a listing of the whole folder)
        _fsync_dir(folder)
        pattern = os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.part{glob.escape(suffix)}")
        for leftover in glob.glob(pattern):
            with contextlib.suppress(OSError):
                os.remove(leftover)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int = 2) -> str:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_atomic`)."""
    text = json.dumps(data, indent=indent) + "\n"
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its suffix (``.nii.gz`` counts as one): ``/a/case1.nii.gz`` -> ``case1``."""
    name = os.path.basename(os.fspath(path))
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else os.path.splitext(name)[0]
