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
segment. Rebuilt files are written with files.write_atomic.
"""

from __future__ import annotations

import array
import operator
import struct
import sys
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


def well_formed(offsets: Entries, times: Entries, size: int, base: int = 0) -> bool:
    """Whole-file consistency, checked in C-speed passes: entries increase, the first is the
    segment's first record (position 0, ordinal 0), positions lie inside the segment, the time
    index names the same offsets, times never decrease."""
    n = len(offsets)
    if n != len(times):
        return False
    if n == 0:
        return size == 0
    o = _columns(offsets.data, 3, n)
    t = _columns(times.data, 2, n, signed_first=True)
    off, pos, ordinal = o[0::3], o[1::3], o[2::3]
    stamps, toff = t[0::2], t[1::2]
    return (pos[0] == 0 and ordinal[0] == 0 and off[0] >= base and pos[-1] < size
            and toff == off
            and all(map(operator.lt, off, off[1:])) and all(map(operator.lt, pos, pos[1:]))
            and all(map(operator.lt, ordinal, ordinal[1:]))
            and all(map(operator.le, stamps, stamps[1:]))
            and all(map(operator.le, map(operator.sub, ordinal[1:], ordinal),
                        map(operator.sub, off[1:], off))))


def _columns(data: bytes, width: int, n: int, signed_first: bool = False) -> list[int]:
    """The entries' numbers, in file order, as one flat list."""
    arr = array.array("Q", data[HEADER.size:HEADER.size + n * width * 8])
    if sys.byteorder != "little":
        arr.byteswap()
    values = arr.tolist()
    if signed_first:  # the time index's first column is signed
        values[0::width] = [v - (1 << 64) if v >= 1 << 63 else v for v in values[0::width]]
    return values


def header(magic: bytes, base: int) -> bytes:
    return HEADER.pack(magic, base)
