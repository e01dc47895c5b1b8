"""The sparse offset index and the time index of one segment (derived files).

Both start with a 16-byte header and hold fixed-size little-endian entries,
one for the first record of the segment and then one for each record that
starts at least `index_interval_bytes` after the previous entry's record::

    .index      header: magic b"EVLIDX1\\0" (8) | base offset u64
                entry:  offset u64 | position u64 | ordinal u64   (24 bytes)
                        ordinal = number of records before it in the segment
    .timeindex  header: magic b"EVLTIX1\\0" (8) | base offset u64
                entry:  time µs i64 | offset u64                  (16 bytes)

Index files are caches. A trailing partial entry is ignored; an entry is
trusted only after the record it points at has been read and matches it; a
file with a bad header, or whose entry fails that check, is rebuilt from the
segment. Rebuilt files are written to a temporary name, fsynced, renamed.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path

HEADER = struct.Struct("<8sQ")
OFFSET_ENTRY = struct.Struct("<QQQ")
TIME_ENTRY = struct.Struct("<qQ")
OFFSET_MAGIC = b"EVLIDX1\0"
TIME_MAGIC = b"EVLTIX1\0"
assert HEADER.size == 16 and OFFSET_ENTRY.size == 24 and TIME_ENTRY.size == 16


class Entries(Sequence[tuple[int, ...]]):
    """The entries of an index file, unpacked on access."""

    def __init__(self, data: bytes, entry: struct.Struct) -> None:
        self.data, self.entry = data, entry
        self.n = (len(data) - HEADER.size) // entry.size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.entry.unpack_from(self.data, HEADER.size + i * self.entry.size)

    def floor(self, value: int) -> int:
        """Index of the last entry whose first field is <= value (-1 if none)."""
        return bisect_right(self, value, key=lambda e: e[0]) - 1

    def below(self, value: int) -> int:
        """Index of the last entry whose first field is < value (-1 if none)."""
        return bisect_right(self, value - 1, key=lambda e: e[0]) - 1


def load(path: Path, magic: bytes, base: int, entry: struct.Struct) -> Entries | None:
    """The entries of an index file, or None when it is missing or its header is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if len(data) < HEADER.size or HEADER.unpack_from(data) != (magic, base):
        return None
    return Entries(data, entry)


def well_formed(offsets: Entries, times: Entries, size: int) -> bool:
    """Whole-file consistency: entries increase, start at position 0, stay inside the segment."""
    if len(offsets) != len(times) or not len(offsets):
        return len(offsets) == len(times) == 0 and size == 0
    prev_off = prev_pos = prev_ord = prev_time = -1
    for (off, pos, ordinal), (t, toff) in zip(offsets, times, strict=True):
        if (toff != off or off <= prev_off or pos <= prev_pos or ordinal <= prev_ord
                or t < prev_time or pos >= size or ordinal - prev_ord > off - prev_off):
            return False
        if prev_off == -1 and (pos != 0 or ordinal != 0):
            return False
        prev_off, prev_pos, prev_ord, prev_time = off, pos, ordinal, t
    return True


def header(magic: bytes, base: int) -> bytes:
    return HEADER.pack(magic, base)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, directory fsync."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
