"""One segment and its index files: seeking, chunking and the tail, with damaged indexes (evlog.store.segment)."""

from __future__ import annotations

import os
import random
import shutil

import pytest
from engine_helpers import FORMATS, append, make_log, offsets, records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evlog.store.index import HEADER, OFFSET_ENTRY, TIME_ENTRY
from evlog.store.reader import last_frames
from evlog.store.writer import open_writer
from evlog.units import time_to_us

T0 = 1_800_000_000_000_000
BATCHES = 15
PER_BATCH = 10
N = BATCHES * PER_BATCH

DAMAGE = [
    "missing", "missing_time", "empty", "magic", "base", "random", "garbage_entries",
    "positions_shifted", "middle_position", "partial_entry", "truncated", "header_only", "shuffled", "zeroed",
]


def clock_at(monkeypatch, times):
    it = iter(times)
    monkeypatch.setattr("evlog.store.writer.now_us", lambda: next(it))


@pytest.fixture(params=FORMATS)
def fmt(request):
    return request.param


@pytest.fixture
def built(tmp_path, monkeypatch, fmt):
    """A log whose first segment holds N records in BATCHES batches, 1 ms apart, with many index entries."""
    clock_at(monkeypatch, range(T0, T0 + 10**9, 1000))
    log = make_log(tmp_path / "log", fmt, segment_bytes=1 << 20, index_interval_bytes=300)
    rng = random.Random(3)
    for b in range(BATCHES):
        append(log, [{"type": f"t.{b}", "key": f"k{i % 3}", "data": {"b": b, "i": i, "pad": "z" * rng.randrange(60)}}
                     for i in range(PER_BATCH)])
    return log


def damage_index(seg, kind: str, rng: random.Random) -> None:
    """Spoil the segment's index files in one of the ways of DAMAGE."""
    off, tim = seg.index_path.read_bytes(), seg.time_path.read_bytes()
    h = HEADER.size

    def entries(data, size):
        return [data[i:i + size] for i in range(h, len(data), size)]

    def both(o, t):
        seg.index_path.write_bytes(o)
        seg.time_path.write_bytes(t)

    if kind == "missing":
        seg.index_path.unlink()
        seg.time_path.unlink()
    elif kind == "missing_time":
        seg.time_path.unlink()
    elif kind == "empty":
        both(b"", b"")
    elif kind == "magic":
        both(b"XXXXXXXX" + off[8:], b"XXXXXXXX" + tim[8:])
    elif kind == "base":
        both(off[:8] + (seg.base + 1).to_bytes(8, "little") + off[16:],
             tim[:8] + (seg.base + 1).to_bytes(8, "little") + tim[16:])
    elif kind == "random":
        both(rng.randbytes(len(off)), rng.randbytes(len(tim)))
    elif kind == "garbage_entries":
        both(off[:h] + rng.randbytes(len(off) - h), tim[:h] + rng.randbytes(len(tim) - h))
    elif kind == "positions_shifted":
        oe = [OFFSET_ENTRY.unpack(e) for e in entries(off, OFFSET_ENTRY.size)]
        both(off[:h] + b"".join(OFFSET_ENTRY.pack(o, p + 7, n) for o, p, n in oe), tim)
    elif kind == "middle_position":  # one entry in the middle points one byte into its record
        oe = [OFFSET_ENTRY.unpack(e) for e in entries(off, OFFSET_ENTRY.size)]
        k = len(oe) // 2
        oe[k] = (oe[k][0], oe[k][1] + 1, oe[k][2])
        both(off[:h] + b"".join(OFFSET_ENTRY.pack(*e) for e in oe), tim)
    elif kind == "partial_entry":
        both(off + off[h:h + 11], tim + tim[h:h + 5])
    elif kind == "truncated":
        both(off[:-3 * OFFSET_ENTRY.size], tim[:-3 * TIME_ENTRY.size])
    elif kind == "header_only":
        both(off[:h], tim[:h])
    elif kind == "shuffled":
        oe, te = entries(off, OFFSET_ENTRY.size), entries(tim, TIME_ENTRY.size)
        order = list(range(len(oe)))
        while order == sorted(order):
            rng.shuffle(order)
        both(off[:h] + b"".join(oe[i] for i in order), tim[:h] + b"".join(te[i] for i in order))
    elif kind == "zeroed":
        both(off[:h] + bytes(len(off) - h), tim[:h] + bytes(len(tim) - h))
    else:
        raise AssertionError(kind)


def batch_times(log) -> list[int]:
    return sorted({time_to_us(r.time) for r in records(log)})


def seek_results(seg, times, write=False):
    """Everything a reader asks of a segment's index: seeks by offset and time, chunks, first time, the end."""
    fd = seg.open()
    try:
        by_offset = [seg.seek_offset(fd, k, write) for k in range(-1, N + 2)]
        probes = [times[0] - 1, *times, *(t + 1 for t in times), times[-1] + 10**6]
        by_time = [seg.seek_time(fd, t, write) for t in probes]
        chunks = seg.chunk_starts(fd, write)
        first = seg.first_time_us(fd)
        tail = seg.tail(fd, write)
        return {"seek_offset": by_offset, "seek_time": by_time, "chunk_starts": chunks, "first_time": first,
                "tail": (tail.end, tail.bad, tail.count, tail.last_offset, tail.last_time)}
    finally:
        os.close(fd)


def frame_starts(seg) -> dict[int, int]:
    """Position -> offset of every frame in the segment."""
    fd = seg.open()
    try:
        return {pos: seg.codec.head(frame)[0] for pos, frame in seg.frames(fd)}
    finally:
        os.close(fd)


def test_the_fixture_has_an_index_worth_testing(built):
    """The segment under test has one file, many index entries and N records."""
    segs = built.segments()
    assert len(segs) == 1
    loaded = segs[0].load_index()
    assert loaded is not None and len(loaded[0]) > 20
    assert offsets(built) == list(range(N))


def test_clean_seeks_land_where_the_spec_says(built):
    """With a clean index, seeks land on the last indexed record at or before the target, never after it."""
    seg = built.segments()[0]
    starts = frame_starts(seg)
    res = seek_results(seg, batch_times(built))
    for k, pos in zip(range(-1, N + 2), res["seek_offset"], strict=True):
        assert pos in starts
        assert starts[pos] <= max(k, 0)
    assert res["tail"][2:4] == (N, N - 1)
    assert res["tail"][0] == seg.path.stat().st_size and res["tail"][1] is None
    assert res["chunk_starts"][0] == (seg.base, 0) and res["chunk_starts"] == sorted(set(res["chunk_starts"]))
    assert all(starts[pos] == off for off, pos in res["chunk_starts"])
    assert res["first_time"] == T0


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_index_gives_the_same_seek_results_as_a_clean_rebuild(built, kind):
    """Whatever is wrong with the index files, seeks, chunks and the tail equal those of a fresh rebuild."""
    seg = built.segments()[0]
    fd = seg.open()
    try:
        seg.rebuild_index(fd, write=True)
    finally:
        os.close(fd)
    times = batch_times(built)
    clean = seek_results(seg, times)
    damage_index(seg, kind, random.Random(kind))
    got = seek_results(seg, times)
    if kind == "middle_position":
        # Chunk starts are the index's own list, checked chunk by chunk as a reader walks them
        # (test_reads_through_a_damaged_index_are_right); every seek checks its entry first.
        got.pop("chunk_starts"), clean.pop("chunk_starts")
    assert got == clean


@pytest.mark.parametrize("kind", DAMAGE)
def test_reads_through_a_damaged_index_are_right(built, kind):
    """Reads by offset, time, --last and tail return the right records whatever the index files hold."""
    times = batch_times(built)
    expected = records(built)
    for seg in built.segments():
        damage_index(seg, kind, random.Random(kind))
    for k in (0, 1, 37, 99, N - 1, N, N + 5):
        assert offsets(built, start=k) == list(range(k, N))
    for b, t in enumerate(times):
        assert offsets(built, since_us=t) == list(range(b * PER_BATCH, N))
        assert offsets(built, until_us=t) == list(range(b * PER_BATCH))
    for n in (1, 11, N, N + 3):
        assert offsets(built, last=n) == list(range(max(0, N - n), N))
        assert [built.codec.record(f) for f in last_frames(built, n)[0]] == expected[-n:]


@pytest.mark.parametrize("kind", [k for k in DAMAGE if k != "partial_entry"])  # a partial entry is ignored, by design
def test_a_reader_allowed_to_write_repairs_the_index_files(built, kind):
    """A seek that may write (a sealed segment) leaves index files identical to a rebuild."""
    seg = built.segments()[0]
    fd = seg.open()
    try:
        clean = seg.rebuild_index(fd, write=True)
    finally:
        os.close(fd)
    clean_files = seg.index_path.read_bytes(), seg.time_path.read_bytes()
    assert clean_files == (clean[0].data, clean[1].data)
    damage_index(seg, kind, random.Random(kind))
    seek_results(seg, batch_times(built), write=True)
    assert (seg.index_path.read_bytes(), seg.time_path.read_bytes()) == clean_files


@pytest.mark.parametrize("kind", [k for k in DAMAGE if k != "middle_position"])
def test_the_next_writer_leaves_a_correct_index(built, kind):
    """After any damage to the active segment's index, the next append leaves index files that match a rebuild.

    A wrong entry in the middle is left out: a writer checks the index's shape and its last entry,
    not every entry (that would read the whole segment on every append); readers check each entry
    before using it and rebuild the index when one is false (test_reads_through_a_damaged_index_are_right).
    """
    seg = built.segments()[0]
    damage_index(seg, kind, random.Random(kind))
    append(built, ["after"] * 5)
    assert offsets(built) == list(range(N + 5))
    fd = seg.open()
    try:
        offs, tims = seg.rebuild_index(fd, write=False)
    finally:
        os.close(fd)
    assert seg.index_path.read_bytes() == offs.data
    assert seg.time_path.read_bytes() == tims.data


def test_a_trailing_partial_entry_is_ignored(built):
    """Bytes of a half-written last entry do not change what the index says."""
    seg = built.segments()[0]
    loaded = seg.load_index()
    assert loaded is not None
    before = (list(loaded[0]), list(loaded[1]))
    with open(seg.index_path, "ab") as f:
        f.write(b"\xff" * (OFFSET_ENTRY.size - 1))
    with open(seg.time_path, "ab") as f:
        f.write(b"\xff" * (TIME_ENTRY.size - 1))
    again = seg.load_index()
    assert again is not None and (list(again[0]), list(again[1])) == before


def test_an_empty_segment_has_no_entries_and_an_empty_tail(tmp_path, fmt):
    """A segment with no records seeks to 0, has one chunk at 0 and a tail with no last record."""
    log = make_log(tmp_path / "log", fmt)
    with open_writer(log):
        pass
    seg = log.segments()[0]
    fd = seg.open()
    try:
        assert seg.seek_offset(fd, 5, False) == 0
        assert seg.seek_time(fd, T0, False) == 0
        assert seg.chunk_starts(fd, False) == [(seg.base, 0)]
        assert seg.first_time_us(fd) is None
        tail = seg.tail(fd, False)
    finally:
        os.close(fd)
    assert (tail.end, tail.bad, tail.count, tail.last_offset, tail.last_time) == (0, None, 0, None, None)


def test_tail_reports_a_torn_last_record(built):
    """Half a frame after the last record shows as `bad` at its position; the count is of whole records."""
    seg = built.segments()[0]
    size = seg.path.stat().st_size
    last = records(built, start=N - 1)[0]
    frame = seg.codec.frame(N, "torn-id", last.time, seg.codec.rest("t", "s", None, None, b"[1,2,3]"))
    with open(seg.path, "ab") as f:
        f.write(frame[: len(frame) // 2])
    fd = seg.open()
    try:
        tail = seg.tail(fd, False)
    finally:
        os.close(fd)
    assert (tail.end, tail.bad, tail.count, tail.last_offset) == (size, size, N, N - 1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_byte_damage_to_the_index_never_changes_read_results(tmp_path_factory, data):
    """Random bytes overwritten anywhere in the index files never change what a read by offset or time returns."""
    fmt = data.draw(st.sampled_from(FORMATS), label="fmt")
    base = tmp_path_factory.mktemp("idx")
    log = make_log(base / "log", fmt, segment_bytes=1 << 20, index_interval_bytes=150)
    for b in range(6):
        append(log, [{"type": "t", "data": {"b": b, "i": i}} for i in range(12)])
    expected = offsets(log)
    times = batch_times(log)
    seg = log.segments()[0]
    for path in (seg.index_path, seg.time_path):
        blob = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4), label="hits")):
            i = data.draw(st.integers(0, len(blob) - 1), label="at")
            blob[i] = data.draw(st.integers(0, 255), label="byte")
        path.write_bytes(bytes(blob))
    k = data.draw(st.integers(0, len(expected)), label="start")
    assert offsets(log, start=k) == expected[k:]
    b = data.draw(st.integers(0, len(times) - 1), label="batch")
    assert offsets(log, since_us=times[b]) == expected[b * 12:]
    n = data.draw(st.integers(1, 80), label="last")
    assert offsets(log, last=n) == expected[-n:]
    shutil.rmtree(base)
