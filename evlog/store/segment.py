"""One segment: a file of record frames named by its base offset, and its index files.

A segment is read through its index files, which are checked against the
records they point at before they are believed (see evlog.store.index).
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import msgspec

from evlog.store import files, index
from evlog.store.framing import Codec, FrameReader
from evlog.store.index import OFFSET_ENTRY, OFFSET_MAGIC, TIME_ENTRY, TIME_MAGIC, Entries
from evlog.units import time_to_us

VERIFY_CHUNK = 1 << 16


class Tail(msgspec.Struct):
    """What the end of a segment looks like to an appender."""

    end: int                      # position after the last valid frame
    bad: int | None               # position of trailing bytes that are not a valid frame
    count: int                    # records in the segment
    last_offset: int | None
    last_time: str | None
    last_entry_pos: int | None    # position of the record of the last index entry
    new_entries: list[tuple[int, int, int, int]] = msgspec.field(default_factory=list)  # offset, pos, ordinal, time
    indexed: int = 0              # whole entries in the index files as read (past them: a torn entry)


class Segment:
    def __init__(self, directory: Path, base: int, codec: Codec, interval: int, fsync: bool = True) -> None:
        self.base, self.codec, self.interval = base, codec, interval
        self.fsync = fsync  # whether rewritten index files are synced (the log's fsync setting)
        stem = f"{base:020d}"
        self.name = stem + codec.suffix
        self.path = directory / self.name
        self.index_path = directory / (stem + ".index")
        self.time_path = directory / (stem + ".timeindex")

    def __repr__(self) -> str:
        return f"Segment({self.name})"

    def open(self) -> int:
        return os.open(self.path, os.O_RDONLY)

    def frames(self, fd: int, start: int = 0, stop: int | None = None, chunk: int | None = None) -> FrameReader:
        return FrameReader(self.codec, fd, start, stop, *(() if chunk is None else (chunk,)))

    def first_frame(self, fd: int, pos: int) -> bytes | None:
        for _, frame in self.frames(fd, pos, chunk=VERIFY_CHUNK):
            return frame
        return None

    # -- index files -------------------------------------------------------------

    def load_index(self) -> tuple[Entries, Entries] | None:
        offsets = index.load(self.index_path, OFFSET_MAGIC, self.base, OFFSET_ENTRY)
        times = index.load(self.time_path, TIME_MAGIC, self.base, TIME_ENTRY)
        if offsets is None or times is None or len(offsets) != len(times):
            return None
        return offsets, times

    def scan_entries(self, fd: int) -> list[tuple[int, int, int, int]]:
        """Index entries (offset, position, ordinal, time µs) for every frame, by reading it all."""
        entries: list[tuple[int, int, int, int]] = []
        reader = self.frames(fd)
        last_pos = None
        head = self.codec.head
        for ordinal, (pos, frame) in enumerate(reader):
            if last_pos is None or pos - last_pos >= self.interval:
                off, _, t = head(frame)
                entries.append((off, pos, ordinal, time_to_us(t)))
                last_pos = pos
        return entries

    def rebuild_index(self, fd: int, write: bool) -> tuple[Entries, Entries]:
        """Index entries read from the segment itself; written to disk when `write`."""
        entries = self.scan_entries(fd)
        off_data, time_data = self.encode_entries(entries, with_header=True)
        if write:
            try:
                files.write_atomic(self.index_path, off_data, self.fsync)
                files.write_atomic(self.time_path, time_data, self.fsync)
            except OSError:
                pass  # a read-only directory: the rebuilt index still serves this process
        return Entries(off_data, OFFSET_ENTRY), Entries(time_data, TIME_ENTRY)

    def encode_entries(self, entries: list[tuple[int, int, int, int]],
                       with_header: bool = False) -> tuple[bytes, bytes]:
        off = b"".join(OFFSET_ENTRY.pack(o, p, n) for o, p, n, _ in entries)
        tim = b"".join(TIME_ENTRY.pack(t, o) for o, _, _, t in entries)
        if with_header:
            off = index.header(OFFSET_MAGIC, self.base) + off
            tim = index.header(TIME_MAGIC, self.base) + tim
        return off, tim

    def entry_ok(self, fd: int, entry: tuple[int, ...], time_us: int | None = None) -> bool:
        """Whether the record at the entry's position is whole and has its offset (and time)."""
        offset, pos = entry[0], entry[1]
        if not 0 <= pos < os.fstat(fd).st_size:
            return False
        frame = self.first_frame(fd, pos)
        if frame is None:
            return False
        off, _, t = self.codec.head(frame)
        return off == offset and (time_us is None or time_to_us(t) == time_us)

    def index_problem(self, fd: int, loaded: tuple[Entries, Entries] | None) -> str | None:
        """What is wrong with loaded index files: None, "missing", "damaged" or "stale"."""
        if loaded is None:
            return "missing"
        offsets, times = loaded
        size = os.fstat(fd).st_size
        if not len(offsets) and not len(times):
            last_pos = None
        elif not index.well_formed(offsets, times, size, self.base) or not self.entry_ok(fd, offsets[-1]):
            return "damaged"
        else:
            last_pos = offsets[-1][1]
        # Stale: a record starts an interval or more past the last entry, yet has no entry.
        start = 0 if last_pos is None else last_pos
        due = 0 if last_pos is None else last_pos + self.interval
        if size <= due:
            return None
        for pos, _ in self.frames(fd, start, chunk=VERIFY_CHUNK):
            if pos >= due:
                return "stale"
        return None

    def index_for(self, fd: int, write: bool) -> tuple[Entries, Entries]:
        """The index files if they are sound (well formed, their entries true as far as checked,
        not stale); else the index rebuilt from the segment, and rewritten when `write`."""
        loaded = self.load_index()
        if self.index_problem(fd, loaded) is None:
            assert loaded is not None
            return loaded
        return self.rebuild_index(fd, write)

    # -- seeking -------------------------------------------------------------------

    def seek_offset(self, fd: int, target: int, write: bool) -> int:
        """Position of a record with offset <= target (or 0): reading on from it reaches target."""
        offsets, _ = self.index_for(fd, write)
        i = offsets.floor(target)
        if i >= 0 and not self.entry_ok(fd, offsets[i]):
            offsets, _ = self.rebuild_index(fd, write)  # that entry was false
            i = offsets.floor(target)
        return offsets[i][1] if i >= 0 else 0

    def seek_time(self, fd: int, t_us: int, write: bool) -> int:
        """Position of a record with time < t_us (or 0): every record before it is older still."""
        offsets, times = self.index_for(fd, write)
        for rebuilt in (False, True):
            i = times.below(t_us)
            if i < 0:
                return 0
            t, off = times[i]
            j = offsets.floor(off)
            if j >= 0 and offsets[j][0] == off and (rebuilt or self.entry_ok(fd, offsets[j], t)):
                return offsets[j][1]
            offsets, times = self.rebuild_index(fd, write)  # that entry was false
        return 0

    def first_time_us(self, fd: int) -> int | None:
        """Time of the first record (at position 0: no index needed), or None for an empty segment."""
        frame = self.first_frame(fd, 0)
        return None if frame is None else time_to_us(self.codec.head(frame)[2])

    def chunk_starts(self, fd: int, write: bool) -> list[tuple[int, int]]:
        """(offset, position) of records that split the segment into index-sized chunks."""
        offsets, _ = self.index_for(fd, write)
        return [(e[0], e[1]) for e in offsets] or [(self.base, 0)]

    # -- the end -------------------------------------------------------------------

    def tail(self, fd: int, write: bool, stop: int | None = None) -> Tail:
        """Scan from the last good index entry to the end of the file (or to `stop`)."""
        offsets, times = self.index_for(fd, write)
        head = self.codec.head
        n = len(offsets)
        if stop is not None:  # entries of records at or past `stop` (a pending batch's) do not count
            n = bisect.bisect_left(offsets, stop, key=lambda e: e[1])
        if n:
            last_off, start, ordinal = offsets[n - 1]
            last_entry_pos: int | None = start
        else:
            start, ordinal, last_entry_pos = 0, 0, None
        reader = self.frames(fd, start, stop)
        new: list[tuple[int, int, int, int]] = []
        last_frame = None
        count = ordinal
        for pos, frame in reader:
            if last_entry_pos is None or pos - last_entry_pos >= self.interval:
                off, _, t = head(frame)
                new.append((off, pos, count, time_to_us(t)))
                last_entry_pos = pos
            last_frame = frame
            count += 1
        if last_frame is None:
            return Tail(reader.end, reader.bad, count, None, None, last_entry_pos, new, n)
        off, _, t = head(last_frame)
        return Tail(reader.end, reader.bad, count, off, t, last_entry_pos, new, n)
