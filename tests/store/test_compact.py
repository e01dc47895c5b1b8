"""`evlog compact` end to end (SPEC 3 [retention]/[compaction], SPEC 6 compact, SPEC 7).

Every test runs the real command on a private log made with 1 KiB segments, so that
there are many sealed segments, and checks the result against a plain-Python model of
the spec (tests/compact_helpers.py). Crash tests SIGKILL real compactions, at every
durable step (EVLOG_TEST_COMPACT_KILL_AT=k) and at random moments, and check that each
segment is left in its before or its after state.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from compact_helpers import (
    INDEX_RE,
    TEMP_RE,
    Facts,
    Record,
    all_files,
    append_at,
    bases,
    by_segment,
    copy_log,
    data_files,
    doomed,
    event,
    facts,
    flock_holders,
    init,
    key_compacted,
    leftovers,
    offsets,
    peak_rss_kib,
    set_settings,
    time_s,
)
from conftest import DEADLINE, Evlog, Spawner, assert_one_error, parse_records, wait_until

FORMATS = ["jsonl", "msgpack"]
SUMMARY_KEYS = ["segments_before", "segments_after", "events_before", "events_after", "bytes_before",
                "bytes_after"]
KILL_ENV = "EVLOG_TEST_COMPACT_KILL_AT"
DAY = 86400.0


def compact(cli: Evlog, *args: object, d: Path | None = None, env: dict[str, str] | None = None) -> dict[str, int]:
    """`evlog [-d D] compact ARGS --json`: exit 0 required; the summary."""
    pre = ["-d", d] if d is not None else []
    out = cli.ok(*pre, "compact", *args, "--json", env=env)
    summary = json.loads(out)
    assert list(summary) == SUMMARY_KEYS, f"summary keys {list(summary)}"
    assert all(type(v) is int for v in summary.values()), summary
    return summary


def summary_of(before: Facts, after: Facts) -> dict[str, int]:
    """The summary SPEC 6 asks for, from the log's files and records before and after."""
    (sb, eb, bb), (sa, ea, ba) = before.summary, after.summary
    return {"segments_before": sb, "segments_after": sa, "events_before": eb, "events_after": ea,
            "bytes_before": bb, "bytes_after": ba}


def verify_ok(cli: Evlog, d: Path | None = None) -> None:
    """`evlog verify --json` exits 0 and says ok."""
    pre = ["-d", d] if d is not None else []
    r = cli(*pre, "verify", "--json")
    assert r.rc == 0, f"verify exit {r.rc}: {r.out} {r.err}"
    assert json.loads(r.out)["ok"] is True, r.out


def plain(n: int, start: int = 0) -> list[Record]:
    """n keyless events."""
    return [event(i) for i in range(start, start + n)]


# -- retention -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_max_events_deletes_only_the_oldest_sealed_segments_needed(cli: Evlog, fmt: str) -> None:
    """--max-events deletes whole sealed segments, oldest first, no more than needed to reach N events."""
    init(cli, fmt)
    cli.batch(plain(40))
    before = facts(cli, cli.dir)
    assert len(before.segs) >= 8
    s = before.segs
    # Dropping the first two leaves one event too many: exactly three must go.
    limit = len(before.records) - len(s[0].records) - len(s[1].records) - 1
    want = doomed(before, max_events=limit)
    assert want == [s[0].base, s[1].base, s[2].base]
    summary = compact(cli, "--max-events", limit)
    after = facts(cli, cli.dir)
    assert [g.base for g in after.segs] == [g.base for g in s[3:]]
    assert after.records == [r for r in before.records if r["offset"] >= s[3].base]
    assert len(after.records) <= limit < len(after.records) + len(s[2].records)
    assert summary == summary_of(before, after)
    verify_ok(cli)


@pytest.mark.parametrize("fmt", FORMATS)
def test_retention_never_deletes_the_active_segment(cli: Evlog, fmt: str) -> None:
    """Even --max-events 0 and --max-bytes 0 keep the active (last) segment whole."""
    init(cli, fmt)
    cli.batch(plain(20))
    before = facts(cli, cli.dir)
    active = before.segs[-1]
    summary = compact(cli, "--max-events", 0, "--max-bytes", 0)
    after = facts(cli, cli.dir)
    assert [g.base for g in after.segs] == [active.base]
    assert after.records == active.records
    assert summary == summary_of(before, after)
    cli.ok("append", "t", "n:=1")  # and the log goes on
    assert offsets(cli.records())[-1] == before.records[-1]["offset"] + 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_max_bytes_deletes_only_the_oldest_sealed_segments_needed(cli: Evlog, fmt: str) -> None:
    """--max-bytes deletes whole sealed segments, oldest first, until data and index files fit."""
    init(cli, fmt)
    cli.batch(plain(40))
    before = facts(cli, cli.dir)
    s = before.segs
    total = before.summary[2]
    assert total == sum(p.stat().st_size for p in (cli.dir / "segments").iterdir())
    limit = total - s[0].size - s[1].size - 1
    assert doomed(before, max_bytes=limit) == [s[0].base, s[1].base, s[2].base]
    summary = compact(cli, "--max-bytes", limit)
    after = facts(cli, cli.dir)
    assert [g.base for g in after.segs] == [g.base for g in s[3:]]
    assert after.records == [r for r in before.records if r["offset"] >= s[3].base]
    assert after.summary[2] <= limit
    assert summary == summary_of(before, after)
    # A size with a unit is accepted too: 4 KiB keeps at most 4096 bytes of sealed and active segments.
    summary = compact(cli, "--max-bytes", "4KiB")
    final = facts(cli, cli.dir)
    assert [g.base for g in final.segs] == [g.base for g in after.segs if g.base not in
                                          doomed(after, max_bytes=4096)]
    assert final.summary[2] <= 4096 or len(final.segs) == 1
    assert summary == summary_of(after, final)


def aged_log(cli: Evlog, fmt: str, d: Path | None = None) -> tuple[Path, float]:
    """A log with events 3 days old, then 1 day old, then new ones; returns (dir, now)."""
    d = init(cli, fmt, d)
    now = time.time()
    append_at(cli, plain(11, 0), now - 3 * DAY, d)
    append_at(cli, plain(10, 11), now - DAY, d)
    cli.batch(plain(10, 21), d=d)
    return d, now


@pytest.mark.parametrize("fmt", FORMATS)
def test_max_age_deletes_sealed_segments_whose_newest_event_is_older(cli: Evlog, fmt: str) -> None:
    """--max-age deletes the sealed segments whose newest event is older than the age, and only those."""
    d, now = aged_log(cli, fmt)
    before = facts(cli, d)
    want = doomed(before, max_age_s=2 * DAY, now_s=now)
    mixed = [g for g in before.segs if g.base not in want and time_s(g.records[0]["time"]) < now - 2 * DAY]
    assert want and mixed, "the log should have old-only segments and one that mixes old and newer events"
    summary = compact(cli, "--max-age", "2d")
    after = facts(cli, d)
    assert [g.base for g in after.segs] == [g.base for g in before.segs if g.base not in want]
    assert after.records == [r for r in before.records if r["offset"] >= after.segs[0].base]
    assert summary == summary_of(before, after)
    # Everything sealed is older than a millisecond: all of it goes, the active segment stays.
    summary = compact(cli, "--max-age", "1ms")
    final = facts(cli, d)
    assert [g.base for g in final.segs] == [before.segs[-1].base]
    assert final.records == before.segs[-1].records
    assert summary == summary_of(after, final)


@pytest.mark.parametrize("limit", ["max_events", "max_bytes", "max_age"])
def test_settings_apply_without_flags_and_flags_override_them(cli: Evlog, limit: str) -> None:
    """[retention] in evlog.toml applies to a plain `compact`; a flag given overrides the setting."""
    d, now = aged_log(cli, "jsonl")
    before = facts(cli, d)
    strict: dict[str, Any] = {"max_events": 5, "max_bytes": "4KiB", "max_age": "2d"}
    loose_flag = {"max_events": ["--max-events", 1000], "max_bytes": ["--max-bytes", "1MiB"],
                  "max_age": ["--max-age", "5d"]}
    set_settings(d, retention={limit: strict[limit]})
    snapshot = all_files(d / "segments")
    summary = compact(cli, *loose_flag[limit])
    assert all_files(d / "segments") == snapshot, "the flag should override the stricter setting"
    assert summary["events_after"] == summary["events_before"] == len(before.records)
    summary = compact(cli)
    after = facts(cli, d)
    want = doomed(before, max_events=5 if limit == "max_events" else None,
                  max_bytes=4096 if limit == "max_bytes" else None,
                  max_age_s=2 * DAY if limit == "max_age" else None, now_s=now)
    assert want
    assert [g.base for g in after.segs] == [g.base for g in before.segs if g.base not in want]
    assert summary == summary_of(before, after)
    # and a stricter flag overrides a looser setting
    set_settings(d, retention={limit: {"max_events": 1000, "max_bytes": "1MiB", "max_age": "5d"}[limit]})
    strict_flag = {"max_events": ["--max-events", 0], "max_bytes": ["--max-bytes", 0],
                   "max_age": ["--max-age", "1ms"]}
    compact(cli, *strict_flag[limit])
    assert bases(d) == [before.segs[-1].base]


@pytest.mark.parametrize("args", [["--max-bytes", "lots"], ["--max-age", "3 days"], ["--max-events", "-1"]])
def test_bad_limits_are_usage_errors(cli: Evlog, args: list[str]) -> None:
    """A malformed size, duration or count is a usage error (exit 2) that changes nothing."""
    init(cli, "jsonl")
    cli.batch(plain(12))
    snapshot = all_files(cli.dir)
    r = cli("compact", *args)
    assert r.rc == 2, r
    assert all_files(cli.dir) == snapshot


def test_missing_log_is_an_error(cli: Evlog) -> None:
    """compact on a missing log exits 1 and creates nothing."""
    assert_one_error(cli("compact", "--keys"), 1)
    assert not cli.dir.exists()


# -- dry run ---------------------------------------------------------------------------------------

DRY_CASES = {
    "max-events": ["--max-events", 20],
    "max-bytes": ["--max-bytes", "6KiB"],
    "max-age": ["--max-age", "2d"],
    "keys": ["--keys"],
    "keys+max-events": ["--keys", "--max-events", 12],
}


@pytest.mark.parametrize(("case", "fmt"), [
    ("max-events", "jsonl"), ("max-bytes", "jsonl"), ("max-age", "msgpack"),
    ("keys", "jsonl"), ("keys", "msgpack"), ("keys+max-events", "jsonl"), ("keys+max-events", "msgpack")])
def test_dry_run_changes_nothing_and_reports_what_a_real_run_does(cli: Evlog, fmt: str, case: str) -> None:
    """--dry-run changes no byte of any file, and its summary is exactly that of the real run after it."""
    d, _ = aged_log(cli, fmt)
    cli.batch([event(i, f"k{i % 4}" if i % 3 else None) for i in range(31, 61)], d=d)
    files = all_files(d)
    r = cli("compact", *DRY_CASES[case], "--dry-run", "--json")
    assert r.rc == 0, r.err
    predicted = json.loads(r.out)
    assert "would remove" in r.err
    now = all_files(d)
    now.pop(".compact.lock", None)  # a private lock file may be created (empty)
    files.pop(".compact.lock", None)
    assert now == files, "a dry run changed files"
    before = facts(cli, d)
    assert predicted["events_after"] < predicted["events_before"], "the case should remove something"
    actual = compact(cli, *DRY_CASES[case])
    assert summary_of(before, facts(cli, d)) == actual
    assert predicted == actual


# -- key compaction --------------------------------------------------------------------------------

def keyed_log(cli: Evlog, fmt: str, d: Path | None = None) -> Path:
    """Six batches (six distinct times) of keyed, keyless and tombstone events, 48 in all; the last
    event, in the active segment, supersedes a key whose older version is in a sealed segment."""
    d = init(cli, fmt, d)
    for b in range(6):
        evs = []
        for j in range(8):
            i = b * 8 + j
            if i % 5 == 4:
                evs.append(event(i))
            elif i % 13 == 12:
                evs.append(event(i, f"k{i % 5}", tomb=True))
            else:
                evs.append(event(i, f"k{i % 5}"))
        if b == 5:
            evs[-1] = event(47, "k1")
        cli.batch(evs, d=d)
    return d


@pytest.mark.parametrize("fmt", FORMATS)
def test_keys_keep_the_newest_per_key_among_sealed_segments_and_keyless_events(cli: Evlog, fmt: str) -> None:
    """--keys keeps the newest event of each key among the sealed segments and every keyless event,
    with offsets, ids and every field unchanged; the active segment is not touched."""
    d = keyed_log(cli, fmt)
    before = facts(cli, d)
    active = before.segs[-1]
    want = key_compacted(before.records, active.base)
    # The active segment's k1 does not count: k1's newest sealed version stays.
    sealed_k1 = [r for r in want if r["key"] == "k1" and r["offset"] < active.base]
    assert len(sealed_k1) == 1 and any(r["key"] == "k1" for r in active.records)
    active_bytes = (d / "segments" / f"{active.base:020d}.{fmt}").read_bytes()
    summary = compact(cli, "--keys")
    after = facts(cli, d)
    assert after.records == want
    assert (d / "segments" / f"{active.base:020d}.{fmt}").read_bytes() == active_bytes
    assert summary == summary_of(before, after)
    assert summary["events_after"] < summary["events_before"]
    assert leftovers(d) == []
    verify_ok(cli)
    # A second run finds nothing more to do.
    again = compact(cli, "--keys")
    assert again["events_after"] == again["events_before"] == len(want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_across_gaps_after_key_compaction(cli: Evlog, fmt: str) -> None:
    """After --keys, reads by --from, --since, --last, --to and tail -n give exactly the surviving events."""
    d = keyed_log(cli, fmt)
    before = facts(cli, d)
    old_index = {p.name: p.read_bytes() for p in (d / "segments").glob("*index")}
    compact(cli, "--keys")
    now = cli.records()
    assert now == key_compacted(before.records, before.segs[-1].base)
    # Segments that lost their first record have new index files (verify checks them against the records).
    grouped = by_segment(now, bases(d))
    first_gone = [b for b, recs in grouped.items() if recs and recs[0]["offset"] != b]
    assert first_gone
    for b in first_gone:
        for suffix in ("index", "timeindex"):
            name = f"{b:020d}.{suffix}"
            assert (d / "segments" / name).read_bytes() != old_index[name], f"{name} was not rebuilt"
    verify_ok(cli)
    survivors = offsets(now)
    removed = sorted(set(offsets(before.records)) - set(survivors))
    assert removed
    for x in [0, *removed[:: max(1, len(removed) // 6)], survivors[len(survivors) // 2], survivors[-1] + 1]:
        assert cli.records("--from", x) == [r for r in now if r["offset"] >= x], f"--from {x}"
    lo, hi = removed[len(removed) // 3], removed[-1]
    assert cli.records("--from", lo, "--to", hi) == [r for r in now if lo <= r["offset"] <= hi]
    times = sorted({r["time"] for r in before.records})
    assert len(times) == 6
    for t in times:
        assert cli.records("--since", t) == [r for r in now if r["time"] >= t], f"--since {t}"
        assert cli.records("--until", t) == [r for r in now if r["time"] < t], f"--until {t}"
    for n in (1, 3, len(now) - 1, len(now) + 5):
        assert cli.records("--last", n) == now[-n:], f"--last {n}"
        assert parse_records(cli.ok("tail", "-n", n, "--format", "json")) == now[-n:], f"tail -n {n}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_tombstones_remove_earlier_events_then_expire(cli: Evlog, fmt: str) -> None:
    """A tombstone removes the earlier events of its key and is kept until older than
    tombstone_retention; a later event of the key outlives its tombstone."""
    d = init(cli, fmt)
    set_settings(d, compaction={"tombstone_retention": "1h"})
    evs = [event(0, "gone"), event(1, "back"), event(2, "stay"), event(3, "gone"), event(4),
           event(5, "gone", tomb=True), event(6, "back", tomb=True), event(7, "back"), event(8, "stay")]
    cli.batch(evs)
    cli.batch(plain(9, 9))  # keyless filler: the keyed events are all in sealed segments
    before = facts(cli, d)
    assert before.segs[-1].base > 8
    compact(cli, "--keys")
    after = cli.records()
    assert after == key_compacted(before.records, before.segs[-1].base)
    keyed = [(r["offset"], r["key"], r["data"] is None) for r in after if r["key"] is not None]
    assert keyed == [(5, "gone", True), (7, "back", False), (8, "stay", False)]
    tomb_time = time_s(before.records[5]["time"])
    set_settings(d, compaction={"tombstone_retention": "1s"})
    wait_until(lambda: time.time() > tomb_time + 1.05, timeout=5, message="the tombstone to be 1 s old")
    now_s = time.time()
    summary = compact(cli, "--keys")
    final = cli.records()
    assert final == key_compacted(before.records, before.segs[-1].base, tombstone_s=1.0, now_s=now_s)
    keyed = [(r["offset"], r["key"]) for r in final if r["key"] is not None]
    assert keyed == [(7, "back"), (8, "stay")]
    assert summary["events_after"] == summary["events_before"] - 1
    verify_ok(cli)


@pytest.mark.parametrize("fmt", FORMATS)
def test_compaction_keys_setting_makes_plain_compact_do_key_compaction(cli: Evlog, fmt: str) -> None:
    """`[compaction] keys = true` in evlog.toml makes a plain `compact` do key compaction."""
    d = keyed_log(cli, fmt)
    before = facts(cli, d)
    summary = compact(cli)
    assert summary["events_after"] == summary["events_before"], "keys = false by default"
    set_settings(d, compaction={"keys": True})
    compact(cli)
    assert cli.records() == key_compacted(before.records, before.segs[-1].base)


# -- crash safety ----------------------------------------------------------------------------------

def crash_keys_events() -> list[Record]:
    """42 events: early keys all superseded, keyless runs, a tombstone, keys updated within and across
    segments, and last segments of keyless events."""
    keys = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "b", None, None,
            "b", "a", None, "c!", "d", None, "a", "e", None, "d", "b", None, "e",
            "f", "g", "f", None, "g", "h", None, "h", None, "a", None,
            None, None, None, None, None, None]
    return [event(i, k.rstrip("!") if k else None, tomb=bool(k and k.endswith("!"))) for i, k in enumerate(keys)]


CRASH_RUNS: dict[str, tuple[list[Any], Any]] = {
    "keys": (["--keys"], crash_keys_events),
    "retention": (["--max-events", 28], crash_keys_events),
    "keys+retention": (["--keys", "--max-events", 28], crash_keys_events),
}


class Crash:
    """A template log and the result of compacting a copy of it in one go."""

    def __init__(self, cli: Evlog, tmp: Path, fmt: str, args: list[Any], events: list[Record]) -> None:
        self.cli, self.tmp, self.args = cli, tmp, args
        self.template = init(cli, fmt, tmp / "template")
        cli.batch(events, d=self.template)
        self.before = facts(cli, self.template)
        self.before_data = data_files(self.template)
        once = copy_log(self.template, tmp / "oneshot")
        started = time.monotonic()
        self.summary = compact(cli, *args, d=once)
        self.duration = time.monotonic() - started
        self.after_files = all_files(once / "segments")
        self.after_data = data_files(once)
        self.after_records = cli.records(d=once)
        self.before_by_seg = by_segment(self.before.records, list(self.before_data))
        self.after_by_seg = by_segment(self.after_records, list(self.after_data)) if self.after_data else {}
        self.states_seen: set[tuple[str, ...]] = set()

    def fates(self) -> dict[str, int]:
        out = {"removed": 0, "rewritten": 0, "unchanged": 0}
        for b, data in self.before_data.items():
            if b not in self.after_data:
                out["removed"] += 1
            elif self.after_data[b] != data:
                out["rewritten"] += 1
            else:
                out["unchanged"] += 1
        return out

    def check_killed(self, d: Path, verify_failures: list[str] | None = None) -> tuple[str, ...]:
        """After a SIGKILL: verify is clean, each segment is in its before or after state, and the log
        reads back as those states put together; returns the state of each segment. A verify failure
        is added to `verify_failures` when given (so that the other checks still run)."""
        cli = self.cli
        r = cli("-d", d, "verify", "--json")  # first, before any read could rebuild an index file
        if r.rc != 0 or not json.loads(r.out)["ok"]:
            if verify_failures is None:
                pytest.fail(f"verify exit {r.rc} after the kill: {r.out}")
            verify_failures.append(f"exit {r.rc}: {r.out.strip()}")
        now = data_files(d)
        assert set(now) <= set(self.before_data), f"unexpected segments {set(now) - set(self.before_data)}"
        states = []
        expected: list[Record] = []
        for b, old in self.before_data.items():
            cur, new = now.get(b), self.after_data.get(b)
            if cur is None:
                assert new is None, f"segment {b} vanished but should survive compaction"
                states.append("after")
            elif cur == old:
                states.append("before" if new != old else "same")
            elif cur == new:
                states.append("after")
            else:
                pytest.fail(f"segment {b} is neither in its before nor its after state")
            expected += self.before_by_seg[b] if states[-1] != "after" else self.after_by_seg.get(b, [])
        for name in leftovers(d):  # only temporary files, and index files of a deleted segment
            assert TEMP_RE.fullmatch(name) or INDEX_RE.fullmatch(name), name
        got = cli.records(d=d)
        assert offsets(got) == offsets(expected)
        assert got == expected, "records altered"
        mid = self.before.records[len(self.before.records) // 2]["offset"]
        assert cli.records("--from", mid, d=d) == [r for r in expected if r["offset"] >= mid], "--from"
        assert set(offsets(self.after_records)) <= set(offsets(got)), "an event that should survive was lost"
        return tuple(states)

    def finish(self, d: Path) -> None:
        """A normal run after a kill completes, cleans up, and gives the one-shot result."""
        compact(self.cli, *self.args, d=d)
        assert leftovers(d) == [], "temporary files survived the next compaction"
        assert all_files(d / "segments") == self.after_files


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("run", [
    "keys", "retention", pytest.param("keys+retention", marks=pytest.mark.slow)])
def test_kill_at_every_durable_step_leaves_each_segment_before_or_after(
        cli: Evlog, tmp_path: Path, fmt: str, run: str) -> None:
    """SIGKILLed at each durable step k = 1..N, compaction leaves every segment in its before or its after
    state, a log that verifies and reads back, and temporary files the next run removes; the next run
    then gives the one-shot result."""
    args, events = CRASH_RUNS[run]
    crash = Crash(cli, tmp_path, fmt, args, events())
    fates = crash.fates()
    assert fates["removed"] >= 2 and fates["unchanged"] >= 1, fates
    if run != "retention":
        assert fates["rewritten"] >= 3, fates
    leftover_seen = 0
    verify_failures: dict[int, list[str]] = {}
    k = 0
    while True:
        k += 1
        assert k < 500, "the compaction never completed"
        d = copy_log(crash.template, tmp_path / "run")
        env = dict(cli.env, **{KILL_ENV: str(k)})
        r = cli("-d", d, "compact", *args, "--json", env=env)
        if r.rc == 0:
            break
        assert r.rc == -signal.SIGKILL, f"k={k}: exit {r.rc}, not SIGKILL; {r.err}"
        leftover_seen += bool(leftovers(d))
        crash.states_seen.add(crash.check_killed(d, verify_failures.setdefault(k, [])))
        crash.finish(d)
    steps = k - 1
    print(f"\n{fmt} {run}: {steps} durable steps, fates {fates}")
    assert steps >= 2 * fates["removed"] + fates["rewritten"]
    assert json.loads(r.out) == crash.summary
    assert all_files(d / "segments") == crash.after_files
    # The kills did land between segments: some runs left a mix of before and after states.
    assert any("before" in s and "after" in s for s in crash.states_seen), crash.states_seen
    assert leftover_seen, "no kill left temporary files (or index files of a deleted segment) behind"
    failed = {k: v for k, v in verify_failures.items() if v}
    assert not failed, f"`evlog verify` failed after the kill at steps {sorted(failed)} of {steps}: {failed}"


def random_crash_events(n: int) -> list[Record]:
    """n events over 400 keys (some tombstones, some keyless), ending with 12 keyless ones."""
    rng = random.Random(7)
    out = []
    for i in range(n - 12):
        roll = rng.random()
        if roll < 0.15:
            out.append(event(i, pad="q" * 60))
        elif roll < 0.2:
            out.append(event(i, f"k{rng.randrange(400)}", tomb=True))
        else:
            out.append(event(i, f"k{rng.randrange(400)}", pad="q" * 60))
    out += [event(i, pad="q" * 60) for i in range(n - 12, n)]
    return out


def random_kills(cli: Evlog, spawn: Spawner, tmp_path: Path, fmt: str, events: int, rounds: int,
                 seed: int) -> None:
    """SIGKILL `compact --keys` after a random delay, `rounds` times, checking each time."""
    crash = Crash(cli, tmp_path, fmt, ["--keys"], random_crash_events(events))
    rng = random.Random(seed)
    killed = 0
    verify_failures: list[str] = []
    for _ in range(rounds):
        d = copy_log(crash.template, tmp_path / "run")
        proc = spawn("-d", d, "compact", "--keys", "--json")
        time.sleep(rng.uniform(0.05, 0.9 * crash.duration))  # the kill moment, chosen at random
        proc.kill_group()
        rc = proc.wait()
        if rc == 0:
            assert all_files(d / "segments") == crash.after_files
            continue
        assert rc == -signal.SIGKILL, proc.stderr()
        killed += 1
        crash.check_killed(d, verify_failures)
        crash.finish(d)
        verify_ok(cli, d)
    assert killed, "every compaction finished before its kill"
    assert not verify_failures, f"`evlog verify` failed after {len(verify_failures)} of {killed} kills: " \
        f"{verify_failures}"


def test_random_sigkill_of_key_compaction(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """`compact --keys` SIGKILLed at random moments on 1000 events (~330 segments): each segment before or
    after, the log verifies and reads back, and the next run gives the one-shot result."""
    random_kills(cli, spawn, tmp_path, "jsonl", events=1000, rounds=3, seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_random_sigkill_of_key_compaction_many_rounds(cli: Evlog, spawn: Spawner, tmp_path: Path,
                                                      fmt: str) -> None:
    """Many rounds of random SIGKILLs of `compact --keys` on 3000 events: nothing lost, duplicated or
    altered."""
    random_kills(cli, spawn, tmp_path, fmt, events=3000, rounds=10, seed=101 + len(fmt))


# -- one compaction at a time ----------------------------------------------------------------------

def test_second_compaction_exits_75_while_the_lock_is_held_and_wait_waits(cli: Evlog, spawn: Spawner) -> None:
    """While DIR/.compact.lock is held, `compact` exits 75 at once changing nothing; `--wait` waits for
    the lock and then compacts."""
    d = keyed_log(cli, "jsonl")
    before = facts(cli, d)
    snapshot = all_files(d / "segments")
    lock = d / ".compact.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = cli("compact", "--keys", timeout=DEADLINE)  # waiting for the lock would time out here
        assert_one_error(r, 75)
        assert all_files(d / "segments") == snapshot
        waiter = spawn("compact", "--keys", "--wait", "--json")
        wait_until(lambda: (waiter.pid, True) in flock_holders(lock) or waiter.poll() is not None,
                   message="the --wait compaction to queue for the lock")
        assert waiter.poll() is None, f"--wait did not wait: {waiter.stderr()}"
        assert all_files(d / "segments") == snapshot
    finally:
        os.close(fd)
    assert waiter.wait() == 0, waiter.stderr()
    assert cli.records() == key_compacted(before.records, before.segs[-1].base)
    assert json.loads(waiter.lines()[0])["events_after"] == len(cli.records())


def test_second_compaction_exits_75_while_another_compacts(cli: Evlog, spawn: Spawner) -> None:
    """While a real compaction runs (held still with SIGSTOP), another exits 75 at once and one with
    --wait finishes after it, finding nothing more to do."""
    d = init(cli, "jsonl")
    cli.batch(random_crash_events(600))
    before = facts(cli, d)
    want = key_compacted(before.records, before.segs[-1].base)
    lock = d / ".compact.lock"
    first = spawn("compact", "--keys", "--json")
    wait_until(lambda: first.poll() is not None or (lock.exists() and (first.pid, False) in flock_holders(lock)),
               interval=0.002, message="the first compaction to take the lock")
    first.signal(signal.SIGSTOP)
    try:
        assert first.poll() is None, "the first compaction finished before it could be held"
        assert (first.pid, False) in flock_holders(lock)
        assert_one_error(cli("compact", "--keys", timeout=DEADLINE), 75)
        second = spawn("compact", "--keys", "--wait", "--json")
        wait_until(lambda: (second.pid, True) in flock_holders(lock) or second.poll() is not None,
                   message="the --wait compaction to queue for the lock")
        assert second.poll() is None
    finally:
        first.signal(signal.SIGCONT)
    assert first.wait(60) == 0, first.stderr()
    assert second.wait(60) == 0, second.stderr()
    after = facts(cli, d)
    assert after.records == want
    assert json.loads(first.lines()[0]) == summary_of(before, after)
    again = json.loads(second.lines()[0])
    assert again["events_before"] == again["events_after"] == len(want)


# -- running alongside appenders and followers ------------------------------------------------------

def concurrent_base(n: int) -> list[Record]:
    """Keyed events, then keyless ones filling the last segments (so which segment is active when the
    compaction starts does not change its result)."""
    rng = random.Random(3)
    evs = [event(i, f"k{rng.randrange(300)}", pad="c" * 40) for i in range(n)]
    return evs + [event(n + i, pad="c" * 40) for i in range(16)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compaction_alongside_appenders_and_followers(cli: Evlog, spawn: Spawner, fmt: str) -> None:
    """While `compact --keys` runs, appenders get every event acknowledged with its offset, followers
    print every surviving event exactly once in order, reads stay consistent, and afterwards the log is
    the surviving old events followed by every new event."""
    init(cli, fmt)
    cli.batch(concurrent_base(600))
    before = facts(cli, cli.dir)
    old = before.records
    survivors = key_compacted(old, before.segs[-1].base)
    known = {r["offset"]: r for r in old}
    follower = spawn("read", "-f", "--format", "json")
    follower.wait_lines(len(old))

    acks: list[tuple[int, str]] = []  # (offset, marker) of every acknowledged single append
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def reporting(fn: Any) -> Any:
        """Run fn in a thread, recording any exception (a traceback on stderr, say) as an error."""
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except BaseException as e:
                errors.append(f"{fn.__name__}: {e!r}")
        return run

    @reporting
    def appender(w: int) -> None:
        i = 0
        while not stop.is_set():
            marker = f"a{w}-{i}"
            r = cli("append", "t.new", f"m={marker}")
            if r.rc != 0 or not r.out.strip().isdigit():
                errors.append(f"append {marker}: exit {r.rc} {r.out!r} {r.err!r}")
                return
            with lock:
                acks.append((int(r.out), marker))
            i += 1

    batch_ack: dict[str, Any] = {}

    @reporting
    def batcher() -> None:
        text = "".join(json.dumps({"type": "t.batch", "data": {"m": f"b-{i}"}}) + "\n" for i in range(500))
        r = cli("append", "--batch", "--json", input=text)
        if r.rc != 0:
            errors.append(f"batch: exit {r.rc} {r.err!r}")
        else:
            batch_ack.update(json.loads(r.out))

    @reporting
    def readers(results: list[tuple[int, list[Record]]], reading: threading.Event) -> None:
        while reading.is_set():
            x = rng.choice([0, 150, 300, 450, 610])
            r = cli("read", "--from", x, "--format", "json")
            if r.rc != 0:
                errors.append(f"read --from {x}: exit {r.rc} {r.err!r}")
                return
            results.append((x, parse_records(r.out)))

    rng = random.Random(5)
    threads = [threading.Thread(target=appender, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acks) >= 3 or errors, message="appenders to start")
    reads: list[tuple[int, list[Record]]] = []
    reading = threading.Event()
    reading.set()
    reader = threading.Thread(target=readers, args=(reads, reading))
    reader.start()
    segs_dir = cli.dir / "segments"
    names_before = set(os.listdir(segs_dir))
    compaction = spawn("compact", "--keys", "--json")
    batch = threading.Thread(target=batcher)
    try:
        # Hold the compaction still half way (it has changed a segment) while everything else goes on.
        wait_until(lambda: compaction.poll() is not None or any(
            TEMP_RE.fullmatch(n) for n in os.listdir(segs_dir)) or not names_before <= set(os.listdir(segs_dir)),
            interval=0.002, message="the compaction to start changing segments")
        compaction.signal(signal.SIGSTOP)
        assert compaction.poll() is None, "the compaction finished before it could be held half way"
        with lock:
            n_paused = len(acks)
        batch.start()
        late = spawn("read", "-f", "--format", "json")
        wait_until(lambda: len(acks) >= n_paused + 6 or errors, message="appends while the compaction is held")
        batch.join(60)
        assert batch_ack, "the batch append did not finish while the compaction was held"
        compaction.signal(signal.SIGCONT)
        assert compaction.wait(120) == 0, compaction.stderr()
        with lock:
            n_at_end = len(acks)
        wait_until(lambda: len(acks) >= n_at_end + 6 or errors, message="appends after the compaction")
    finally:
        compaction.signal(signal.SIGCONT)
        stop.set()
        reading.clear()
        for t in [*threads, reader]:
            t.join(60)
        if batch.is_alive():
            batch.join(60)
    assert not errors, errors

    new: dict[int, str] = dict(acks)
    assert len(new) == len(acks), "two appends were acknowledged with the same offset"
    assert batch_ack["count"] == 500 and batch_ack["last"] - batch_ack["first"] == 499
    for i in range(500):
        assert batch_ack["first"] + i not in new
        new[batch_ack["first"] + i] = f"b-{i}"
    new_offsets = sorted(new)
    assert new_offsets[0] == old[-1]["offset"] + 1

    final = cli.records()
    assert final[:len(survivors)] == survivors
    tail = final[len(survivors):]
    assert offsets(tail) == new_offsets
    assert all(r["data"] == {"m": new[r["offset"]]} for r in tail), "a new event is not what was acknowledged"
    verify_ok(cli)

    total = len(old) + len(new)
    seen = parse_records("\n".join(follower.wait_lines(total)))
    assert seen[:len(old)] == old
    assert seen[len(old):] == tail, "the follower did not print every new event exactly once, in order"
    assert len(follower.lines()) == total

    every = {**known, **{r["offset"]: r for r in tail}}
    surviving = set(offsets(final))

    def check_view(name: str, view: list[Record], start: int, must: set[int]) -> None:
        offs = offsets(view)
        assert offs == sorted(set(offs)), f"{name}: offsets out of order or repeated"
        assert all(every.get(r["offset"]) == r for r in view), f"{name}: a record unknown or altered"
        missed = {o for o in must if o >= start} - set(offs)
        assert not missed, f"{name}: surviving events missed: {sorted(missed)[:10]}"

    # A follower started during the compaction prints every surviving event, old and new, exactly once.
    late_seen = wait_until(lambda: (v := late.records()) and v[-1]["offset"] >= new_offsets[-1] and v,
                           message=lambda: f"late follower: {late.stderr()!r}")
    check_view("late follower", late_seen, 0, surviving)
    # Reads during the compaction return whole, ordered records and every surviving old event.
    assert reads, "no read ran"
    for i, (x, view) in enumerate(reads):
        check_view(f"read {i} --from {x}", view, x, set(offsets(survivors)))


# -- consumers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("how", ["retention", "keys"])
def test_group_checkpoint_in_a_removed_range_resumes_at_the_next_surviving_event(
        cli: Evlog, tmp_path: Path, fmt: str, how: str) -> None:
    """A consumer group whose checkpoint points at a removed event resumes at the next surviving one."""
    d = init(cli, fmt)
    evs = crash_keys_events()
    cli.batch(evs)
    before = facts(cli, d)
    segs = before.segs
    if how == "retention":
        k = segs[2].base + 1  # the first four segments go
        args: list[Any] = ["--max-events", len(before.records) - sum(len(s.records) for s in segs[:4])]
    else:
        want = key_compacted(before.records, segs[-1].base)
        kept = set(offsets(want))
        # an offset removed by compaction whose successor is removed too, in a segment that survives
        k = next(o for o in offsets(before.records)[1:]
                 if o not in kept and o + 1 not in kept and any(s <= o for s in kept))
        args = ["--keys"]
    first = tmp_path / "first.jsonl"
    second = tmp_path / "second.jsonl"
    fail_at = f'if [ "$EVLOG_OFFSET" = {k} ]; then exit 1; fi; cat >> {first}'
    r = cli("replay", "--group", "g", "--retries", 0, "--on-failure", "stop", "--", "sh", "-c", fail_at)
    assert r.rc == 1, r
    assert offsets(parse_records(first.read_text())) == [o for o in offsets(before.records) if o < k]
    assert json.loads(cli.ok("groups", "list", "--json")) == [
        {"name": "g", "position": k, "lag": before.records[-1]["offset"] + 1 - k}]
    compact(cli, *args)
    surviving = cli.records()
    assert k not in offsets(surviving)
    resume = [r for r in surviving if r["offset"] > k]
    assert resume and resume[0]["offset"] > k + 1
    cli.ok("replay", "--group", "g", "--", "sh", "-c", f"cat >> {second}")
    got = parse_records(second.read_text())
    assert got == resume, f"resumed at {offsets(got)[:1]}, expected {resume[0]['offset']}"
    position = json.loads(cli.ok("groups", "list", "--json"))[0]["position"]
    assert position == before.records[-1]["offset"] + 1


# -- memory ----------------------------------------------------------------------------------------

def test_key_compaction_memory_stays_modest(cli: Evlog) -> None:
    """`compact --keys` on 200,000 events with 20,000 keys peaks below 150 MiB of RSS.

    256 KiB segments without fsync (not 1 KiB ones) keep this to seconds; each sealed segment is rewritten.
    """
    d = init(cli, "jsonl", None, "256KiB", "--fsync", "never")
    text = "".join(json.dumps({"type": "t", "key": f"key-{i % 20000:05d}", "data": {"i": i, "v": "x" * 40}}) + "\n"
                   for i in range(200_000))
    assert cli.batch(text)["count"] == 200_000
    active = bases(d)[-1]
    active_count = len(cli.records("--from", active))
    rc, kib = peak_rss_kib(cli, "compact", "--keys", "--json")
    assert rc == 0
    info = json.loads(cli.ok("info", "--json"))
    assert info["events"] == 20_000 + active_count
    print(f"\npeak RSS of compact --keys: {kib / 1024:.1f} MiB")
    assert kib > 10 * 1024, "the measure did not see the compaction (a Python process is bigger than that)"
    assert kib * 1024 < 150 * 2**20, f"peak RSS {kib / 1024:.1f} MiB"
