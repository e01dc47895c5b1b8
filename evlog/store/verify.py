"""`evlog verify`: check every frame, the order of offsets and times, and the index files.

What a sound log looks like, segment by segment (`base` is the offset in its
name, `next` the next segment's base):

- every frame passes its checksum and its fields decode;
- offsets strictly increase and lie in [base, next); the last (active)
  segment was never compacted, so its offsets run base, base+1, ... with no gap
  (it holds no offset past base + its record count - 1);
- times never decrease along the log;
- the index files describe the segment.

Bytes after the last valid frame of the last segment that could be an
interrupted write are a warning, not a problem (SPEC 6 verify).

`--repair` holds the compaction lock and then the append lock (the order
compaction takes them in), so it never runs beside a compaction or a writer.
It sets aside an interrupted batch, then keeps the longest valid history of
each segment: damaged, undecodable, out-of-place and out-of-order records go
to DIR/quarantine/ (the segment is rewritten under a temporary name, fsynced
and renamed into place: that rename is the point of no return), from the same
open file it scanned. A last segment that lost records other than a torn tail
is sealed by starting the next segment after its last kept offset, so the
active segment stays gapless. Index files that are missing or wrong are
rebuilt.

A plain verify takes no lock: a segment that a compaction replaces while it is
being checked (its file is no longer the one at its name) is checked again.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from evlog.errors import CorruptionError
from evlog.store import files
from evlog.store import index as idx
from evlog.store.files import quarantine
from evlog.store.framing import classify
from evlog.store.log import SEGMENT_RE, DamagedMarker, Log
from evlog.store.recovery import recover_pending
from evlog.store.segment import Segment
from evlog.units import count, time_to_us

RECHECKS = 5  # times a segment replaced during its check is checked again


@dataclass
class Problem:
    segment: str
    position: int
    offset: int | None
    problem: str
    kind: str = "record"  # record | order | time | index | file


@dataclass
class Report:
    ok: bool = True
    segments: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


@dataclass
class _Frame:
    pos: int
    end: int
    offset: int
    time: str


@dataclass
class _SegmentScan:
    """One segment as checked: what to keep, what to move away, and what was wrong."""

    keep: list[_Frame]
    moved: list[tuple[int, int, str]]      # (start, end, why) byte ranges to set aside
    torn: tuple[int, int] | None           # an incomplete last record of the last segment
    problems: list[Problem]
    warnings: list[str]
    index_ok: bool
    gapless: bool                          # kept offsets run base, base+1, ... (for the last segment)


def verify(log: Log, repair: bool = False) -> Report:
    if not repair:
        return _check(log)
    from evlog.store.compact import compaction_lock

    with compaction_lock(log, wait=True), log.lock():
        actions = recover_pending(log)  # an interrupted batch of a dead writer: set aside first
        for d in (log.segments_dir, log.dir, log.dir / "groups"):
            actions += [f"removed {d / n}, left by a process that died" for n in files.clean_temporary(d)]
        actions += _repair(log)
        after = _check(log)
    after.repaired = actions
    after.warnings = [w for w in after.warnings if "incomplete last record" not in w]
    return after


def _listing(log: Log) -> tuple[list[Segment], list[str]]:
    """The log's segments, and the names of segment files of the other format (foreign)."""
    try:
        names = os.listdir(log.segments_dir)
    except FileNotFoundError:
        return [], []
    suffix = log.codec.suffix
    bases: list[str] = []
    foreign: list[str] = []
    for n in names:
        if SEGMENT_RE.fullmatch(n):
            (bases if n.endswith(suffix) else foreign).append(n)
    segs = [Segment(log.segments_dir, int(n[:20]), log.codec, log.settings.index_interval_bytes, log.fsync)
            for n in sorted(bases)]
    return segs, sorted(foreign)


def _check(log: Log, scans: dict[str, _SegmentScan] | None = None) -> Report:
    report = Report()
    segs, foreign = _listing(log)
    for name in foreign:
        report.problems.append(Problem(name, 0, None, f"a {name.rpartition('.')[2]} segment in a "
                                       f"{log.codec.name} log (was `format` changed in evlog.toml?)", "file"))
    pending = log.pending()
    if isinstance(pending, DamagedMarker):
        report.warnings.append(f"the commit marker {log.pending_path} names no position ({pending.text!r}): it "
                               "is ignored; the next append or verify --repair removes it, keeping every record")
        pending = None
    if pending is not None:
        report.warnings.append(
            f"an unfinished batch begins in segment {pending[0]:020d} at byte {pending[1]}: its records are "
            "not part of the log (the next append or verify --repair sets them aside)")
        segs = [s for s in segs if s.base <= pending[0]]
    prev_offset, prev_time = -1, ""
    for i, seg in enumerate(segs):
        stop = pending[1] if pending is not None and seg.base == pending[0] else None
        upper = segs[i + 1].base if i + 1 < len(segs) else None
        scan = _scan_segment(log, seg, upper, prev_offset, prev_time, stop)
        if scan is None:
            continue  # removed while verify ran (retention): nothing of it is left to check
        report.segments += 1
        if scans is not None:
            scans[seg.name] = scan
        report.records += len(scan.keep)
        report.problems += scan.problems
        report.warnings += scan.warnings
        if scan.keep:
            prev_offset, prev_time = scan.keep[-1].offset, max(prev_time, scan.keep[-1].time)
    report.ok = not report.problems
    return report


def _scan_segment(log: Log, seg: Segment, upper: int | None, prev_offset: int, prev_time: str,
                  stop: int | None) -> _SegmentScan | None:
    """Check one segment; again when a compaction replaced its file meanwhile; None when it is gone."""
    for _ in range(RECHECKS):
        try:
            fd = seg.open()
        except FileNotFoundError:
            return None
        try:
            scan = _scan(log, seg, fd, upper, prev_offset, prev_time, stop)
            try:
                same = os.stat(seg.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                return None
        finally:
            os.close(fd)
        if same:
            return scan
    return scan


def _scan(log: Log, seg: Segment, fd: int, upper: int | None, prev_offset: int, prev_time: str,
          stop: int | None) -> _SegmentScan:
    """Check one segment through `fd` (up to `stop`, where an unfinished batch begins): its frames, their
    offsets and times, and its index files."""
    is_last = upper is None
    size = os.fstat(fd).st_size if stop is None else stop
    problems: list[Problem] = []
    warnings: list[str] = []
    loaded, state = _load_index(seg, fd, size, stop, is_last, warnings)
    frames, moved, torn, valid_ordinal = _frames(log, seg, fd, size, is_last, problems, warnings)
    keep, gapless = _history(log, seg, frames, upper, prev_offset, prev_time, problems, moved)
    index_ok = _index_matches(seg, loaded, state, frames, valid_ordinal)
    if not index_ok and loaded is not None and not moved and torn is None:
        # (damaged records explain a mismatch already)
        why = {"damaged": "damaged", "stale": "stale (entries missing)"}.get(state or "", "do not match the segment")
        problems.append(Problem(seg.name, 0, None, f"index files {why}", "index"))
    moved.sort()
    return _SegmentScan(keep, moved, torn, problems, warnings, index_ok, gapless)


def _load_index(seg: Segment, fd: int, size: int, stop: int | None, is_last: bool,
                warnings: list[str]) -> tuple[Any, str | None]:
    """The segment's index files (None when missing, or when an unfinished batch makes them moot) and the
    state the segment reports for them ("damaged", "stale" or None)."""
    loaded = seg.load_index()  # after opening the data: an index newer than the data shows in the recheck
    if loaded is None and size:
        warnings.append(f"{seg.name}: index files missing or unreadable (they are rebuilt on use)")
    state = seg.index_problem(fd, loaded) if loaded is not None and stop is None else None
    if stop is not None:
        loaded = None  # it indexes the unfinished batch too; the writer that sets it aside rebuilds it
    if state == "stale" and is_last:
        warnings.append(f"{seg.name}: index files lag behind the records (a writer stopped between "
                        "the two; the next append catches up)")
        state = None
    return loaded, state


def _history(log: Log, seg: Segment, frames: list[_Frame], upper: int | None, prev_offset: int, prev_time: str,
             problems: list[Problem], moved: list[tuple[int, int, str]]) -> tuple[list[_Frame], bool]:
    """The frames to keep: the longest history whose offsets fit the segment's place in the log and whose
    times never go back; the others become problems and byte ranges to move aside. A record of the gapless
    active segment has at most as many records before it as fit in the bytes before it."""
    is_last = upper is None
    floor = max(prev_offset + 1, seg.base)
    smallest = _smallest_frame(log)
    placed = []
    for f in frames:
        if floor <= f.offset and (f.offset < upper if upper is not None else
                                  f.offset - seg.base <= f.pos // smallest):
            placed.append(f)
        else:
            where = f"segment base {seg.base}" + (f", next segment {upper}" if upper is not None else
                                                  f", byte {f.pos} of the active segment")
            problems.append(Problem(seg.name, f.pos, f.offset, f"offset {f.offset} is out of place ({where})",
                                    "order"))
            moved.append((f.pos, f.end, "out of place"))
    in_order = _longest(placed, key=lambda f: f.offset, strict=True)
    chosen = {f.pos for f in in_order}
    for f in placed:
        if f.pos not in chosen:
            problems.append(Problem(seg.name, f.pos, f.offset, "offset out of order", "order"))
            moved.append((f.pos, f.end, "out of order"))
    later = [f for f in in_order if f.time >= prev_time]
    keep = _longest(later, key=lambda f: f.time, strict=False)
    chosen = {f.pos for f in keep}
    for f in in_order:
        if f.pos not in chosen:
            problems.append(Problem(seg.name, f.pos, f.offset, f"time {f.time} is earlier than the record "
                                    "before it", "time"))
            moved.append((f.pos, f.end, "time"))
    gapless = all(f.offset == seg.base + i for i, f in enumerate(keep))
    if is_last and not gapless and not moved:
        first_gap = next(i for i, f in enumerate(keep) if f.offset != seg.base + i)
        f = keep[first_gap]
        problems.append(Problem(seg.name, f.pos, f.offset, f"offsets of the active segment skip to {f.offset} "
                                f"(expected {seg.base + first_gap})", "order"))
    return keep, gapless


def _index_matches(seg: Segment, loaded: Any, state: str | None, frames: list[_Frame],
                   valid_ordinal: dict[int, int]) -> bool:
    """Whether the index files point at the frames they name, with their offsets, ordinals and times."""
    if loaded is None or state is not None:
        return False
    offsets, tindex = loaded
    times = {off: t for t, off in tindex}
    by_pos = {f.pos: f for f in frames}
    if len({e[1] for e in offsets}) != len(offsets) or len(times) != len(tindex):
        return False
    for off, pos, ordinal in offsets:
        at = by_pos.get(pos)
        if at is None or at.offset != off or valid_ordinal.get(pos) != ordinal or times.get(off) != time_to_us(at.time):
            return False
    return True


def _smallest_frame(log: Log) -> int:
    """The fewest bytes a stored record of this format can take (a one-letter type and id, no data)."""
    codec = log.codec
    return len(codec.frame(0, "x", "2000-01-01T00:00:00.000000Z", codec.rest("a", "", None, None, b"null")))


def _frames(log: Log, seg: Segment, fd: int, size: int, is_last: bool, problems: list[Problem],
            warnings: list[str]) -> tuple[list[_Frame], list[tuple[int, int, str]], tuple[int, int] | None,
                                          dict[int, int]]:
    """The frames of a segment that pass their checksum and decode; damaged ranges; a torn tail;
    and each valid frame's ordinal (number of valid frames before it), by position."""
    codec = log.codec
    frames: list[_Frame] = []
    moved: list[tuple[int, int, str]] = []
    torn = None
    ordinal: dict[int, int] = {}
    pos = 0
    while True:
        reader = seg.frames(fd, pos, size)
        for p, frame in reader:
            end = p + len(codec.stored(frame))
            ordinal[p] = len(ordinal)
            try:
                rec = codec.record(frame)  # every field must decode, not just the checksum hold
            except CorruptionError as e:
                problems.append(Problem(seg.name, p, e.offset, e.problem))
                moved.append((p, end, "undecodable"))
                continue
            frames.append(_Frame(p, end, rec.offset, rec.time))
        if reader.bad is None:
            break
        nxt = classify(codec, fd, reader.bad, size)
        if nxt is None and is_last:
            torn = (reader.bad, size)
            warnings.append(
                f"{seg.name}: incomplete last record at byte {reader.bad} ({size - reader.bad} bytes; "
                "a writer stopped mid-append: reads ignore it, the next append or verify --repair removes it)")
            break
        end = size if nxt is None else nxt
        prev = frames[-1].offset if frames else None
        problems.append(Problem(seg.name, reader.bad,
                                codec.guess_offset(os.pread(fd, 64, reader.bad))
                                or (prev + 1 if prev is not None else seg.base),
                                f"damaged record ({end - reader.bad} bytes): checksum mismatch or broken frame"))
        moved.append((reader.bad, end, "damaged"))
        if nxt is None or nxt >= size:
            break
        pos = nxt
    return frames, moved, torn, ordinal


def _longest(items: list[_Frame], key: Callable[[_Frame], Any], strict: bool) -> list[_Frame]:
    """The longest subsequence of items whose keys increase (strictly, or never decrease), in order."""
    tails: list[Any] = []     # smallest last key of an increasing run of each length
    ends: list[int] = []      # index of that last item
    back: list[int] = []      # previous item of each item's best run
    for i, item in enumerate(items):
        k = key(item)
        j = bisect.bisect_left(tails, k) if strict else bisect.bisect_right(tails, k)
        back.append(ends[j - 1] if j else -1)
        if j == len(tails):
            tails.append(k)
            ends.append(i)
        else:
            tails[j], ends[j] = k, i
    out: list[_Frame] = []
    i = ends[-1] if ends else -1
    while i >= 0:
        out.append(items[i])
        i = back[i]
    out.reverse()
    return out


def _repair(log: Log) -> list[str]:
    """Rewrite each damaged segment without what does not belong (append and compaction locks held)."""
    actions: list[str] = []
    segs, _ = _listing(log)
    prev_offset, prev_time = -1, ""
    for i, seg in enumerate(segs):
        upper = segs[i + 1].base if i + 1 < len(segs) else None
        try:
            fd = seg.open()
        except FileNotFoundError:
            continue
        try:
            scan = _scan(log, seg, fd, upper, prev_offset, prev_time, None)
            if scan.moved or scan.torn is not None:
                actions += _rewrite(log, seg, fd, scan)
            rewritten = bool(scan.moved or scan.torn is not None)
            if rewritten or not scan.index_ok:
                fresh = seg.open()
                try:
                    seg.rebuild_index(fresh, write=True)
                finally:
                    os.close(fresh)
                actions.append(f"rebuilt the index files of {seg.name}")
        finally:
            os.close(fd)
        if scan.keep:
            prev_offset, prev_time = scan.keep[-1].offset, max(prev_time, scan.keep[-1].time)
        if upper is None and scan.keep and not scan.gapless:
            actions.append(_seal(log, scan.keep[-1].offset + 1))
    return actions


def _rewrite(log: Log, seg: Segment, fd: int, scan: _SegmentScan) -> list[str]:
    """Quarantine the moved ranges, then replace the segment with its kept frames (read from `fd`)."""
    actions = []
    moved = list(scan.moved)
    if scan.torn is not None:
        moved.append((*scan.torn, "incomplete last record"))
    for a, b, why in moved:
        keep = quarantine(log.dir, f"{seg.name}.{a}", why.replace(" ", "-"), os.pread(fd, b - a, a))
        actions.append(f"moved {b - a} bytes ({why}) from {seg.name} at byte {a} to {keep}")
    tmp = seg.path.with_name(f".{seg.name}.repair")
    with open(tmp, "wb") as out:
        for f in scan.keep:
            out.write(os.pread(fd, f.end - f.pos, f.pos))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, seg.path)  # the point of no return: the segment without the damage
    files.fsync_dir(seg.path.parent)
    return actions


def _seal(log: Log, base: int) -> str:
    """Start an empty segment at `base`, so the repaired last segment (which now has a gap) is sealed."""
    seg = Segment(log.segments_dir, base, log.codec, log.settings.index_interval_bytes, log.fsync)
    fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    for path, magic in ((seg.index_path, idx.OFFSET_MAGIC), (seg.time_path, idx.TIME_MAGIC)):
        files.write_atomic(path, idx.header(magic, base), True)
    files.fsync_dir(log.segments_dir)
    return f"started segment {seg.name}: the next append continues after the last kept offset"


def to_json(report: Report) -> bytes:
    doc: dict[str, Any] = {
        "ok": report.ok, "segments": report.segments, "records": report.records,
        "problems": [{"segment": p.segment, "position": p.position, "offset": p.offset, "problem": p.problem}
                     for p in report.problems],
    }
    if report.repaired:
        doc["repaired"] = report.repaired
    return msgspec.json.encode(doc)


def to_text(report: Report) -> list[str]:
    lines = [f"repaired: {a}" for a in report.repaired]
    for p in report.problems:
        at = f"offset {p.offset}" if p.offset is not None else "-"
        lines.append(f"{p.segment} byte {p.position} ({at}): {p.problem}")
    state = "ok" if report.ok else f"CORRUPT: {len(report.problems)} problem(s)"
    lines.append(f"{state}: {count(report.segments, 'segment')}, {count(report.records, 'record')} checked")
    return lines
