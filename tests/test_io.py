"""unext_monai.io.replace_folder: a folder built whole replaces the one at its destination, and a failure loses
neither."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from unext_monai.io import replace_folder


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
