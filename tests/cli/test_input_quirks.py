"""Small input quirks a new user hit: each is either a clear usage error or behaves like its obvious twin.

- a FIELD given twice (`n=1 n=2`) is an error naming it, as HTTPie does for
  conflicting items, instead of keeping the last silently;
- a range whose end comes before its start is a usage error, not an empty read;
- `--where` of blanks means no filter, like `--where ''`;
- counts read as English: "1 event", "2 events", "1 attempt", "1 segment";
- times as people write them: a local time without a zone (like `date`),
  durations of several parts (`2h30m`) and weeks (`1w`).
"""

from __future__ import annotations

import json

import pytest
from conftest import Evlog, assert_one_error


@pytest.mark.parametrize("fields", [["n=1", "n=2"], ["n=1", "n:=2"], ["a=x", "b:=1", "a:=null"]])
def test_a_field_given_twice_is_a_usage_error(cli: Evlog, fields: list[str]) -> None:
    cli.ok("init")
    name = fields[0].split("=")[0]
    assert_one_error(cli("append", "a.b", *fields), 2, f"FIELD {name!r} is given twice")
    assert cli.records() == []


@pytest.mark.parametrize(("args", "says"), [
    (["--from", "10", "--to", "5"], "--to 5 is before --from 10"),
    (["--since", "2026-01-02", "--until", "2026-01-01"], "--until is before --since"),
    (["--since", "2026-01-02T00:00:00Z", "--until", "2026-01-02T00:00:00Z"], "--until is before --since"),
])
@pytest.mark.parametrize("command", ["read", "replay"])
def test_a_range_that_ends_before_it_starts_is_a_usage_error(cli: Evlog, args: list[str], says: str,
                                                             command: str) -> None:
    cli.ok("append", "a.b")
    handler = ["--", "true"] if command == "replay" else []
    assert_one_error(cli(command, *args, *handler), 2, says)


def test_a_range_of_one_offset_is_fine(cli: Evlog) -> None:
    for _ in range(3):
        cli.ok("append", "a.b")
    assert [json.loads(x)["offset"] for x in cli.ok("read", "--from", "1", "--to", "1").splitlines()] == [1]


@pytest.mark.parametrize("blank", ["", "   ", "\t \n"])
def test_a_blank_where_means_no_filter(cli: Evlog, blank: str) -> None:
    for i in range(3):
        cli.ok("append", "a.b", f"i:={i}")
    assert len(cli.ok("read", "--where", blank).splitlines()) == 3


def test_counts_read_as_english(cli: Evlog) -> None:
    cli.ok("init")
    r = cli("append", "--batch", input='{"type":"a"}\n')
    assert "appended 1 event, offsets 0..0" in r.err, r.err
    r = cli("append", "--batch", input='{"type":"a"}\n{"type":"b"}\n')
    assert "appended 2 events, offsets 1..2" in r.err, r.err
    assert "ok: 1 segment, 3 records checked" in cli.ok("verify") + cli("verify").err
    r = cli("replay", "--retries", "0", "--backoff", "10ms", "--from", "0", "--to", "0", "--", "false")
    assert "after 1 attempt:" in r.err, r.err
    r = cli("replay", "--retries", "1", "--backoff", "10ms", "--from", "1", "--to", "1", "--", "false")
    assert "after 2 attempts:" in r.err, r.err


def test_a_time_without_a_zone_is_local_time(cli: Evlog) -> None:
    """Under TZ=EST5 (UTC-5), 06:55 local is 11:55Z; a bare date stays midnight UTC."""
    cli.ok("append", "--batch", input="".join(
        json.dumps({"type": "t", "time": t, "data": t}) + "\n"
        for t in ("2026-12-03T00:00:00Z", "2026-12-03T11:54:00Z", "2026-12-03T11:56:00Z")))
    est = {**cli.env, "TZ": "EST5"}
    for since in ("2026-12-03 06:55", "2026-12-03T06:55", "2026-12-03T06:55:00"):
        got = [json.loads(x)["data"] for x in cli.ok("read", "--since", since, env=est).splitlines()]
        assert got == ["2026-12-03T11:56:00Z"], since
    got = [json.loads(x)["data"] for x in cli.ok("read", "--until", "2026-12-03 06:55", env=est).splitlines()]
    assert got == ["2026-12-03T00:00:00Z", "2026-12-03T11:54:00Z"]
    assert len(cli.ok("read", "--since", "2026-12-03", env=est).splitlines()) == 3


def test_durations_of_several_parts_and_weeks(cli: Evlog) -> None:
    cli.ok("append", "a.b")
    assert len(cli.ok("read", "--since", "1w").splitlines()) == 1
    assert len(cli.ok("read", "--since", "2h30m").splitlines()) == 1
    assert cli.ok("read", "--until", "1h30m") == ""
    assert_one_error(cli("read", "--since", "2h2h"), 2, "each unit once")


def test_a_stream_ends_with_a_summary_and_json_on_request(cli: Evlog) -> None:
    r = cli("append", "--stream", "--json", input='{"type":"a"}\n{"bad\n{"type":"b"}\n')
    assert r.rc == 3
    assert json.loads(r.out) == {"count": 2, "first": 0, "last": 1, "skipped": 1}
    assert "appended 2 events, offsets 0..1" in r.err
    assert "1 invalid line skipped" in r.err


@pytest.mark.parametrize("mode", ["--batch", "--stream"])
def test_reading_events_from_a_terminal_says_so(cli: Evlog, mode: str) -> None:
    """With a terminal on stdin, --batch/--stream say what they wait for and how to end; Ctrl-D ends."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cli.argv(["append", mode]), stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=cli.env, cwd=cli.tmp)
        os.close(slave)
        os.write(master, b'{"type":"typed.in"}\n')
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert b"reading events from the terminal, one JSON object per line; Ctrl-D to end" in err
    assert [r["type"] for r in cli.records()] == ["typed.in"]


def test_no_terminal_hint_in_a_pipe(cli: Evlog) -> None:
    r = cli("append", "--batch", input='{"type":"a"}\n')
    assert "terminal" not in r.err


def test_evlogs_own_options_may_follow_the_command(cli: Evlog, tmp_path) -> None:
    """`evlog read -d DIR` works as `evlog -d DIR read` does (it was "No such option: -d"); a handler's
    arguments after `--` are left alone; an option nobody knows is still a usage error."""
    other = tmp_path / "other"
    assert cli.ok("append", "x.y", "-d", other) == "0\n"
    cli.ok("append", "here")  # the default log (EVLOG_DIR) holds another event
    for args in (["read", "-d", other], ["read", f"--dir={other}"], ["read", f"-d{other}"],
                 ["read", "--format", "json", "-d", other, "-v"]):
        assert [json.loads(x)["type"] for x in cli.ok(*args).splitlines()] == ["x.y"], args
    assert cli.ok("groups", "list", "--json", "-d", other) == "[]\n"
    r = cli("replay", "-d", other, "--", "sh", "-c", 'test "$1" = -d', "sh", "-d")
    assert r.rc == 0, r.err
    assert_one_error(cli("read", "--nope", "-d", other), 2, "No such option: --nope")
    assert_one_error(cli("read", "-d"), 2, "")
