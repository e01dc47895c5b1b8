"""Consumer checkpoints: `DIR/groups/NAME.json`, one file per group.

A checkpoint holds the group's position: the next offset it will be given.
It is replaced atomically (temporary file, fsync, rename, directory fsync),
so after any crash it holds either the old or the new position; delivery is
at least once because the position only moves after the events before it
were handled (or dead-lettered, durably).
Hooks keep their checkpoints here too, as groups named `hook.NAME`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import msgspec

from evlog.errors import EvlogError, UsageError, quoted
from evlog.store import files

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
HOOK_PREFIX = "hook."


class Checkpoint(msgspec.Struct):
    position: Annotated[int, msgspec.Meta(ge=0)]


def check_name(name: str, what: str = "group") -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"bad {what} name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ -")
    return name


def check_checkpoint_name(name: str) -> str:
    """A group name, or `hook.NAME` for a hook's checkpoint: nothing else can become a path."""
    if name.startswith(HOOK_PREFIX):
        check_name(name[len(HOOK_PREFIX):], "hook")
        return name
    return check_name(name)


class Groups:
    def __init__(self, log_dir: Path, fsync: bool = True) -> None:
        self.dir = log_dir / "groups"
        self.fsync = fsync

    def path(self, name: str) -> Path:
        """The checkpoint file of a group; a name that is not one (`../x`, `/abs`) is a UsageError."""
        return self.dir / f"{check_checkpoint_name(name)}.json"

    def get(self, name: str) -> int | None:
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return msgspec.json.decode(data, type=Checkpoint).position
        except msgspec.MsgspecError as e:
            raise EvlogError(f"{quoted(self.path(name))}: unreadable checkpoint ({e})") from None

    def set(self, name: str, position: int) -> None:
        self.dir.mkdir(exist_ok=True)
        files.write_atomic(self.path(name), msgspec.json.encode(Checkpoint(position)) + b"\n", self.fsync)

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        if self.fsync:
            files.fsync_dir(self.dir)
        return True

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in entries if n.endswith(".json") and _valid(n[:-5]))


def _valid(name: str) -> bool:
    """Whether a file name (without .json) is a checkpoint's: other files in groups/ are not groups."""
    return bool(NAME_RE.fullmatch(name[len(HOOK_PREFIX):] if name.startswith(HOOK_PREFIX) else name))
