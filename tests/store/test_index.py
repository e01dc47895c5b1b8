"""The sparse offset index and the time index of one segment (evlog.store.index)."""

from __future__ import annotations

import os
import random
import struct
from bisect import bisect_right

import pytest
from engine_helpers import FORMATS, append, append_n, make_log
from hypothesis import given
from hypothesis import strategies as st

from evlog.store import index
from evlog.store.index import (
    HEADER,
    OFFSET_ENTRY,
    OFFSET_MAGIC,
    TIME_ENTRY,
    TIME_MAGIC,
    Entries,
    load,
    well_formed,
)


def offset_file(base: int, entries: list[tuple[int, int, int]]) -> bytes:
    return index.header(OFFSET_MAGIC, base) + b"".join(OFFSET_ENTRY.pack(*e) for e in entries)


def time_file(base: int, entries: list[tuple[int, int]]) -> bytes:
    return index.header(TIME_MAGIC, base) + b"".join(TIME_ENTRY.pack(*e) for e in entries)


def test_layout_sizes_match_the_docstring():
    """Header 16 bytes (magic, base), offset entries 24 bytes, time entries 16 bytes, little-endian."""
    assert HEADER.size == 16 and OFFSET_ENTRY.size == 24 and TIME_ENTRY.size == 16
    assert index.header(OFFSET_MAGIC, 7) == b"EVLIDX1\0" + struct.pack("<Q", 7)
    assert index.header(TIME_MAGIC, 7) == b"EVLTIX1\0" + struct.pack("<Q", 7)
    assert OFFSET_ENTRY.pack(1, 2, 3) == struct.pack("<QQQ", 1, 2, 3)
    assert TIME_ENTRY.pack(-1, 2) == struct.pack("<qQ", -1, 2)


# -- Entries ---------------------------------------------------------------------------------


def test_entries_unpack_on_access():
    """Entries behaves like a sequence of tuples: length, indexing, negative indexes and slices."""
    rows = [(10, 0, 0), (20, 500, 10), (30, 1100, 20)]
    e = Entries(offset_file(10, rows), OFFSET_ENTRY)
    assert len(e) == 3
    assert e[0] == rows[0] and e[2] == rows[2] and e[-1] == rows[2] and e[-3] == rows[0]
    assert e[1:] == rows[1:]
    assert list(e) == rows
    with pytest.raises(IndexError):
        e[3]
    with pytest.raises(IndexError):
        e[-4]


def test_entries_ignore_a_trailing_partial_entry():
    """Bytes after the last whole entry do not make an entry."""
    rows = [(0, 0, 0), (5, 300, 5)]
    data = offset_file(0, rows) + OFFSET_ENTRY.pack(9, 700, 9)[:13]
    assert list(Entries(data, OFFSET_ENTRY)) == rows


@given(st.lists(st.integers(0, 1000), unique=True).map(sorted), st.integers(-5, 1005))
def test_floor_and_below_search_the_first_field(keys, value):
    """floor finds the last entry <= value, below the last entry < value (-1 when there is none)."""
    e = Entries(offset_file(0, [(k, i, i) for i, k in enumerate(keys)]), OFFSET_ENTRY)
    floor = max((i for i, k in enumerate(keys) if k <= value), default=-1)
    below = max((i for i, k in enumerate(keys) if k < value), default=-1)
    assert e.floor(value) == floor
    assert e.below(value) == below


@given(st.lists(st.integers(-10, 50), max_size=30).map(sorted), st.integers(-12, 52))
def test_below_handles_repeated_times(times, value):
    """With equal times (one batch shares one time), below still finds the last entry strictly older."""
    e = Entries(time_file(0, [(t, i) for i, t in enumerate(times)]), TIME_ENTRY)
    assert e.below(value) == bisect_right(times, value - 1) - 1
    if e.below(value) >= 0:
        assert times[e.below(value)] < value
    if e.below(value) + 1 < len(times):
        assert times[e.below(value) + 1] >= value


# -- load ------------------------------------------------------------------------------------


def test_load_reads_a_good_file(tmp_path):
    """A file with the right magic and base loads with all its entries."""
    path = tmp_path / "x.index"
    rows = [(100, 0, 0), (104, 4100, 4)]
    path.write_bytes(offset_file(100, rows))
    loaded = load(path, OFFSET_MAGIC, 100, OFFSET_ENTRY)
    assert loaded is not None and list(loaded) == rows


@pytest.mark.parametrize("damage", ["missing", "empty", "short", "magic", "other_kind", "base"])
def test_load_refuses_a_file_with_a_bad_header(tmp_path, damage):
    """Missing files, short files and headers with the wrong magic or base offset load as None."""
    path = tmp_path / "x.index"
    good = offset_file(100, [(100, 0, 0)])
    data = {
        "missing": None,
        "empty": b"",
        "short": good[:15],
        "magic": b"EVLIDX2\0" + good[8:],
        "other_kind": index.header(TIME_MAGIC, 100) + good[16:],
        "base": offset_file(101, [(100, 0, 0)]),
    }[damage]
    if data is not None:
        path.write_bytes(data)
    assert load(path, OFFSET_MAGIC, 100, OFFSET_ENTRY) is None


def test_load_ignores_a_trailing_partial_entry(tmp_path):
    """A file cut in the middle of its last entry loads the whole entries before it."""
    path = tmp_path / "x.timeindex"
    rows = [(1000, 0), (2000, 3), (3000, 9)]
    path.write_bytes(time_file(0, rows)[:-5])
    loaded = load(path, TIME_MAGIC, 0, TIME_ENTRY)
    assert loaded is not None and list(loaded) == rows[:2]


# -- well_formed -------------------------------------------------------------------------------

GOOD_OFFSETS = [(50, 0, 0), (53, 400, 3), (60, 800, 10), (61, 1250, 11), (70, 1700, 20)]
GOOD_TIMES = [(1000, 50), (1000, 53), (1500, 60), (1500, 61), (2000, 70)]
SIZE = 2000


def entries(offs, times):
    return Entries(offset_file(50, offs), OFFSET_ENTRY), Entries(time_file(50, times), TIME_ENTRY)


def test_well_formed_accepts_a_consistent_index():
    """Increasing entries starting at position 0, inside the segment, with matching times, are well formed."""
    assert well_formed(*entries(GOOD_OFFSETS, GOOD_TIMES), SIZE)


def test_well_formed_accepts_an_empty_index_only_for_an_empty_segment():
    """No entries is right for an empty segment and wrong for a non-empty one."""
    assert well_formed(*entries([], []), 0)
    assert not well_formed(*entries([], []), 10)


@given(st.permutations(range(len(GOOD_OFFSETS))).filter(lambda p: list(p) != sorted(p)))
def test_well_formed_rejects_shuffled_entries(perm):
    """Any reordering of the entries is rejected."""
    offs = [GOOD_OFFSETS[i] for i in perm]
    times = [GOOD_TIMES[i] for i in perm]
    assert not well_formed(*entries(offs, times), SIZE)


@pytest.mark.parametrize(("offs", "times", "size"), [
    (GOOD_OFFSETS, GOOD_TIMES, 1700),                                       # last entry past the end
    ([(50, 10, 0), *GOOD_OFFSETS[1:]], GOOD_TIMES, SIZE),                   # first entry not at 0
    ([(50, 0, 1), *GOOD_OFFSETS[1:]], GOOD_TIMES, SIZE),                    # first ordinal not 0
    (GOOD_OFFSETS, [*GOOD_TIMES[:4], (2000, 71)], SIZE),                    # time entry of another offset
    (GOOD_OFFSETS, [*GOOD_TIMES[:4], (1499, 70)], SIZE),                    # time goes backwards
    (GOOD_OFFSETS, GOOD_TIMES[:4], SIZE),                                   # one time entry missing
    ([*GOOD_OFFSETS[:4], (70, 1700, 35)], GOOD_TIMES, SIZE),                # more records than offsets
    ([*GOOD_OFFSETS[:3], (60, 1250, 11), (70, 1700, 20)], GOOD_TIMES, SIZE),  # repeated offset
])
def test_well_formed_rejects_inconsistent_entries(offs, times, size):
    """Entries that cannot describe the segment are rejected."""
    assert not well_formed(*entries(offs, times), size)


# -- writing ----------------------------------------------------------------------------------


# -- index files of a real log -------------------------------------------------------------------


def assert_indexes_match_rebuild(log):
    """Each segment's index files hold exactly what a rebuild from the segment gives, and are well formed."""
    for seg in log.segments():
        fd = seg.open()
        try:
            offs, times = seg.rebuild_index(fd, write=False)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        assert seg.index_path.read_bytes() == offs.data, seg.name
        assert seg.time_path.read_bytes() == times.data, seg.name
        loaded = seg.load_index()
        assert loaded is not None and well_formed(*loaded, size)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interval", [1, 200, 4096])
def test_index_files_written_by_appends_match_a_rebuild(tmp_path, monkeypatch, fmt, interval):
    """Index files written as records are appended (batches, segment rolls, reopened writers) match a rebuild."""
    clock = iter(range(1_800_000_000_000_000, 1_900_000_000_000_000, 1_000))
    monkeypatch.setattr("evlog.store.writer.now_us", lambda: next(clock))
    log = make_log(tmp_path / "log", fmt, segment_bytes=4096, index_interval_bytes=interval)
    rng = random.Random(7)
    for _ in range(25):
        append(log, [{"type": "t", "data": "x" * rng.randrange(0, 300)} for _ in range(rng.randrange(1, 12))])
    assert len(log.segments()) > 3
    assert_indexes_match_rebuild(log)


@pytest.mark.parametrize("fmt", FORMATS)
def test_index_has_an_entry_per_interval(tmp_path, fmt):
    """An entry is made for the first record and then for each record at least the interval past the last entry."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1 << 20, index_interval_bytes=1000)
    append_n(log, 200, payload="p" * 40)
    seg = log.segments()[0]
    loaded = seg.load_index()
    assert loaded is not None
    offs, times = loaded
    positions = [e[1] for e in offs]
    assert positions[0] == 0
    size = seg.path.stat().st_size
    assert len(offs) >= size // (1000 + 200)  # records are well under 200 bytes
    assert all(1000 <= b - a < 1000 + 200 for a, b in zip(positions, positions[1:], strict=False))
    assert [o for o, _, _ in offs] == [n for n, _, _ in offs]  # offsets equal ordinals in the first segment
    assert [off for _, off in times] == [o for o, _, _ in offs]


@pytest.mark.parametrize("fmt", FORMATS)
def test_index_after_a_partial_entry_and_another_append_matches_a_rebuild(tmp_path, fmt):
    """A writer that finds a trailing partial index entry (a writer died mid-write) keeps the index aligned."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1 << 20, index_interval_bytes=200)
    append_n(log, 40)
    seg = log.segments()[0]
    with open(seg.index_path, "ab") as f:
        f.write(b"\x05" * 10)
    with open(seg.time_path, "ab") as f:
        f.write(b"\x05" * 7)
    append_n(log, 40)
    assert_indexes_match_rebuild(log)
