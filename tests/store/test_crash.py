"""Crash tests on real files and real processes (SPEC 6 `verify`, SPEC 7 storage guarantees).

Segments are torn, garbage-filled and bit-flipped; index files truncated, zeroed and
scrambled; appenders SIGKILLed at random moments. Afterwards evlog must read what was
acknowledged, exactly once, and go on appending.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Evlog,
    Spawner,
    assert_one_error,
    parse_records,
    quarantined,
    segment_files,
    wait_until,
)

FORMATS = ["jsonl", "msgpack"]
MP_HEADER = struct.Struct("<HII")  # magic, payload length, crc32 (evlog/store/framing.py)


def frame_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the frames of a sound segment file."""
    data = path.read_bytes()
    spans = []
    pos = 0
    if path.suffix == ".jsonl":
        while pos < len(data):
            end = data.index(b"\n", pos) + 1
            spans.append((pos, end))
            pos = end
    else:
        while pos < len(data):
            _, length, _ = MP_HEADER.unpack_from(data, pos)
            spans.append((pos, pos + MP_HEADER.size + length))
            pos += MP_HEADER.size + length
    return spans


def offsets(records: list[dict]) -> list[int]:
    return [r["offset"] for r in records]


def padded(n: int, start: int = 0, pad: int = 150, type_: str = "t") -> list[dict]:
    return [{"type": type_, "data": {"m": f"marker-{i:05d}", "pad": "p" * pad}} for i in range(start, start + n)]


# -- torn tails ------------------------------------------------------------------------------

def make_torn_tail(cli: Evlog, fmt: str, where: str) -> tuple[Path, int, bytes, int]:
    """A log whose last record is half written: (segment, its good size, the torn bytes, good records)."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "1KiB" if where == "new_segment" else "64MiB")
    cli.batch(padded(3, pad=50))
    before = segment_files(cli.dir)
    seg = before[-1]
    good = seg.stat().st_size
    indexes = {p: p.read_bytes() for p in (cli.dir / "segments").iterdir() if p.suffix in (".index", ".timeindex")}
    big = 900 if where == "new_segment" else 300
    assert cli.ok("append", "t", "--data", json.dumps({"m": "torn", "pad": "x" * big})) == "3\n"
    if where == "new_segment":
        assert len(segment_files(cli.dir)) == len(before) + 1, "the big event should start a new segment"
        seg, good = segment_files(cli.dir)[-1], 0
    frame = seg.read_bytes()[good:]
    assert len(frame) > 300
    # What a writer SIGKILLed mid-write leaves: half the frame, and the index files as they were
    # before it (a new segment's index files hold only their 16-byte header; entries follow the data).
    for p in (cli.dir / "segments").iterdir():
        if p.suffix in (".index", ".timeindex"):
            p.write_bytes(indexes.get(p, p.read_bytes()[:16]))
    with open(seg, "r+b") as f:
        f.truncate(good + len(frame) // 2)
    return seg, good, frame[: len(frame) // 2], 3


def check_torn_tail_is_ignored(cli: Evlog, n: int) -> None:
    assert offsets(cli.records()) == list(range(n))
    assert offsets(cli.records("--last", 2)) == [n - 2, n - 1]
    assert offsets(parse_records(cli.ok("tail", "-n", 2, "--format", "json"))) == [n - 2, n - 1]
    assert offsets(cli.records("--from", n - 1)) == [n - 1]
    r = cli("verify")
    assert r.rc == 0, (r.out, r.err)
    assert "warning" in r.err.lower(), f"no warning about the incomplete last record: {r.err!r}"
    report = json.loads(cli.ok("verify", "--json"))
    assert report["ok"] is True and report["records"] == n


def check_cut_and_kept(cli: Evlog, seg: Path, good: int, torn: bytes, n: int) -> None:
    """The torn bytes are gone from the segment, kept in DIR/quarantine/, and the log is clean."""
    assert any(torn in blob for blob in quarantined(cli.dir)), "the cut bytes are not in DIR/quarantine/"
    recs = cli.records()
    assert offsets(recs) == list(range(len(recs)))
    assert len(recs) >= n
    assert torn not in seg.read_bytes()[good:] or not seg.exists()
    r = cli("verify")
    assert r.rc == 0 and "warning" not in r.err.lower(), (r.out, r.err)


@pytest.mark.parametrize("where", ["mid_segment", "new_segment"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_torn_tail_is_ignored_then_cut_by_the_next_append(cli: Evlog, fmt: str, where: str) -> None:
    """Half a last frame: reads ignore it, verify warns (exit 0), the next append cuts it into quarantine/."""
    seg, good, torn, n = make_torn_tail(cli, fmt, where)
    check_torn_tail_is_ignored(cli, n)
    assert cli.ok("append", "after", "x:=1") == f"{n}\n"
    if seg.exists():
        assert seg.stat().st_size > good
        assert not seg.read_bytes()[good:].startswith(torn)
    check_cut_and_kept(cli, seg, good, torn, n + 1)
    recs = cli.records()
    assert (recs[-1]["offset"], recs[-1]["type"], recs[-1]["data"]) == (n, "after", {"x": 1})


@pytest.mark.parametrize("where", ["mid_segment", "new_segment"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_repair_cuts_a_torn_tail(cli: Evlog, fmt: str, where: str) -> None:
    """`verify --repair` truncates an incomplete last record into quarantine/ and exits 0."""
    seg, good, torn, n = make_torn_tail(cli, fmt, where)
    r = cli("verify", "--repair")
    assert r.rc == 0, (r.out, r.err)
    if seg.exists():
        assert seg.stat().st_size == good
    check_cut_and_kept(cli, seg, good, torn, n)
    assert cli.ok("append", "after") == f"{n}\n"
    assert offsets(cli.records()) == list(range(n + 1))


def unfinished_junk(fmt: str, count: int, rng: random.Random) -> bytes:
    """Random bytes that cannot hold a whole frame, as an interrupted write leaves: no newline in a
    JSONL segment; a MessagePack header announcing more bytes than follow."""
    if fmt == "jsonl":
        return bytes(rng.choice(range(256)) for _ in range(count)).replace(b"\n", b" ")
    if count < MP_HEADER.size:
        return MP_HEADER.pack(0xE71F, 1 << 20, 0)[:count]
    return MP_HEADER.pack(0xE71F, count + rng.randrange(1, 1 << 20), rng.getrandbits(32)) + \
        rng.randbytes(count - MP_HEADER.size)


@pytest.mark.parametrize("count", [pytest.param(1, marks=pytest.mark.slow), 9,
                                   pytest.param(64, marks=pytest.mark.slow), 3000])
@pytest.mark.parametrize("fmt", FORMATS)
def test_unfinished_bytes_after_the_tail_are_a_torn_tail(cli: Evlog, fmt: str, count: int) -> None:
    """Random bytes after the last record that cannot be a whole frame count as an incomplete last
    record: ignored, warned, cut, kept."""
    cli.ok("init", "--format", fmt)
    cli.batch(padded(5))
    seg = segment_files(cli.dir)[-1]
    good = seg.stat().st_size
    junk = unfinished_junk(fmt, count, random.Random(count))
    with open(seg, "ab") as f:
        f.write(junk)
    check_torn_tail_is_ignored(cli, 5)
    assert cli.ok("append", "after") == "5\n"
    assert seg.read_bytes()[good:good + count] != junk or count < 4
    check_cut_and_kept(cli, seg, good, junk, 6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_garbage_after_the_tail_is_corruption(cli: Evlog, fmt: str) -> None:
    """Garbage after the last record that ends like a frame (a newline; a MessagePack frame that fits)
    cannot be an interrupted write: verify and read exit 5, append refuses, --repair quarantines it."""
    cli.ok("init", "--format", fmt)
    cli.batch(padded(5))
    seg = segment_files(cli.dir)[-1]
    good = seg.stat().st_size
    rng = random.Random(5)
    if fmt == "jsonl":
        junk = rng.randbytes(200).replace(b"\n", b" ") + b"\n"
    else:
        junk = MP_HEADER.pack(0xE71F, 190, rng.getrandbits(32)) + rng.randbytes(190)
    with open(seg, "ab") as f:
        f.write(junk)
    assert cli("verify").rc == 5
    assert_one_error(cli("read"), 5, "offset 5")
    assert cli("append", "after").rc == 5
    assert cli("verify", "--repair").rc == 0
    assert any(junk in blob for blob in quarantined(cli.dir))
    assert seg.read_bytes()[:good] == seg.read_bytes()
    assert cli.ok("append", "after") == "5\n"


# -- damaged index files ---------------------------------------------------------------------

def _damage(path: Path, kind: str, rng: random.Random) -> None:
    data = path.read_bytes()
    entry = 24 if path.suffix == ".index" else 16
    if kind == "garbage":
        new = rng.randbytes(max(len(data), 64))
    elif kind == "garbage_entries":
        new = data[:16] + rng.randbytes(max(len(data) - 16, 3 * entry))
    elif kind == "truncated_mid_entry":
        n = (len(data) - 16) // entry
        new = data[: 16 + (n // 2) * entry + entry // 2]
    elif kind == "header_only":
        new = data[:16]
    elif kind == "empty":
        new = b""
    elif kind == "zeroed":
        new = bytes(len(data))
    elif kind == "zeroed_entries":
        new = data[:16] + bytes(len(data) - 16)
    elif kind == "off_by_one":
        # Well-formed entries that lie: every offset shifted by one, every time by a second.
        out = bytearray(data)
        for pos in range(16, len(data) - entry + 1, entry):
            if entry == 24:
                off, p, ordinal = struct.unpack_from("<QQQ", data, pos)
                struct.pack_into("<QQQ", out, pos, off + 1, p, ordinal)
            else:
                t, off = struct.unpack_from("<qQ", data, pos)
                struct.pack_into("<qQ", out, pos, t + 1_000_000, off + 1)
        new = bytes(out)
    elif kind == "swapped":
        return  # done by damage_indexes: each segment gets another segment's index files
    else:
        raise AssertionError(kind)
    path.write_bytes(new)


def damage_indexes(directory: Path, kind: str, which: str, seed: int) -> None:
    rng = random.Random(seed)
    suffixes = {"both": (".index", ".timeindex"), "index": (".index",), "timeindex": (".timeindex",)}[which]
    for suffix in suffixes:
        files = sorted((directory / "segments").glob(f"*{suffix}"))
        assert len(files) >= 3
        if kind == "swapped":
            blobs = [p.read_bytes() for p in files]
            for p, blob in zip(files, blobs[1:] + blobs[:1], strict=True):
                p.write_bytes(blob)
            continue
        for p in files:
            _damage(p, kind, rng)


def index_queries(recs: list[dict]) -> list[list[Any]]:
    n = len(recs)
    times = sorted({r["time"] for r in recs})
    return [
        ["read", "--from", k, "--limit", 3] for k in (1, 37, n // 2, n - 2, n)
    ] + [
        ["read", "--since", times[i], "--limit", 3] for i in (1, len(times) - 1)
    ] + [
        ["read", "--since", times[2], "--until", times[4], "--type", "odd"],
        ["read", "--last", 60, "--limit", 4], ["read", "--last", n + 5, "--limit", 2],
        ["tail", "-n", 1], ["tail", "-n", 70], ["tail", "-n", 3, "--type", "odd"],
    ]


def expected(full: list[dict], q: list[Any]) -> list[int]:
    """What a query over the records `full` prints, computed in Python."""
    args = dict(zip(q[1::2], q[2::2], strict=True))
    sel = full
    if q[0] == "read":
        if "--from" in args:
            sel = [r for r in sel if r["offset"] >= int(args["--from"])]
        if "--last" in args:
            sel = sel[-int(args["--last"]):]
        if "--since" in args:
            sel = [r for r in sel if r["time"] >= args["--since"]]
        if "--until" in args:
            sel = [r for r in sel if r["time"] < args["--until"]]
    if "--type" in args:
        sel = [r for r in sel if r["type"] == args["--type"]]
    if q[0] == "tail":
        return offsets(sel[-int(args["-n"]):])
    if "--limit" in args:
        sel = sel[: int(args["--limit"])]
    return offsets(sel)


def run_queries(cli: Evlog, queries: list[list[Any]]) -> list[list[int]]:
    answers = []
    for q in queries:
        r = cli(*q, "--format", "json")
        assert r.rc == 0, (q, r.err)
        answers.append(offsets(parse_records(r.out)))
    return answers


@pytest.fixture(scope="module")
def indexed_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    """Per format: a log of several 16KiB segments with dense indexes, and its records."""
    built = {}
    for fmt in FORMATS:
        cli = Evlog(tmp_path_factory.mktemp(f"indexed-{fmt}"))
        cli.ok("init", "--format", fmt, "--segment-bytes", "16KiB")
        toml = cli.dir / "evlog.toml"
        text = toml.read_text()
        assert re.search(r"(?m)^index_interval_bytes = \d+$", text)
        toml.write_text(re.sub(r"(?m)^index_interval_bytes = \d+$", "index_interval_bytes = 512", text))
        start = 0
        for _ in range(10):  # ten batches: ten distinct times
            events = [{"type": "odd" if i % 2 else "even", "data": {"i": i, "pad": "q" * 120}}
                      for i in range(start, start + 33)]
            cli.batch(events)
            start += 33
        recs = cli.records()
        assert offsets(recs) == list(range(330))
        assert len(segment_files(cli.dir)) >= 3
        assert len({r["time"] for r in recs}) == 10
        built[fmt] = (cli.dir, recs)
    return built


DAMAGES = ["garbage", "garbage_entries", "truncated_mid_entry", "header_only", "empty", "zeroed",
           "zeroed_entries", "off_by_one", "swapped", "deleted"]
QUICK = {("jsonl", d) for d in ("garbage", "garbage_entries", "truncated_mid_entry", "zeroed", "off_by_one",
                                "swapped", "deleted")} | {("msgpack", d) for d in ("garbage", "zeroed_entries",
                                                                                     "off_by_one")}


def _index_cases() -> list[Any]:
    cases = []
    for fmt in FORMATS:
        for kind in DAMAGES:
            marks = [] if (fmt, kind) in QUICK else [pytest.mark.slow]
            cases.append(pytest.param(fmt, kind, "both", id=f"{fmt}-{kind}", marks=marks))
        for which in ("index", "timeindex"):
            for kind in ("garbage_entries", "off_by_one"):
                cases.append(pytest.param(fmt, kind, which, id=f"{fmt}-{kind}-{which}-only",
                                          marks=[pytest.mark.slow]))
    return cases


@pytest.mark.parametrize(("fmt", "kind", "which"), _index_cases())
def test_damaged_index_files_give_the_same_answers(cli: Evlog, indexed_logs: dict, fmt: str, kind: str,
                                                   which: str) -> None:
    """Garbage, truncated, zeroed, lying or missing index files: seeks give the same answers, appends still work."""
    source, recs = indexed_logs[fmt]
    shutil.copytree(source, cli.dir)
    queries = index_queries(recs)
    if kind == "deleted":
        for p in (cli.dir / "segments").iterdir():
            if p.suffix in (".index", ".timeindex") and (which == "both" or p.suffix == "." + which):
                p.unlink()
    else:
        damage_indexes(cli.dir, kind, which, seed=sum(map(ord, fmt + kind + which)))
    assert run_queries(cli, queries) == [expected(recs, q) for q in queries]
    assert cli.records() == recs
    facts = json.loads(cli.ok("info", "--json"))
    assert (facts["events"], facts["first_offset"], facts["last_offset"]) == (330, 0, 329)

    # Appending after the damage (the active segment's index files are appended to), then seeking again.
    summary = cli.batch([{"type": "odd", "data": {"i": i, "pad": "r" * 120}} for i in range(330, 400)])
    assert summary == {"count": 70, "first": 330, "last": 399}
    full = cli.records()
    assert offsets(full) == list(range(400))
    assert full[:330] == recs
    later = [["read", "--from", k, "--limit", 3] for k in (329, 371)] + [
        ["read", "--since", full[330]["time"], "--limit", 2], ["tail", "-n", 72], ["tail", "-n", 2, "--type", "even"]]
    assert run_queries(cli, later) == [expected(full, q) for q in later]

    r = cli("verify", "--repair")
    assert r.rc == 0, (r.out, r.err)
    r = cli("verify")
    assert r.rc == 0, (r.out, r.err)
    assert run_queries(cli, queries[:3]) == [expected(full, q) for q in queries[:3]]


# -- a flipped byte --------------------------------------------------------------------------

def make_many_segments(cli: Evlog, fmt: str, n: int = 40) -> list[Path]:
    cli.ok("init", "--format", fmt, "--segment-bytes", "1KiB")
    cli.batch(padded(n, pad=60))
    segs = segment_files(cli.dir)
    assert len(segs) >= 6, segs
    return segs


def flip(path: Path, pos: int) -> bytes:
    """Flip the low bit of one byte; returns the damaged file."""
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize(("fmt", "where", "spot"), [
    ("jsonl", "middle", "data"),
    ("msgpack", "middle", "data"),
    ("jsonl", "last_of_segment", "head"),
    ("msgpack", "last_of_segment", "head"),
    ("msgpack", "first_of_segment", "head"),
    pytest.param("jsonl", "middle", "head", marks=pytest.mark.slow),
    pytest.param("msgpack", "middle", "head", marks=pytest.mark.slow),
    pytest.param("jsonl", "last_of_segment", "data", marks=pytest.mark.slow),
    pytest.param("msgpack", "last_of_segment", "data", marks=pytest.mark.slow),
    pytest.param("jsonl", "first_of_segment", "data", marks=pytest.mark.slow),
    pytest.param("jsonl", "first_of_segment", "head", marks=pytest.mark.slow),
    pytest.param("msgpack", "first_of_segment", "data", marks=pytest.mark.slow),
])
def test_flipped_byte_in_a_sealed_segment(cli: Evlog, fmt: str, where: str, spot: str) -> None:
    """One flipped byte in a sealed segment: verify and read exit 5 naming the offset; --repair quarantines it."""
    n = 40
    segs = make_many_segments(cli, fmt, n)
    seg_i = len(segs) // 2
    seg, nxt = segs[seg_i], segs[seg_i + 1]
    base, next_base = int(seg.stem), int(nxt.stem)
    assert next_base - base >= 3
    k = {"middle": base + 1, "last_of_segment": next_base - 1, "first_of_segment": base}[where]
    spans = frame_spans(seg)
    start, end = spans[k - base]
    original = seg.read_bytes()
    assert f"marker-{k:05d}".encode() in original[start:end]
    pos = start if spot == "head" else original.index(f"marker-{k:05d}".encode(), start) + 7
    before = cli.records()[:k]
    damaged = flip(seg, pos)[start:end]

    r = cli("verify")
    assert r.rc == 5, (r.out, r.err)
    assert f"offset {k}" in r.out + r.err, (r.out, r.err)
    r = cli("verify", "--json")
    assert r.rc == 5
    report = json.loads(r.out)
    assert report["ok"] is False
    assert any(p["offset"] == k and p["position"] == start and seg.name in p["segment"] for p in report["problems"]), \
        report["problems"]

    r = cli("read", "--format", "json")
    assert offsets(parse_records(r.out)) == list(range(k))
    assert parse_records(r.out) == before
    assert_one_error(r, 5, f"offset {k}")
    # A read that does not reach the damage is unaffected.
    assert offsets(parse_records(cli.ok("tail", "-n", 2, "--format", "json"))) == [n - 2, n - 1]

    r = cli("verify", "--repair")
    assert r.rc == 0, (r.out, r.err)
    assert any(damaged in blob for blob in quarantined(cli.dir)), "the damaged frame is not in DIR/quarantine/"
    r = cli("verify")
    assert r.rc == 0, (r.out, r.err)
    recs = cli.records()
    assert offsets(recs) == [o for o in range(n) if o != k]
    assert [r["data"]["m"] for r in recs] == [f"marker-{o:05d}" for o in range(n) if o != k]
    assert cli.ok("append", "after") == f"{n}\n"
    assert offsets(cli.records("--from", k)) == [o for o in range(k + 1, n + 1)]
    assert cli("verify").rc == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_flipped_byte_inside_the_active_segment_is_corruption(cli: Evlog, fmt: str) -> None:
    """A damaged record followed by good ones in the last segment is corruption (exit 5), not a torn tail."""
    cli.ok("init", "--format", fmt)
    cli.batch(padded(6))
    seg = segment_files(cli.dir)[-1]
    start, _ = frame_spans(seg)[2]
    flip(seg, seg.read_bytes().index(b"marker-00002", start) + 3)
    r = cli("verify")
    assert r.rc == 5 and "offset 2" in r.out + r.err, (r.out, r.err)
    r = cli("read", "--format", "json")
    assert offsets(parse_records(r.out)) == [0, 1]
    assert_one_error(r, 5, "offset 2")


# -- SIGKILL of real appenders ---------------------------------------------------------------

DRIVER = r'''
"""Append events one by one (or in batches) with evlog until killed; log each acknowledged one."""
import json, os, subprocess, sys

ack_path, name, mode, size, pad = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
evlog = [sys.executable, "-m", "evlog"]
ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
i = 0
while True:
    if mode == "one":
        data = {"w": name, "i": i, "pad": "x" * pad}
        p = subprocess.run(evlog + ["append", "crash.one", "--data", json.dumps(data)], capture_output=True)
        lines = [{"o": int(p.stdout), "w": name, "i": i}] if p.returncode == 0 else []
        n = 1
    else:
        events = [{"type": "crash.batch", "data": {"w": name, "i": j, "pad": "y" * pad}} for j in range(i, i + size)]
        text = "".join(json.dumps(e) + "\n" for e in events)
        p = subprocess.run(evlog + ["append", "--batch", "--json"], input=text.encode(), capture_output=True)
        lines = []
        if p.returncode == 0:
            s = json.loads(p.stdout)
            if s["count"] != size or s["last"] - s["first"] != size - 1:
                lines = [{"error": "bad summary", "summary": s}]
            else:
                lines = [{"o": s["first"] + k, "w": name, "i": i + k} for k in range(size)]
        n = size
    if p.returncode > 0:  # a failure of evlog itself (negative: killed with us, not a failure)
        lines = [{"error": p.returncode, "stderr": p.stderr.decode(errors="replace")[-2000:]}]
    if lines:
        os.write(ack, "".join(json.dumps(x) + "\n" for x in lines).encode())
    i += n
'''

STREAM_PRODUCER = r'''
"""Write numbered event lines to stdout, in groups of random size, until killed."""
import json, random, sys, time

start, pad = int(sys.argv[1]), int(sys.argv[2])
i = start
out = sys.stdout
while True:
    group = random.randint(1, 60)
    out.write("".join(json.dumps({"type": "crash.stream", "data": {"i": j, "pad": "z" * pad}}) + "\n"
                      for j in range(i, i + group)))
    out.flush()
    i += group
    time.sleep(random.random() * 0.004)
'''


def read_acks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def check_after_crashes(cli: Evlog, acked: list[dict], kinds: set[str]) -> list[dict]:
    """Every acknowledged event is present once at its offset; offsets contiguous; the log verifies and appends."""
    errors = [a for a in acked if "error" in a]
    assert not errors, errors[:3]
    r = cli("verify")
    assert r.rc == 0, (r.out, r.err)
    recs = cli.records()
    assert offsets(recs) == list(range(len(recs))), "offsets are not contiguous"
    seen: dict[tuple[str, int], int] = {}
    for rec in recs:
        assert rec["type"] in kinds, rec
        ident = (rec["data"]["w"], rec["data"]["i"])
        assert ident not in seen, f"{ident} appended twice: offsets {seen[ident]} and {rec['offset']}"
        seen[ident] = rec["offset"]
    for a in acked:
        ident = (a["w"], a["i"])
        assert ident in seen, f"acknowledged event {a} is missing"
        assert seen[ident] == a["o"], f"acknowledged event {a} is at offset {seen[ident]}"
    n = len(recs)
    assert cli.ok("append", "after.crash") == f"{n}\n"
    r = cli("verify")
    assert r.rc == 0 and "warning" not in r.err.lower(), (r.out, r.err)
    return recs


def kill_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, writers: list[tuple[str, int, int]], rounds: int,
                seed: int) -> list[dict]:
    """Run the appender drivers, SIGKILL them at random moments, `rounds` times; returns the acks."""
    rng = random.Random(seed)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    ack_file = tmp_path / "acks.jsonl"
    for rnd in range(rounds):
        before = len(read_acks(ack_file))
        procs = [spawn(argv=[sys.executable, str(driver), str(ack_file), f"{mode}{w}-r{rnd}", mode, str(size),
                             str(pad)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for w, (mode, size, pad) in enumerate(writers)]
        wait_until(lambda before=before: len(read_acks(ack_file)) > before, timeout=30,
                   message="no append was acknowledged")
        time.sleep(rng.uniform(0, 0.3))  # the kill moment, chosen at random (not synchronisation)
        rng.shuffle(procs)
        for p in procs:
            p.kill_group()
        for p in procs:
            p.wait()
    return read_acks(ack_file)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkilled_appenders_lose_nothing_acknowledged(cli: Evlog, spawn: Spawner, tmp_path: Path,
                                                       fmt: str) -> None:
    """SIGKILLed single and batch appenders: every acknowledged event is there once, at its offset."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "256KiB")
    acked = kill_rounds(cli, spawn, tmp_path, [("one", 1, 100), ("batch", 1500, 200), ("one", 1, 2000)],
                        rounds=4, seed=1 if fmt == "jsonl" else 2)
    assert acked
    check_after_crashes(cli, acked, {"crash.one", "crash.batch"})


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkilled_appenders_many_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """Many rounds of SIGKILL among four appenders on small segments: nothing acknowledged is lost."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "64KiB")
    writers = [("one", 1, 100), ("one", 1, 5000), ("batch", 3000, 300), ("batch", 40, 50)]
    acked = kill_rounds(cli, spawn, tmp_path, writers, rounds=25, seed=11 if fmt == "jsonl" else 12)
    check_after_crashes(cli, acked, {"crash.one", "crash.batch"})


def segments_size(directory: Path) -> int:
    with os.scandir(directory / "segments") as it:
        return sum(e.stat().st_size for e in it if e.name.endswith((".jsonl", ".msgpack")))


def big_batch_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, rounds: int, seed: int) -> tuple[list[dict], int]:
    """Big `append --batch` runs, most SIGKILLed the moment the segments start to grow (mid-write).

    Returns the acknowledged events and the number of batches that were killed.
    """
    rng = random.Random(seed)
    acked: list[dict] = []
    killed = 0
    for rnd in range(rounds):
        name = f"big-r{rnd}"
        size = rng.choice([150, 400, 700])
        text = "".join(json.dumps({"type": "crash.batch", "data": {"w": name, "i": i, "pad": "b" * 20000}}) + "\n"
                       for i in range(size))
        feed = tmp_path / f"{name}.jsonl"
        feed.write_text(text)
        kill = rng.random() < 0.75
        base = segments_size(cli.dir)
        with open(feed, "rb") as stdin:
            proc = spawn("append", "--batch", "--json", stdin=stdin)
        if kill:
            # Spin until the writer has started writing, then kill it: most likely mid-write.
            wait_until(lambda base=base, proc=proc: segments_size(cli.dir) != base or proc.poll() is not None,
                       timeout=30, interval=0)
            proc.kill_group()
            killed += proc.wait() < 0
        else:
            assert proc.wait(30) == 0, proc.stderr()
            summary = json.loads(proc.lines()[0])
            assert summary["count"] == size and summary["last"] - summary["first"] == size - 1
            acked += [{"o": summary["first"] + i, "w": name, "i": i} for i in range(size)]
    return acked, killed


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_sigkilled_mid_write_loses_nothing_acknowledged(cli: Evlog, spawn: Spawner, tmp_path: Path,
                                                             fmt: str) -> None:
    """Big batches SIGKILLed while their frames are written: acknowledged batches intact, the log verifies."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "8MiB")
    acked, killed = big_batch_rounds(cli, spawn, tmp_path, rounds=6, seed=5 if fmt == "jsonl" else 6)
    assert killed
    check_after_crashes(cli, acked, {"crash.batch"})


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_sigkilled_mid_write_many_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """Many big batches SIGKILLed mid-write on small segments: nothing acknowledged is lost."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "1MiB")
    acked, killed = big_batch_rounds(cli, spawn, tmp_path, rounds=30, seed=15 if fmt == "jsonl" else 16)
    assert killed
    check_after_crashes(cli, acked, {"crash.batch"})


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkilled_batch_is_all_or_nothing(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """A batch SIGKILLed mid-write leaves all of its events or none (at most an ignored incomplete record)."""
    cli.ok("init", "--format", fmt)
    big_batch_rounds(cli, spawn, tmp_path, rounds=4, seed=7)
    cli.ok("append", "after.crash")
    by_batch: dict[str, list[int]] = {}
    for rec in cli.records("--type", "crash.batch"):
        by_batch.setdefault(rec["data"]["w"], []).append(rec["data"]["i"])
    sizes = {w: (tmp_path / f"{w}.jsonl").read_text().count("\n") for w in by_batch}
    partial = {w: f"{len(ii)} of {sizes[w]} events" for w, ii in by_batch.items() if ii != list(range(sizes[w]))}
    assert not partial, f"SIGKILLed batches left partly appended: {partial}"


def stream_kill_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    producer = tmp_path / "producer.py"
    producer.write_text(STREAM_PRODUCER)
    for _ in range(rounds):
        start = len(cli.records())
        cmd = (f"{sys.executable} {producer} {start} {rng.choice([50, 400, 3000])}"
               f" | {sys.executable} -m evlog append --stream")
        proc = spawn(argv=["sh", "-c", cmd], stdout=subprocess.DEVNULL)
        def more_than_before(start: int = start) -> list[dict] | None:
            recs = cli.records()
            return recs if len(recs) > start else None

        seen = wait_until(more_than_before, message="no streamed line became readable")
        time.sleep(rng.uniform(0, 0.3))  # the kill moment, chosen at random (not synchronisation)
        proc.kill_group()
        proc.wait()
        after = cli.records()
        assert after[: len(seen)] == seen, "records readable before the kill changed or vanished"
        assert offsets(after) == list(range(len(after)))
        assert [r["data"]["i"] for r in after] == list(range(len(after))), "not a whole, ordered prefix"
        assert all(r["type"] == "crash.stream" for r in after)
        r = cli("verify")
        assert r.rc == 0, (r.out, r.err)
    n = len(cli.records())
    assert cli.ok("append", "after.crash") == f"{n}\n"
    r = cli("verify")
    assert r.rc == 0 and "warning" not in r.err.lower(), (r.out, r.err)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkilled_stream_leaves_a_whole_prefix(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """SIGKILL of `append --stream` while lines flow leaves a contiguous, whole, duplicate-free prefix."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "128KiB")
    stream_kill_rounds(cli, spawn, tmp_path, rounds=3, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkilled_stream_many_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """Many rounds of SIGKILL of `append --stream` on small segments leave a whole prefix each time."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "32KiB")
    stream_kill_rounds(cli, spawn, tmp_path, rounds=15, seed=13)
