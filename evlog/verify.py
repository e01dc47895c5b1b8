"""`evlog verify`: check every frame, the order of offsets and times, and the index files.

`--repair` holds the append lock and: cuts an incomplete last record (kept
in DIR/quarantine/), moves damaged frames and out-of-order records into
DIR/quarantine/ (a segment is rewritten under a temporary name, fsynced and
renamed into place: that rename is the point of no return), and rebuilds
index files that are missing or wrong.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from evlog import index as idx
from evlog.framing import classify
from evlog.log import Log, recover_pending
from evlog.segment import Segment
from evlog.units import time_to_us


@dataclass
class Problem:
    segment: str
    position: int
    offset: int | None
    problem: str
    kind: str = "record"  # record | order | time | index


@dataclass
class Report:
    ok: bool = True
    segments: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


@dataclass
class _SegmentScan:
    good: list[tuple[int, int]]            # (start, end) byte ranges to keep
    bad: list[tuple[int, int, str]]        # (start, end, why) byte ranges to move away
    torn: tuple[int, int] | None           # an incomplete last record of the last segment
    records: int
    index_ok: bool
    last_offset: int = -1                  # of the last good record so far in the log
    last_time: str = ""


def verify(log: Log, repair: bool = False) -> Report:
    if not repair:
        return _check(log)
    with log.lock():
        actions = recover_pending(log)  # an interrupted batch of a dead writer: set aside first
        actions += _repair(log)
        after = _check(log)
    after.repaired = actions
    after.warnings = [w for w in after.warnings if "incomplete last record" not in w]
    return after


def _check(log: Log, scans: dict[str, _SegmentScan] | None = None) -> Report:
    report = Report()
    segs = log.segments()
    pending = log.pending()
    if pending is not None:
        report.warnings.append(
            f"an unfinished batch begins in segment {pending[0]:020d} at byte {pending[1]}: its records are "
            "not part of the log (the next append or verify --repair sets them aside)")
        segs = [s for s in segs if s.base <= pending[0]]
    report.segments = len(segs)
    prev_offset = -1
    prev_time = ""
    for i, seg in enumerate(segs):
        stop = pending[1] if pending is not None and seg.base == pending[0] else None
        scan = _scan(log, seg, i == len(segs) - 1, report, prev_offset, prev_time, stop)
        if scans is not None:
            scans[seg.name] = scan
        report.records += scan.records
        prev_offset, prev_time = scan.last_offset, scan.last_time
    report.ok = not report.problems
    return report


def _scan(log: Log, seg: Segment, is_last: bool, report: Report, prev_offset: int,
          prev_time: str, stop: int | None = None) -> _SegmentScan:
    """Check one segment (up to `stop`, where an unfinished batch begins, whose index is left alone)."""
    codec = log.codec
    fd = seg.open()
    try:
        size = os.fstat(fd).st_size if stop is None else stop
        loaded = seg.load_index()
        entries: dict[int, tuple[int, int]] = {}
        times: dict[int, int] = {}
        index_ok = loaded is not None
        if loaded is not None:
            offsets, tindex = loaded
            entries = {pos: (off, ordinal) for off, pos, ordinal in offsets}
            times = {off: t for t, off in tindex}
            index_ok = len(entries) == len(offsets) and len(times) == len(tindex)
        elif size:
            report.warnings.append(f"{seg.name}: index files missing or unreadable (they are rebuilt on use)")
        state = seg.index_problem(fd, loaded) if loaded is not None and stop is None else None
        if stop is not None:
            loaded = None  # it indexes the unfinished batch too; the writer that sets it aside rebuilds it
        if state == "stale" and is_last:
            report.warnings.append(f"{seg.name}: index files lag behind the records (a writer stopped between "
                                   "the two; the next append catches up)")
            state = None
        good: list[tuple[int, int]] = []
        bad: list[tuple[int, int, str]] = []
        torn = None
        records = 0
        matched = 0
        pos = 0
        while True:
            reader = seg.frames(fd, pos, stop)
            run_start = None
            for p, frame in reader:
                off, _, t = codec.head(frame)
                entry = entries.get(p)
                if entry is not None:
                    if entry != (off, records) or times.get(off) != time_to_us(t):
                        index_ok = False
                    matched += 1
                if off <= prev_offset:
                    report.problems.append(Problem(seg.name, p, off, f"offset {off} does not follow {prev_offset}",
                                                   "order"))
                    if run_start is not None:
                        good.append((run_start, p))
                        run_start = None
                    bad.append((p, p + len(codec.stored(frame)), "out of order"))
                    continue
                if t < prev_time:
                    report.problems.append(Problem(seg.name, p, off, f"time {t} is earlier than {prev_time}",
                                                   "time"))
                if run_start is None:
                    run_start = p
                prev_offset, prev_time = off, max(prev_time, t)
                records += 1
            if run_start is not None:
                good.append((run_start, reader.end))
            if reader.bad is None:
                break
            nxt = classify(codec, fd, reader.bad, size)
            if nxt is None and is_last:
                torn = (reader.bad, size)
                report.warnings.append(
                    f"{seg.name}: incomplete last record at byte {reader.bad} ({size - reader.bad} bytes; "
                    "a writer stopped mid-append: reads ignore it, the next append or verify --repair removes it)")
                break
            end = size if nxt is None else nxt
            report.problems.append(Problem(seg.name, reader.bad, codec.guess_offset(os.pread(fd, 64, reader.bad))
                                           or (prev_offset + 1), f"damaged record ({end - reader.bad} bytes): "
                                           "checksum mismatch or broken frame"))
            bad.append((reader.bad, end, "damaged"))
            if nxt is None:
                break
            pos = nxt
        if loaded is not None and matched != len(entries):
            index_ok = False
        if state is not None:
            index_ok = False
        if not index_ok and loaded is not None and not bad:  # damaged records explain a mismatch already
            why = {"damaged": "damaged", "stale": "stale (entries missing)"}.get(state or "",
                                                                              "do not match the segment")
            report.problems.append(Problem(seg.name, 0, None, f"index files {why}", "index"))
        return _SegmentScan(good, bad, torn, records, index_ok and loaded is not None, prev_offset, prev_time)
    finally:
        os.close(fd)


def _repair(log: Log) -> list[str]:
    scans: dict[str, _SegmentScan] = {}
    _check(log, scans)
    actions: list[str] = []
    qdir = log.dir / "quarantine"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    fsync = log.settings.fsync != "never"
    for seg in log.segments():
        scan = scans.get(seg.name)
        if scan is None:
            continue
        rewritten = False
        with open(seg.path, "rb") as f:
            data_of = lambda a, b: os.pread(f.fileno(), b - a, a)  # noqa: E731
            moved = [(a, b, why) for a, b, why in scan.bad]
            if scan.torn is not None:
                moved.append((*scan.torn, "incomplete last record"))
            if moved:
                qdir.mkdir(exist_ok=True)
                for a, b, why in moved:
                    keep = qdir / f"{seg.name}.{a}.{stamp}.{why.replace(' ', '-')}"
                    with open(keep, "wb") as out:
                        out.write(data_of(a, b))
                        out.flush()
                        os.fsync(out.fileno())
                    actions.append(f"moved {b - a} bytes ({why}) from {seg.name} at byte {a} to {keep}")
                idx.fsync_dir(qdir)
                kept = b"".join(data_of(a, b) for a, b in scan.good)
                tmp = seg.path.with_name(f".{seg.name}.repair")
                with open(tmp, "wb") as out:
                    out.write(kept)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, seg.path)  # the point of no return: the segment without the damage
                idx.fsync_dir(seg.path.parent)
                rewritten = True
        if rewritten or not scan.index_ok:
            fd = seg.open()
            try:
                seg.rebuild_index(fd, write=True, fsync=fsync)
            finally:
                os.close(fd)
            actions.append(f"rebuilt the index files of {seg.name}")
    return actions


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
    lines.append(f"{state}: {report.segments} segments, {report.records} records checked")
    return lines
