"""Many processes appending at once, and readers meanwhile (SPEC 7: exactly once, whole, contiguous)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from conftest import Background, Evlog, Spawner, parse_records, segment_files

WRITER = r'''
"""Wait for "go" on stdin, then append N events one `evlog append` at a time, printing each offset."""
import json, subprocess, sys

name, n, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.stdin.readline()
for i in range(n):
    data = {"w": name, "i": i, "pad": "x" * pad}
    p = subprocess.run([sys.executable, "-m", "evlog", "append", "conc.one", "--data", json.dumps(data)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print("ERROR", p.returncode, p.stderr.strip().replace("\n", " | "), flush=True)
        sys.exit(1)
    print(p.stdout.strip(), flush=True)
'''


def start_writers(spawn: Spawner, tmp_path: Path, count: int, n: int, pad: int) -> list[Background]:
    """Start `count` one-by-one appenders and release them together."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [spawn(argv=[sys.executable, str(script), f"w{k}", str(n), str(pad)], stdin=subprocess.PIPE)
             for k in range(count)]
    for p in procs:
        assert p.popen.stdin is not None
        p.popen.stdin.write(b"go\n")
        p.popen.stdin.flush()
    return procs


def segment_offsets(seg: Path) -> list[int]:
    """The offsets of the records in one segment file, read from its frames (layouts in evlog/store/framing.py)."""
    data = seg.read_bytes()
    if seg.suffix == ".jsonl":
        return [json.loads(line)["offset"] for line in data.splitlines()]
    out, pos = [], 0
    while pos < len(data):
        _, length, _ = struct.unpack_from("<HII", data, pos)
        out.append(msgspec.msgpack.decode(data[pos + 10:pos + 10 + length])[0])
        pos += 10 + length
    return out


def check_snapshot(text: str) -> int:
    """A reader's view: whole records only, offsets 0..n-1 in order; returns n."""
    recs = parse_records(text)  # a partial record would not parse, or would lack fields
    assert [r["offset"] for r in recs] == list(range(len(recs))), "offsets out of order or with a gap"
    for r in recs:
        assert set(r["data"]) >= {"w", "i"}, r
    return len(recs)


def writer_offsets(procs: list[Background], n: int) -> dict[str, list[int]]:
    """Each writer's printed offsets: n of them, strictly increasing."""
    per_writer = {}
    for k, p in enumerate(procs):
        assert p.wait(120) == 0, (p.lines(), p.stderr())
        lines = p.lines()
        assert not [x for x in lines if x.startswith("ERROR")], lines
        offs = [int(x) for x in lines]
        assert len(offs) == n
        assert all(a < b for a, b in zip(offs, offs[1:], strict=False)), f"writer {k}: offsets not increasing: {offs}"
        per_writer[f"w{k}"] = offs
    return per_writer


def check_writers(cli: Evlog, procs: list[Background], n: int) -> list[dict]:
    """Each writer got n increasing offsets; together unique and contiguous; the log agrees."""
    per_writer = writer_offsets(procs, n)
    everything = sorted(o for offs in per_writer.values() for o in offs)
    assert everything == list(range(len(procs) * n))
    recs = cli.records()
    assert [r["offset"] for r in recs] == everything
    for r in recs:
        assert per_writer[r["data"]["w"]][r["data"]["i"]] == r["offset"], r
    return recs


def test_concurrent_appenders_get_unique_contiguous_offsets(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """4 processes x 30 appends at once: 120 contiguous offsets, increasing per process; readers see whole records."""
    cli.ok("init")
    follower = spawn("read", "-f", "--format", "json")
    procs = start_writers(spawn, tmp_path, 4, 30, 200)
    snapshots = 0
    while any(p.poll() is None for p in procs):
        r = cli("read", "--format", "json")
        assert r.rc == 0, r.err
        check_snapshot(r.out)
        tail = cli("tail", "-n", 5, "--format", "json")
        assert tail.rc == 0, tail.err
        offs = [x["offset"] for x in parse_records(tail.out)]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
        snapshots += 1
    assert snapshots > 0
    recs = check_writers(cli, procs, 30)
    lines = follower.wait_lines(120)
    assert check_snapshot("\n".join(lines)) == 120
    assert parse_records("\n".join(lines)) == recs
    assert cli("verify").rc == 0


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_concurrent_batches_are_each_contiguous(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """4 concurrent `--batch` runs of 200: each gets a contiguous block of offsets, in its input order."""
    cli.ok("init", "--format", fmt)
    cli.ok("append", "first")
    feeds = []
    for k in range(4):
        feed = tmp_path / f"batch{k}.jsonl"
        feed.write_text("".join(json.dumps({"type": "conc.batch", "data": {"w": f"b{k}", "i": i, "pad": "y" * 100}})
                                + "\n" for i in range(200)))
        feeds.append(feed)
    procs = []
    for feed in feeds:
        with open(feed, "rb") as stdin:
            procs.append(spawn("append", "--batch", "--json", stdin=stdin))
    blocks = {}
    for k, p in enumerate(procs):
        assert p.wait(60) == 0, p.stderr()
        summary = json.loads(p.lines()[0])
        assert summary["count"] == 200 and summary["last"] - summary["first"] == 199, summary
        blocks[f"b{k}"] = summary["first"]
    starts = sorted(blocks.values())
    assert starts == [1, 201, 401, 601]
    recs = cli.records()
    assert [r["offset"] for r in recs] == list(range(801))
    for r in recs[1:]:
        assert r["offset"] == blocks[r["data"]["w"]] + r["data"]["i"], r
    assert cli("verify").rc == 0


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_concurrent_appends_across_segment_rolls(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str) -> None:
    """Appenders racing while 1KiB segments roll: every event once, contiguous, segments named by first offset."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "1KiB")
    procs = start_writers(spawn, tmp_path, 3, 12, 300)
    feeds = []
    for k in range(2):
        feed = tmp_path / f"roll{k}.jsonl"
        feed.write_text("".join(json.dumps({"type": "conc.batch", "data": {"w": f"r{k}", "i": i, "pad": "z" * 150}})
                                + "\n" for i in range(25)))
        feeds.append(feed)
    batches = []
    for feed in feeds:
        with open(feed, "rb") as stdin:
            batches.append(spawn("append", "--batch", "--json", stdin=stdin))
    while any(p.poll() is None for p in procs + batches):
        r = cli("read", "--format", "json")
        assert r.rc == 0, r.err
        check_snapshot(r.out)
    per_writer = writer_offsets(procs, 12)
    for b in batches:
        assert b.wait() == 0, b.stderr()
        s = json.loads(b.lines()[0])
        assert s["count"] == 25 and s["last"] - s["first"] == 24
    total = 3 * 12 + 2 * 25
    recs = cli.records()
    assert [r["offset"] for r in recs] == list(range(total))
    idents = [(r["data"]["w"], r["data"]["i"]) for r in recs]
    assert len(set(idents)) == total
    for r in recs:
        if r["type"] == "conc.one":
            assert per_writer[r["data"]["w"]][r["data"]["i"]] == r["offset"], r
    for k in range(2):
        assert [i for w, i in idents if w == f"r{k}"] == list(range(25))
    segs = segment_files(cli.dir)
    assert len(segs) > 10
    bases = [int(p.stem) for p in segs]
    assert bases[0] == 0
    for seg, base, nxt in zip(segs, bases, bases[1:] + [total], strict=True):
        assert segment_offsets(seg) == list(range(base, nxt)), seg.name
    report = json.loads(cli.ok("verify", "--json"))
    assert report["ok"] and report["records"] == total and report["segments"] == len(segs)
