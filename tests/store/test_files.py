"""Files written safely (evlog.store.files): atomic replacement, quarantine, temporary files of dead processes."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from evlog.store import files


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    """write_atomic replaces the content in one step and cleans up its temporary file."""
    path = tmp_path / "x.index"
    path.write_bytes(b"old content that is longer")
    files.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["x.index"]
    files.write_atomic(path, b"newer", fsync=False)
    assert path.read_bytes() == b"newer"
    assert os.listdir(tmp_path) == ["x.index"]


def test_a_failed_replace_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """When the rename fails, the old content stays and the temporary file is removed."""
    path = tmp_path / "x"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError(errno.ENOSPC, "injected")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        files.write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x"]


def test_files_follow_the_umask(tmp_path):
    """A file written atomically gets the mode the umask allows, like any file evlog creates (SPEC 7)."""
    old = os.umask(0o027)
    try:
        files.write_atomic(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_quarantine_keeps_the_bytes_durably_under_a_telling_name(tmp_path):
    """quarantine writes the bytes to DIR/quarantine/NAME.STAMP.WHY and returns the path."""
    kept = files.quarantine(tmp_path, "00000000000000000000.jsonl.120", "torn", b"half a record")
    assert kept.parent == tmp_path / "quarantine"
    assert kept.name.startswith("00000000000000000000.jsonl.120.") and kept.name.endswith(".torn")
    assert kept.read_bytes() == b"half a record"


def test_only_temporary_files_of_dead_processes_are_cleaned(tmp_path):
    """clean_temporary removes `.NAME.PID.RANDOM.tmp` files whose process is gone, and nothing else."""
    dead = tmp_path / f".x.index.{2 ** 22 + 77}.ab12.tmp"
    alive = tmp_path / f".x.index.{os.getpid()}.cd34.tmp"
    other = tmp_path / "x.index"
    for p in (dead, alive, other):
        p.write_bytes(b"")
    assert files.clean_temporary(tmp_path) == [dead.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
