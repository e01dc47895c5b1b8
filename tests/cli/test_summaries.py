"""Every consumer run ends with a summary: `run` and `run --once` one line per hook (one JSON object each
with --log-format json), and an interrupted `replay -f` or `run` too, before its exit 130."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import Evlog, Spawner, wait_until
from handler_helpers import Recorder


def test_run_once_ends_with_one_summary_line_per_hook(cli: Evlog, tmp_path: Path) -> None:
    for i in range(3):
        cli.ok("append", "a.b" if i < 2 else "c.d")
    cli.ok("hooks", "add", "all", "--from-start", "--", *Recorder(tmp_path / "h1").argv)
    cli.ok("hooks", "add", "cees", "--type", "c.*", "--from-start", "--", *Recorder(tmp_path / "h2").argv)
    r = cli("run", "--once")
    assert r.rc == 0, r.err
    assert "hook all: delivered 3 of 3 events, 0 retries, 0 dead-lettered" in r.err, r.err
    assert "hook cees: delivered 1 of 1 event, 0 retries, 0 dead-lettered" in r.err, r.err
    cli.ok("append", "a.b")
    r = cli("--log-format", "json", "run", "--once")
    lines = [json.loads(x) for x in r.err.splitlines()]
    summaries = {x["hook"]: x for x in lines if "succeeded" in x}
    assert summaries["all"]["events"] == 1 and summaries["all"]["succeeded"] == 1
    assert summaries["cees"]["events"] == 0


def test_an_interrupted_follow_ends_with_its_summary(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """Ctrl-C on `replay -f` and on `run`: the handlers finish, the summary line comes, the exit is 130."""
    cli.ok("append", "a.b")
    cli.ok("append", "a.b")
    rec = Recorder(tmp_path / "h")
    replay = spawn("replay", "--follow", "--", *rec.argv)
    wait_until(lambda: len(rec.offsets()) == 2, 20, message="two deliveries")
    replay.signal(signal.SIGINT)
    assert replay.wait() == 130
    assert "delivered 2 of 2 events" in replay.stderr(), replay.stderr()

    cli.ok("hooks", "add", "h", "--from-start", "--", *Recorder(tmp_path / "h2").argv)
    run = spawn("run")
    wait_until(lambda: len(Recorder(tmp_path / "h2").offsets()) == 2, 20, message="two hook deliveries")
    run.signal(signal.SIGINT)
    assert run.wait() == 130
    assert "hook h: delivered 2 of 2 events" in run.stderr(), run.stderr()
