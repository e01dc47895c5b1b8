"""The log's directory: settings, segments, the append lock, the commit marker, and what readers may see.

This module knows where things are; `reader` reads records, `writer` appends
them, `recovery` undoes what a dead writer left.

Visibility (SPEC 7: a record any reader may have seen is never truncated or
given to another event). A write of one record is visible as soon as its
bytes are in the file: whatever fails after that (an fsync error, Ctrl-C) never
takes it back. A write of more than one record (a batch, a group commit) is
made atomic by a commit marker, `segments/.pending`, a symbolic link whose
target names where the write begins ("BASE POSITION"): created (and the
directory fsynced) before the first byte, removed at the commit. A symlink is
created whole or not at all, even by a power loss, so the marker is never
empty; one that names no position anyway (damage) is a DamagedMarker, which
readers ignore.

A reader takes a *view* (`Log.view`): it lists the segments, notes the size of
the last one, then reads the marker, and reads no further than either. The
order matters: a batch that marks after the size was noted begins past it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from evlog import settings as settings_mod
from evlog.errors import Busy, EvlogError, LogNotFound, SettingsError
from evlog.settings import Settings
from evlog.store import files
from evlog.store.framing import CODECS, Codec, codec_for
from evlog.store.segment import Segment

SEGMENT_RE = re.compile(r"(\d{20})\.(jsonl|msgpack)")
PENDING = ".pending"
VIEW_TRIES = 20


class DamagedMarker:
    """A commit marker that names no position (left by a power loss or damage): it is ignored."""

    def __init__(self, text: str) -> None:
        self.text = text


Pending = tuple[int, int]  # (segment base, byte position) where an uncommitted write begins


class View(NamedTuple):
    """What a reader may read: these segments, and in the segment `end[0]` no byte at or past `end[1]`."""

    segments: list[Segment]
    end: Pending | None


def default_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "evlog"


class Log:
    def __init__(self, directory: Path, settings: Settings) -> None:
        self.dir = directory
        self.settings = settings
        self.codec: Codec = codec_for(settings.format)
        self.segments_dir = directory / "segments"
        self.lock_path = directory / ".lock"
        self.fsync = settings.fsync != "never"

    # -- opening -------------------------------------------------------------------

    @staticmethod
    def settings_path(directory: Path) -> Path:
        return directory / "evlog.toml"

    @classmethod
    def open(cls, directory: Path) -> Log:
        path = cls.settings_path(directory)
        if not path.is_file():
            raise LogNotFound(directory)
        return cls(directory, settings_mod.load(path))

    @classmethod
    def create(cls, directory: Path, settings: Settings, exist_ok: bool) -> Log:
        """Create the log (directory, settings, segments/); an existing one is an error unless exist_ok."""
        path = cls.settings_path(directory)
        if path.is_file():
            if exist_ok:
                return cls.open(directory)
            raise EvlogError(f"a log already exists at {directory}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "segments").mkdir(exist_ok=True)
            created = settings_mod.write_new(path, settings)
            if settings.fsync != "never":
                files.fsync_dir(directory)
        except OSError as e:
            raise EvlogError(f"cannot create a log at {directory}: {e.strerror}") from None
        if not created and not exist_ok:
            raise EvlogError(f"a log already exists at {directory}")
        return cls.open(directory) if not created else cls(directory, settings)

    # -- segments ------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The segments, oldest first. Segment files of the other format mean `format` was changed
        under an existing log: that is refused (SettingsError), never a second log beside the first."""
        try:
            names = os.listdir(self.segments_dir)
        except FileNotFoundError:
            return []
        suffix = self.codec.suffix
        bases = []
        for n in names:
            if SEGMENT_RE.fullmatch(n):
                if not n.endswith(suffix):
                    raise self.format_mismatch(n)
                bases.append(int(n[:20]))
        bases.sort()
        interval = self.settings.index_interval_bytes
        return [Segment(self.segments_dir, b, self.codec, interval, self.fsync) for b in bases]

    def format_mismatch(self, name: str) -> SettingsError:
        other = next(c.name for c in CODECS.values() if name.endswith(c.suffix))
        return SettingsError(self.settings_path(self.dir), "format",
                             f"is {self.codec.name!r} but the log's segments are {other} ({name}); "
                             f"set it back to {other!r}")

    def view(self) -> View:
        """The segments and the end readers stop at (see the module docstring)."""
        for _ in range(VIEW_TRIES):
            segs = self.segments()
            if not segs:
                return View([], None)
            try:
                end = (segs[-1].base, os.stat(segs[-1].path).st_size)
            except FileNotFoundError:
                continue  # an interrupted batch's segment was set aside meanwhile: look again
            pending = self.pending()  # after the size
            if pending is not None and not isinstance(pending, DamagedMarker) and pending <= end:
                return View([s for s in segs if s.base <= pending[0]], pending)
            return View(segs, end)
        raise EvlogError(f"the segments of {self.dir} keep changing; try again")

    # -- locking -------------------------------------------------------------------

    @contextmanager
    def lock(self, wait: bool = True) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise Busy(f"the log at {self.dir} is locked by another process") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- the commit marker -----------------------------------------------------------

    @property
    def pending_path(self) -> Path:
        return self.segments_dir / PENDING

    def pending(self) -> Pending | DamagedMarker | None:
        """Where an uncommitted multi-record write begins, if one is open.

        The marker is a symlink; a regular file (older versions) is read too.
        One that names no position is a DamagedMarker: readers ignore it.
        """
        path = self.pending_path
        try:
            text = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            try:
                text = path.read_bytes().decode("ascii", "replace")
            except FileNotFoundError:
                return None
        parts = text.split()
        if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
        return DamagedMarker(text)
