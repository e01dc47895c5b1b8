"""Consumer checkpoints (evlog.consumers.checkpoints): one file per group, replaced atomically."""

from __future__ import annotations

import errno
import os

import pytest

from evlog.consumers.checkpoints import Groups
from evlog.errors import EvlogError, UsageError
from evlog.store import files


def test_a_position_survives_a_new_instance(tmp_path):
    """What one Groups object sets, another one reads back; a group never set has no position."""
    Groups(tmp_path).set("mailer", 42)
    assert Groups(tmp_path).get("mailer") == 42
    assert Groups(tmp_path).get("other") is None


def test_hook_checkpoints_are_groups_named_hook_dot_name(tmp_path):
    """A hook's checkpoint is the group `hook.NAME`, listed beside the others."""
    groups = Groups(tmp_path)
    groups.set("g", 1)
    groups.set("hook.audit", 2)
    assert groups.names() == ["g", "hook.audit"]


def test_names_are_only_checkpoint_files(tmp_path):
    """Temporary files and other files in groups/ are not groups."""
    groups = Groups(tmp_path)
    groups.set("g", 1)
    (tmp_path / "groups" / ".g.json.123.abcd.tmp").write_text("{}")
    (tmp_path / "groups" / "notes.txt").write_text("x")
    assert groups.names() == ["g"]


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "", "x" * 65, "hook.", "hook.../x", "g.json"])
def test_a_name_that_is_no_group_never_becomes_a_path(tmp_path, name):
    """A name outside [A-Za-z0-9_-]{1,64} (or hook.NAME) is a UsageError, for every operation."""
    groups = Groups(tmp_path)
    for op in (lambda: groups.get(name), lambda: groups.set(name, 1), lambda: groups.delete(name)):
        with pytest.raises(UsageError):
            op()
    assert not (tmp_path / "groups").exists() or os.listdir(tmp_path / "groups") == []


def test_delete_says_whether_there_was_one(tmp_path):
    """delete removes the checkpoint and tells whether it existed."""
    groups = Groups(tmp_path)
    groups.set("g", 3)
    assert groups.delete("g") is True
    assert groups.delete("g") is False
    assert groups.get("g") is None


@pytest.mark.parametrize("content", [b"", b"not json", b'{"position": -1}', b'{"position": "x"}', b"[1]"])
def test_an_unreadable_checkpoint_is_an_error_naming_the_file(tmp_path, content):
    """A damaged checkpoint file is an EvlogError naming it, not a silent restart from the beginning."""
    groups = Groups(tmp_path)
    groups.set("g", 1)
    groups.path("g").write_bytes(content)
    with pytest.raises(EvlogError, match="g.json"):
        groups.get("g")


def test_a_failed_write_keeps_the_old_position(tmp_path, monkeypatch):
    """A checkpoint replaced when the rename fails keeps its old position and leaves no temporary file."""
    groups = Groups(tmp_path)
    groups.set("g", 5)

    def failing_replace(src, dst):
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        groups.set("g", 9)
    monkeypatch.undo()
    assert groups.get("g") == 5
    assert sorted(os.listdir(tmp_path / "groups")) == ["g.json"]
