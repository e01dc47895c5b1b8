"""Appending and reading (SPEC 4, 6 append/read/tail/filters/formats/follow/info), the same on every log location."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FIELDS, Spawner, assert_one_error, parse_records, wait_until
from contract_helpers import (
    ANSI,
    INFO_KEYS,
    TIME,
    UUID7,
    LocalLog,
    Log,
    NatsLog,
    history,
    history_time,
    jsonl,
    nats_module,  # noqa: F401 - fixture: the module's NATS server
    now_stamp,
    parallel,
)


def types(records: list[dict]) -> list[str]:
    return [r["type"] for r in records]


class AppendReadContract:
    """Scenarios for append, read, tail and info; subclasses give the `log` fixture."""

    # -- one event ---------------------------------------------------------------------------------

    def test_single_appends_print_contiguous_offsets_from_zero(self, log: Log) -> None:
        """Each append prints its offset; offsets start at 0 and follow each other; fields are as given."""
        out = log.ok("append", "order.created", "sku=A1", "count:=3", 'tags:=["a","b"]', "ok:=true",
                     "--key", "cust-7", "--subject", "s-1", "--source", "shop")
        assert out == "0\n"
        assert log.ok("append", "order.paid") == "1\n"
        assert log.ok("append", "order.shipped", "--data", '{"n": [1, 2]}') == "2\n"
        recs = log.records()
        assert [r["offset"] for r in recs] == [0, 1, 2]
        assert types(recs) == ["order.created", "order.paid", "order.shipped"]
        first, second, third = recs
        assert first["data"] == {"sku": "A1", "count": 3, "tags": ["a", "b"], "ok": True}
        assert (first["key"], first["subject"], first["source"]) == ("cust-7", "s-1", "shop")
        assert second["data"] is None
        assert (second["key"], second["subject"], second["source"]) == (None, None, "evlog")
        assert third["data"] == {"n": [1, 2]}
        for r in recs:
            assert UUID7.match(r["id"]), r["id"]
            assert TIME.match(r["time"]), r["time"]
        assert len({r["id"] for r in recs}) == 3
        assert [r["time"] for r in recs] == sorted(r["time"] for r in recs)

    @pytest.mark.slow
    def test_payload_from_file_stdin_and_source_from_environment(self, log: Log, tmp_path: Path) -> None:
        """--data @FILE and --data - give the payload; EVLOG_SOURCE is the default source."""
        payload = tmp_path / "payload.json"
        payload.write_text('{"from": "file", "list": [1, 2, 3]}')
        assert log.append("a.file", "--data", f"@{payload}") == 0
        assert log.append("a.stdin", "--data", "-", input='{"from": "stdin"}') == 1
        env = {**log.cli.env, "EVLOG_SOURCE": "billing"}
        assert log.append("a.env", env=env) == 2
        recs = log.records()
        assert [r["data"] for r in recs] == [{"from": "file", "list": [1, 2, 3]}, {"from": "stdin"}, None]
        assert [r["source"] for r in recs] == ["evlog", "evlog", "billing"]

    def test_invalid_single_event_exits_4_and_writes_nothing(self, log: Log, tmp_path: Path) -> None:
        """A bad type, bad JSON or an oversize event exits 4 (--data with FIELDs: 2), one line; nothing is written."""
        log.ok("init")
        big = tmp_path / "big.json"
        big.write_text(json.dumps({"blob": "x" * (1024 * 1024 + 4096)}))
        bad = [((t,), 4) for t in ("bad type", "x" * 257)]
        bad += [(("t", "--data", "{bad"), 4), (("t", "--data", f"@{big}"), 4),
                (("t", "x=1", "--data", '{"y": 2}'), 2)]
        results = parallel(*(lambda a=a: log("append", *a) for a, _ in bad))
        for (args, code), result in zip(bad, results, strict=True):
            assert result.rc == code, (args, result)
            assert_one_error(result, code)
        assert log.records() == []
        assert log.append("t" * 256) == 0

    def test_same_id_twice_stores_one_event(self, log: Log) -> None:
        """An --id seen within dedup_window appends nothing, prints the existing offset and exits 0; --json prints
        the whole record."""
        first = parse_records(log.ok("append", "a", "name=ann", "--id", "order-17", "--json"))
        assert log.ok("append", "b") == "1\n"
        again = log("append", "c", "n:=9", "--id", "order-17")
        assert (again.rc, again.out) == (0, "0\n"), again
        printed = parse_records(log.ok("append", "c", "--id", "order-17", "--json"))
        recs = log.records()
        assert types(recs) == ["a", "b"]
        assert first == printed == recs[:1]
        assert (recs[0]["id"], recs[0]["data"]) == ("order-17", {"name": "ann"})

    @pytest.mark.slow
    def test_id_is_forgotten_after_the_dedup_window(self, log: Log) -> None:
        """Once dedup_window has passed, the same --id appends a new event at the next offset."""
        log.ok("init", "--dedup-window", "1s")
        assert log.ok("append", "t", "--id", "again") == "0\n"
        out = wait_until(lambda: (o := log.ok("append", "t", "--id", "again")) != "0\n" and o, timeout=20)
        assert out == "1\n"
        assert [(r["offset"], r["id"]) for r in log.records()] == [(0, "again"), (1, "again")]

    # -- batches -----------------------------------------------------------------------------------

    def test_batch_appends_every_line_in_order_with_contiguous_offsets(self, log: Log) -> None:
        """`--batch` appends every event in input order, skips blank lines and summarises on stderr."""
        assert log.append("first") == 0
        text = '{"type":"b.1"}\n\n{"type":"b.2","key":"k","data":[1]}\n   \n{"type":"b.3","subject":"s"}\n'
        r = log("append", "--batch", input=text)
        assert r.rc == 0, r
        assert r.out == ""
        assert "appended 3 events, offsets 1..3" in r.err
        assert log.batch([{"type": "b.4"}, {"type": "b.5", "source": "src"}]) == {"count": 2, "first": 4, "last": 5}
        recs = log.records()
        assert [r["offset"] for r in recs] == list(range(6))
        assert types(recs) == ["first", "b.1", "b.2", "b.3", "b.4", "b.5"]
        assert (recs[2]["key"], recs[2]["data"], recs[3]["subject"], recs[5]["source"]) == ("k", [1], "s", "src")

    def test_batch_with_a_bad_line_writes_nothing(self, log: Log) -> None:
        """One invalid line fails the whole batch: exit 4, `line N` of the first bad line, nothing appended."""
        assert log.append("kept") == 0
        text = '{"type":"ok.1"}\n{"type":"ok.2"}\n{"type":"bad type"}\n{"data":1}\n{"type":"ok.3"}\n'
        r = log("append", "--batch", "--json", input=text)
        assert_one_error(r, 4, "line 3")
        assert r.out == ""
        more = parallel(lambda: log("append", "--batch", input='not json\n{"type":"ok"}\n'),
                        lambda: log("append", "--batch", input='{"type":"ok"}\n{"data":1}\n'))
        assert_one_error(more[0], 4, "line 1")
        assert_one_error(more[1], 4, "line 2")
        assert types(log.records()) == ["kept"]
        assert log.append("next") == 1

    @pytest.mark.slow
    def test_empty_batch_is_not_an_error(self, log: Log) -> None:
        """An empty --batch input appends nothing and prints count 0 with null first and last."""
        log.ok("init")
        empty = {"count": 0, "first": None, "last": None}
        assert parallel(lambda: log.batch(""), lambda: log.batch("\n\n")) == [empty, empty]
        assert log.records() == []

    def test_batch_keeps_ids_so_a_reimport_appends_nothing(self, log: Log) -> None:
        """Records printed by `read --format json` and fed back to `--batch` are all known ids: nothing is added."""
        log.batch([{"type": "a", "id": "i-1"}, {"type": "b"}, {"type": "c", "id": "i-3"}])
        printed = log.ok("read", "--format", "json")
        assert log.batch(printed) == {"count": 0, "first": None, "last": None}
        assert log.batch([{"type": "a", "id": "i-1"}, {"type": "d", "id": "i-4"}]) == {"count": 1, "first": 3,
                                                                                        "last": 3}
        recs = log.records()
        assert [(r["offset"], r["type"]) for r in recs] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
        assert (recs[0]["id"], recs[2]["id"], recs[3]["id"]) == ("i-1", "i-3", "i-4")

    @pytest.mark.slow
    def test_batch_maps_cloudevents_input_back_to_records(self, log: Log) -> None:
        """A CloudEvents line becomes a record: partitionkey is the key, its sequence is ignored."""
        ce = {"specversion": "1.0", "id": "ce-1", "source": "shop", "type": "ce.made", "time": "2020-05-01T10:00:00Z",
              "subject": "sub", "partitionkey": "pk", "sequence": "77", "datacontenttype": "application/json",
              "data": {"x": 1}}
        assert log.batch([ce, {"specversion": "1.0", "id": "ce-2", "source": "s2", "type": "ce.bare"}]) == {
            "count": 2, "first": 0, "last": 1}
        first, second = log.records()
        assert first == {"offset": 0, "id": "ce-1", "time": "2020-05-01T10:00:00.000000Z", "type": "ce.made",
                         "source": "shop", "subject": "sub", "key": "pk", "data": {"x": 1}}
        assert (second["offset"], second["id"], second["source"], second["subject"], second["key"], second["data"]) \
            == (1, "ce-2", "s2", None, None, None)

    @pytest.mark.slow
    def test_stream_skips_bad_lines_and_exits_3(self, log: Log) -> None:
        """`--stream` commits the valid lines, reports a bad one with its line number, and exits 3."""
        text = '{"type":"s.1","time":"2020-01-01T00:00:00Z"}\nnot json\n\n{"type":"s.2"}\n'
        r = log("append", "--stream", input=text)
        assert r.rc == 3, r
        assert "line 2" in r.err
        recs = log.records()
        assert types(recs) == ["s.1", "s.2"]
        assert recs[0]["time"] == "2020-01-01T00:00:00.000000Z"

    def test_stream_commits_each_line_as_it_arrives(self, log: Log, spawn: Spawner) -> None:
        """A line written to a running `append --stream` is readable while the pipe stays open."""
        log.ok("init")
        writer = spawn(*log.argv("append", "--stream"), stdin=subprocess.PIPE)
        assert writer.popen.stdin is not None
        writer.popen.stdin.write(b'{"type":"live.1"}\n')
        writer.popen.stdin.flush()
        wait_until(lambda: types(log.records()) == ["live.1"], timeout=15,
                   message=lambda: f"stderr: {writer.stderr()!r}")
        writer.popen.stdin.write(b'{"type":"live.2"}\n')
        writer.popen.stdin.flush()
        wait_until(lambda: types(log.records()) == ["live.1", "live.2"], timeout=15)
        assert writer.poll() is None
        writer.popen.stdin.close()
        assert writer.wait(timeout=15) == 0

    # -- times on import ---------------------------------------------------------------------------

    def test_input_times_are_kept_unless_earlier_than_the_newest(self, log: Log) -> None:
        """Input times in order are kept exactly; an earlier one is raised to the newest, and the summary counts
        the raised ones (SPEC 4 times on import)."""
        log.batch([{"type": "t", "time": "2020-01-01T00:00:00Z"},
                   {"type": "t", "time": "2020-01-01T00:00:00.25Z"},
                   {"type": "t", "time": "2020-01-02T03:04:05.123456Z"},
                   {"type": "t", "time": "2020-01-02T03:04:05.123456Z"}])
        text = jsonl([{"type": "later", "time": "2020-07-01T00:00:00Z"},
                      {"type": "early", "time": "2020-01-01T00:00:00Z"},
                      {"type": "early", "time": "2020-03-01T00:00:00Z"}])
        r = log("append", "--batch", input=text)
        assert r.rc == 0, r
        line = next(x for x in r.err.splitlines() if "appended 3 events" in x)
        assert "raised" in line and " 2 " in f" {line} ", line
        assert [r["time"] for r in log.records()] == [
            "2020-01-01T00:00:00.000000Z", "2020-01-01T00:00:00.250000Z", "2020-01-02T03:04:05.123456Z",
            "2020-01-02T03:04:05.123456Z"] + ["2020-07-01T00:00:00.000000Z"] * 3

    def test_a_time_more_than_a_minute_ahead_is_invalid(self, log: Log) -> None:
        """An input time over a minute in the future exits 4 and writes nothing; 20 s ahead is kept."""
        log.ok("init")
        text = jsonl([{"type": "ok"}, {"type": "future", "time": now_stamp(timedelta(minutes=5))}])
        assert_one_error(log("append", "--batch", input=text), 4, "line 2")
        assert log.records() == []
        soon = now_stamp(timedelta(seconds=20))
        log.batch([{"type": "soon", "time": soon}])
        assert [r["time"] for r in log.records()] == [soon]

    @pytest.mark.slow
    def test_log_time_ignores_input_times(self, log: Log) -> None:
        """`--log-time` stamps events with the append time, whatever their input says."""
        before = now_stamp(-timedelta(seconds=1))
        log.batch([{"type": "t", "time": "2020-01-01T00:00:00Z"}], "--log-time")
        after = now_stamp(timedelta(seconds=1))
        (rec,) = log.records()
        assert before <= rec["time"] <= after, (before, rec["time"], after)

    # -- read: ranges ------------------------------------------------------------------------------

    def test_read_ranges(self, log: Log) -> None:
        """--from/--to (inclusive), --since (inclusive)/--until (exclusive), --last (before filters), --limit."""
        log.batch(history(10))
        everything = list(range(10))
        expected: dict[tuple[object, ...], list[int]] = {
            ("--from", 3, "--to", 5): [3, 4, 5],
            ("--to", 1): [0, 1],
            ("--from", 10): [],
            ("--since", history_time(3)): list(range(3, 10)),
            ("--since", history_time(2), "--until", history_time(5)): [2, 3, 4],
            ("--since", "2020-01-02", "--until", "2020-01-03"): [4, 5, 6, 7],
            ("--last", 3): [7, 8, 9],
            ("--last", 100): everything,
            ("--last", 3, "--type", "item.odd"): [7, 9],
            ("--from", 5, "--limit", 2): [5, 6],
            ("--type", "item.odd", "--limit", 3): [1, 3, 5],
        }
        assert log.offsets_for(expected) == expected
        assert log.offsets("--since", "1h") == []
        log.append("recent")
        assert log.offsets("--since", "1h") == [10]

    def test_since_and_to_time_follow_the_events_own_times(self, log: Log) -> None:
        """--since and `groups reset --to-time` select by the events' times, also for a time kept from input that
        is ahead of the clock."""
        log.append("before")
        log.batch([{"type": "ahead", "time": now_stamp(timedelta(seconds=50))}])
        log.append("after")  # its time is raised to the newest: time never decreases along the log
        cut = now_stamp(timedelta(seconds=10))
        assert log.offsets("--since", cut) == [1, 2]
        assert log.replay(["true"], "--group", "g", "--to", 0).rc == 0
        log.ok("groups", "reset", "g", "--to-time", cut)
        assert log.position("g") == 1

    # -- read: filters -----------------------------------------------------------------------------

    def test_type_patterns(self, log: Log) -> None:
        """`*` matches one token, a last `>` one or more; repeated --type options are alternatives."""
        log.batch([{"type": "order.created"}, {"type": "order.created.v2"}, {"type": "order.paid"},
                   {"type": "user.created"}, {"type": "order"}])
        expected: dict[tuple[object, ...], list[int]] = {
            ("--type", "order.*"): [0, 2],
            ("--type", "order.>"): [0, 1, 2],
            ("--type", "order.created"): [0],
            ("--type", "order"): [4],
            ("--type", "*.created"): [0, 3],
            ("--type", "*.created.>"): [1],
            ("--type", ">"): [0, 1, 2, 3, 4],
            ("--type", "order.created", "--type", "user.*"): [0, 3],
        }
        assert log.offsets_for(expected) == expected

    def test_exact_filters_and_where(self, log: Log) -> None:
        """--key, --subject, --source match exactly, --where evaluates SPEC 6's expressions; all must hold."""
        log.batch([
            {"type": "order.created", "key": "k1", "data": {"n": 1, "tags": ["a", "b"]}},
            {"type": "order.created", "key": "k2", "subject": "s1", "data": {"n": 2, "tags": ["b"]}},
            {"type": "order.paid", "key": "k1", "source": "shop", "data": {"n": 3, "name": "Ann-Marie"}},
            {"type": "user.created", "data": {"n": 4.0, "ok": True}},
            {"type": "user.deleted", "data": "plain"},
        ])
        expected: dict[tuple[object, ...], list[int]] = {
            ("--key", "k"): [],
            ("--subject", "s1"): [1],
            ("--source", "shop"): [2],
            ("--type", "order.>", "--key", "k1"): [0, 2],
            ("--where", 'data.n >= 2 and type matches "^order\\\\."'): [1, 2],
            ("--where", 'data.tags[0] == "b" or "Marie" in data.name or data.n == 4'): [1, 2, 3],
            ("--where", "data.missing == null and not (data.n < 3) and data.ok != 1"): [2, 3, 4],
        }
        assert log.offsets_for(expected) == expected

    @pytest.mark.slow
    def test_bad_where_expressions_are_usage_errors(self, log: Log) -> None:
        """A malformed expression or an invalid regular expression exits 2 with one line."""
        log.append("t")
        bad = ["data.n >", 'type matches "(a)\\\\1"']
        for result in parallel(*(lambda b=b: log("read", "--where", b) for b in bad)):
            assert_one_error(result, 2)
            assert result.out == ""

    # -- output formats ----------------------------------------------------------------------------

    def test_output_formats(self, log: Log) -> None:
        """json (the default in a pipe) in SPEC 4 field order, data, cloudevents (null subject and key left out),
        and pretty (offset, time, type, key, compact data)."""
        log.batch(history(4) + [{"type": "order.created", "key": "cust-7", "time": "2020-02-01T00:00:00Z",
                                 "data": {"sku": "A1", "n": 3}}])
        default, as_json, data, ce, pretty = parallel(*(lambda f=f: log.ok("read", *f) for f in (
            (), ("--format", "json"), ("--format", "data"), ("--format", "cloudevents"), ("--format", "pretty"))))
        assert default == as_json
        recs = parse_records(as_json)
        assert [list(r) for r in recs] == [FIELDS] * 5
        assert [(r["id"], r["time"], r["key"]) for r in recs[:4]] == [
            (e["id"], history_time(i), e["key"]) for i, e in enumerate(history(4))]
        assert [r["subject"] for r in recs] == ["s0", None, None, "s3", None]
        assert [json.loads(line) for line in data.splitlines()] == [r["data"] for r in recs]
        ce_lines = ce.splitlines()
        assert len(ce_lines) == 5
        for rec, line in zip(recs, ce_lines, strict=True):
            expected = {"specversion": "1.0", "id": rec["id"], "source": rec["source"], "type": rec["type"],
                        "time": rec["time"], "datacontenttype": "application/json", "data": rec["data"],
                        "sequence": str(rec["offset"]), "partitionkey": rec["key"]}
            if rec["subject"] is not None:
                expected["subject"] = rec["subject"]
            assert json.loads(line) == expected
        lines = [ANSI.sub("", line) for line in pretty.splitlines()]
        assert len(lines) == 5
        assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4"]
        last = lines[4]
        where = [last.index("4"), last.index("2020-02-01"), last.index("order.created"), last.index("cust-7"),
                 last.index('{"sku":"A1","n":3}')]
        assert where == sorted(where), last
        assert "item.odd" in lines[1] and "k1" in lines[1] and '{"n":1}' in lines[1]

    # -- tail --------------------------------------------------------------------------------------

    def test_tail(self, log: Log) -> None:
        """tail prints the last 10 matching events (or -n N), oldest first."""
        log.batch(history(12))
        queries = [(), ("-n", 3), ("-n", 2, "--type", "item.even"), ("-n", 50)]
        got = parallel(*(lambda q=q: [r["offset"] for r in parse_records(log.ok("tail", *q))] for q in queries))
        assert got == [list(range(2, 12)), [9, 10, 11], [8, 10], list(range(12))]
        assert log.ok("tail", "-n", 1, "--format", "data") == '{"n":11}\n'

    # -- follow ------------------------------------------------------------------------------------

    def test_read_follow_prints_later_appends(self, log: Log, spawn: Spawner) -> None:
        """`read -f` prints the history, then each matching event appended later; SIGTERM ends it with 143."""
        log.append("watch.me", "n:=0")
        follower = spawn(*log.argv("read", "-f", "--type", "watch.*", "--format", "json"))
        follower.wait_lines(1, timeout=15)
        log.append("other", "n:=1")
        log.append("watch.me", "n:=2")
        follower.wait_lines(2, timeout=15)
        log.append("watch.again", "n:=3")
        follower.wait_lines(3, timeout=15)
        assert [(r["offset"], r["type"]) for r in follower.records()] == [(0, "watch.me"), (2, "watch.me"),
                                                                         (3, "watch.again")]
        follower.signal(signal.SIGTERM)
        assert follower.wait(timeout=15) == 143
        assert len(follower.lines()) == 3

    @pytest.mark.slow
    def test_tail_follow_prints_later_appends(self, log: Log, spawn: Spawner) -> None:
        """`tail -f -n 1` prints the newest event, then new ones as they are appended."""
        log.batch(history(3))
        follower = spawn(*log.argv("tail", "-f", "-n", 1, "--format", "json"))
        follower.wait_lines(1, timeout=15)
        log.append("new.one")
        follower.wait_lines(2, timeout=15)
        assert [(r["offset"], r["type"]) for r in follower.records()] == [(2, "item.even"), (3, "new.one")]
        follower.signal(signal.SIGTERM)
        assert follower.wait(timeout=15) == 143

    # -- info and missing logs ---------------------------------------------------------------------

    def test_info_json(self, log: Log) -> None:
        """info --json has SPEC 6's keys on every backend; on an empty log the four range fields are null, and
        read and tail print nothing."""
        log.ok("init")
        empty, *reads = parallel(log.info, lambda: log.ok("read"), lambda: log.ok("read", "--last", 3),
                                 lambda: log.ok("tail"))
        assert reads == ["", "", ""]
        assert list(empty) == INFO_KEYS
        assert (empty["format"], empty["dir"]) == ("jsonl", log.location)
        assert [empty[k] for k in ("first_offset", "last_offset", "oldest_time", "newest_time")] == [None] * 4
        assert (empty["events"], empty["groups"], empty["dead_letters"]) == (0, [], 0)
        log.batch(history(3))
        full = log.info()
        assert list(full) == INFO_KEYS
        assert (full["first_offset"], full["last_offset"], full["events"]) == (0, 2, 3)
        assert (full["oldest_time"], full["newest_time"]) == (history_time(0), history_time(2))
        assert isinstance(full["bytes"], int) and full["bytes"] > 0
        assert full["dead_letters"] == 0
        self.check_segments(full["segments"])
        # `hooks` is a count on every backend (SPEC 3 names `segments` as the only key that may be null)
        assert (empty["hooks"], full["hooks"]) == (0, 0)

    def check_segments(self, segments: object) -> None:
        raise NotImplementedError

    def test_a_missing_log_is_an_error_and_is_not_created(self, log: Log) -> None:
        """Commands other than append and init exit 1 on a missing log and create nothing; init twice is exit 1."""
        commands = [("read",), ("info",), ("groups", "list"), ("dlq", "count")]
        for result in parallel(*(lambda c=c: log(*c) for c in commands)):
            assert_one_error(result, 1)
        log.ok("init")
        assert_one_error(log("init"), 1)

    @pytest.mark.slow
    def test_append_creates_a_missing_log(self, log: Log) -> None:
        """append creates a missing log with default settings; init on it then exits 1."""
        assert log.append("first") == 0
        assert_one_error(log("init"), 1)


class TestLocalLog(LocalLog, AppendReadContract):
    """The append/read contract on a local directory."""

    def check_segments(self, segments: object) -> None:
        assert isinstance(segments, int) and segments >= 1


class TestNatsLog(NatsLog, AppendReadContract):
    """The append/read contract on a NATS JetStream stream."""

    def check_segments(self, segments: object) -> None:
        assert segments is None

    def test_type_with_an_empty_token_is_invalid(self, log: Log) -> None:
        """A type that is not a subject suffix (`a..b`, `.a`, `a.`) exits 4 with one line; nothing is written."""
        assert log.append("ok") == 0
        for bad in ("a..b", ".a", "a."):
            assert_one_error(log("append", bad), 4)
        assert_one_error(log("append", "--batch", input='{"type":"fine"}\n{"type":"x..y"}\n'), 4, "line 2")
        assert types(log.records()) == ["ok"]

    def test_logs_on_one_server_never_overlap(self, log: Log) -> None:
        """Two streams on one server, one named as a prefix of the other, keep their own events."""
        other = Log(log.cli, log.location + "x", log.backend)
        log.append("mine.a")
        other.append("theirs.a")
        other.append("theirs.b")
        log.append("mine.b")
        assert [(r["offset"], r["type"]) for r in log.records()] == [(0, "mine.a"), (1, "mine.b")]
        assert [(r["offset"], r["type"]) for r in other.records()] == [(0, "theirs.a"), (1, "theirs.b")]
        assert log.offsets("--type", ">") == [0, 1]

    def test_a_log_named_like_a_dead_letter_stream_never_shares_its_events(self, log: Log) -> None:
        """A name ending in _DLQ is either its own log or refused (exit 2, one line); either way its events never
        show up among STREAM's dead letters."""
        log.ok("init")
        neighbour = Log(log.cli, log.location + "_DLQ", log.backend)
        result = neighbour("append", "x.y")
        if result.rc == 2:
            assert_one_error(result, 2)
        else:
            assert (result.rc, result.out) == (0, "0\n"), result
            assert neighbour.info()["events"] == 1
        assert log.ok("dlq", "count") == "0\n"
        assert log.dead_letters() == []
