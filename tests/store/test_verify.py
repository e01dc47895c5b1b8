"""`evlog verify` in process: checksums, order, index files, and --repair (evlog.store.verify, SPEC 6 and 7)."""

from __future__ import annotations

import json
import os

import pytest
from engine_helpers import FORMATS, append_n, flip_byte, make_log, offsets, records

from evlog.errors import CorruptionError
from evlog.store import verify as verify_mod
from evlog.store.index import HEADER, OFFSET_ENTRY, TIME_ENTRY
from evlog.store.reader import read_frames
from evlog.units import format_time, time_to_us

N = 60


@pytest.fixture(params=FORMATS)
def log(request, tmp_path):
    """A log of N records over several 1 KiB segments."""
    log = make_log(tmp_path / "log", request.param, segment_bytes=1024, index_interval_bytes=128)
    append_n(log, N, payload="v" * 20)
    assert len(log.segments()) >= 4
    return log


def frames_of(seg):
    """(position, stored bytes, offset) of each frame of a segment, as on disk."""
    data = seg.path.read_bytes()
    fd = seg.open()
    try:
        found = list(seg.frames(fd))
    finally:
        os.close(fd)
    out = []
    for i, (pos, frame) in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(data)
        out.append((pos, data[pos:end], seg.codec.head(frame)[0]))
    return out


def damage_record(log, seg_index: int, frame_index: int) -> tuple[str, int, int, bytes]:
    """Flip a byte inside one record; returns (segment name, position, offset, damaged bytes)."""
    seg = log.segments()[seg_index]
    pos, stored, offset = frames_of(seg)[frame_index]
    flip_byte(seg.path, pos + len(stored) // 2, 0x04)
    return seg.name, pos, offset, seg.path.read_bytes()[pos:pos + len(stored)]


def quarantined(log) -> list[bytes]:
    q = log.dir / "quarantine"
    return sorted(p.read_bytes() for p in q.iterdir()) if q.is_dir() else []


def record_problems(report) -> list[tuple[str, int, int | None]]:
    """(segment, position, offset) of each problem with records (a damaged record may also upset its index)."""
    return [(p.segment, p.position, p.offset) for p in report.problems if p.kind != "index"]


def index_matches_rebuild(log) -> bool:
    for seg in log.segments():
        fd = seg.open()
        try:
            offs, times = seg.rebuild_index(fd, write=False)
        finally:
            os.close(fd)
        if (seg.index_path.read_bytes(), seg.time_path.read_bytes()) != (offs.data, times.data):
            return False
    return True


def test_a_clean_log_verifies_ok(log):
    """A log nobody damaged is ok: every segment and record counted, no problems, no warnings."""
    report = verify_mod.verify(log)
    assert report.ok
    assert report.segments == len(log.segments())
    assert report.records == N
    assert report.problems == [] and report.warnings == []
    doc = json.loads(verify_mod.to_json(report))
    assert doc == {"ok": True, "segments": len(log.segments()), "records": N, "problems": []}


def test_an_empty_log_verifies_ok(tmp_path):
    """A log without records is ok."""
    log = make_log(tmp_path / "empty", "jsonl")
    report = verify_mod.verify(log)
    assert report.ok and report.records == 0 and report.problems == []


@pytest.mark.parametrize(("seg_index", "frame_index"), [(0, 0), (1, 2), (2, -1)])
def test_a_flipped_byte_in_a_sealed_segment_is_reported_with_its_offset(log, seg_index, frame_index):
    """A damaged record in a sealed segment makes the log not ok, naming segment, byte position and offset."""
    name, pos, offset, _ = damage_record(log, seg_index, frame_index)
    report = verify_mod.verify(log)
    assert not report.ok
    assert record_problems(report) == [(name, pos, offset)]
    assert report.records == N - 1
    doc = json.loads(verify_mod.to_json(report))
    assert doc["ok"] is False
    assert {"segment": name, "position": pos, "offset": offset} in [
        {k: p[k] for k in ("segment", "position", "offset")} for p in doc["problems"]]
    assert any(name in line and str(offset) in line for line in verify_mod.to_text(report))


def test_damage_in_two_segments_is_reported_twice(log):
    """Every damaged record is reported, not just the first."""
    a = damage_record(log, 0, 1)
    b = damage_record(log, 2, 0)
    report = verify_mod.verify(log)
    assert record_problems(report) == [a[:3], b[:3]]


def test_repair_quarantines_a_damaged_record_and_the_log_works_again(log):
    """--repair moves the damaged bytes into DIR/quarantine/; the log then verifies, reads the rest, and appends on."""
    name, pos, offset, damaged = damage_record(log, 1, 1)
    with pytest.raises(CorruptionError):
        list(read_frames(log))
    report = verify_mod.verify(log, repair=True)
    assert report.ok and report.problems == []
    assert report.repaired
    assert quarantined(log) == [damaged]
    assert verify_mod.verify(log).ok
    assert offsets(log) == [o for o in range(N) if o != offset]
    assert offsets(log, start=offset) == list(range(offset + 1, N))
    assert offsets(log, last=N) == [o for o in range(N) if o != offset]
    r = append_n(log, 2)
    assert (r.first, r.last) == (N, N + 1)
    assert index_matches_rebuild(log)


def test_repair_of_damage_inside_the_active_segment(log):
    """Damage followed by good records in the last segment is corruption; after repair appends work again."""
    last = len(log.segments()) - 1
    if len(frames_of(log.segments()[last])) < 2:
        append_n(log, 1)
    name, pos, offset, damaged = damage_record(log, last, 0)
    report = verify_mod.verify(log)
    assert not report.ok and record_problems(report) == [(name, pos, offset)]
    assert verify_mod.verify(log, repair=True).ok
    assert quarantined(log) == [damaged]
    before = offsets(log)
    assert offset not in before
    r = append_n(log, 1)
    assert r.first == before[-1] + 1
    assert verify_mod.verify(log).ok


def test_an_incomplete_last_record_is_only_a_warning(log):
    """A torn last record is a warning (ok stays true); repair cuts it into quarantine/ and appends go on."""
    seg = log.segments()[-1]
    clean = seg.path.read_bytes()
    frame = log.codec.frame(N, "torn", format_time(0), log.codec.rest("t", "s", None, None, b'"half"'))
    torn = frame[: len(frame) - 3]
    with open(seg.path, "ab") as f:
        f.write(torn)
    report = verify_mod.verify(log)
    assert report.ok and report.problems == []
    assert len(report.warnings) == 1 and "incomplete last record" in report.warnings[0]
    assert str(len(clean)) in report.warnings[0]
    repaired = verify_mod.verify(log, repair=True)
    assert repaired.ok and repaired.warnings == []
    assert seg.path.read_bytes() == clean
    assert quarantined(log) == [torn]
    assert append_n(log, 1).first == N


INDEX_DAMAGE = ["entry_byte", "garbage", "magic", "missing", "truncated", "shuffled"]


def damage_index(seg, kind):
    off, tim = seg.index_path.read_bytes(), seg.time_path.read_bytes()
    h = HEADER.size
    assert len(off) >= h + 3 * OFFSET_ENTRY.size, "the fixture should give several entries per segment"
    if kind == "entry_byte":
        flip_byte(seg.index_path, h + OFFSET_ENTRY.size + 9, 0x10)  # the position of the second entry
    elif kind == "garbage":
        seg.index_path.write_bytes(off[:h] + bytes((i * 37 + 11) % 256 for i in range(len(off) - h)))
    elif kind == "magic":
        seg.index_path.write_bytes(b"NOTANIDX" + off[8:])
    elif kind == "missing":
        seg.index_path.unlink()
        seg.time_path.unlink()
    elif kind == "truncated":
        seg.index_path.write_bytes(off[:-OFFSET_ENTRY.size])
        seg.time_path.write_bytes(tim[:-TIME_ENTRY.size])
    elif kind == "shuffled":
        ents = [off[i:i + OFFSET_ENTRY.size] for i in range(h, len(off), OFFSET_ENTRY.size)]
        tents = [tim[i:i + TIME_ENTRY.size] for i in range(h, len(tim), TIME_ENTRY.size)]
        seg.index_path.write_bytes(off[:h] + b"".join(reversed(ents)))
        seg.time_path.write_bytes(tim[:h] + b"".join(reversed(tents)))


@pytest.mark.parametrize("kind", INDEX_DAMAGE)
def test_a_damaged_index_is_reported_and_repair_rebuilds_it(log, kind):
    """Index files that do not describe their segment are reported (naming it), and --repair rebuilds them."""
    seg = log.segments()[1]
    damage_index(seg, kind)
    report = verify_mod.verify(log)
    assert any(p.segment == seg.name for p in report.problems) or any(seg.name in w for w in report.warnings)
    assert report.records == N
    repaired = verify_mod.verify(log, repair=True)
    assert repaired.ok and repaired.problems == []
    assert not [w for w in repaired.warnings if "index" in w]
    assert index_matches_rebuild(log)
    assert not quarantined(log)  # no record was moved for an index problem
    assert offsets(log) == list(range(N))


def test_repair_of_a_clean_log_changes_nothing(log):
    """--repair on a sound log moves nothing and leaves every record file as it was."""
    before = {s.name: s.path.read_bytes() for s in log.segments()}
    report = verify_mod.verify(log, repair=True)
    assert report.ok and report.repaired == []
    assert {s.name: s.path.read_bytes() for s in log.segments()} == before
    assert not (log.dir / "quarantine").exists()
    assert [r.offset for r in records(log)] == list(range(N))


def append_raw_frame(log, offset: int, time_us: int) -> tuple[int, bytes]:
    """Write a well-formed frame by hand at the end of the last segment; returns its position and bytes."""
    seg = log.segments()[-1]
    stored = log.codec.frame(offset, f"hand-{offset}", format_time(time_us),
                             log.codec.rest("hand", "s", None, None, b"1"))
    pos = seg.path.stat().st_size
    with open(seg.path, "ab") as f:
        f.write(stored)
    return pos, stored


def test_an_offset_out_of_order_is_reported_and_repair_moves_it_aside(log):
    """A record whose offset does not follow its predecessor is reported; repair quarantines it."""
    last = records(log, last=1)[0]
    pos, stored = append_raw_frame(log, 3, time_to_us(last.time))
    report = verify_mod.verify(log)
    assert not report.ok
    assert (log.segments()[-1].name, pos, 3) in record_problems(report)
    repaired = verify_mod.verify(log, repair=True)
    assert repaired.ok
    assert quarantined(log) == [stored]
    assert offsets(log) == list(range(N))
    assert append_n(log, 1).first == N


def test_a_time_going_backwards_is_reported(log):
    """A record older than its predecessor is reported with its offset."""
    last = records(log, last=1)[0]
    pos, _ = append_raw_frame(log, N, time_to_us(last.time) - 1_000_000)
    report = verify_mod.verify(log)
    assert not report.ok
    assert (log.segments()[-1].name, pos, N) in record_problems(report)
