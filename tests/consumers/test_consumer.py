"""The consumer behind replay, run and hooks (evlog.consumers.consumer), run in process against real handlers:
order, retries, dead letters, checkpoints over a finished prefix, filters, batches, keys under concurrency."""

from __future__ import annotations

import os

import pytest
from engine_helpers import append, make_log
from handler_helpers import Recorder

from evlog.consumers.checkpoints import Groups
from evlog.consumers.consumer import Consumer, Options
from evlog.consumers.deadletter import DeadLetters
from evlog.errors import HandlerStopped
from evlog.query.filters import Filter
from evlog.store.local import LocalLog
from evlog.store.reader import Range

NULL = os.open(os.devnull, os.O_WRONLY)  # the handlers' stdout and stderr go nowhere


def consume(log, rec: Recorder, **kw):
    opts = {k: kw.pop(k) for k in list(kw) if k in Options.__dataclass_fields__}
    opts.setdefault("backoff", 0.01)
    consumer = Consumer(LocalLog(log), Options(command=rec.argv, **opts), out_fd=NULL, err_fd=NULL, **kw)
    return consumer.run()


@pytest.fixture
def log(tmp_path):
    log = make_log(tmp_path / "log", "jsonl")
    append(log, [{"type": "a" if i % 2 else "b", "key": f"k{i % 3}", "data": i} for i in range(12)])
    return log


def test_every_event_is_delivered_in_order_and_the_group_moves_past_them(tmp_path, log):
    """One handler call per event, in offset order, each with its record on stdin; the checkpoint ends past
    the last."""
    rec = Recorder(tmp_path / "h")
    summary = consume(log, rec, group="g")
    assert rec.offsets() == list(range(12))
    assert [r["data"] for r in rec.records()] == list(range(12))
    assert (summary.events, summary.succeeded, summary.dead_lettered) == (12, 12, 0)
    assert Groups(log.dir).get("g") == 12


def test_a_group_resumes_after_its_checkpoint(tmp_path, log):
    """A second run with the same group gets only what came after the first."""
    consume(log, Recorder(tmp_path / "h1"), group="g")
    append(log, [{"type": "c", "data": 99}])
    rec = Recorder(tmp_path / "h2")
    consume(log, rec, group="g", rng=Range(start=0))  # the checkpoint wins over the range's start
    assert rec.offsets() == [12]


def test_a_failing_event_is_retried_then_dead_lettered_and_passed(tmp_path, log):
    """An event whose handler keeps failing is tried retries+1 times, dead-lettered, and the checkpoint moves
    past it; the others are delivered."""
    rec = Recorder(tmp_path / "h", exit_code="3 if offset == 4 else 0")
    summary = consume(log, rec, group="g", retries=2)
    assert rec.offsets().count(4) == 3
    assert (summary.succeeded, summary.dead_lettered, summary.retries) == (11, 1, 2)
    entries = DeadLetters(log.dir, 100).entries()
    assert [(e["event"]["offset"], e["attempts"], e["error"]) for e in entries] == [(4, 3, "exit status 3")]
    assert Groups(log.dir).get("g") == 12


def test_exit_65_is_dead_lettered_at_once(tmp_path, log):
    """EX_DATAERR (65) means the event can never succeed: no retries."""
    rec = Recorder(tmp_path / "h", exit_code="65 if offset == 2 else 0")
    summary = consume(log, rec, retries=5)
    assert rec.offsets().count(2) == 1 and summary.dead_lettered == 1


def test_on_failure_stop_keeps_the_checkpoint_before_the_event(tmp_path, log):
    """--on-failure stop raises HandlerStopped and leaves the group before the failed event."""
    rec = Recorder(tmp_path / "h", exit_code="1 if offset == 5 else 0")
    with pytest.raises(HandlerStopped):
        consume(log, rec, group="g", retries=0, on_failure="stop")
    assert Groups(log.dir).get("g") == 5
    assert DeadLetters(log.dir, 100).entries() == []


def test_events_a_filter_leaves_out_still_move_the_checkpoint(tmp_path, log):
    """Only matching events reach the handler; the group moves past the others too."""
    rec = Recorder(tmp_path / "h")
    consume(log, rec, group="g", flt=Filter(types=["a"]))
    assert rec.offsets() == [1, 3, 5, 7, 9, 11]
    assert Groups(log.dir).get("g") == 12


def test_batches_get_several_lines_and_the_batch_variables(tmp_path, log):
    """With batch N a call gets up to N records and EVLOG_FIRST_OFFSET/LAST_OFFSET/COUNT."""
    rec = Recorder(tmp_path / "h")
    consume(log, rec, batch=5)
    calls = rec.calls()
    assert [len(c["stdin"].splitlines()) for c in calls] == [5, 5, 2]
    assert [(c["env"]["EVLOG_FIRST_OFFSET"], c["env"]["EVLOG_LAST_OFFSET"], c["env"]["EVLOG_COUNT"])
            for c in calls] == [("0", "4", "5"), ("5", "9", "5"), ("10", "11", "2")]
    assert "EVLOG_OFFSET" not in calls[0]["env"]


def test_under_concurrency_a_keys_events_run_one_at_a_time_in_order(tmp_path, log):
    """With concurrency 3 events of one key never overlap and keep their order; all are delivered."""
    rec = Recorder(tmp_path / "h", before_exit="""\
        time.sleep(0.02)
        record(DONE, offset=offset, key=key, end=time.time())
        """)
    consume(log, rec, concurrency=3, group="g")
    starts = {int(c["env"]["EVLOG_OFFSET"]): (c["time"], c["env"]["EVLOG_KEY"]) for c in rec.calls()}
    ends = {d["offset"]: d["end"] for d in rec.done()}
    assert sorted(starts) == list(range(12))
    for key in ("k0", "k1", "k2"):
        mine = sorted(o for o, (_, k) in starts.items() if k == key)
        for a, b in zip(mine, mine[1:], strict=False):
            assert ends[a] <= starts[b][0], f"{key}: {b} started before {a} ended"
    assert Groups(log.dir).get("g") == 12


def test_a_dry_run_runs_nothing_and_saves_nothing(tmp_path, log):
    """A dry run counts what would be delivered; no handler runs and no checkpoint is written."""
    rec = Recorder(tmp_path / "h")
    consume(log, rec, group="g", dry_run=True)
    assert rec.calls() == []
    assert Groups(log.dir).get("g") is None


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, 12),
    ({"rng": Range(start=3, to=5)}, 3),
    ({"rng": Range(start=10, to=50)}, 2),
    ({"rng": Range(last=4)}, 4),
    ({"rng": Range(last=4, to=9)}, 2),
    ({"rng": Range(to=100)}, 12),
    ({"group": "g", "rng": Range(start=0)}, 7),       # the group's position (5) wins over --from 0
    ({"flt": Filter(["a"])}, None),                   # a filter: unknown before the run
    ({"rng": Range(since_us=0)}, None),
    ({"follow": True}, None),
])
def test_planned_is_what_the_run_goes_through_or_unknown(tmp_path, log, kw, expected):
    """A progress bar's total: the events of the range (from a group's position), or None when a filter, a
    time bound or following makes it unknown beforehand (it used to be the whole log, whatever the range)."""
    Groups(log.dir).set("g", 5)
    consumer = Consumer(LocalLog(log), Options(command=["true"]), out_fd=NULL, err_fd=NULL, **kw)
    assert consumer.planned() == expected
    if expected is not None and not kw.get("follow"):
        assert consumer.run().events == expected
