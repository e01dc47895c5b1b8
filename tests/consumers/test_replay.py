"""`evlog replay` end to end (SPEC 6 replay): real handler programs, a private log, real signals."""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIELDS, Evlog, Result, Spawner, assert_one_error, wait_until
from engine_helpers import append_undecodable
from handler_helpers import Recorder, kill_pids

ENV_BIN = shutil.which("env") or "/usr/bin/env"
PER_EVENT = {"EVLOG_OFFSET", "EVLOG_ID", "EVLOG_TYPE", "EVLOG_KEY", "EVLOG_SUBJECT", "EVLOG_SOURCE", "EVLOG_TIME"}
BATCH_VARS = {"EVLOG_FIRST_OFFSET", "EVLOG_LAST_OFFSET", "EVLOG_COUNT"}
SUMMARY_KEYS = {"events", "succeeded", "retries", "dead_lettered", "elapsed_s"}


def replay(cli: Evlog, handler: Recorder | list[str], *options: object, **kw: Any) -> Result:
    argv = handler.argv if isinstance(handler, Recorder) else handler
    return cli("replay", *options, "--", *argv, **kw)


def summary(result: Result) -> dict[str, Any]:
    """The --json summary: the last line of stdout."""
    return json.loads(result.out.splitlines()[-1])


def position(cli: Evlog, group: str) -> int | None:
    rows = {row["name"]: row for row in json.loads(cli.ok("groups", "list", "--json"))}
    return rows[group]["position"] if group in rows else None


def dead_letters(cli: Evlog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli.ok("dlq", "list", "--json").splitlines()]


def env_dump(out: str) -> dict[str, str]:
    """The environment printed by `env -0`."""
    return dict(item.split("=", 1) for item in out.split("\0") if item.strip("\n"))


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Handler pids to SIGKILL at teardown (a SIGKILLed evlog leaves its handlers running in their sessions)."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        kill_pids(pids)


# -- what the handler gets ------------------------------------------------------------------------

def test_handler_gets_the_record_on_stdin_and_the_per_event_variables(cli: Evlog, tmp_path: Path) -> None:
    """Each handler call gets its record as one JSON line on stdin and EVLOG_OFFSET/ID/TYPE/KEY/SUBJECT/SOURCE/
    TIME/ATTEMPT/DIR/GROUP."""
    cli.batch([{"type": "order.created", "key": "k1", "subject": "s1", "source": "shop", "data": {"n": 1}},
               {"type": "user.seen", "key": "k2", "subject": "s2", "data": [1, "two", None]}])
    records = cli.records()
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--group", "g1").rc == 0
    calls = rec.calls()
    assert len(calls) == 2
    for call, record in zip(calls, records, strict=True):
        assert call["stdin"].endswith("\n") and call["stdin"].count("\n") == 1
        got = json.loads(call["stdin"])
        assert got == record and list(got) == FIELDS
        env = call["env"]
        assert env["EVLOG_OFFSET"] == str(record["offset"])
        assert env["EVLOG_ID"] == record["id"]
        assert env["EVLOG_TYPE"] == record["type"]
        assert env["EVLOG_KEY"] == record["key"]
        assert env["EVLOG_SUBJECT"] == record["subject"]
        assert env["EVLOG_SOURCE"] == record["source"]
        assert env["EVLOG_TIME"] == record["time"]
        assert env["EVLOG_ATTEMPT"] == "1"
        assert Path(env["EVLOG_DIR"]).resolve() == cli.dir.resolve()
        assert env["EVLOG_GROUP"] == "g1"
        assert not BATCH_VARS & set(env)


def test_without_a_group_there_is_no_evlog_group_variable(cli: Evlog, tmp_path: Path) -> None:
    """EVLOG_GROUP is set only when the replay has a --group."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec).rc == 0
    assert [c["env"].get("EVLOG_GROUP") for c in rec.calls()] == [None]


def test_batch_mode_gives_ndjson_and_the_batch_variables(cli: Evlog, tmp_path: Path) -> None:
    """With --batch 3, seven events arrive as 3+3+1 JSON lines with EVLOG_FIRST_OFFSET/LAST_OFFSET/COUNT instead of
    the per-event variables."""
    cli.batch([{"type": "t", "key": f"k{i}", "data": {"i": i}} for i in range(7)])
    records = cli.records()
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--batch", 3, "--group", "b").rc == 0
    calls = rec.calls()
    assert [len(c["stdin"].splitlines()) for c in calls] == [3, 3, 1]
    assert all(c["stdin"].endswith("\n") for c in calls)
    assert rec.records() == records
    for call, (first, last) in zip(calls, [(0, 2), (3, 5), (6, 6)], strict=True):
        env = call["env"]
        assert (env["EVLOG_FIRST_OFFSET"], env["EVLOG_LAST_OFFSET"], env["EVLOG_COUNT"]) == \
            (str(first), str(last), str(last - first + 1))
        assert not PER_EVENT & set(env), env
        assert env["EVLOG_ATTEMPT"] == "1" and env["EVLOG_GROUP"] == "b" and "EVLOG_DIR" in env


def test_the_handler_inherits_the_environment_minus_evlog_token(cli: Evlog) -> None:
    """The handler inherits evlog's environment, except EVLOG_TOKEN; --env adds a variable."""
    cli.ok("append", "t")
    env = {**cli.env, "EVLOG_TOKEN": "secret-token", "KEEP_ME": "yes"}
    r = replay(cli, [ENV_BIN, "-0"], "--env", "ADDED=x=y", env=env)
    assert r.rc == 0, r.err
    seen = env_dump(r.out)
    assert "EVLOG_TOKEN" not in seen
    assert "secret-token" not in r.out
    assert seen["KEEP_ME"] == "yes"
    assert seen["ADDED"] == "x=y"
    assert seen["PATH"] == cli.env["PATH"]


def test_clean_env_passes_only_the_allowed_variables(cli: Evlog) -> None:
    """--clean-env passes only PATH, HOME, LANG, LC_*, TZ, the EVLOG_* variables, and what --env adds."""
    cli.ok("append", "t", "--key", "k", "--subject", "s")
    env = {**cli.env, "HOME": str(cli.tmp), "LANG": "C.UTF-8", "LC_MESSAGES": "C", "TZ": "UTC",
           "EVLOG_TOKEN": "secret-token", "SECRET": "hidden", "EDITOR": "vi"}
    r = replay(cli, [ENV_BIN, "-0"], "--clean-env", "--env", "EXTRA=a=b", "--env", "EMPTY=", "--group", "g",
               env=env)
    assert r.rc == 0, r.err
    seen = env_dump(r.out)
    others = {k for k in seen if not k.startswith("EVLOG_")}
    allowed_others = {"PATH", "HOME", "LANG", "TZ", "EXTRA", "EMPTY"} | {k for k in env if k.startswith("LC_")}
    assert others <= allowed_others, others - allowed_others
    assert {"PATH", "HOME", "LANG", "LC_MESSAGES", "TZ", "EXTRA", "EMPTY"} <= others
    assert (seen["EXTRA"], seen["EMPTY"], seen["TZ"], seen["LC_MESSAGES"]) == ("a=b", "", "UTC", "C")
    evlog_vars = {k for k in seen if k.startswith("EVLOG_")}
    assert evlog_vars <= PER_EVENT | {"EVLOG_ATTEMPT", "EVLOG_DIR", "EVLOG_GROUP"}
    assert PER_EVENT | {"EVLOG_ATTEMPT", "EVLOG_DIR", "EVLOG_GROUP"} <= evlog_vars
    assert "EVLOG_TOKEN" not in seen


def test_a_bad_env_pair_is_a_usage_error(cli: Evlog, tmp_path: Path) -> None:
    """--env without NAME=VALUE is a usage error (exit 2) and runs nothing."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--env", "NOEQUALS").rc == 2
    assert rec.calls() == []


def test_handler_stdout_and_stderr_pass_through(cli: Evlog) -> None:
    """The handler's stdout reaches evlog's stdout and its stderr evlog's stderr, in event order."""
    cli.batch([{"type": "t"}] * 3)
    r = replay(cli, ["sh", "-c", 'echo "out $EVLOG_OFFSET"; echo "err $EVLOG_OFFSET" >&2'])
    assert r.rc == 0, r.err
    assert r.out == "out 0\nout 1\nout 2\n"
    assert [line for line in r.err.splitlines() if line.startswith("err ")] == ["err 0", "err 1", "err 2"]


def test_event_data_never_reaches_a_shell(cli: Evlog, tmp_path: Path) -> None:
    """Shell syntax in data, key and subject is delivered verbatim and never executed; the command line is
    an argument vector taken literally."""
    nasty = {"a": "$(touch pwned1)", "b": "'; touch pwned2; echo '", "c": "`touch pwned3`", "d": "x\" && touch pwned7"}
    key, subject = "k$(touch pwned4)", "s; touch pwned5 #"
    cli.ok("append", "evil", "--data", json.dumps(nasty), "--key", key, "--subject", subject)
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec).rc == 0
    [call] = rec.calls()
    assert json.loads(call["stdin"])["data"] == nasty
    assert (call["env"]["EVLOG_KEY"], call["env"]["EVLOG_SUBJECT"]) == (key, subject)
    r = replay(cli, ["echo", "$(touch pwned6)", "$EVLOG_KEY", ";", "touch", "pwned8"])
    assert r.rc == 0, r.err
    assert r.out == "$(touch pwned6) $EVLOG_KEY ; touch pwned8\n"
    r = replay(cli, ["sh", "-c", 'printf "%s|%s\\n" "$EVLOG_KEY" "$EVLOG_SUBJECT"'])
    assert r.out == f"{key}|{subject}\n"
    assert list(tmp_path.rglob("pwned*")) == []


# -- failures, retries, dead letters ------------------------------------------------------------------

def test_failures_are_retried_with_evlog_attempt_counting_up(cli: Evlog, tmp_path: Path) -> None:
    """With --retries 2 a handler failing twice then succeeding runs three times, EVLOG_ATTEMPT 1, 2, 3; nothing is
    dead-lettered."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="0 if attempt >= 3 else 1")
    r = replay(cli, rec, "--retries", 2, "--backoff", "10ms", "--json")
    assert r.rc == 0, r.err
    assert [c["env"]["EVLOG_ATTEMPT"] for c in rec.calls()] == ["1", "2", "3"]
    s = summary(r)
    assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (1, 1, 2, 0)
    assert dead_letters(cli) == []


def test_after_the_last_retry_the_event_is_dead_lettered_and_replay_goes_on(cli: Evlog, tmp_path: Path) -> None:
    """--retries 2 gives three attempts; then the event is dead-lettered, the next one delivered, and the exit is 3."""
    cli.batch([{"type": "t", "data": 0}, {"type": "t", "data": 1}])
    rec = Recorder(tmp_path / "h", exit_code="2 if offset == 0 else 0")
    r = replay(cli, rec, "--retries", 2, "--backoff", "10ms", "--json")
    assert r.rc == 3, r.err
    assert [(c["env"]["EVLOG_OFFSET"], c["env"]["EVLOG_ATTEMPT"]) for c in rec.calls()] == \
        [("0", "1"), ("0", "2"), ("0", "3"), ("1", "1")]
    [entry] = dead_letters(cli)
    assert (entry["event"]["offset"], entry["attempts"], entry["exit_code"], entry["error"]) == \
        (0, 3, 2, "exit status 2")
    s = summary(r)
    assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (2, 1, 2, 1)


def test_exit_status_65_is_dead_lettered_at_once(cli: Evlog, tmp_path: Path) -> None:
    """Exit status 65 (EX_DATAERR) dead-letters the event after one attempt, whatever --retries says."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="65")
    r = replay(cli, rec, "--retries", 5, "--backoff", "10ms")
    assert r.rc == 3
    assert len(rec.calls()) == 1
    [entry] = dead_letters(cli)
    assert (entry["attempts"], entry["exit_code"], entry["error"]) == (1, 65, "exit status 65")


def test_max_backoff_caps_the_delay(cli: Evlog, tmp_path: Path) -> None:
    """--max-backoff caps every retry delay, however long --backoff is."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="1")
    r = replay(cli, rec, "--retries", 3, "--backoff", "1h", "--max-backoff", "20ms", timeout=30)
    assert r.rc == 3
    assert len(rec.calls()) == 4


def test_a_timed_out_handler_is_a_failure(cli: Evlog, tmp_path: Path) -> None:
    """A handler running past --timeout is killed and the event dead-lettered as `timed out after ...`."""
    cli.ok("append", "t")
    r = replay(cli, ["sleep", "1000"], "--timeout", "300ms", "--retries", 0)
    assert r.rc == 3
    [entry] = dead_letters(cli)
    assert entry["error"] == "timed out after 0.3s"
    assert entry["exit_code"] is None


def test_max_memory_caps_the_handler(cli: Evlog) -> None:
    """--max-memory makes a large allocation in the handler fail; without it the same handler succeeds."""
    cli.ok("append", "t")
    code = "import sys\ntry:\n    b = bytearray(256 << 20)\nexcept MemoryError:\n    sys.exit(42)"
    r = replay(cli, [sys.executable, "-c", code], "--max-memory", "128MiB", "--retries", 0)
    assert r.rc == 3
    assert [e["exit_code"] for e in dead_letters(cli)] == [42]
    assert replay(cli, [sys.executable, "-c", code], "--retries", 0).rc == 0


def test_on_failure_stop_exits_1_without_advancing(cli: Evlog, tmp_path: Path) -> None:
    """--on-failure stop: after the last retry replay stops with exit 1, dead-letters nothing, and the group resumes
    at the failed event."""
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    rec = Recorder(tmp_path / "h", exit_code="1 if offset == 1 else 0")
    r = replay(cli, rec, "--group", "g", "--on-failure", "stop", "--retries", 1, "--backoff", "10ms")
    assert r.rc == 1
    assert any(line.startswith("evlog: error:") for line in r.err.splitlines()), r.err
    assert rec.offsets() == [0, 1, 1]
    assert dead_letters(cli) == []
    assert position(cli, "g") == 1
    again = Recorder(tmp_path / "h2")
    assert replay(cli, again, "--group", "g").rc == 0
    assert again.offsets() == [1, 2]


def test_the_json_summary_counts_events_successes_retries_and_dead_letters(cli: Evlog, tmp_path: Path) -> None:
    """--json prints {events, succeeded, retries, dead_lettered, elapsed_s}; retries count attempts, not events."""
    cli.batch([{"type": "t", "data": i} for i in range(5)])
    rec = Recorder(tmp_path / "h",
                   exit_code="65 if offset == 1 else (1 if offset in (2, 3) and attempt <= offset - 1 else 0)")
    r = replay(cli, rec, "--json", "--retries", 3, "--backoff", "10ms")
    assert r.rc == 3, r.err
    s = summary(r)
    assert set(s) == SUMMARY_KEYS
    assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (5, 4, 3, 1)
    assert isinstance(s["elapsed_s"], int | float) and s["elapsed_s"] >= 0
    assert "delivered" in r.err and "dead-lettered" in r.err, "no summary on stderr"


def test_all_succeeded_exits_0_with_a_full_summary(cli: Evlog, tmp_path: Path) -> None:
    """Every event delivered: exit 0 and the summary says so."""
    cli.batch([{"type": "t"}] * 4)
    r = replay(cli, Recorder(tmp_path / "h"), "--json")
    assert r.rc == 0
    s = summary(r)
    assert (s["events"], s["succeeded"], s["retries"], s["dead_lettered"]) == (4, 4, 0, 0)


def test_dry_run_runs_nothing_and_moves_no_checkpoint(cli: Evlog, tmp_path: Path) -> None:
    """--dry-run reports how many events would be delivered, runs no handler, and a later real run still gets them
    all."""
    cli.batch([{"type": "t"}] * 3)
    rec = Recorder(tmp_path / "h")
    r = replay(cli, rec, "--dry-run", "--json", "--group", "g")
    assert r.rc == 0
    assert summary(r)["events"] == 3
    assert rec.calls() == []
    assert position(cli, "g") in (None, 0)
    assert replay(cli, rec, "--group", "g").rc == 0
    assert rec.offsets() == [0, 1, 2]


def test_dry_run_lists_what_it_would_deliver_and_claims_no_delivery(cli: Evlog, tmp_path: Path) -> None:
    """The records a handler would get go to stdout, as its stdin would hold them; stderr says what would
    happen and never that anything was delivered; --json prints the summary alone, with nothing succeeded."""
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    rec = Recorder(tmp_path / "h")
    r = replay(cli, rec, "--dry-run", "--from", "1", "--batch", "5")
    assert r.rc == 0
    assert [json.loads(x)["offset"] for x in r.out.splitlines()] == [1, 2]
    assert "dry run: would deliver 2 events in 1 handler call; nothing was run" in r.err, r.err
    assert "delivered" not in r.err, r.err
    r = replay(cli, rec, "--dry-run", "--json")
    assert len(r.out.splitlines()) == 1
    s = summary(r)
    assert (s["events"], s["succeeded"], s["dry_run"]) == (3, 0, True)
    assert rec.calls() == []
    r = replay(cli, rec, "--dry-run", "--from", "3")  # nothing in range: still a dry run's summary
    assert r.out == "" and "dry run: would deliver 0 events in 0 handler calls" in r.err, r.err


# -- ranges, filters and groups ---------------------------------------------------------------------

def test_filters_and_ranges_choose_the_events(cli: Evlog, tmp_path: Path) -> None:
    """Only matching events in the range are delivered; the group still moves past the ones that did not match."""
    cli.batch([{"type": "a.x"}, {"type": "b.y"}, {"type": "a.z"}, {"type": "a.w"}, {"type": "b.v"}])
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--type", "a.*", "--group", "g").rc == 0
    assert rec.offsets() == [0, 2, 3]
    assert position(cli, "g") == 5
    ranged = Recorder(tmp_path / "r")
    assert replay(cli, ranged, "--from", 1, "--to", 3).rc == 0
    assert ranged.offsets() == [1, 2, 3]


@pytest.mark.parametrize("segment_bytes", ["1KiB", "64MiB"])
def test_a_group_replayed_up_to_an_offset_resumes_right_after_it(cli: Evlog, tmp_path: Path,
                                                                 segment_bytes: str) -> None:
    """After `replay --group g --to 2` the group's position is 3, and the next replay delivers from 3 on, skipping
    nothing (with one segment or many)."""
    cli.ok("init", "--segment-bytes", segment_bytes)
    cli.batch([{"type": "t", "data": {"i": i, "pad": "p" * 60}} for i in range(40)])
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--group", "g", "--to", 2).rc == 0
    assert rec.offsets() == [0, 1, 2]
    assert position(cli, "g") == 3
    assert replay(cli, rec, "--group", "g").rc == 0
    assert rec.offsets() == list(range(40)), "events were skipped or delivered twice"


def test_a_group_resumes_after_the_last_handled_event(cli: Evlog, tmp_path: Path) -> None:
    """A second replay with the same --group gets only the events appended since."""
    cli.batch([{"type": "t"}] * 3)
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec, "--group", "g").rc == 0
    cli.batch([{"type": "t"}] * 2)
    assert replay(cli, rec, "--group", "g").rc == 0
    assert rec.offsets() == [0, 1, 2, 3, 4]
    assert position(cli, "g") == 5


def test_concurrency_never_overlaps_a_key_and_keeps_its_order(cli: Evlog, tmp_path: Path) -> None:
    """--concurrency 4 runs handlers of different keys side by side, but the events of one key one at a time, in
    offset order."""
    rng = random.Random(7)
    keys = [rng.choice("abc") for _ in range(30)]  # with runs of one key next to each other
    cli.batch([{"type": "t", "key": k, "data": i} for i, k in enumerate(keys)])
    locks = tmp_path / "locks"
    locks.mkdir()
    rec = Recorder(tmp_path / "h", before_exit=f"""\
        lock = os.path.join({str(locks)!r}, key)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            record(DONE, offset=offset, overlap=True)
            sys.exit(65)
        # The handler's work: it lasts until a handler of another key runs beside it (or 0.5 s, when
        # no other key has events left), so that side-by-side runs are seen, not left to timing.
        running, deadline = 1, time.monotonic() + 0.5
        while running < 2 and time.monotonic() < deadline:
            running = max(running, len(os.listdir({str(locks)!r})))
            time.sleep(0.005)
        os.close(fd)
        os.unlink(lock)
        record(DONE, offset=offset, key=key, running=running, overlap=False)
        """)
    r = replay(cli, rec, "--concurrency", 4, "--group", "c", "--json")
    assert r.rc == 0, r.err
    done = rec.done()
    assert not [d for d in done if d["overlap"]], "two handlers of one key ran at once"
    assert sorted(d["offset"] for d in done) == list(range(30))
    for k in "abc":
        starts = [int(c["env"]["EVLOG_OFFSET"]) for c in rec.calls() if c["env"]["EVLOG_KEY"] == k]
        assert starts == [i for i, key in enumerate(keys) if key == k], f"key {k} out of order"
    most = max(d["running"] for d in done)
    assert 2 <= most <= 3, f"{most} handlers ran at once, with three keys"
    assert position(cli, "c") == 30


def test_with_concurrency_the_checkpoint_never_passes_an_unfinished_event(cli: Evlog, spawn: Spawner,
                                                                          tmp_path: Path,
                                                                          leftovers: list[int]) -> None:
    """While one key's handler is stuck, later events finish, but the saved position stays at the stuck event,
    through a kill -9, and the next run delivers it."""
    events = [{"type": "t", "key": "a"}] * 3 + [{"type": "t", "key": "slow"}] + \
        [{"type": "t", "key": k} for k in "bcd" * 4]
    cli.batch(events)
    release = tmp_path / "release"
    rec = Recorder(tmp_path / "h", before_exit=f"""\
        if key == "slow" and not wait_for({str(release)!r}, 30):
            sys.exit(1)
        record(DONE, offset=offset)
        """)
    bg = spawn("replay", "--group", "g", "--concurrency", 4, "--timeout", "60s", "--", *rec.argv)
    fast = set(range(len(events))) - {3}
    seen: list[int] = []

    def fast_done_and_saved() -> bool:
        pos = position(cli, "g")
        if pos is not None:
            seen.append(pos)
        return {d["offset"] for d in rec.done()} == fast and pos == 3

    wait_until(fast_done_and_saved, timeout=20, message=lambda: f"positions {seen}, done {rec.done()}")
    assert 3 in rec.offsets() and bg.poll() is None
    leftovers.extend(c["pid"] for c in rec.calls())
    bg.kill_group()
    assert bg.wait() == -signal.SIGKILL
    kill_pids(leftovers)
    assert max(seen) <= 3, f"the checkpoint passed the unfinished event 3: {seen}"
    assert position(cli, "g") == 3
    release.touch()
    second = Recorder(tmp_path / "second")
    assert replay(cli, second, "--group", "g", "--concurrency", 4).rc == 0
    assert 3 in second.offsets()
    assert set(second.offsets()) <= set(range(3, len(events)))
    assert position(cli, "g") == len(events)


def test_kill_9_mid_handler_redelivers_the_interrupted_event(cli: Evlog, spawn: Spawner, tmp_path: Path,
                                                             leftovers: list[int]) -> None:
    """A replay killed with SIGKILL while a handler runs: the same --group delivers that event again, skipping none."""
    cli.batch([{"type": "t", "data": i} for i in range(6)])
    release = tmp_path / "release"
    rec = Recorder(tmp_path / "h", before_exit=f"""\
        if offset == 3 and not wait_for({str(release)!r}, 30):
            sys.exit(1)
        record(DONE, offset=offset)
        """)
    bg = spawn("replay", "--group", "g", "--", *rec.argv)
    wait_until(lambda: 3 in rec.offsets(), message=lambda: f"calls {rec.offsets()}")
    wait_until(lambda: (position(cli, "g") or 0) >= 3, message="the checkpoint never reached the running event")
    leftovers.extend(c["pid"] for c in rec.calls())
    bg.kill_group()
    bg.wait()
    kill_pids(leftovers)
    first_done = {d["offset"] for d in rec.done()}
    assert first_done == {0, 1, 2}
    assert position(cli, "g") == 3, "the checkpoint passed the event whose handler was running"
    release.touch()
    second = Recorder(tmp_path / "second")
    assert replay(cli, second, "--group", "g").rc == 0
    assert 3 in second.offsets()
    assert first_done | set(second.offsets()) == set(range(6)), "an event was skipped"
    assert sorted(second.offsets()) == second.offsets()


# -- follow and signals ------------------------------------------------------------------------------

def test_follow_delivers_new_events_and_sigterm_waits_for_the_running_handler(cli: Evlog, spawn: Spawner,
                                                                              tmp_path: Path) -> None:
    """--follow delivers new events as they are appended; SIGTERM lets the running handler finish, then exits 143
    with the checkpoint past it."""
    cli.batch([{"type": "t"}] * 2)
    release = tmp_path / "release"
    rec = Recorder(tmp_path / "h", before_exit=f"""\
        if key == "slow":
            wait_for({str(release)!r})  # the handler's work, still going on when SIGTERM arrives
        record(DONE, offset=offset)
        """)
    bg = spawn("replay", "--follow", "--group", "g", "--", *rec.argv)
    wait_until(lambda: len(rec.done()) == 2, message=lambda: bg.stderr())
    cli.ok("append", "t", "n:=3")
    wait_until(lambda: len(rec.done()) == 3, message=lambda: bg.stderr())
    cli.ok("append", "t", "--key", "slow")
    wait_until(lambda: 3 in rec.offsets(), message=lambda: bg.stderr())
    assert bg.poll() is None
    bg.signal(signal.SIGTERM)
    release.touch()  # the handler can finish only now, after the signal: evlog must wait for it
    assert bg.wait(15) == 143, bg.stderr()
    assert 3 in {d["offset"] for d in rec.done()}, "evlog exited before its handler finished"
    assert rec.offsets() == [0, 1, 2, 3]
    assert position(cli, "g") == 4


def test_sigint_stops_a_following_replay_with_130(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """SIGINT stops `replay --follow` cleanly with exit 130, the checkpoint saved."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h")
    bg = spawn("replay", "--follow", "--group", "g", "--", *rec.argv)
    wait_until(lambda: rec.offsets() == [0], message=lambda: bg.stderr())
    bg.signal(signal.SIGINT)
    assert bg.wait(15) == 130, bg.stderr()
    assert "Traceback" not in bg.stderr()
    assert position(cli, "g") == 1


def test_replay_needs_a_command_and_an_existing_log(cli: Evlog, tmp_path: Path) -> None:
    """Without a command replay is a usage error (exit 2); without a log it is an error (exit 1) creating nothing."""
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec).rc == 1
    assert not cli.dir.exists()
    cli.ok("append", "t")
    assert cli("replay").rc == 2
    assert cli("replay", "--").rc == 2
    assert rec.calls() == []


# -- records that cannot be decoded ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
@pytest.mark.parametrize("options", [[], ["--batch", "3"], ["--concurrency", "3"], ["--where", "data != 7"]],
                         ids=["plain", "batch", "concurrency", "where"])
def test_replay_stops_at_a_record_it_cannot_decode(cli: Evlog, tmp_path: Path, fmt: str, options: list[str]) -> None:
    """A record that cannot be decoded stops replay with exit 5 and one line naming its offset; it is never
    delivered nor dead-lettered, the events before it are delivered, and the checkpoint stays before it."""
    cli.ok("init", "--format", fmt)
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    bad = append_undecodable(cli.dir)
    cli.batch([{"type": "t", "data": i} for i in range(4, 6)])
    rec = Recorder(tmp_path / "h")
    r = replay(cli, rec, "--group", "g", *options)
    assert_one_error(r, 5, f"offset {bad}")
    delivered = [x["offset"] for x in rec.records()]
    assert {0, 1, 2} <= set(delivered) and bad not in delivered
    assert position(cli, "g") == bad
    assert cli.ok("dlq", "count").strip() == "0"


# -- a handler that cannot be started ---------------------------------------------------------------

def test_a_handler_that_cannot_start_dead_letters_one_event_then_stops(cli: Evlog, tmp_path: Path) -> None:
    """A handler that cannot be started fails its first event as usual (retried, then dead-lettered); then the
    replay stops with one line naming the command and the reason, exit 1, the checkpoint right after that event."""
    cli.batch([{"type": "t", "data": i} for i in range(5)])
    missing = str(tmp_path / "no-such-handler")
    r = replay(cli, [missing], "--group", "g", "--retries", "1", "--backoff", "1ms")
    assert_one_error(r, 1, missing, "No such file or directory")
    [entry] = dead_letters(cli)
    assert entry["event"]["offset"] == 0 and entry["attempts"] == 2
    assert position(cli, "g") == 1


def test_a_handler_that_cannot_start_on_the_last_event_exits_3(cli: Evlog, tmp_path: Path) -> None:
    """When the event whose handler cannot start was the last one to deliver, replay ends as usual with exit 3,
    still saying why on one line."""
    cli.batch([{"type": "t", "data": 1}, {"type": "other"}])
    noexec = tmp_path / "noexec.sh"
    noexec.write_text("#!/bin/sh\nexit 0\n")
    r = replay(cli, [str(noexec)], "--retries", "0", "--type", "t")
    assert_one_error(r, 3, str(noexec), "Permission denied")
    assert len(dead_letters(cli)) == 1


def test_a_handler_that_cannot_start_stops_concurrent_deliveries_too(cli: Evlog, tmp_path: Path) -> None:
    """With --concurrency, a handler that cannot start still dead-letters exactly one event before stopping; the
    checkpoint moves at most past it (events started beside it stay undelivered, so it may stay before them)."""
    cli.batch([{"type": "t", "data": i} for i in range(20)])
    r = replay(cli, [str(tmp_path / "missing")], "--group", "g", "--retries", "0", "--concurrency", "4")
    assert_one_error(r, 1, "missing")
    [entry] = dead_letters(cli)
    assert (position(cli, "g") or 0) <= entry["event"]["offset"] + 1


@pytest.mark.parametrize("args", [["replay", "--timeout", "0s", "--", "true"],
                                  ["replay", "--timeout", "0ms", "--", "true"],
                                  ["hooks", "add", "h", "--timeout", "0s", "--", "true"],
                                  ["dlq", "retry", "--all", "--timeout", "0.0s"]])
def test_a_zero_timeout_is_a_usage_error(cli: Evlog, args: list[str]) -> None:
    """A handler timeout of zero cannot let any handler run: a usage error (exit 2)."""
    cli.ok("append", "t")
    assert_one_error(cli(*args), 2, "--timeout")
