"""The log as a whole (SPEC 6 compact and init, SPEC 3 on NATS logs): retention on every log location, and what
a NATS log refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Evlog, assert_one_error, wait_until
from contract_helpers import (
    COMPACT_KEYS,
    LocalLog,
    Log,
    NatsLog,
    history,
    jsonl,
    nats_module,  # noqa: F401 - fixture: the module's NATS server
    parallel,
    stream_name,
)
from handler_helpers import Recorder
from nats_helpers import NatsServer, free_port

EVENTS = 40
PAD = 200  # bytes of payload per event: a 1KiB segment holds a few events


def assert_oldest_removed(before: list[dict], after: list[dict]) -> None:
    """Retention removes from the oldest end: what survives is the newest part of the log, unchanged."""
    assert 0 < len(after) < len(before), (len(before), len(after))
    assert after == before[len(before) - len(after):]


class AdminContract:
    """Retention by compaction; subclasses give the `log` fixture and the init options that make segments."""

    retention_init: tuple[str, ...]

    def filled(self, log: Log) -> list[dict]:
        """A log of EVENTS padded events with past times; returns its records."""
        log.ok("init", *self.retention_init)
        log.batch(history(EVENTS, pad=PAD))
        return log.records()

    def test_compact_json_summary(self, log: Log) -> None:
        """`compact --json` prints SPEC 6's counts; --dry-run reports the same and changes nothing."""
        before = self.filled(log)
        dry = json.loads(log.ok("compact", "--max-events", 10, "--dry-run", "--json"))
        assert set(dry) == COMPACT_KEYS, dry
        assert log.records() == before
        done = json.loads(log.ok("compact", "--max-events", 10, "--json"))
        if log.backend == "nats":  # a stream's dry run estimates the bytes after by the average event size
            assert abs(dry.pop("bytes_after") - done["bytes_after"]) <= done["bytes_before"] // EVENTS
            assert done == dict(dry, bytes_after=done["bytes_after"])
        else:
            assert done == dry
        assert (done["events_before"], done["bytes_before"] > done["bytes_after"]) == (EVENTS, True)
        info = log.info()
        assert (done["events_after"], done["bytes_after"]) == (info["events"], info["bytes"])

    def test_retention_by_event_count_removes_the_oldest(self, log: Log, tmp_path: Path) -> None:
        """--max-events keeps at most N events, the newest; offsets and ids stay; a group resumes at a survivor."""
        before = self.filled(log)
        assert log.replay(["true"], "--group", "g", "--to", 0).rc == 0
        log.ok("compact", "--max-events", 10)
        after = log.records()
        assert_oldest_removed(before, after)
        assert len(after) <= 10
        info = log.info()
        assert (info["first_offset"], info["last_offset"], info["events"]) == (after[0]["offset"], EVENTS - 1,
                                                                               len(after))
        assert log.records("--from", 0, "--to", after[0]["offset"]) == after[:1]
        handler = Recorder(tmp_path / "h")
        assert log.replay(handler.argv, "--group", "g").rc == 0
        assert handler.offsets() == [r["offset"] for r in after]

    def test_compact_options_apply_to_that_run_only(self, log: Log) -> None:
        """An option given to compact overrides the settings for that run: later appends are all kept."""
        self.filled(log)
        log.ok("compact", "--max-events", 10)
        kept = log.info()["events"]
        log.batch([{"type": "after.compact", "data": {"n": i}} for i in range(15)])
        info = log.info()
        assert (info["events"], info["last_offset"]) == (kept + 15, EVENTS + 14)

    def test_retention_by_bytes(self, log: Log) -> None:
        """--max-bytes brings the log to at most that size by removing the oldest events."""
        before = self.filled(log)
        limit = log.info()["bytes"] // 2
        log.ok("compact", "--max-bytes", limit)
        after = log.records()
        assert_oldest_removed(before, after)
        assert after[-1]["offset"] == EVENTS - 1
        assert log.info()["bytes"] <= limit

    def test_retention_by_age_follows_event_times(self, log: Log) -> None:
        """--max-age removes events older than the age by their time (kept from import), never newer ones."""
        log.ok("init", *self.retention_init)
        log.batch(history(20, pad=PAD))  # times in 2020, kept on import into an empty log
        log.batch([{"type": "fresh", "data": {"n": i, "pad": "y" * PAD}} for i in range(8)])
        before = log.records()
        log.ok("compact", "--max-age", "1d")
        after = log.records()
        assert_oldest_removed(before, after)
        assert [r["type"] for r in after[-8:]] == ["fresh"] * 8
        assert after[0]["offset"] > 0


class TestLocalLog(LocalLog, AdminContract):
    """Retention on a local directory."""


class TestNatsLog(NatsLog, AdminContract):
    """Retention on a NATS JetStream stream."""

    def test_refused_commands_exit_2_with_one_line(self, log: Log) -> None:
        """verify, hooks, run and compact --keys are refused on a NATS log: exit 2 and one line saying why."""
        log.batch(history(3))
        refused = [("verify",), ("verify", "--json"), ("verify", "--repair"), ("hooks", "list"),
                   ("hooks", "add", "h", "--", "cat"), ("hooks", "show", "h"), ("run", "--once"),
                   ("compact", "--keys"), ("compact", "--keys", "--dry-run")]
        for args, result in zip(refused, parallel(*(lambda a=a: log(*a) for a in refused)), strict=True):
            line = assert_one_error(result, 2)
            assert len(line) > len("evlog: error: ") + 10, (args, line)
            assert result.out == "", args
        assert len(log.records()) == 3

    def test_init_takes_the_stream_options(self, log: Log) -> None:
        """init takes --replicas, --max-age, --max-bytes and --dedup-window; a second init exits 1."""
        log.ok("init", "--replicas", 1, "--max-age", "30d", "--max-bytes", "1MiB", "--dedup-window", "5s")
        assert_one_error(log("init"), 1)
        assert log.append("t", "--id", "x") == 0
        assert log.append("t", "--id", "x") == 0
        assert log.info()["events"] == 1

    def test_init_refuses_bad_and_local_options(self, log: Log) -> None:
        """Replicas out of range and local-only settings exit 2; replicas a single server cannot keep exit 1."""
        results = parallel(lambda: log("init", "--replicas", 0), lambda: log("init", "--replicas", 6),
                           lambda: log("init", "--segment-bytes", "1KiB"), lambda: log("init", "--format", "msgpack"))
        for result in results:
            assert_one_error(result, 2)
        assert_one_error(log("init", "--replicas", 3), 1)
        assert_one_error(log("read"), 1)

    @pytest.mark.slow
    def test_init_max_bytes_is_kept_by_the_server(self, log: Log) -> None:
        """A stream made with --max-bytes never holds more; the newest events stay."""
        log.ok("init", "--max-bytes", "4KiB")
        log.batch(history(EVENTS, pad=PAD))
        info = log.info()
        assert info["bytes"] <= 4096
        assert info["last_offset"] == EVENTS - 1
        assert 0 < info["events"] < EVENTS

    @pytest.mark.slow
    def test_init_max_age_is_kept_by_the_server(self, log: Log) -> None:
        """A stream made with --max-age drops events once they are older."""
        log.ok("init", "--max-age", "1s", "--dedup-window", "1s")
        log.append("short.lived")
        wait_until(lambda: log.info()["events"] == 0, timeout=20)
        assert log.records() == []
        assert log.append("next") == 1

    @pytest.mark.slow
    def test_an_unreachable_server_exits_1_with_one_line(self, cli: Evlog) -> None:
        """With no server listening, a command gives up after --nats-timeout with exit 1 and one line."""
        where = f"nats://127.0.0.1:{free_port()}/nowhere"
        for result in parallel(lambda: cli("-d", where, "--nats-timeout", 1, "read", timeout=30),
                               lambda: cli("-d", where, "--nats-timeout", 1, "append", "t", timeout=30)):
            assert_one_error(result, 1)

    @pytest.mark.slow
    def test_a_large_batch_is_published_in_chunks_that_a_rerun_completes(self, log: Log) -> None:
        """A batch over the atomic limit gets contiguous offsets; run again, its ids add nothing."""
        n = 2500
        text = jsonl([{"type": "bulk", "id": f"bulk-{i}", "data": {"i": i}} for i in range(n)])
        assert log.batch(text) == {"count": n, "first": 0, "last": n - 1}
        assert log.batch(text) == {"count": 0, "first": None, "last": None}
        info = log.info()
        assert (info["events"], info["first_offset"], info["last_offset"]) == (n, 0, n - 1)
        recs = log.records("--from", n - 3)
        assert [(r["offset"], r["id"]) for r in recs] == [(i, f"bulk-{i}") for i in range(n - 3, n)]


def test_nats_stream_names(nats_module: NatsServer, cli: Evlog,  # noqa: F811
                           request: pytest.FixtureRequest) -> None:
    """STREAM is 1 to 64 of [A-Za-z0-9_-]: anything else exits 2 with one line; 64 characters make a log."""
    bad = ["bad.name", "a" * 65, "sp ace", ""]
    results = parallel(*(lambda n=n: cli("-d", f"{nats_module.url}/{n}", "append", "t", timeout=45) for n in bad))
    for name, result in zip(bad, results, strict=True):
        assert result.rc == 2, (name, result)
        assert_one_error(result, 2)
    longest = Log(cli, f"{nats_module.url}/{(stream_name(request) * 3)[:64]}", "nats")
    assert longest.append("t") == 0
    assert longest.ok("dlq", "count") == "0\n"
