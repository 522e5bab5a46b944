"""Folders: one built whole (the demo set, a release), beside its place and renamed into it, so that it is the old
folder or the new one, never a mix, and what a killed build left is tidied by the next one; whether a path lies in a
folder; whether a folder can be written."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

from unext_monai.io import _fsync_dir, umask_mode

__all__ = ["make_build_folder", "tidy_build_leftovers", "replace_folder", "is_inside", "cannot_write"]

logger = logging.getLogger("unext_monai")


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, symlinks resolved."""
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def cannot_write(folder: str | os.PathLike) -> str:
    """Why a new file cannot be made in ``folder`` (made with its parents where missing), or ``""`` if it can."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return str(e.strerror or e)
    return ""


def make_build_folder(target: str | os.PathLike) -> str:
    """Make and return the empty folder ``.<name>.build-<pid>-<random>`` beside ``target`` (a plain folder's
    permissions) to build a folder in before :func:`replace_folder` puts it at ``target``."""
    target = os.path.abspath(target)
    tidy_build_leftovers(target)
    parent, name = os.path.split(target)
    built = tempfile.mkdtemp(prefix=f".{name}.build-{os.getpid()}-", dir=parent)
    os.chmod(built, umask_mode(0o777))  # mkdtemp makes 0700
    return built


def tidy_build_leftovers(target: str | os.PathLike) -> None:
    """Tidy what processes that are gone left beside ``target`` (whose parent is created if missing): their build
    folders are removed, and their old folders (:func:`replace_folder`) too, or put back at ``target``, with a
    warning, where it is missing. Call it before looking at ``target``."""
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
        pass
    return True


def replace_folder(built: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder ``built`` (a sibling of ``target``) to ``target``: the old folder there is moved
    aside into ``.<name>.old-<pid>-<random>`` first and removed once the new one is in place (after a kill between
    the renames, :func:`tidy_build_leftovers` puts it back). A failed rename puts it back too (or names where it is
    kept) and raises the ``OSError``; ``built`` is left to the caller."""
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
