"""unext_monai.io.make_build_folder / replace_folder: a folder built whole replaces the one at its destination, a
failure loses neither, and what a killed build left is cleared by the next one without losing a user's folder."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

from unext_monai.folders import make_build_folder, replace_folder


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


def test_replaces_the_old_folder_and_leaves_nothing_beside_it(tmp_path):
    target = _folder(tmp_path / "release", "old")
    built = _folder(tmp_path / ".release.partial", "new")
    replace_folder(built, target)
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]


def test_puts_a_folder_where_there_was_none(tmp_path):
    replace_folder(_folder(tmp_path / "built", "new"), tmp_path / "target")
    assert (tmp_path / "target" / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def _rename_of_fails(monkeypatch, built: Path, error: OSError, before=None) -> None:
    """``os.rename(built, ...)`` raises ``error`` (after ``before(destination)``, where given); other renames work."""
    real_rename = os.rename

    def rename(src, dst):
        if os.fspath(src) == os.fspath(built):
            if before:
                before(Path(dst))
            raise error
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = _folder(tmp_path / "release", "old")
    built = _folder(tmp_path / "built", "new")
    _rename_of_fails(monkeypatch, built, OSError(errno.EXDEV, "Invalid cross-device link"))
    with pytest.raises(OSError, match="cross-device"):
        replace_folder(built, target)
    assert (target / "file.txt").read_text() == "old"
    assert (built / "file.txt").read_text() == "new"  # the caller's to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "release"]


def test_a_folder_that_appeared_meanwhile_is_not_replaced_and_the_old_one_is_named(tmp_path, monkeypatch):
    target = _folder(tmp_path / "release", "old")
    built = _folder(tmp_path / "built", "new")
    _rename_of_fails(monkeypatch, built, OSError(errno.ENOTEMPTY, "Directory not empty"),
                     before=lambda dst: _folder(dst, "other"))  # another process was first
    with pytest.raises(OSError, match="is kept in") as caught:
        replace_folder(built, target)
    assert (target / "file.txt").read_text() == "other"
    kept = Path(str(caught.value).split("is kept in ")[1].split(":")[0].strip())
    assert kept.parent == tmp_path and (kept / "release" / "file.txt").read_text() == "old"


def test_a_build_folder_clears_what_killed_builds_left_and_spares_live_ones(tmp_path, dead_pid):
    target = _folder(tmp_path / "release", "current")
    abandoned = _folder(tmp_path / f".release.build-{dead_pid}-abc", "half")
    finished_old = _folder(tmp_path / f".release.old-{dead_pid}-def", "replaced")  # killed after the replacement
    live = _folder(tmp_path / f".release.build-{os.getpid()}-ghi", "in progress")
    other = _folder(tmp_path / f".other.build-{dead_pid}-jkl", "another target's")
    built = Path(make_build_folder(target))
    assert not abandoned.exists() and not finished_old.exists()
    assert live.exists() and other.exists() and (target / "file.txt").read_text() == "current"
    assert built.parent == tmp_path and built.name.startswith(f".release.build-{os.getpid()}-")
    assert list(built.iterdir()) == []


def test_an_interrupted_replacement_is_rolled_back(tmp_path, caplog, dead_pid):
    """Killed between replace_folder's two renames, the old folder is the only copy of the user's release: the next
    build puts it back where it was (a release then refuses to replace it without --overwrite)."""
    aside = tmp_path / f".release.old-{dead_pid}-abc"
    aside.mkdir()
    _folder(aside / "release", "trained")
    with caplog.at_level(logging.WARNING, logger="unext_monai"):
        built = make_build_folder(tmp_path / "release")
    assert (tmp_path / "release" / "file.txt").read_text() == "trained"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["release", os.path.basename(built)])
    assert str(aside) in caplog.text


def test_a_build_folder_has_a_plain_folders_permissions(tmp_path):
    """mkdtemp's 0700 would make a released bundle unreadable to a MONAI Label server run by another user."""
    old = os.umask(0o022)
    try:
        built = make_build_folder(tmp_path / "release")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(built).st_mode) == 0o755
