"""Helpers for tests/test_compact.py (not a test module): log files, a model of compaction, locks, RSS.

The model is SPEC 6 `evlog compact` written as plain Python over the records a log
reads back and the segment files it holds:

- retention deletes whole sealed segments, oldest first: those whose newest event is
  older than max-age, then as many as needed for max-bytes / max-events;
- key compaction keeps the newest event of each key among the sealed segments (the
  active, last segment is neither read nor changed), keyless events, and tombstones
  (a key with data null) until they are older than tombstone_retention.
"""

from __future__ import annotations

import bisect
import calendar
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Evlog, segment_files

Record = dict[str, Any]

PAD = "p" * 100  # ~280-byte JSONL records: a few per 1 KiB segment
TEMP_RE = re.compile(r"\.\d{20}\.(jsonl|msgpack|index|timeindex)\.compact")
INDEX_RE = re.compile(r"(\d{20})\.(index|timeindex)")
DATA_RE = re.compile(r"(\d{20})\.(jsonl|msgpack)")


def event(i: int, key: str | None = None, *, tomb: bool = False, type_: str = "t", pad: str = PAD) -> Record:
    """One input event for `append --batch`; a tombstone has a key and data null."""
    return {"type": type_, "key": key, "data": None if tomb else {"i": i, "pad": pad}}


def init(cli: Evlog, fmt: str, d: Path | None = None, segment_bytes: str = "1KiB", *extra: str) -> Path:
    """`evlog [-d D] init --format FMT --segment-bytes SIZE`; returns the log directory."""
    pre = ["-d", d] if d is not None else []
    cli.ok(*pre, "init", "--format", fmt, "--segment-bytes", segment_bytes, *extra)
    return d if d is not None else cli.dir


def copy_log(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# -- files ------------------------------------------------------------------------------------

def all_files(d: Path) -> dict[str, bytes]:
    """Every regular file under d (relative path -> bytes)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def bases(d: Path) -> list[int]:
    return [int(p.stem) for p in segment_files(d)]


def data_files(d: Path) -> dict[int, bytes]:
    """Segment data files by base offset."""
    return {int(p.stem): p.read_bytes() for p in segment_files(d)}


def segment_bytes_on_disk(d: Path) -> dict[int, int]:
    """Per segment: the size of its data file and its two index files."""
    out = {}
    for p in segment_files(d):
        size = p.stat().st_size
        for suffix in (".index", ".timeindex"):
            q = p.with_suffix(suffix)
            if q.exists():
                size += q.stat().st_size
        out[int(p.stem)] = size
    return out


def leftovers(d: Path) -> list[str]:
    """Files in segments/ that are neither a data file nor the index file of one."""
    segs = d / "segments"
    stems = {m.group(1) for n in os.listdir(segs) if (m := DATA_RE.fullmatch(n))}
    out = []
    for n in sorted(os.listdir(segs)):
        if DATA_RE.fullmatch(n):
            continue
        m = INDEX_RE.fullmatch(n)
        if m and m.group(1) in stems:
            continue
        out.append(n)
    return out


def set_settings(d: Path, retention: dict[str, Any] | None = None, compaction: dict[str, Any] | None = None) -> None:
    """Put these keys into the [retention] / [compaction] tables of DIR/evlog.toml."""
    path = d / "evlog.toml"
    text = path.read_text()
    for table, values in (("retention", retention), ("compaction", compaction)):
        if not values:
            continue
        head, sep, rest = text.partition(f"[{table}]\n")
        assert sep, f"no [{table}] table in {path}:\n{text}"
        body, nxt, tail = rest.partition("\n[")
        lines = [line for line in body.splitlines() if line.split("=")[0].strip() not in values]
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        text = head + sep + "\n".join(lines) + "\n" + nxt + tail
    path.write_text(text)


# -- records ----------------------------------------------------------------------------------

def time_s(t: str) -> float:
    """A record's time (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) as seconds since the epoch."""
    dt = datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def segment_of(segs: list[int], offset: int) -> int:
    return segs[bisect.bisect_right(segs, offset) - 1]


def by_segment(records: list[Record], segs: list[int]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = {b: [] for b in segs}
    for r in records:
        out[segment_of(segs, r["offset"])].append(r)
    return out


def offsets(records: list[Record]) -> list[int]:
    return [r["offset"] for r in records]


@dataclass
class SegInfo:
    base: int
    records: list[Record]
    size: int

    @property
    def newest(self) -> float | None:
        return time_s(self.records[-1]["time"]) if self.records else None


@dataclass
class Facts:
    """What a log holds, from its files and its records."""

    segs: list[SegInfo]
    records: list[Record]

    @property
    def summary(self) -> tuple[int, int, int]:
        return len(self.segs), len(self.records), sum(s.size for s in self.segs)


def facts(cli: Evlog, d: Path) -> Facts:
    records = cli.records(d=d)
    segs = bases(d)
    sizes = segment_bytes_on_disk(d)
    grouped = by_segment(records, segs)
    return Facts([SegInfo(b, grouped[b], sizes[b]) for b in segs], records)


def doomed(f: Facts, *, max_events: int | None = None, max_bytes: int | None = None,
           max_age_s: float | None = None, now_s: float | None = None) -> list[int]:
    """Bases of the sealed segments retention deletes (SPEC 6), oldest first."""
    sealed = f.segs[:-1]
    out: list[int] = []
    if max_age_s is not None:
        assert now_s is not None
        for s in sealed:
            if s.newest is not None and s.newest >= now_s - max_age_s:
                break
            out.append(s.base)
    events, size = len(f.records), sum(s.size for s in f.segs)
    for s in f.segs:
        if s.base in out:
            events, size = events - len(s.records), size - s.size
    for s in sealed[len(out):]:
        if not ((max_events is not None and events > max_events) or (max_bytes is not None and size > max_bytes)):
            break
        out.append(s.base)
        events, size = events - len(s.records), size - s.size
    return out


def key_compacted(records: list[Record], active_base: int, *, tombstone_s: float | None = None,
                  now_s: float | None = None) -> list[Record]:
    """The records key compaction keeps (SPEC 6), given the base of the active segment."""
    newest: dict[str, Record] = {}
    for r in records:
        if r["offset"] < active_base and r["key"] is not None:
            newest[r["key"]] = r
    gone = set()
    if tombstone_s is not None:
        assert now_s is not None
        gone = {k for k, r in newest.items() if r["data"] is None and time_s(r["time"]) < now_s - tombstone_s}
    return [r for r in records
            if r["offset"] >= active_base or r["key"] is None
            or (r["key"] not in gone and newest[r["key"]]["offset"] == r["offset"])]


# -- running evlog in special ways -------------------------------------------------------------

# Runs the real CLI with the clock set back, to make events that are days old (SPEC 6 --max-age).
_CLOCK_SHIM = """
import runpy, sys
import evlog.units as units
t_us = int(sys.argv.pop(1))
units.now_us = lambda: t_us
sys.argv[0] = "evlog"
runpy.run_module("evlog", run_name="__main__", alter_sys=True)
"""


def append_at(cli: Evlog, events: list[Record], when_s: float, d: Path | None = None) -> dict[str, Any]:
    """`evlog append --batch --json` as if the clock read `when_s` (seconds since the epoch)."""
    pre = ["-d", str(d)] if d is not None else []
    text = "".join(json.dumps(e) + "\n" for e in events)
    proc = subprocess.run([sys.executable, "-c", _CLOCK_SHIM, str(int(when_s * 1e6)), *pre,
                           "append", "--batch", "--json"], input=text, env=cli.env, cwd=cli.tmp,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


_RSS_WRAPPER = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kib(cli: Evlog, *args: object) -> tuple[int, int]:
    """(exit status, peak RSS in KiB) of `evlog ARGS`, run as the only child of a fresh wrapper."""
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cli.argv(args)], env=cli.env, cwd=cli.tmp,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rc, kib = proc.stdout.split()
    return int(rc), int(kib)


def flock_holders(path: Path) -> list[tuple[int, bool]]:
    """(pid, waiting) for every flock on `path` in /proc/locks: holders, and waiters (`->`)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            waiting = len(fields) > 1 and fields[1] == "->"
            if waiting:
                fields = fields[:1] + fields[2:]
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev:
                out.append((int(fields[4]), waiting))
    return out
