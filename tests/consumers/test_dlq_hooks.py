"""The dead-letter file, consumer groups, the hook registry and `evlog run` (SPEC 6 dlq, groups, hooks), end to end."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import Evlog, Result, Spawner, assert_one_error, wait_until
from engine_helpers import append_undecodable
from handler_helpers import Recorder, python_script

ENTRY_FIELDS = {"dlq_id", "failed_at", "group", "hook", "command", "attempts", "exit_code", "error", "stderr",
                "event"}
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
HOOK_ROW = {"name", "filters", "command", "position", "lag", "dead_letters", "paused"}


def dead_letters(cli: Evlog, *filters: object) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli.ok("dlq", "list", "--json", *filters).splitlines()]


def ids(entries: list[dict[str, Any]]) -> list[int]:
    return [e["dlq_id"] for e in entries]


def groups(cli: Evlog) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(cli.ok("groups", "list", "--json"))}


def hooks(cli: Evlog) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(cli.ok("hooks", "list", "--json"))}


def replay(cli: Evlog, argv: list[str], *options: object) -> Result:
    return cli("replay", *options, "--", *argv)


def keyed_handler(tmp_path: Path, name: str = "h") -> Recorder:
    """A handler that fails (exit 1) unless the file fixed/KEY exists; `fixed(key)` mends it for that key."""
    fixed = tmp_path / "fixed"
    fixed.mkdir(exist_ok=True)
    return Recorder(tmp_path / name, exit_code=f"0 if os.path.exists(os.path.join({str(fixed)!r}, key or '')) else 1")


def fix(tmp_path: Path, key: str) -> None:
    (tmp_path / "fixed" / key).touch()


def set_max_entries(cli: Evlog, n: int) -> None:
    settings = cli.dir / "evlog.toml"
    text, count = re.subn(r"(?m)^max_entries\s*=.*$", f"max_entries = {n}", settings.read_text())
    if not count:
        text += f"\n[dead_letter]\nmax_entries = {n}\n"
    settings.write_text(text)


# -- the dead-letter entry ---------------------------------------------------------------------------

def test_a_dead_letter_entry_has_exactly_the_spec_fields(cli: Evlog, tmp_path: Path) -> None:
    """An entry holds dlq_id, failed_at, group, hook, command, attempts, exit_code, error, stderr (tail) and the full
    event record, and besides them only the containment its handler ran under."""
    cli.batch([{"type": "order.created", "key": "k1", "subject": "s", "source": "shop", "data": {"n": 1}},
               {"type": "order.created", "key": "k2", "data": None}])
    records = cli.records()
    rec = Recorder(tmp_path / "h", exit_code="2", before_exit="""\
        sys.stderr.write(f"boom {offset} attempt {attempt}\\n")
        """)
    r = replay(cli, [*rec.argv, "an arg"], "--group", "g", "--retries", 1, "--backoff", "10ms")
    assert r.rc == 3, r.err
    entries = dead_letters(cli)
    assert len(entries) == 2
    for entry, record in zip(entries, records, strict=True):
        assert set(entry) == ENTRY_FIELDS | {"containment"}
        assert entry["containment"] == {"clean_env": False, "env": {}, "max_memory": None, "timeout": 30.0}
        assert isinstance(entry["dlq_id"], int)
        assert TIME_RE.fullmatch(entry["failed_at"]), entry["failed_at"]
        assert entry["group"] == "g" and entry["hook"] is None
        assert entry["command"] == [*rec.argv, "an arg"]
        assert (entry["attempts"], entry["exit_code"], entry["error"]) == (2, 2, "exit status 2")
        assert entry["stderr"] == f"boom {record['offset']} attempt 2\n"
        assert entry["event"] == record
    assert ids(entries)[0] < ids(entries)[1]


def test_the_entry_keeps_the_last_4_kib_of_stderr(cli: Evlog, tmp_path: Path) -> None:
    """A handler writing 10 KB to stderr leaves exactly its last 4096 bytes in the entry."""
    cli.ok("append", "t")
    blob = "".join(f"stderr line {i:05d}\n" for i in range(600))
    (tmp_path / "blob").write_text(blob)
    r = replay(cli, ["sh", "-c", f"cat '{tmp_path / 'blob'}' >&2; exit 1"], "--retries", 0)
    assert r.rc == 3
    [entry] = dead_letters(cli)
    assert entry["stderr"] == blob[-4096:]


def test_a_handler_that_cannot_start_is_dead_lettered_with_the_reason(cli: Evlog, tmp_path: Path) -> None:
    """A missing handler fails like any other, after its retries; the entry says why and has no exit code."""
    cli.ok("append", "t")
    missing = str(tmp_path / "no-such-handler")
    r = replay(cli, [missing], "--retries", 1, "--backoff", "10ms")
    assert r.rc == 3
    [entry] = dead_letters(cli)
    assert entry["exit_code"] is None and entry["attempts"] == 2
    assert "No such file or directory" in entry["error"] and missing in entry["error"]
    assert entry["command"] == [missing]


# -- dlq list, show, count, purge --------------------------------------------------------------------

@pytest.fixture
def six_entries(cli: Evlog, tmp_path: Path) -> list[dict[str, Any]]:
    """Three events dead-lettered twice: by `replay --group g1` (dlq_id 1-3), then by hook h1 (dlq_id 4-6)."""
    cli.batch([{"type": "a.x", "key": "k1"}, {"type": "b.y", "key": "k2"}, {"type": "a.z", "key": "k2"}])
    bad = Recorder(tmp_path / "bad", exit_code="65")
    assert replay(cli, bad.argv, "--group", "g1").rc == 3
    cli.ok("hooks", "add", "h1", "--from-start", "--", *bad.argv)
    assert cli("run", "--once").rc == 3
    entries = dead_letters(cli)
    assert len(entries) == 6
    return entries


def test_dlq_list_filters_by_event_hook_and_group(cli: Evlog, six_entries: list[dict[str, Any]]) -> None:
    """`dlq list` takes the event filters and --hook/--group; JSON Lines off a terminal, with or without --json."""
    everything = six_entries
    assert [(e["group"], e["hook"], e["event"]["offset"]) for e in everything] == \
        [("g1", None, 0), ("g1", None, 1), ("g1", None, 2), (None, "h1", 0), (None, "h1", 1), (None, "h1", 2)]
    assert ids(everything) == sorted(ids(everything))
    assert [json.loads(line) for line in cli.ok("dlq", "list").splitlines()] == everything
    by_id = {e["dlq_id"]: e for e in everything}
    assert dead_letters(cli, "--type", "a.*") == [by_id[i] for i in ids(everything) if by_id[i]["event"]["offset"]
                                                   in (0, 2)]
    assert [e["event"]["offset"] for e in dead_letters(cli, "--key", "k2")] == [1, 2, 1, 2]
    assert dead_letters(cli, "--hook", "h1") == everything[3:]
    assert dead_letters(cli, "--group", "g1") == everything[:3]
    assert [e["event"]["offset"] for e in dead_letters(cli, "--type", "a.*", "--hook", "h1")] == [0, 2]
    assert dead_letters(cli, "--where", "offset == 1", "--group", "g1") == [everything[1]]
    assert dead_letters(cli, "--hook", "nobody") == []


def test_dlq_show_and_count(cli: Evlog, six_entries: list[dict[str, Any]]) -> None:
    """`dlq show ID` prints that entry as JSON off a terminal; `dlq count` prints a bare number; an unknown id is
    an error."""
    entry = six_entries[4]
    assert json.loads(cli.ok("dlq", "show", entry["dlq_id"])) == entry
    assert cli.ok("dlq", "count") == "6\n"
    missing = max(ids(six_entries)) + 100
    r = cli("dlq", "show", missing)
    assert r.rc == 1 and str(missing) in r.err


def test_dlq_purge_by_id_before_a_time_and_all(cli: Evlog, six_entries: list[dict[str, Any]]) -> None:
    """`dlq purge` removes the given ids, the entries that failed before TIME, or all of them."""
    first, second, *rest = ids(six_entries)
    cli.ok("dlq", "purge", second, rest[0])
    assert ids(dead_letters(cli)) == [first, *rest[1:]]
    cli.ok("dlq", "purge", "--before", "2000-01-01")
    assert cli.ok("dlq", "count") == "4\n"
    cli.ok("dlq", "purge", "--before", "1h")
    assert cli.ok("dlq", "count") == "4\n"
    cli.ok("dlq", "purge", "--before", "2999-01-01")
    assert cli.ok("dlq", "count") == "0\n"
    assert cli("dlq", "purge").rc == 2


def test_dlq_purge_all_empties_the_file(cli: Evlog, six_entries: list[dict[str, Any]]) -> None:
    """`dlq purge --all` removes every entry."""
    cli.ok("dlq", "purge", "--all")
    assert dead_letters(cli) == []
    assert cli.ok("dlq", "count") == "0\n"


def test_dlq_ids_keep_increasing_after_a_purge(cli: Evlog, six_entries: list[dict[str, Any]], tmp_path: Path) -> None:
    """dlq_id only increases: an entry added after a purge never reuses an id an earlier entry had."""
    cli.ok("dlq", "purge", "--all")
    cli.ok("append", "t")
    assert replay(cli, ["sh", "-c", "exit 65"], "--from", 3).rc == 3
    [entry] = dead_letters(cli)
    assert entry["dlq_id"] > max(ids(six_entries)), f"dlq_id {entry['dlq_id']} was used before"


# -- dlq retry ------------------------------------------------------------------------------------------

def test_dlq_retry_removes_what_now_succeeds_and_bumps_the_attempts_of_the_rest(cli: Evlog, tmp_path: Path) -> None:
    """`dlq retry` runs each chosen entry's own command again: successes leave the file, failures stay with one more
    attempt; --group chooses, `-- COMMAND` replaces the handler; exit 0 only when all succeeded."""
    cli.batch([{"type": "t", "key": k, "data": k} for k in ("k1", "k2", "k3")])
    records = cli.records()
    h = keyed_handler(tmp_path)
    assert replay(cli, h.argv, "--group", "g", "--retries", 0).rc == 3
    assert replay(cli, h.argv, "--group", "other", "--retries", 0).rc == 3
    g1, g2, g3, o1, o2, o3 = ids(dead_letters(cli))
    fix(tmp_path, "k1")
    calls_before = len(h.calls())
    r = cli("dlq", "retry", "--group", "g")
    assert r.rc == 3, r.err
    retried = h.calls()[calls_before:]
    assert sorted(json.loads(c["stdin"])["offset"] for c in retried) == [0, 1, 2]
    assert {json.loads(c["stdin"])["offset"]: json.loads(c["stdin"]) for c in retried}[0] == records[0]
    left = {e["dlq_id"]: e for e in dead_letters(cli)}
    assert sorted(left) == [g2, g3, o1, o2, o3]
    assert [left[i]["attempts"] for i in (g2, g3, o1, o2, o3)] == [2, 2, 1, 1, 1]
    assert left[g2]["error"] == "exit status 1" and left[g2]["exit_code"] == 1

    other = Recorder(tmp_path / "other")
    r = cli("dlq", "retry", g2, "--", *other.argv)
    assert r.rc == 0, r.err
    assert [json.loads(c["stdin"]) for c in other.calls()] == [records[1]]
    assert sorted(e["dlq_id"] for e in dead_letters(cli)) == [g3, o1, o2, o3]

    r = cli("dlq", "retry", "--all")
    assert r.rc == 3
    left = {e["dlq_id"]: e for e in dead_letters(cli)}
    assert sorted(left) == [g3, o2, o3]
    assert [left[i]["attempts"] for i in (g3, o2, o3)] == [3, 2, 2]

    fix(tmp_path, "k2")
    fix(tmp_path, "k3")
    assert cli("dlq", "retry", o2, o3, g3).rc == 0
    assert dead_letters(cli) == []


def test_dlq_retry_needs_a_choice_and_known_ids(cli: Evlog, six_entries: list[dict[str, Any]]) -> None:
    """`dlq retry` with nothing chosen is a usage error; an unknown id is an error; neither touches the file."""
    assert cli("dlq", "retry").rc == 2
    assert cli("dlq", "retry", max(ids(six_entries)) + 100).rc == 1
    assert dead_letters(cli) == six_entries


def test_dlq_retry_by_hook_runs_only_that_hooks_entries(cli: Evlog, six_entries: list[dict[str, Any]],
                                                        tmp_path: Path) -> None:
    """`dlq retry --hook NAME` retries only that hook's entries."""
    ok = Recorder(tmp_path / "ok")
    assert cli("dlq", "retry", "--hook", "h1", "--", *ok.argv).rc == 0
    assert sorted(json.loads(c["stdin"])["offset"] for c in ok.calls()) == [0, 1, 2]
    assert dead_letters(cli) == six_entries[:3]


def test_a_full_dead_letter_file_stops_the_consumer_before_advancing(cli: Evlog, tmp_path: Path) -> None:
    """With [dead_letter] max_entries = 2 the third failure stops replay with exit 1, the file holds 2 entries, the
    group stays at the failed event, and nothing is lost."""
    cli.ok("init")
    set_max_entries(cli, 2)
    cli.batch([{"type": "t", "data": i} for i in range(5)])
    bad = Recorder(tmp_path / "bad", exit_code="1")
    r = replay(cli, bad.argv, "--group", "g", "--retries", 0)
    assert r.rc == 1, r.err
    assert "evlog: error:" in r.err and "full" in r.err
    assert bad.offsets() == [0, 1, 2]
    assert [e["event"]["offset"] for e in dead_letters(cli)] == [0, 1]
    assert groups(cli)["g"]["position"] == 2
    assert replay(cli, bad.argv, "--group", "g", "--retries", 0).rc == 1
    assert cli.ok("dlq", "count") == "2\n"
    cli.ok("dlq", "purge", "--all")
    good = Recorder(tmp_path / "good")
    assert replay(cli, good.argv, "--group", "g").rc == 0
    assert good.offsets() == [2, 3, 4]


# -- groups --------------------------------------------------------------------------------------------

def test_groups_list_reset_and_delete(cli: Evlog, tmp_path: Path) -> None:
    """`groups list` shows position and lag; `groups reset` moves a checkpoint (--to, --to-time, --to-end,
    --to-start) and the next replay starts there; `groups delete` removes it."""
    cli.batch([{"type": "t"}] * 3)
    cli.batch([{"type": "t"}] * 2)
    records = cli.records()
    rec = Recorder(tmp_path / "h")
    assert replay(cli, rec.argv, "--group", "g").rc == 0
    assert json.loads(cli.ok("groups", "list", "--json")) == [{"name": "g", "position": 5, "lag": 0}]
    cli.batch([{"type": "t"}] * 2)
    assert groups(cli)["g"] == {"name": "g", "position": 5, "lag": 2}
    text = cli.ok("groups", "list")
    assert "g" in text and "5" in text and "2" in text

    cli.ok("groups", "reset", "g", "--to", 1)
    assert groups(cli)["g"]["position"] == 1
    assert replay(cli, rec.argv, "--group", "g").rc == 0
    assert rec.offsets()[5:] == [1, 2, 3, 4, 5, 6]
    cli.ok("groups", "reset", "g", "--to-start")
    assert groups(cli)["g"] == {"name": "g", "position": 0, "lag": 7}
    cli.ok("groups", "reset", "g", "--to-time", records[3]["time"])
    assert groups(cli)["g"]["position"] == 3
    cli.ok("groups", "reset", "g", "--to-end")
    assert groups(cli)["g"] == {"name": "g", "position": 7, "lag": 0}

    cli.ok("groups", "delete", "g")
    assert groups(cli) == {}
    assert cli("groups", "delete", "g").rc == 1
    assert replay(cli, rec.argv, "--group", "g").rc == 0
    assert rec.offsets()[11:] == list(range(7)), "a deleted group starts afresh"


def test_groups_reset_needs_exactly_one_target_and_a_known_group(cli: Evlog, tmp_path: Path) -> None:
    """`groups reset` with no target or two targets is a usage error (exit 2); an unknown group is exit 1."""
    cli.ok("append", "t")
    assert replay(cli, Recorder(tmp_path / "h").argv, "--group", "g").rc == 0
    assert cli("groups", "reset", "g").rc == 2
    assert cli("groups", "reset", "g", "--to", 0, "--to-end").rc == 2
    assert cli("groups", "reset", "nope", "--to", 0).rc == 1
    assert groups(cli)["g"]["position"] == 1


# -- hooks -----------------------------------------------------------------------------------------------

def test_hooks_add_list_show_pause_resume_remove(cli: Evlog, tmp_path: Path) -> None:
    """A hook is registered, listed with its filters, command, position, lag, dead letters and state, shown,
    paused (run skips it, its checkpoint stays), resumed and removed."""
    cli.batch([{"type": "order.created"}] * 3)
    rec = Recorder(tmp_path / "h")
    cli.ok("hooks", "add", "audit", "--type", "order.*", "--retries", 2, "--timeout", "5s", "--", *rec.argv, "x y")
    [row] = json.loads(cli.ok("hooks", "list", "--json"))
    assert set(row) == HOOK_ROW
    assert (row["name"], row["command"], row["position"], row["lag"], row["dead_letters"], row["paused"]) == \
        ("audit", [*rec.argv, "x y"], 3, 0, 0, False)
    assert "order.*" in json.dumps(row["filters"])
    shown = cli.ok("hooks", "show", "audit")
    assert "audit" in shown and rec.argv[0] in shown
    assert cli("hooks", "show", "nope").rc == 1

    cli.ok("hooks", "pause", "audit")
    assert hooks(cli)["audit"]["paused"] is True
    cli.batch([{"type": "order.created"}, {"type": "user.created"}, {"type": "order.paid"}])
    assert cli("run", "--once").rc == 0
    assert rec.calls() == []
    assert hooks(cli)["audit"]["lag"] == 3
    cli.ok("hooks", "resume", "audit")
    assert hooks(cli)["audit"]["paused"] is False
    assert cli("run", "--once").rc == 0
    assert rec.offsets() == [3, 5]
    assert [c["argv"] for c in rec.calls()] == [["x y"], ["x y"]]
    assert (hooks(cli)["audit"]["position"], hooks(cli)["audit"]["lag"]) == (6, 0)

    cli.ok("hooks", "remove", "audit")
    assert hooks(cli) == {}
    assert cli("hooks", "remove", "audit").rc == 1
    cli.ok("append", "order.created")
    assert cli("run", "--once").rc == 0
    assert rec.offsets() == [3, 5]


def test_hooks_list_text_shows_name_filters_command_position_lag_and_dead_letters(cli: Evlog) -> None:
    """The plain `hooks list` shows each hook's name, filters, command, position, lag and dead-letter count."""
    cli.batch([{"type": "order.created"}] * 3)
    cli.ok("hooks", "add", "audit", "--type", "order.*", "--key", "k-42", "--", "echo", "audit-cmd")
    [line] = cli.ok("hooks", "list").splitlines()
    for shown in ("audit", "audit-cmd", "3", "0"):
        assert shown in line, f"{shown!r} missing from {line!r}"
    assert "order.*" in line and "k-42" in line, f"the filters are missing from {line!r}"


def test_a_new_hook_gets_new_events_only_unless_from_start(cli: Evlog, tmp_path: Path) -> None:
    """`hooks add` starts at the end of the log; with --from-start the hook gets the existing events too."""
    cli.batch([{"type": "t"}] * 2)
    new_only, everything = Recorder(tmp_path / "new"), Recorder(tmp_path / "all")
    cli.ok("hooks", "add", "new-only", "--", *new_only.argv)
    cli.ok("hooks", "add", "everything", "--from-start", "--", *everything.argv)
    cli.ok("append", "t")
    assert cli("run", "--once").rc == 0
    assert new_only.offsets() == [2]
    assert everything.offsets() == [0, 1, 2]
    assert cli("run", "--once").rc == 0
    assert new_only.offsets() == [2] and everything.offsets() == [0, 1, 2]


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a.b", "x" * 65, "caf\u00e9"])
def test_a_bad_hook_name_is_a_usage_error(cli: Evlog, name: str) -> None:
    """A hook name that is not 1-64 of [A-Za-z0-9_-] is refused with exit 2 and nothing registered."""
    cli.ok("init")
    r = cli("hooks", "add", name, "--", "true")
    assert r.rc == 2, r.err
    assert hooks(cli) == {}


def test_good_hook_names_are_accepted(cli: Evlog) -> None:
    """Names of 1 to 64 of letters, digits, `_` and `-` are accepted."""
    cli.ok("init")
    names = ["a", "x" * 64, "Mail_er-2", "0", "_-"]
    for name in names:
        cli.ok("hooks", "add", name, "--", "true")
    assert sorted(hooks(cli)) == sorted(names)


def test_adding_a_hook_name_twice_is_an_error(cli: Evlog) -> None:
    """Adding a name that exists is exit 1 and leaves the first hook as it was."""
    cli.ok("init")
    cli.ok("hooks", "add", "dup", "--", "echo", "first")
    r = cli("hooks", "add", "dup", "--", "echo", "second")
    assert r.rc == 1 and "dup" in r.err
    assert hooks(cli)["dup"]["command"] == ["echo", "first"]


def test_hooks_add_needs_a_command(cli: Evlog) -> None:
    """`hooks add NAME` without a command is a usage error."""
    cli.ok("init")
    assert cli("hooks", "add", "x").rc == 2
    assert hooks(cli) == {}


def test_a_broken_hooks_toml_is_an_error_naming_the_line(cli: Evlog) -> None:
    """A hooks.toml with a syntax error makes `hooks list` and `run` fail with exit 1, naming the line."""
    cli.ok("init")
    (cli.dir / "hooks.toml").write_text('[hooks.a]\ncommand = ["true"]\nretries = = 3\n')
    for args in (("hooks", "list"), ("run", "--once")):
        r = cli(*args)
        assert r.rc == 1, r.err
        assert "hooks.toml" in r.err and "line 3" in r.err, r.err


def test_a_hooks_toml_with_a_bad_value_is_an_error_naming_the_line(cli: Evlog) -> None:
    """A well-formed hooks.toml with an ill-typed setting is an error naming the line and the problem."""
    cli.ok("init")
    (cli.dir / "hooks.toml").write_text('[hooks.a]\ncommand = ["true"]\nretries = "three"\n')
    r = cli("hooks", "list")
    assert r.rc == 1, r.err
    assert "hooks.toml" in r.err and "retries" in r.err
    assert "line 3" in r.err, f"the line is not named: {r.err!r}"


# -- evlog run ---------------------------------------------------------------------------------------

def test_run_once_runs_hooks_as_independent_consumers(cli: Evlog, tmp_path: Path) -> None:
    """A failing hook does not block the others: they get every event, its events are dead-lettered under its name,
    and `run --once` exits 3."""
    cli.batch([{"type": "order.created", "data": 0}, {"type": "user.created", "data": 1},
               {"type": "order.paid", "data": 2}])
    records = cli.records()
    good, orders, bad = Recorder(tmp_path / "good"), Recorder(tmp_path / "orders"), Recorder(tmp_path / "bad",
                                                                                             exit_code="1")
    cli.ok("hooks", "add", "bad", "--from-start", "--retries", 1, "--", *bad.argv)
    cli.ok("hooks", "add", "good", "--from-start", "--", *good.argv)
    cli.ok("hooks", "add", "orders", "--from-start", "--type", "order.*", "--", *orders.argv)
    r = cli("run", "--once")
    assert r.rc == 3, r.err
    assert good.records() == records
    assert orders.offsets() == [0, 2]
    assert sorted(bad.offsets()) == [0, 0, 1, 1, 2, 2]
    entries = dead_letters(cli)
    assert [(e["hook"], e["group"], e["event"]["offset"], e["attempts"]) for e in entries] == \
        [("bad", None, 0, 2), ("bad", None, 1, 2), ("bad", None, 2, 2)]
    assert all(e["command"] == bad.argv for e in entries)
    rows = hooks(cli)
    assert {n: (rows[n]["position"], rows[n]["lag"], rows[n]["dead_letters"]) for n in rows} == \
        {"bad": (3, 0, 3), "good": (3, 0, 0), "orders": (3, 0, 0)}


def test_run_named_hooks_only(cli: Evlog, tmp_path: Path) -> None:
    """`run NAME` delivers to that hook only; the others keep their positions; an unknown name is an error."""
    cli.ok("append", "t")
    one, two = Recorder(tmp_path / "one"), Recorder(tmp_path / "two")
    cli.ok("hooks", "add", "one", "--from-start", "--", *one.argv)
    cli.ok("hooks", "add", "two", "--from-start", "--", *two.argv)
    assert cli("run", "one", "--once").rc == 0
    assert (one.offsets(), two.offsets()) == ([0], [])
    assert hooks(cli)["two"]["lag"] == 1
    assert cli("run", "nobody", "--once").rc == 1
    assert two.offsets() == []


def test_a_slow_hook_does_not_delay_a_fast_one(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """While one hook's handler sleeps, `evlog run` keeps delivering new events to another; SIGTERM then exits 143
    after the sleeping handler finished."""
    release = tmp_path / "release"
    slow = Recorder(tmp_path / "slow", before_exit=f"""\
        if not wait_for({str(release)!r}, 30):
            sys.exit(1)
        record(DONE, offset=offset)
        """)
    fast = Recorder(tmp_path / "fast")
    cli.ok("init")
    cli.ok("hooks", "add", "slow", "--", *slow.argv)
    cli.ok("hooks", "add", "fast", "--", *fast.argv)
    bg = spawn("run")
    cli.ok("append", "t", "n:=0")
    wait_until(lambda: slow.offsets() == [0] and fast.offsets() == [0], message=lambda: bg.stderr())
    for n in range(1, 4):
        cli.ok("append", "t", f"n:={n}")
    wait_until(lambda: fast.offsets() == [0, 1, 2, 3], message=lambda: bg.stderr())
    assert slow.offsets() == [0] and slow.done() == [], "the slow hook was not still busy"
    assert bg.poll() is None
    bg.signal(signal.SIGTERM)
    release.touch()
    assert bg.wait(20) == 143, bg.stderr()
    assert [d["offset"] for d in slow.done()] == [0]


def test_run_with_a_full_dead_letter_file_stops_that_hook_with_exit_1(cli: Evlog, tmp_path: Path) -> None:
    """A hook whose failure finds the dead-letter file full stops before its event (exit 1); others go on."""
    cli.ok("init")
    set_max_entries(cli, 1)
    cli.batch([{"type": "t"}] * 3)
    bad, good = Recorder(tmp_path / "bad", exit_code="65"), Recorder(tmp_path / "good")
    cli.ok("hooks", "add", "bad", "--from-start", "--", *bad.argv)
    cli.ok("hooks", "add", "good", "--from-start", "--", *good.argv)
    r = cli("run", "--once")
    assert r.rc == 1, r.err
    assert "full" in r.err
    assert good.offsets() == [0, 1, 2]
    assert [e["event"]["offset"] for e in dead_letters(cli)] == [0]
    assert hooks(cli)["bad"]["position"] == 1


def test_a_hook_script_sees_its_event(cli: Evlog, tmp_path: Path) -> None:
    """A hook's handler gets the record on stdin and the per-event variables, like replay's."""
    handler = python_script(tmp_path / "hook.py", f"""\
        rec = json.loads(sys.stdin.read())
        record({str(tmp_path / 'seen.jsonl')!r}, rec=rec, env=evlog_env())
        """)
    cli.ok("init")
    cli.ok("hooks", "add", "see", "--", str(handler))
    cli.ok("append", "user.created", "--key", "u1", "name=ann")
    assert cli("run", "--once").rc == 0
    [seen] = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert seen["rec"] == cli.records()[0]
    env = seen["env"]
    assert (env["EVLOG_OFFSET"], env["EVLOG_TYPE"], env["EVLOG_KEY"], env["EVLOG_ATTEMPT"]) == \
        ("0", "user.created", "u1", "1")


def test_run_stops_a_hook_at_a_record_it_cannot_decode(cli: Evlog, tmp_path: Path) -> None:
    """`run --once` stops a hook at a record that cannot be decoded: exit 5, one line naming the hook and the
    offset, the events before it delivered, its checkpoint right before it."""
    cli.batch([{"type": "t", "data": i} for i in range(2)])
    bad = append_undecodable(cli.dir)
    cli.batch([{"type": "t", "data": 3}])
    rec = Recorder(tmp_path / "h")
    cli.ok("hooks", "add", "h", "--from-start", "--", *rec.argv)
    assert_one_error(cli("run", "--once"), 5, "hook h", f"offset {bad}")
    assert rec.offsets() == [0, 1]
    assert groups(cli)["hook.h"]["position"] == bad


# -- hand-edited files ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["5", "[1,2]", '{"dlq_id":1,"attempts":"many","event":{}}', '"x"', "null",
                                   '{"dlq_id":"one"}'])
def test_a_malformed_dead_letter_entry_is_an_error_naming_the_file_and_line(cli: Evlog, tmp_path: Path,
                                                                           entry: str) -> None:
    """A dead-letter file with an entry that is valid JSON but not an entry makes every dlq command and a
    dead-lettering replay fail with one line naming the file and the line (exit 1), never a traceback."""
    cli.ok("append", "t")
    (cli.dir / "dead-letter.jsonl").write_text("\n" + entry + "\n")
    bad = Recorder(tmp_path / "bad", exit_code="65")
    for args in (["dlq", "list"], ["dlq", "count"], ["dlq", "show", "1"], ["dlq", "retry", "--all"],
                 ["dlq", "purge", "--all"], ["hooks", "list"], ["replay", "--", *bad.argv]):
        assert_one_error(cli(*args), 1, "dead-letter.jsonl", "line 2")


@pytest.mark.parametrize(("setting", "key"), [
    ("batch = 0", "batch"), ("batch = -3", "batch"), ("retries = -1", "retries"), ('timeout = "0s"', "timeout"),
    ('timeout = "soon"', "timeout"), ('timeout = "99999999999999999999d"', "timeout"), ('where = "data =="', "where"),
    ('types = ["a.>.b"]', "types"), ('command = [""]', "command"), ("paused = 1", "paused"),
])
def test_a_hooks_toml_with_a_value_out_of_range_names_the_file_hook_and_key(cli: Evlog, setting: str,
                                                                           key: str) -> None:
    """A hooks.toml value of the right type but out of range is an error naming the file, the hook and the key."""
    cli.ok("init")
    lines = {"command": 'command = ["true"]'}
    lines[setting.split(" ")[0]] = setting
    (cli.dir / "hooks.toml").write_text("[hooks.a]\n" + "\n".join(lines.values()) + "\n")
    for args in (("hooks", "list"), ("run", "--once")):
        assert_one_error(cli(*args), 1, "hooks.toml", "'a'", key)


@pytest.mark.parametrize("text", [b'[hooks.a]\ncommand = ["\xff"]\n',
                                  b"[hooks.a]\ncommand = " + b"[" * 5000 + b"]" * 5000])
def test_a_hooks_toml_that_is_not_utf8_or_too_deep_names_the_file(cli: Evlog, text: bytes) -> None:
    """A hooks.toml that is not UTF-8, or nests beyond what a parser can follow, is an error naming the file."""
    cli.ok("init")
    (cli.dir / "hooks.toml").write_bytes(text)
    assert_one_error(cli("hooks", "list"), 1, "hooks.toml")


@pytest.mark.parametrize("text", [b'{"position":-1}', b'{"position":"x"}', b"[]", b"\xff"])
def test_an_unreadable_checkpoint_is_an_error_naming_the_file(cli: Evlog, tmp_path: Path, text: bytes) -> None:
    """A group's checkpoint file that does not hold a position of 0 or more is an error naming it (exit 1)."""
    cli.ok("append", "t")
    (cli.dir / "groups").mkdir()
    (cli.dir / "groups" / "g.json").write_bytes(text)
    rec = Recorder(tmp_path / "h")
    assert_one_error(replay(cli, rec.argv, "--group", "g"), 1, "g.json")
    assert rec.calls() == []


# -- names that would reach outside the log ---------------------------------------------------------

@pytest.mark.parametrize("name", ["../../victim", "../victim", "/abs/victim", "a/../../victim", "..", ".", ""])
def test_group_names_cannot_reach_outside_the_log(cli: Evlog, tmp_path: Path, name: str) -> None:
    """`groups reset` and `groups delete` refuse a name that is not a group name (exit 2) and touch no file."""
    cli.ok("append", "t")
    victim = tmp_path / "victim.json"
    victim.write_text("keep\n")
    name = name.replace("/abs/victim", str(tmp_path / "victim"))
    for args in (["groups", "delete", name], ["groups", "reset", name, "--to", "0"],
                 ["replay", "--group", name, "--", "true"]):
        assert_one_error(cli(*args), 2)
    assert victim.read_text() == "keep\n"


@pytest.mark.parametrize("command", ["show", "remove", "pause", "resume"])
def test_hook_names_cannot_reach_outside_the_log(cli: Evlog, tmp_path: Path, command: str) -> None:
    """`hooks show/remove/pause/resume` and `run` refuse a name that is not a hook name (exit 2)."""
    cli.ok("init")
    victim = tmp_path / "victim.json"
    victim.write_text("keep\n")
    assert_one_error(cli("hooks", command, "../../victim"), 2)
    assert_one_error(cli("run", "--once", "../../victim"), 2)
    assert victim.read_text() == "keep\n"


def test_hook_checkpoints_can_still_be_reset_by_group_name(cli: Evlog, tmp_path: Path) -> None:
    """A hook's checkpoint is the group `hook.NAME`, which `groups reset` accepts."""
    cli.batch([{"type": "t"}] * 3)
    cli.ok("hooks", "add", "h", "--", "true")
    cli.ok("groups", "reset", "hook.h", "--to", "1")
    assert groups(cli)["hook.h"]["position"] == 1


def test_groups_reset_past_the_end_of_the_log_is_refused(cli: Evlog) -> None:
    """`groups reset --to` beyond the log's next offset is a usage error (exit 2) naming that offset; the
    checkpoint stays; the next offset itself (nothing new yet) is accepted."""
    cli.batch([{"type": "t"}] * 3)
    cli.ok("hooks", "add", "h", "--from-start", "--", "true")
    assert_one_error(cli("groups", "reset", "hook.h", "--to", "4"), 2, "3")
    assert_one_error(cli("groups", "reset", "hook.h", "--to", str(2**70)), 2, "3")
    assert groups(cli)["hook.h"]["position"] == 0
    cli.ok("groups", "reset", "hook.h", "--to", "3")
    assert groups(cli)["hook.h"]["position"] == 3


def test_a_hook_that_cannot_start_stops_after_one_dead_letter_and_others_go_on(cli: Evlog, tmp_path: Path) -> None:
    """`run --once`: a hook whose command cannot start dead-letters one event and stops (exit 1, one line naming
    the hook and the command); another hook still gets every event."""
    cli.batch([{"type": "t"}] * 4)
    good = Recorder(tmp_path / "good")
    cli.ok("hooks", "add", "good", "--from-start", "--", *good.argv)
    r = cli("hooks", "add", "broken", "--from-start", "--retries", "0", "--", str(tmp_path / "missing"))
    assert r.rc == 0 and "missing" in r.err  # a warning: the command is not there
    r = cli("run", "--once")
    assert r.rc == 1
    errors = [line for line in r.err.splitlines() if line.startswith("evlog: error: ")]
    assert len(errors) == 1 and "hook broken" in errors[0] and "missing" in errors[0], r.err
    assert "hook good: delivered 4 of 4 events" in r.err  # the other hook's summary (the broken one: its error)
    assert len(r.err.splitlines()) == 2, r.err
    assert [e["hook"] for e in dead_letters(cli)] == ["broken"]
    assert good.offsets() == [0, 1, 2, 3]
    assert groups(cli)["hook.broken"]["position"] == 1


def test_hooks_add_stores_a_relative_command_path_as_absolute(cli: Evlog, tmp_path: Path) -> None:
    """`hooks add NAME -- ./handle.sh` stores the absolute path, so `run` works from any directory; a bare
    command name is kept as given (looked up in PATH)."""
    cli.ok("init")
    python_script(tmp_path / "handle.sh", "sys.exit(0)\n")
    r = cli("hooks", "add", "rel", "--", "./handle.sh", "arg")
    assert r.rc == 0 and "warning" not in r.err, r.err
    cli.ok("hooks", "add", "bare", "--", "true")
    rows = hooks(cli)
    assert rows["rel"]["command"] == [str(tmp_path / "handle.sh"), "arg"]
    assert rows["bare"]["command"] == ["true"]


@pytest.mark.parametrize("command", ["./missing.sh", "no-such-command-anywhere", "./not-executable.sh"])
def test_hooks_add_warns_when_the_command_cannot_run(cli: Evlog, tmp_path: Path, command: str) -> None:
    """`hooks add` warns on stderr when its command is not found or not executable (the hook is still added)."""
    cli.ok("init")
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\n")
    r = cli("hooks", "add", "h", "--", command)
    assert r.rc == 0
    assert r.err.startswith("evlog: warning:") and command.lstrip("./") in r.err, r.err
    assert "h" in hooks(cli)


# -- dlq retry keeps the containment of the run that failed ---------------------------------------

CONTAINED = """\
    import resource
    record(DONE, env=dict(os.environ), limit=resource.getrlimit(resource.RLIMIT_AS)[0])
    if attempt > 1 and os.environ.get("BLOCK"):
        wait_for(DONE + ".never", 20)
    """


def test_dlq_retry_runs_the_handler_contained_as_the_replay_did(cli: Evlog, tmp_path: Path) -> None:
    """An entry keeps the replay's --clean-env, --env, --max-memory and --timeout, and `dlq retry` honours them:
    the handler does not see evlog's other variables, gets --env, its memory cap and the same timeout."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="1 if attempt == 1 else 0", before_exit=CONTAINED)
    env = {**cli.env, "OUTER_SECRET": "s3cret"}
    r = cli("replay", "--retries", "0", "--clean-env", "--env", "A=1", "--max-memory", "1GiB", "--timeout", "7s",
            "--", *rec.argv, env=env)
    assert r.rc == 3, r.err
    [entry] = dead_letters(cli)
    assert ENTRY_FIELDS <= set(entry)
    assert cli("dlq", "retry", "--all", env=env).rc == 0
    first, retried = rec.done()
    for call in (first, retried):
        assert "OUTER_SECRET" not in call["env"] and call["env"]["A"] == "1", call["env"]
        assert call["limit"] == 1 << 30


def test_dlq_retry_uses_the_stored_timeout_unless_given_one(cli: Evlog, tmp_path: Path) -> None:
    """Without --timeout, `dlq retry` kills a handler at the timeout its replay had (here 1s), not at 30s."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="1", before_exit=CONTAINED)
    assert cli("replay", "--retries", "0", "--timeout", "1s", "--env", "BLOCK=1", "--", *rec.argv).rc == 3
    r = cli("dlq", "retry", "--all")
    assert r.rc == 3, r.err
    [entry] = dead_letters(cli)
    assert entry["error"] == "timed out after 1s" and entry["attempts"] == 2


def test_an_entry_without_containment_runs_as_before(cli: Evlog, tmp_path: Path) -> None:
    """An entry written without containment options (an older version) is retried with evlog's environment."""
    cli.ok("append", "t")
    rec = Recorder(tmp_path / "h", exit_code="1 if attempt == 1 else 0", before_exit=CONTAINED)
    assert replay(cli, rec.argv, "--retries", "0").rc == 3
    path = cli.dir / "dead-letter.jsonl"
    entry = json.loads(path.read_text())
    entry = {k: v for k, v in entry.items() if k in ENTRY_FIELDS}
    path.write_text(json.dumps(entry) + "\n")
    env = {**cli.env, "OUTER_SECRET": "s3cret"}
    assert cli("dlq", "retry", "--all", env=env).rc == 0
    assert rec.done()[-1]["env"]["OUTER_SECRET"] == "s3cret"


def test_the_dead_letter_file_is_documented_as_trusted_like_hooks_toml(cli: Evlog) -> None:
    """`dlq --help` and the README say that whoever can write dead-letter.jsonl chooses what `dlq retry` runs."""
    assert "hooks.toml" in " ".join(cli.ok("dlq", "--help").split())
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert "dead-letter.jsonl" in readme and "as trusted as" in readme
