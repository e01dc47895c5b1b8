"""Consuming a log (SPEC 6 replay, groups, dlq): handlers, checkpoints and dead letters on every log location."""

from __future__ import annotations

import json
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import Spawner, assert_one_error, wait_until
from contract_helpers import (
    DLQ_KEYS,
    TIME,
    LocalLog,
    Log,
    NatsLog,
    history,
    history_time,
    nats_module,  # noqa: F401 - fixture: the module's NATS server
    now_stamp,
    parallel,
    summary,
)
from handler_helpers import Recorder, read_jsonl


def appender(path: Path) -> list[str]:
    """A handler that appends its stdin to `path` (through a shell, as SPEC 6 tells users to)."""
    return ["sh", "-c", 'cat >> "$1"', "append-handler", str(path)]


def failing_at(offset: int, path: Path) -> list[str]:
    """A handler that fails (exit 2, `boom` on stderr) for one offset and appends every other event to `path`."""
    script = 'if [ "$EVLOG_OFFSET" = "$1" ]; then echo boom >&2; exit 2; fi; cat >> "$2"'
    return ["sh", "-c", script, "failing-handler", str(offset), str(path)]


class ConsumeContract:
    """Scenarios for replay, groups and the dead-letter store; subclasses give the `log` fixture."""

    # -- replay ------------------------------------------------------------------------------------

    def test_replay_runs_the_handler_once_per_event(self, log: Log, tmp_path: Path) -> None:
        """Each event reaches the handler as one JSON line on stdin, with SPEC 6's EVLOG_* variables."""
        log.batch(history(3))
        handler = Recorder(tmp_path / "h")
        result = log.replay(handler.argv, "--json")
        assert result.rc == 0, result
        s = summary(result)
        assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (3, 3, 0, 0)
        assert isinstance(s["elapsed_s"], int | float) and s["elapsed_s"] >= 0
        recs = log.records()
        assert handler.records() == recs
        calls = handler.calls()
        assert [c["env"]["EVLOG_OFFSET"] for c in calls] == ["0", "1", "2"]
        for call, rec in zip(calls, recs, strict=True):
            env = call["env"]
            assert env["EVLOG_ID"] == rec["id"]
            assert env["EVLOG_TYPE"] == rec["type"]
            assert env["EVLOG_KEY"] == rec["key"]
            assert env["EVLOG_SOURCE"] == rec["source"]
            assert env["EVLOG_TIME"] == rec["time"]
            assert env["EVLOG_ATTEMPT"] == "1"
            assert env["EVLOG_DIR"] == log.location
            assert "EVLOG_GROUP" not in env
        assert calls[0]["env"]["EVLOG_SUBJECT"] == "s0"

    @pytest.mark.slow
    def test_replay_range_filters_and_handler_stdout(self, log: Log, tmp_path: Path) -> None:
        """A range and filters choose the events; the handler's stdout passes through to evlog's stdout."""
        log.batch(history(6))
        out = tmp_path / "got.jsonl"
        handler = ["sh", "-c", 'echo "got $EVLOG_OFFSET $EVLOG_TYPE"; cat >> "$1"', "h", str(out)]
        result = log.replay(handler, "--from", 1, "--to", 4, "--type", "item.odd")
        assert result.rc == 0, result
        assert result.out.splitlines() == ["got 1 item.odd", "got 3 item.odd"]
        assert [r["offset"] for r in read_jsonl(out)] == [1, 3]
        result = log.replay(appender(out), "--since", history_time(4), "--key", "k2")
        assert result.rc == 0, result
        assert [r["offset"] for r in read_jsonl(out)] == [1, 3, 5]

    @pytest.mark.slow
    def test_replay_batches(self, log: Log, tmp_path: Path) -> None:
        """With --batch N the handler gets up to N lines and EVLOG_FIRST_OFFSET, EVLOG_LAST_OFFSET, EVLOG_COUNT."""
        log.batch(history(5))
        handler = Recorder(tmp_path / "h")
        result = log.replay(handler.argv, "--batch", 2)
        assert result.rc == 0, result
        calls = handler.calls()
        got = [(c["env"]["EVLOG_FIRST_OFFSET"], c["env"]["EVLOG_LAST_OFFSET"], c["env"]["EVLOG_COUNT"])
               for c in calls]
        assert got == [("0", "1", "2"), ("2", "3", "2"), ("4", "4", "1")]
        assert all("EVLOG_OFFSET" not in c["env"] for c in calls)
        assert handler.records() == log.records()

    def test_replay_group_resumes_where_it_stopped(self, log: Log, tmp_path: Path) -> None:
        """A group's checkpoint moves over handled events; the next replay with the group starts after it."""
        log.batch(history(4))
        handler = Recorder(tmp_path / "h")
        assert log.replay(handler.argv, "--group", "billing", "--to", 1).rc == 0
        assert handler.offsets() == [0, 1]
        assert log.groups() == [{"name": "billing", "position": 2, "lag": 2}]
        assert log.replay(handler.argv, "--group", "billing").rc == 0
        assert handler.offsets() == [0, 1, 2, 3]
        assert {c["env"]["EVLOG_GROUP"] for c in handler.calls()} == {"billing"}
        log.append("later")
        result = log.replay(handler.argv, "--group", "billing", "--json")
        assert summary(result)["events"] == 1
        assert handler.offsets() == [0, 1, 2, 3, 4]
        result = log.replay(handler.argv, "--group", "billing", "--json")
        assert result.rc == 0 and summary(result)["events"] == 0
        assert log.info()["groups"] == [{"name": "billing", "position": 5, "lag": 0}]

    def test_a_dry_run_with_a_group_takes_nothing_from_it(self, log: Log, tmp_path: Path) -> None:
        """A dry run lists the group's events but does not move the group (on a NATS log: acknowledges none),
        so the real run that follows gets every one of them."""
        log.batch(history(3))
        handler = Recorder(tmp_path / "h")
        result = log.replay(handler.argv, "--group", "g", "--dry-run")
        assert result.rc == 0, result.err
        assert [json.loads(x)["offset"] for x in result.out.splitlines()] == [0, 1, 2]
        assert handler.calls() == []
        assert log.replay(handler.argv, "--group", "g").rc == 0
        assert handler.offsets() == [0, 1, 2]

    def test_a_start_given_to_a_group_that_has_a_position_is_ignored_and_said_so(self, log: Log,
                                                                                tmp_path: Path) -> None:
        """The group resumes where it is; stderr says that --from was ignored and how to move the group."""
        log.batch(history(4))
        handler = Recorder(tmp_path / "h")
        assert log.replay(handler.argv, "--group", "g", "--to", 1).rc == 0
        result = log.replay(handler.argv, "--group", "g", "--from", 0)
        assert result.rc == 0
        assert handler.offsets() == [0, 1, 2, 3]
        assert "group 'g' resumes at offset 2: --from 0 is ignored" in result.err, result.err
        assert "evlog groups reset g --to OFFSET" in result.err
        quiet = log.replay(handler.argv, "--group", "g")
        assert "ignored" not in quiet.err
        fresh = log.replay(handler.argv, "--group", "new", "--from", 3)
        assert "ignored" not in fresh.err
        assert handler.offsets() == [0, 1, 2, 3, 3]

    def test_groups_reset_and_delete(self, log: Log, tmp_path: Path) -> None:
        """groups reset moves a checkpoint (--to, --to-start, --to-end, --to-time); delete removes it."""
        log.batch(history(6))
        assert log.replay(["true"], "--group", "g", "--to", 0).rc == 0
        log.ok("groups", "reset", "g", "--to-start")
        assert log.groups() == [{"name": "g", "position": 0, "lag": 6}]
        log.ok("groups", "reset", "g", "--to", 4)
        assert log.groups() == [{"name": "g", "position": 4, "lag": 2}]
        log.ok("groups", "reset", "g", "--to-end")
        assert log.groups() == [{"name": "g", "position": 6, "lag": 0}]
        log.ok("groups", "reset", "g", "--to-time", "2020-01-01T13:00:00Z")  # between events 2 and 3
        handler = Recorder(tmp_path / "h")
        assert log.replay(handler.argv, "--group", "g").rc == 0
        assert handler.offsets() == [3, 4, 5]
        log.ok("groups", "delete", "g")
        assert log.groups() == []
        assert_one_error(log("groups", "delete", "g"), 1)

    def test_replay_follow_delivers_later_appends(self, log: Log, spawn: Spawner, tmp_path: Path) -> None:
        """`replay --follow` handles the backlog, then events appended later; SIGTERM stops it with 143."""
        log.append("first")
        out = tmp_path / "followed.jsonl"
        consumer = spawn(*log.argv("replay", "--follow", "--group", "live", "--", *appender(out)))
        wait_until(lambda: len(read_jsonl(out)) == 1, timeout=15, message=lambda: consumer.stderr())
        log.append("second")
        log.append("third")
        wait_until(lambda: len(read_jsonl(out)) == 3, timeout=15, message=lambda: consumer.stderr())
        assert [(r["offset"], r["type"]) for r in read_jsonl(out)] == [(0, "first"), (1, "second"), (2, "third")]
        consumer.signal(signal.SIGTERM)
        assert consumer.wait(timeout=15) == 143
        assert log.position("live") == 3

    # -- failures and dead letters -----------------------------------------------------------------

    def test_a_failing_handler_dead_letters_and_replay_moves_on(self, log: Log, tmp_path: Path) -> None:
        """After its retries a failing event goes to the dead letters with SPEC 6's fields; the rest is handled."""
        log.batch(history(3))
        out = tmp_path / "ok.jsonl"
        handler = failing_at(1, out)
        result = log.replay(handler, "--group", "g", "--retries", 1, "--backoff", "10ms", "--json")
        assert result.rc == 3, result
        s = summary(result)
        assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (3, 2, 1, 1)
        assert "boom" in result.err
        assert [r["offset"] for r in read_jsonl(out)] == [0, 2]
        assert log.ok("dlq", "count") == "1\n"
        (entry,) = log.dead_letters()
        assert DLQ_KEYS <= set(entry), entry
        assert isinstance(entry["dlq_id"], int)
        assert TIME.match(entry["failed_at"]), entry["failed_at"]
        assert (entry["group"], entry["hook"], entry["command"]) == ("g", None, handler)
        assert (entry["attempts"], entry["exit_code"], entry["error"]) == (2, 2, "exit status 2")
        assert "boom" in entry["stderr"]
        assert entry["event"] == log.records()[1]
        assert log.groups() == [{"name": "g", "position": 3, "lag": 0}]
        assert log.info()["dead_letters"] == 1
        shown = json.loads(log.ok("dlq", "show", entry["dlq_id"]))
        assert shown == entry
        assert_one_error(log("dlq", "show", entry["dlq_id"] + 100), 1)

    @pytest.mark.slow
    def test_a_handler_past_its_timeout_is_a_failure(self, log: Log) -> None:
        """A handler running past --timeout is killed and counts as a failure."""
        log.append("slow")
        result = log.replay(["sh", "-c", "sleep 30"], "--timeout", "300ms", "--retries", 0, "--json", timeout=30)
        assert result.rc == 3, result
        assert summary(result)["dead_lettered"] == 1
        (entry,) = log.dead_letters()
        assert "timed out" in entry["error"]
        assert entry["exit_code"] is None

    @pytest.mark.slow
    def test_on_failure_stop_keeps_the_checkpoint_before_the_event(self, log: Log, tmp_path: Path) -> None:
        """`--on-failure stop` exits 1 without dead-lettering and without moving past the failing event."""
        log.batch(history(3))
        out = tmp_path / "ok.jsonl"
        result = log.replay(failing_at(1, out), "--group", "g", "--retries", 0, "--on-failure", "stop")
        assert result.rc == 1, result
        assert [r["offset"] for r in read_jsonl(out)] == [0]
        assert log.position("g") == 1
        assert log.ok("dlq", "count") == "0\n"

    @pytest.mark.slow
    def test_exit_65_is_dead_lettered_at_once_and_dlq_list_filters(self, log: Log) -> None:
        """Exit status 65 dead-letters an event without retries; dlq list takes read's filters over the events."""
        log.batch(history(4))
        result = log.replay(["sh", "-c", "cat > /dev/null; exit 65"], "--retries", 3, "--json")
        assert result.rc == 3, result
        s = summary(result)
        assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (4, 0, 0, 4)
        entries, odd, k0 = parallel(log.dead_letters, lambda: log.dead_letters("--type", "item.odd"),
                                    lambda: log.dead_letters("--key", "k0"))
        assert [e["event"]["offset"] for e in entries] == [0, 1, 2, 3]
        assert {(e["attempts"], e["exit_code"], e["group"]) for e in entries} == {(1, 65, None)}
        ids = [e["dlq_id"] for e in entries]
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert [e["event"]["offset"] for e in odd] == [1, 3]
        assert [e["event"]["offset"] for e in k0] == [0, 3]

    def test_dlq_retry(self, log: Log, tmp_path: Path) -> None:
        """dlq retry reruns entries: those that now succeed go, the others stay with one more attempt."""
        log.batch(history(2))
        out = tmp_path / "ok.jsonl"
        flag = tmp_path / "fixed"
        handler = ["sh", "-c", 'test -e "$1" || exit 3; cat >> "$2"', "h", str(flag), str(out)]
        assert log.replay(handler, "--retries", 0).rc == 3
        entries = log.dead_letters()
        assert [(e["event"]["offset"], e["attempts"]) for e in entries] == [(0, 1), (1, 1)]
        assert log("dlq", "retry", "--all").rc == 3
        assert [(e["event"]["offset"], e["attempts"]) for e in log.dead_letters()] == [(0, 2), (1, 2)]
        other = tmp_path / "other.jsonl"
        first_id = entries[0]["dlq_id"]
        retried = log("dlq", "retry", first_id, "--", *appender(other))
        assert retried.rc == 0, retried
        assert read_jsonl(other) == [entries[0]["event"]]
        assert [e["event"]["offset"] for e in log.dead_letters()] == [1]
        flag.touch()
        retried = log("dlq", "retry", "--all")
        assert retried.rc == 0, retried
        assert read_jsonl(out) == [entries[1]["event"]]
        assert log.ok("dlq", "count") == "0\n"

    def test_dlq_purge(self, log: Log) -> None:
        """dlq purge removes entries by id, by failure time (--before), or all of them."""
        log.batch(history(3))
        assert log.replay(["sh", "-c", "exit 65"]).rc == 3
        ids = [e["dlq_id"] for e in log.dead_letters()]
        assert len(ids) == 3
        log.ok("dlq", "purge", ids[1])
        assert [e["dlq_id"] for e in log.dead_letters()] == [ids[0], ids[2]]
        log.ok("dlq", "purge", "--before", "2020-01-01")
        assert log.ok("dlq", "count") == "2\n"
        log.ok("dlq", "purge", "--before", now_stamp(timedelta(seconds=1)))
        assert log.ok("dlq", "count") == "0\n"
        assert log.replay(["sh", "-c", "exit 65"], "--from", 2).rc == 3
        log.ok("dlq", "purge", "--all")
        assert log.info()["dead_letters"] == 0


class TestLocalLog(LocalLog, ConsumeContract):
    """The consuming contract on a local directory."""


class TestNatsLog(NatsLog, ConsumeContract):
    """The consuming contract on a NATS JetStream stream."""

    @pytest.mark.slow
    def test_a_group_is_shared_by_concurrent_consumers(self, log: Log, spawn: Spawner, tmp_path: Path) -> None:
        """Two followers of one group share its events: together they handle each event once."""
        log.ok("init")
        outs = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
        workers = [spawn(*log.argv("replay", "--follow", "--group", "shared", "--", *appender(out))) for out in outs]
        log.batch(history(10))

        def handled() -> list[int]:
            return sorted(r["offset"] for out in outs for r in read_jsonl(out))

        wait_until(lambda: len(handled()) >= 10, timeout=20,
                   message=lambda: f"{handled()}; {[w.stderr() for w in workers]}")
        for w in workers:
            w.signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(timeout=15) == 143
        assert handled() == list(range(10))
