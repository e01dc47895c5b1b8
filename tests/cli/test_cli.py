"""The `evlog` command end to end (SPEC 3, 4, 5, 6): init, append, batch, stream, read, tail, info, verify."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import (
    FIELDS,
    Evlog,
    Spawner,
    assert_one_error,
    parse_records,
    segment_files,
    wait_until,
)
from engine_helpers import append_undecodable

TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
UUID7_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def settings(directory: Path) -> dict:
    with open(directory / "evlog.toml", "rb") as f:
        return tomllib.load(f)


def size_value(value: object) -> int:
    """A size as evlog.toml may hold it: bytes, or a string like 64MiB."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)\s*(KiB|MiB|GiB|B|)", str(value))
    assert m, value
    return int(m.group(1)) * {"": 1, "B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]


def offsets(records: list[dict]) -> list[int]:
    return [r["offset"] for r in records]


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# -- init ------------------------------------------------------------------------------------

def test_init_creates_the_layout_with_default_settings(cli: Evlog) -> None:
    """`init` creates DIR/evlog.toml and DIR/segments/ with the SPEC 3 defaults."""
    r = cli("init")
    assert r.rc == 0, r.err
    assert (cli.dir / "segments").is_dir()
    s = settings(cli.dir)
    assert s["format"] == "jsonl"
    assert s["fsync"] == "always"
    assert size_value(s["segment_bytes"]) == 64 << 20
    assert cli.records() == []


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_init_format_names_the_segment_files(cli: Evlog, fmt: str) -> None:
    """`init --format F` makes a log whose segments are `.F` files and whose info says F."""
    cli.ok("init", "--format", fmt)
    assert settings(cli.dir)["format"] == fmt
    assert cli.ok("append", "t.x", "a=1") == "0\n"
    assert [p.suffix for p in segment_files(cli.dir)] == [f".{fmt}"]
    assert json.loads(cli.ok("info", "--json"))["format"] == fmt
    assert [r["data"] for r in cli.records()] == [{"a": "1"}]


def test_init_segment_bytes_accepts_sizes(cli: Evlog, tmp_path: Path) -> None:
    """`--segment-bytes` accepts 64MiB, 512KiB, 1KiB and plain bytes."""
    for text, size in (("64MiB", 64 << 20), ("512KiB", 512 << 10), ("1KiB", 1024), ("4096", 4096)):
        d = tmp_path / text
        cli.ok("-d", d, "init", "--segment-bytes", text)
        assert size_value(settings(d)["segment_bytes"]) == size, text


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_init_fsync_modes(cli: Evlog, mode: str) -> None:
    """`--fsync always|batch|never` is stored in evlog.toml and the log works."""
    cli.ok("init", "--fsync", mode)
    assert settings(cli.dir)["fsync"] == mode
    cli.ok("append", "t")
    assert len(cli.records()) == 1


def test_init_refuses_an_existing_log(cli: Evlog) -> None:
    """`init` on an existing log exits 1 with one error line and changes nothing."""
    cli.ok("init", "--format", "msgpack", "--segment-bytes", "1KiB")
    cli.ok("append", "t", "n:=1")
    before = (cli.dir / "evlog.toml").read_bytes()
    segs = {p.name: p.read_bytes() for p in (cli.dir / "segments").iterdir()}
    assert_one_error(cli("init", "--format", "jsonl"), 1)
    assert (cli.dir / "evlog.toml").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (cli.dir / "segments").iterdir()} == segs


@pytest.mark.parametrize("args", [
    ["--format", "xml"],
    ["--segment-bytes", "12XB"],
    ["--segment-bytes", "lots"],
    ["--segment-bytes", "100"],
    ["--fsync", "sometimes"],
    ["--bogus-flag"],
])
def test_init_bad_values_are_usage_errors_and_create_nothing(cli: Evlog, args: list[str]) -> None:
    """A bad `init` value exits 2 with one error line, and no log directory appears."""
    assert_one_error(cli("init", *args), 2)
    assert not cli.dir.exists()


# -- append: one event -----------------------------------------------------------------------

def test_append_field_items_build_the_data_object(cli: Evlog) -> None:
    """`name=value` is a string and `name:=json` any JSON value; stdout is the bare offset."""
    r = cli("append", "order.created", "sku=A1", "count:=3", 'tags:=["a","b"]', "ok:=true", "none:=null",
            "eq=a=b", "price:=1.5", 'obj:={"x":[1,{"y":2}]}', "empty=")
    assert r.rc == 0, r.err
    assert r.out == "0\n"
    [rec] = cli.records()
    assert rec["data"] == {"sku": "A1", "count": 3, "tags": ["a", "b"], "ok": True, "none": None,
                           "eq": "a=b", "price": 1.5, "obj": {"x": [1, {"y": 2}]}, "empty": ""}
    assert rec["type"] == "order.created"


def test_append_defaults(cli: Evlog) -> None:
    """Without options an event has data null, source evlog, a UUIDv7 id and a UTC microsecond time."""
    assert cli.ok("append", "ping") == "0\n"
    assert cli.ok("append", "ping") == "1\n"
    recs = cli.records()
    assert offsets(recs) == [0, 1]
    for rec in recs:
        assert rec["data"] is None and rec["source"] == "evlog"
        assert rec["subject"] is None and rec["key"] is None
        assert UUID7_RE.fullmatch(rec["id"]), rec["id"]
        assert TIME_RE.fullmatch(rec["time"]), rec["time"]
        assert abs(utc(rec["time"]) - datetime.now(UTC)) < timedelta(minutes=5)
    assert recs[0]["id"] != recs[1]["id"]
    assert recs[0]["time"] <= recs[1]["time"]


def test_append_data_json_file_and_stdin(cli: Evlog, tmp_path: Path) -> None:
    """`--data JSON`, `--data @FILE` and `--data -` give the whole payload."""
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file", "n": [1, 2]}\n')
    assert cli.ok("append", "t", "--data", '{"from":"arg"}') == "0\n"
    assert cli.ok("append", "t", "--data", f"@{payload}") == "1\n"
    assert cli.ok("append", "t", "--data", "-", input='"from stdin"') == "2\n"
    assert cli.ok("append", "t", "--data", "42") == "3\n"
    assert [r["data"] for r in cli.records()] == [{"from": "arg"}, {"from": "file", "n": [1, 2]}, "from stdin", 42]


def test_append_options_and_json_output(cli: Evlog) -> None:
    """`--key/--subject/--source/--id` set the fields; `--json` prints the whole record in field order."""
    r = cli("append", "order.paid", "amount:=12", "--key", "cust-7", "--subject", "order-9",
            "--source", "shop", "--id", "my-id-1", "--json")
    assert r.rc == 0, r.err
    [printed] = parse_records(r.out)
    assert printed["offset"] == 0 and printed["id"] == "my-id-1" and printed["type"] == "order.paid"
    assert printed["source"] == "shop" and printed["subject"] == "order-9" and printed["key"] == "cust-7"
    assert printed["data"] == {"amount": 12}
    assert TIME_RE.fullmatch(printed["time"])
    assert cli.records() == [printed]


def test_append_source_from_environment(cli: Evlog) -> None:
    """EVLOG_SOURCE is the default source; `--source` wins over it."""
    env = {**cli.env, "EVLOG_SOURCE": "cron-job"}
    cli.ok("append", "t", env=env)
    cli.ok("append", "t", "--source", "explicit", env=env)
    cli.ok("append", "t")
    assert [r["source"] for r in cli.records()] == ["cron-job", "explicit", "evlog"]


def test_append_same_id_within_dedup_window_appends_once(cli: Evlog) -> None:
    """An `--id` already appended within dedup_window prints the existing offset, exits 0, appends nothing."""
    assert cli.ok("append", "t", "--id", "once") == "0\n"
    assert cli.ok("append", "t", "--id", "other") == "1\n"
    r = cli("append", "t", "n:=2", "--id", "once")
    assert r.rc == 0 and r.out == "0\n", r
    assert [r["id"] for r in cli.records()] == ["once", "other"]


LOADED_NATS = """
import sys
from evlog.__main__ import main
sys.argv = ["evlog", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.split(".")[0] == "nats" or m in ("evlog.store.nats", "asyncio")))
"""


@pytest.mark.parametrize("args", [["append", "t", "n:=1"], ["append", "--batch"], ["read"], ["tail", "-n", "1"]])
def test_commands_on_a_local_log_do_not_load_the_nats_client(cli: Evlog, args: list[str]) -> None:
    """Start-up budget (SPEC 8): a local log never imports nats-py, the NATS backend or asyncio."""
    done = subprocess.run([sys.executable, "-c", LOADED_NATS, *args], env=cli.env, input=b'{"type":"t"}\n',
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "[]"


def test_append_creates_a_missing_log(cli: Evlog) -> None:
    """`append` creates a missing log with default settings."""
    assert not cli.dir.exists()
    cli.ok("append", "t")
    assert settings(cli.dir)["format"] == "jsonl"
    assert len(cli.records()) == 1


def test_append_bad_type_exits_4_and_writes_nothing(cli: Evlog) -> None:
    """A TYPE that is not 1-256 printable ASCII without whitespace, `*` or `>` is rejected: exit 4, nothing written."""
    cli.ok("init")
    for type_ in ["", "has space", "tab\there", "order.*", "order.>", "a>b", "x" * 257, "ordér.created", "new\nline"]:
        assert_one_error(cli("append", type_, "a=1"), 4)
    cli.ok("append", "x" * 256)
    assert [r["type"] for r in cli.records()] == ["x" * 256]


def test_append_bad_type_on_a_missing_log_creates_nothing(cli: Evlog) -> None:
    """Rejected input writes nothing at all, not even a new log."""
    assert_one_error(cli("append", "bad type"), 4)
    assert_one_error(cli("append", "t", "--data", "{nope"), 4)
    assert not cli.dir.exists()


def test_append_bad_json_exits_4_and_writes_nothing(cli: Evlog) -> None:
    """Unparsable JSON in `--data` or a `name:=json` item exits 4 and writes nothing."""
    cli.ok("append", "first")
    for args in (["--data", "{bad json"], ["--data", ""], ["n:={bad"], ["n:="], ["--data", "[1, 2"]):
        assert_one_error(cli("append", "t", *args), 4)
    assert offsets(cli.records()) == [0]


def test_append_bad_json_file_exits_4(cli: Evlog, tmp_path: Path) -> None:
    """`--data @FILE` with a file that is not JSON exits 4 and writes nothing."""
    bad = tmp_path / "bad.json"
    bad.write_text("{'single': 'quotes'}")
    cli.ok("init")
    assert_one_error(cli("append", "t", "--data", f"@{bad}"), 4)
    assert cli.records() == []


def test_append_oversize_event_exits_4(cli: Evlog, tmp_path: Path) -> None:
    """An event larger than max_event_bytes (1 MiB by default) exits 4 and writes nothing."""
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * (1 << 20)}))
    cli.ok("init")
    assert_one_error(cli("append", "t", "--data", f"@{big}"), 4)
    assert cli.records() == []
    cli.ok("append", "t", "--data", json.dumps({"blob": "x" * 1000}))
    assert len(cli.records()) == 1


def test_append_data_with_field_items_is_a_usage_error(cli: Evlog) -> None:
    """Combining `--data` with FIELD items exits 2 and writes nothing."""
    cli.ok("init")
    assert_one_error(cli("append", "t", "a=1", "--data", '{"b":2}'), 2)
    assert cli.records() == []


def test_append_without_type_is_a_usage_error(cli: Evlog) -> None:
    """`append` with neither TYPE nor --batch/--stream exits 2."""
    cli.ok("init")
    assert_one_error(cli("append"), 2)
    assert cli.records() == []


# -- append --batch --------------------------------------------------------------------------

def test_batch_appends_in_order_with_a_summary_on_stderr(cli: Evlog) -> None:
    """`--batch` appends every line in input order with contiguous offsets and says so on stderr."""
    cli.ok("append", "before")
    lines = [{"type": "a", "data": {"i": 0}, "key": "k1", "subject": "s1", "source": "src", "id": "id-0"},
             {"type": "b", "data": [1, 2]},
             {"type": "c"}]
    text = "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n   \n" + json.dumps(lines[2])  # blanks, no final \n
    r = cli("append", "--batch", input=text)
    assert r.rc == 0, r.err
    assert r.out == ""
    assert "appended 3 events, offsets 1..3" in r.err
    recs = cli.records()
    assert offsets(recs) == [0, 1, 2, 3]
    assert [x["type"] for x in recs] == ["before", "a", "b", "c"]
    assert recs[1]["key"] == "k1" and recs[1]["subject"] == "s1" and recs[1]["source"] == "src"
    assert recs[1]["id"] == "id-0" and recs[1]["data"] == {"i": 0}
    assert recs[2]["data"] == [1, 2] and recs[3]["data"] is None and recs[3]["source"] == "evlog"


def test_batch_json_summary(cli: Evlog) -> None:
    """`--batch --json` prints {"count", "first", "last"}; empty input is count 0 with nulls, exit 0."""
    assert cli.batch([{"type": "t", "data": i} for i in range(5)]) == {"count": 5, "first": 0, "last": 4}
    assert cli.batch([{"type": "t"}] * 2) == {"count": 2, "first": 5, "last": 6}
    assert cli.batch("") == {"count": 0, "first": None, "last": None}
    assert cli.batch("\n\n") == {"count": 0, "first": None, "last": None}
    assert len(cli.records()) == 7


def test_batch_source_from_environment(cli: Evlog) -> None:
    """Batch lines without a source take EVLOG_SOURCE."""
    env = {**cli.env, "EVLOG_SOURCE": "importer"}
    cli.ok("append", "--batch", input='{"type":"t"}\n{"type":"t","source":"own"}\n', env=env)
    assert [r["source"] for r in cli.records()] == ["importer", "own"]


def test_batch_is_all_or_nothing(cli: Evlog) -> None:
    """One invalid line: exit 4, `line N` in the one error line, and nothing at all appended."""
    cli.ok("append", "existing")
    before = {p.name: p.read_bytes() for p in segment_files(cli.dir)}
    good = '{"type": "ok", "data": 1}'
    for n, bad in enumerate(["not json at all", '{"data": 1}', '{"type": "has space"}', '{"type": "a.*"}',
                             '{"type": 7}', '{"type": "t", "key": 5}', '["type", "t"]', '{"type": "t", "data": }'],
                            start=2):
        r = cli("append", "--batch", input="\n".join([good] * (n - 1) + [bad, good]) + "\n")
        assert_one_error(r, 4, f"line {n}")
    assert offsets(cli.records()) == [0]
    assert {p.name: p.read_bytes() for p in segment_files(cli.dir)} == before


def test_invalid_input_on_a_missing_log_creates_no_log(cli: Evlog) -> None:
    """Invalid input writes nothing, not even the log that `append` would have created."""
    r = cli("append", "--batch", input='{"type": "ok"}\n{broken\n')
    assert_one_error(r, 4, "line 2")
    assert_one_error(cli("append", "has space"), 4, "")
    assert_one_error(cli("append", "t", "--id", "x" * 300), 4, "")
    assert_one_error(cli("append", "--batch", input='{"type": "t", "key": "a\\u0000b"}\n'), 4, "line 1")
    assert not cli.dir.exists()
    cli.ok("append", "--batch", input='{"type": "ok"}\n')
    assert offsets(cli.records()) == [0]


def test_batch_error_names_the_first_bad_line_and_counts_the_others(cli: Evlog) -> None:
    """With several bad lines the error names the first one and counts the others."""
    cli.ok("init")
    lines = ['{"type":"ok"}', "junk", '{"type":"ok"}', '{"nope":1}', "{"]
    line = assert_one_error(cli("append", "--batch", input="\n".join(lines)), 4, "line 2")
    rest = line.split("line 2", 1)[1]
    assert re.search(r"\b2\b", rest), f"no count of the 2 other bad lines in {line!r}"
    assert cli.records() == []


def test_batch_accepts_cloudevents(cli: Evlog) -> None:
    """A CloudEvents line maps back to a record; its time is kept (SPEC 4 times on import: the log is
    empty), its sequence ignored."""
    ce = {"specversion": "1.0", "id": "ce-1", "source": "shop", "type": "order.created",
          "time": "2001-01-01T00:00:00Z", "subject": "order-1", "datacontenttype": "application/json",
          "partitionkey": "cust-1", "sequence": "99", "data": {"total": 10}}
    ce2 = {"specversion": "1.0", "id": "ce-2", "source": "shop", "type": "order.paid"}
    assert cli.batch([ce, ce2]) == {"count": 2, "first": 0, "last": 1}
    a, b = cli.records()
    assert (a["offset"], a["id"], a["source"], a["type"], a["subject"], a["key"], a["data"]) == \
        (0, "ce-1", "shop", "order.created", "order-1", "cust-1", {"total": 10})
    assert a["time"] == "2001-01-01T00:00:00.000000Z"
    assert (b["offset"], b["subject"], b["key"], b["data"]) == (1, None, None, None)
    assert abs(utc(b["time"]) - datetime.now(UTC)) < timedelta(minutes=5), b["time"]


def test_batch_reimport_of_read_output_appends_nothing_within_dedup_window(cli: Evlog, tmp_path: Path) -> None:
    """Re-importing `read --format json` output within dedup_window appends nothing; elsewhere ids are kept."""
    cli.ok("append", "a", "n:=1", "--key", "k")
    cli.batch([{"type": "b", "data": i} for i in range(3)])
    exported = cli.ok("read", "--format", "json")
    r = cli("append", "--batch", "--json", input=exported)
    assert r.rc == 0, r.err
    summary = json.loads(r.out)
    assert summary["count"] == 0
    assert offsets(cli.records()) == [0, 1, 2, 3]

    other = tmp_path / "other"
    cli.ok("--dir", other, "init")
    cli.ok("--dir", other, "append", "z")
    assert cli.batch(exported, d=other) == {"count": 4, "first": 1, "last": 4}
    original = parse_records(exported)
    copied = cli.records(d=other)[1:]
    assert [r["id"] for r in copied] == [r["id"] for r in original]
    assert [(r["type"], r["key"], r["data"]) for r in copied] == [(r["type"], r["key"], r["data"]) for r in original]
    assert offsets(copied) == [1, 2, 3, 4]


# -- append --stream -------------------------------------------------------------------------

def test_stream_lines_are_readable_while_the_producer_runs(cli: Evlog, spawn: Spawner) -> None:
    """Each `--stream` line is committed as it arrives, and the lock is free while input is awaited."""
    cli.ok("init")
    proc = spawn("append", "--stream", stdin=subprocess.PIPE)
    assert proc.popen.stdin is not None
    proc.popen.stdin.write(b'{"type": "s", "data": 1}\n')
    proc.popen.stdin.flush()
    wait_until(lambda: len(cli.records()) == 1, message="the first streamed line never became readable")
    # The producer is still running and waiting: another writer gets the lock.
    r = cli("append", "other", timeout=10)
    assert r.rc == 0 and r.out == "1\n", r
    assert proc.poll() is None
    proc.popen.stdin.write(b'{"type": "s", "data": 2}\n{"type": "s", "data": 3}\n')
    proc.popen.stdin.flush()
    wait_until(lambda: len(cli.records()) == 4)
    proc.popen.stdin.close()
    assert proc.wait() == 0, proc.stderr()
    recs = cli.records()
    assert [(r["offset"], r["type"], r["data"]) for r in recs] == \
        [(0, "s", 1), (1, "other", None), (2, "s", 2), (3, "s", 3)]


def test_stream_reports_bad_lines_and_exits_3(cli: Evlog) -> None:
    """An invalid `--stream` line is reported with its line number and skipped; the run exits 3."""
    text = '{"type":"ok","data":1}\nnot json\n{"type":"ok","data":2}\n{"type":"bad type"}\n{"type":"ok","data":3}\n'
    r = cli("append", "--stream", input=text)
    assert r.rc == 3, r
    assert "line 2" in r.err and "line 4" in r.err
    assert [x["data"] for x in cli.records()] == [1, 2, 3]


def test_stream_all_good_exits_0(cli: Evlog) -> None:
    """A `--stream` of valid lines (blank lines ignored) exits 0 with contiguous offsets."""
    r = cli("append", "--stream", input="".join(f'{{"type":"t","data":{i}}}\n\n' for i in range(20)))
    assert r.rc == 0, r.err
    assert [(x["offset"], x["data"]) for x in cli.records()] == [(i, i) for i in range(20)]


# -- read ------------------------------------------------------------------------------------

@pytest.fixture
def three_batches(cli: Evlog) -> list[dict]:
    """12 events in 3 batches (0-3 type a.x, 4-7 b.y, 8-11 a.z), each batch with its own time."""
    cli.ok("init")
    for name, start in (("a.x", 0), ("b.y", 4), ("a.z", 8)):
        events = [{"type": name, "data": {"i": start + j}, "key": f"k{(start + j) % 3}"} for j in range(4)]
        cli.batch(events)
    recs = cli.records()
    assert offsets(recs) == list(range(12))
    times = [recs[i]["time"] for i in (0, 4, 8)]
    assert times[0] < times[1] < times[2], times
    return recs


def test_read_whole_log_by_default(cli: Evlog, three_batches: list[dict]) -> None:
    """`read` prints every event in offset order."""
    assert cli.records() == three_batches
    assert [r["data"]["i"] for r in three_batches] == list(range(12))


def test_read_offset_ranges(cli: Evlog, three_batches: list[dict]) -> None:
    """`--from` starts at an offset, `--to` is inclusive, `--limit` stops after N."""
    assert offsets(cli.records("--from", 5)) == list(range(5, 12))
    assert offsets(cli.records("--from", 5, "--to", 7)) == [5, 6, 7]
    assert offsets(cli.records("--to", 2)) == [0, 1, 2]
    assert offsets(cli.records("--from", 11)) == [11]
    assert cli.records("--from", 12) == []
    assert cli.records("--from", 1000) == []
    assert_one_error(cli("read", "--from", 7, "--to", 6), 2, "--to 6 is before --from 7")  # not an empty read
    assert offsets(cli.records("--limit", 2)) == [0, 1]
    assert offsets(cli.records("--from", 3, "--limit", 2)) == [3, 4]
    assert offsets(cli.records("--from", 3, "--limit", 100)) == list(range(3, 12))
    assert cli.records("--limit", 0) == []


def test_read_last(cli: Evlog, three_batches: list[dict]) -> None:
    """`--last N` starts at the N-th last event (the whole log when it holds fewer), before filtering."""
    assert offsets(cli.records("--last", 3)) == [9, 10, 11]
    assert offsets(cli.records("--last", 1)) == [11]
    assert offsets(cli.records("--last", 100)) == list(range(12))
    assert offsets(cli.records("--last", 6, "--type", "b.y")) == [6, 7]
    assert offsets(cli.records("--last", 6, "--limit", 2)) == [6, 7]
    assert offsets(cli.records("--last", 6, "--to", 7)) == [6, 7]


def test_read_since_until_times(cli: Evlog, three_batches: list[dict]) -> None:
    """`--since` is inclusive and `--until` exclusive, with RFC 3339 times (any UTC offset)."""
    t0, t1, t2 = (three_batches[i]["time"] for i in (0, 4, 8))
    assert offsets(cli.records("--since", t1)) == list(range(4, 12))
    assert offsets(cli.records("--until", t1)) == [0, 1, 2, 3]
    assert offsets(cli.records("--since", t0, "--until", t2)) == list(range(8))
    assert offsets(cli.records("--since", t1, "--until", t2)) == [4, 5, 6, 7]
    assert offsets(cli.records("--since", t2, "--limit", 1)) == [8]
    after_t1 = (utc(t1) + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert offsets(cli.records("--since", after_t1)) == list(range(8, 12))
    # The same instant written with a +02:00 offset.
    shifted = (utc(t1) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+02:00"
    assert offsets(cli.records("--since", shifted)) == list(range(4, 12))


def test_read_since_until_durations_and_dates(cli: Evlog, three_batches: list[dict]) -> None:
    """Times may be a duration before now or a date (midnight UTC)."""
    everything = list(range(12))
    assert offsets(cli.records("--since", "2h")) == everything
    assert offsets(cli.records("--since", "90s")) == everything
    assert offsets(cli.records("--since", "7d")) == everything
    assert offsets(cli.records("--since", "600000ms")) == everything
    assert cli.records("--until", "1d") == []
    assert cli.records("--until", "15m") == []
    day = three_batches[0]["time"][:10]
    assert offsets(cli.records("--since", day)) == everything
    assert cli.records("--until", day) == []
    assert offsets(cli.records("--since", "2000-01-01")) == everything
    later = (utc(three_batches[-1]["time"]) + timedelta(days=2)).strftime("%Y-%m-%d")
    assert cli.records("--since", later) == []
    assert offsets(cli.records("--until", later)) == everything


def test_read_filters(cli: Evlog, three_batches: list[dict]) -> None:
    """Filters select events; `--limit` counts matching events."""
    assert offsets(cli.records("--type", "a.*")) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert offsets(cli.records("--type", "a.*", "--limit", 5)) == [0, 1, 2, 3, 8]
    assert offsets(cli.records("--type", "b.y", "--type", "a.z")) == list(range(4, 12))
    assert offsets(cli.records("--type", ">")) == list(range(12))
    assert offsets(cli.records("--key", "k1")) == [1, 4, 7, 10]
    assert offsets(cli.records("--where", "data.i >= 9 or data.i == 0")) == [0, 9, 10, 11]
    assert offsets(cli.records("--type", "a.>", "--key", "k0", "--from", 1)) == [3, 9]


def test_type_patterns_match_tokens(cli: Evlog) -> None:
    """`*` matches one token and a final `>` one or more; a plain pattern matches exactly."""
    cli.batch([{"type": t} for t in ("order", "order.created", "order.created.v2", "orders.created")])
    types = lambda *args: [r["type"] for r in cli.records(*args)]  # noqa: E731
    assert types("--type", "order.*") == ["order.created"]
    assert types("--type", "order.>") == ["order.created", "order.created.v2"]
    assert types("--type", "order") == ["order"]
    assert types("--type", "*.created") == ["order.created", "orders.created"]


def test_read_empty_log_prints_nothing(cli: Evlog) -> None:
    """An empty log, or an empty range, prints nothing and exits 0."""
    cli.ok("init")
    for args in ([], ["--last", "5"], ["--since", "1h"], ["--from", "3"]):
        r = cli("read", *args)
        assert (r.rc, r.out) == (0, ""), (args, r)
    assert cli("tail").out == ""


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
@pytest.mark.parametrize("args", [["read", "--format", "json"], ["read", "--format", "data"],
                                  ["read", "--format", "cloudevents"], ["read", "--format", "pretty"],
                                  ["read", "--where", "data != 7"], ["read", "--type", "bad", "--format", "data"],
                                  ["tail", "-n", "5"]])
def test_read_stops_at_a_record_that_is_not_utf8(cli: Evlog, fmt: str, args: list[str]) -> None:
    """A stored record whose text is not UTF-8 (its checksum intact: forged, or from an older version) is
    never printed, in any format: the records before it are, then exit 5 naming its offset."""
    cli.ok("init", "--format", fmt)
    cli.batch([{"type": "t", "data": i} for i in range(2)])
    bad = append_undecodable(cli.dir)
    cli.batch([{"type": "t", "data": 7}])
    r = cli(*args)
    assert_one_error(r, 5, f"offset {bad}")
    assert "\ufffd" not in r.out  # (output that is not UTF-8 would not even decode here)
    if args[0] == "read" and "--type" not in args:
        assert len(r.out.splitlines()) == 2, r.out


def test_read_bad_arguments_are_usage_errors(cli: Evlog) -> None:
    """Conflicting ranges, unparsable times, formats and expressions exit 2 with one error line."""
    cli.ok("append", "t")
    for args in (["--from", "1", "--last", "2"], ["--since", "1h", "--from", "0"], ["--since", "yesterday"],
                 ["--until", "2026-13-45"], ["--since", "5 parsecs"], ["--from", "-1"], ["--format", "yaml"],
                 ["--where", "data.n >"], ["--where", "type matches '('"], ["--limit", "many"]):
        r = cli("read", *args)
        assert_one_error(r, 2)
        assert r.out == "", args


# -- tail ------------------------------------------------------------------------------------

def test_tail_last_n_oldest_first(cli: Evlog, three_batches: list[dict]) -> None:
    """`tail` prints the last 10 by default, `-n N` the last N, oldest first."""
    out = lambda *args: offsets(parse_records(cli.ok("tail", "--format", "json", *args)))  # noqa: E731
    assert out() == list(range(2, 12))
    assert out("-n", 3) == [9, 10, 11]
    assert out("-n", 1) == [11]
    assert out("-n", 100) == list(range(12))
    assert out("-n", 0) == []


def test_tail_with_filters(cli: Evlog, three_batches: list[dict]) -> None:
    """`tail -n N` with filters gives the last N matching events."""
    out = lambda *args: offsets(parse_records(cli.ok("tail", "--format", "json", *args)))  # noqa: E731
    assert out("-n", 2, "--type", "b.y") == [6, 7]
    assert out("-n", 5, "--type", "a.*") == [3, 8, 9, 10, 11]
    assert out("-n", 3, "--key", "k2") == [5, 8, 11]
    assert out("-n", 2, "--where", "data.i < 3") == [1, 2]
    assert out("-n", 4, "--type", "nothing.here") == []


# -- output formats --------------------------------------------------------------------------

def test_format_json_is_the_default_off_a_terminal(cli: Evlog) -> None:
    """Off a terminal the default is `json`: one record per line in SPEC 4 field order."""
    cli.ok("append", "t", "a=1", "--key", "k")
    out = cli.ok("read")
    [rec] = parse_records(out)
    assert list(rec) == FIELDS
    assert out == cli.ok("read", "--format", "json")


def test_format_cloudevents(cli: Evlog) -> None:
    """`--format cloudevents` renders CloudEvents 1.0 objects; null subject and key are left out."""
    cli.ok("append", "order.created", "total:=10", "--key", "cust-1", "--subject", "order-1", "--source", "shop")
    cli.ok("append", "ping")
    recs = cli.records()
    lines = cli.ok("read", "--format", "cloudevents").splitlines()
    a, b = (json.loads(line) for line in lines)
    assert a == {"specversion": "1.0", "id": recs[0]["id"], "source": "shop", "type": "order.created",
                 "time": recs[0]["time"], "subject": "order-1", "datacontenttype": "application/json",
                 "partitionkey": "cust-1", "sequence": "0", "data": {"total": 10}}
    assert "subject" not in b and "partitionkey" not in b
    assert b["sequence"] == "1" and b["specversion"] == "1.0" and b["data"] is None


def test_format_data(cli: Evlog) -> None:
    """`--format data` prints only each event's data as JSON, one per line."""
    cli.batch([{"type": "t", "data": d} for d in ({"a": [1, 2]}, "s", None, 3.5, [])])
    lines = cli.ok("read", "--format", "data").splitlines()
    assert [json.loads(x) for x in lines] == [{"a": [1, 2]}, "s", None, 3.5, []]


def test_format_pretty_is_one_line_per_event(cli: Evlog) -> None:
    """`--format pretty` prints one line per event, with the offset and type, however long the data."""
    events = [{"type": "order.created", "key": "cust-1", "data": {"note": "x" * 500, "nl": "a\nb\nc"}},
              {"type": "t" * 200, "data": list(range(300))},
              {"type": "ping"}]
    cli.batch(events)
    for env in (cli.env, {**cli.env, "COLUMNS": "60"}):
        out = cli.ok("read", "--format", "pretty", env=env)
        lines = out.splitlines()
        assert len(lines) == 3, out
        for i, line in enumerate(lines):
            assert line.split()[0] == str(i), line
        assert "order.created" in lines[0] and "cust-1" in lines[0]
        assert "ping" in lines[2]
    tail_out = cli.ok("tail", "-n", 2, "--format", "pretty")
    assert len(tail_out.splitlines()) == 2


def test_msgpack_log_reads_like_jsonl(cli: Evlog, tmp_path: Path) -> None:
    """The same events read back identically (but for their times) from a jsonl and a msgpack log."""
    events = [{"type": "t", "id": f"id-{i}", "key": f"k{i}" if i % 2 else None, "subject": "s" if i % 3 else None,
               "data": {"i": i, "f": i / 2, "l": [True, None, "ü"]}} for i in range(6)]
    results = {}
    for fmt in ("jsonl", "msgpack"):
        d = tmp_path / fmt
        cli.ok("-d", d, "init", "--format", fmt)
        cli.batch(events, d=d)
        results[fmt] = [{k: v for k, v in r.items() if k != "time"} for r in cli.records(d=d)]
        for f in ("cloudevents", "data"):
            results[fmt + f] = [{k: v for k, v in json.loads(x).items() if k != "time"} if f == "cloudevents"
                                else json.loads(x) for x in cli.ok("-d", d, "read", "--format", f).splitlines()]
    assert results["jsonl"] == results["msgpack"]
    assert results["jsonlcloudevents"] == results["msgpackcloudevents"]
    assert results["jsonldata"] == results["msgpackdata"]
    assert [r["data"]["l"][2] for r in results["msgpack"]] == ["ü"] * 6


# -- info / verify ---------------------------------------------------------------------------

INFO_KEYS = {"format", "dir", "segments", "first_offset", "last_offset", "events", "bytes", "oldest_time",
             "newest_time", "groups", "hooks", "dead_letters"}


def test_info_json_of_an_empty_log(cli: Evlog) -> None:
    """`info --json` of an empty log has the SPEC keys, with null offsets and times and 0 events."""
    cli.ok("init", "--format", "msgpack")
    facts = json.loads(cli.ok("info", "--json"))
    assert INFO_KEYS <= set(facts), INFO_KEYS - set(facts)
    assert facts["format"] == "msgpack"
    assert Path(facts["dir"]).resolve() == cli.dir.resolve()
    assert facts["events"] == 0
    assert facts["first_offset"] is None and facts["last_offset"] is None
    assert facts["oldest_time"] is None and facts["newest_time"] is None
    assert facts["groups"] == [] and facts["hooks"] == 0 and facts["dead_letters"] == 0


def test_info_json_describes_the_log(cli: Evlog) -> None:
    """`info --json` counts segments and events and gives the first/last offsets and times."""
    cli.ok("init", "--segment-bytes", "1KiB")
    cli.batch([{"type": "t", "data": {"pad": "p" * 150, "i": i}} for i in range(20)])
    cli.ok("append", "last")
    facts = json.loads(cli.ok("info", "--json"))
    recs = cli.records()
    segs = segment_files(cli.dir)
    assert len(segs) > 2
    assert facts["segments"] == len(segs)
    assert facts["events"] == 21
    assert (facts["first_offset"], facts["last_offset"]) == (0, 20)
    assert (facts["oldest_time"], facts["newest_time"]) == (recs[0]["time"], recs[-1]["time"])
    assert facts["bytes"] >= sum(p.stat().st_size for p in segs)
    assert isinstance(facts["groups"], list) and isinstance(facts["hooks"], int)
    text = cli.ok("info")
    assert "21" in text


def test_verify_json_of_a_clean_log(cli: Evlog) -> None:
    """`verify --json` of a sound log: ok, the segment and record counts, no problems; exit 0."""
    cli.ok("init", "--segment-bytes", "1KiB")
    cli.batch([{"type": "t", "data": {"pad": "p" * 150, "i": i}} for i in range(20)])
    r = cli("verify", "--json")
    assert r.rc == 0, r.err
    report = json.loads(r.out)
    assert report["ok"] is True and report["problems"] == []
    assert report["segments"] == len(segment_files(cli.dir))
    assert report["records"] == 20
    assert cli("verify").rc == 0


# -- errors and global options ---------------------------------------------------------------

def test_missing_log_is_an_error_and_creates_nothing(cli: Evlog) -> None:
    """Every command but `append` and `init` reports a missing log (exit 1) and creates nothing."""
    for args in (["read"], ["tail"], ["info"], ["verify"], ["read", "-f"], ["tail", "-f"], ["verify", "--repair"]):
        assert_one_error(cli(*args), 1)
        assert not cli.dir.exists(), args


def test_usage_errors_exit_2_with_one_line(cli: Evlog) -> None:
    """Unknown flags, commands and bad option values exit 2 with one `evlog: error:` line."""
    cli.ok("init")
    for args in (["read", "--bogus"], ["frobnicate"], ["append", "t", "--bogus"], ["tail", "-n", "many"],
                 ["--log-format", "xml", "info"]):
        assert_one_error(cli(*args), 2)
    assert cli.records() == []


def test_settings_error_names_the_file_and_key(cli: Evlog) -> None:
    """An unknown setting in evlog.toml is an error (exit 1) naming the file and the key."""
    cli.ok("init")
    with open(cli.dir / "evlog.toml", "a") as f:
        f.write("\nbogus_setting = 3\n")
    line = assert_one_error(cli("read"), 1, "bogus_setting")
    assert "evlog.toml" in line


@pytest.mark.parametrize("how", ["option", "env"])
def test_log_format_json_diagnostics(cli: Evlog, how: str) -> None:
    """`--log-format json` (or EVLOG_LOG_FORMAT=json) makes each diagnostic a JSON object with ts, level, msg."""
    env = {**cli.env, "EVLOG_LOG_FORMAT": "json"} if how == "env" else cli.env
    pre = ["--log-format", "json"] if how == "option" else []
    r = cli(*pre, "read", env=env)
    assert r.rc == 1
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    obj = json.loads(lines[0])
    assert {"ts", "level", "msg"} <= set(obj)
    assert obj["level"] == "error" and obj["msg"]
    assert TIME_RE.fullmatch(obj["ts"]) or re.match(r"\d{4}-\d{2}-\d{2}T", obj["ts"])
    r = cli(*pre, "append", "--batch", input='{"type":"t"}\n', env=env)
    assert r.rc == 0
    for line in r.err.splitlines():
        assert {"ts", "level", "msg"} <= set(json.loads(line))


def test_closed_pipe_exits_quietly(cli: Evlog, spawn: Spawner) -> None:
    """`evlog read | head -1`: the reader cut off by a closed pipe exits quietly."""
    cli.batch([{"type": "t", "data": {"i": i, "pad": "x" * 100}} for i in range(5000)])
    proc = spawn("read", stdout=subprocess.PIPE, stderr=subprocess.PIPE, collect=False)
    assert proc.popen.stdout is not None and proc.popen.stderr is not None
    first = proc.popen.stdout.readline()
    assert json.loads(first)["offset"] == 0
    proc.popen.stdout.close()
    rc = proc.popen.wait(10)
    err = proc.popen.stderr.read().decode()
    assert err == "", err
    assert rc in (0, 128 + signal.SIGPIPE, -signal.SIGPIPE), rc


def test_dir_option_beats_the_environment(cli: Evlog, tmp_path: Path) -> None:
    """`--dir`/`-d` wins over EVLOG_DIR."""
    chosen = tmp_path / "chosen"
    cli.ok("--dir", chosen, "append", "one")
    cli.ok("-d", chosen, "append", "two")
    assert not cli.dir.exists()
    assert [r["type"] for r in cli.records(d=chosen)] == ["one", "two"]
    cli.ok("append", "env")
    assert [r["type"] for r in cli.records()] == ["env"]


def test_default_dir_is_xdg_data_home(cli: Evlog, tmp_path: Path) -> None:
    """Without --dir or EVLOG_DIR the log lives in $XDG_DATA_HOME/evlog, else ~/.local/share/evlog."""
    env = {k: v for k, v in cli.env.items() if k != "EVLOG_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    cli.ok("append", "x", env=env)
    assert (tmp_path / "xdg" / "evlog" / "evlog.toml").is_file()
    assert [r["type"] for r in cli.records(env=env)] == ["x"]
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in env.items() if k != "XDG_DATA_HOME"}
    env["HOME"] = str(home)
    cli.ok("append", "y", env=env)
    assert (home / ".local" / "share" / "evlog" / "evlog.toml").is_file()
    assert not cli.dir.exists()


def test_version_and_help(cli: Evlog) -> None:
    """`--version` prints the version; every command here has `--help`."""
    r = cli("--version")
    assert r.rc == 0 and re.search(r"\d+\.\d+", r.out), r
    for command in ("init", "append", "read", "tail", "info", "verify"):
        r = cli(command, "--help")
        assert r.rc == 0 and command in r.out.lower(), (command, r)


# -- input that would break readers later ----------------------------------------------------

BAD_UTF8 = "\udcff"  # byte 0xff as Python hands it over in argv (surrogate escape)


@pytest.mark.parametrize("args", [
    ["t", f"name={BAD_UTF8}"],
    ["t", f"n:=\"{BAD_UTF8}\""],
    ["t", "--data", f"\"{BAD_UTF8}\""],
    ["t", "--key", BAD_UTF8],
    ["t", "--subject", BAD_UTF8],
    ["t", "--source", BAD_UTF8],
    ["t", "--id", BAD_UTF8],
    [f"t{BAD_UTF8}"],
], ids=["field", "field-json", "data", "key", "subject", "source", "id", "type"])
def test_append_arguments_with_invalid_utf8_exit_4_and_write_nothing(cli: Evlog, args: list[str]) -> None:
    """Event content given as command-line bytes that are not UTF-8 is invalid input (exit 4), not an internal error."""
    cli.ok("init")
    r = cli("append", *args)
    assert_one_error(r, 4, "UTF-8")
    assert cli.records() == []


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_append_data_file_or_stdin_with_invalid_utf8_exits_4(cli: Evlog, tmp_path: Path, how: str) -> None:
    """`--data @FILE` and `--data -` holding bytes that are not UTF-8 are invalid input (exit 4)."""
    raw = b'{"s":"\xff"}'
    (tmp_path / "d.json").write_bytes(raw)
    r = cli("append", "t", "--data", "@d.json") if how == "file" else cli("append", "t", "--data", "-", input=raw)
    assert_one_error(r, 4)
    assert not cli.dir.exists() or cli.records() == []


@pytest.mark.parametrize("line", [
    b'{"type":"t","data":"\xff"}',
    b'{"type":"t","data":{"k\xc3":1}}',
    b'{"type":"t","data":"\xed\xa0\x80"}',   # an encoded surrogate is not UTF-8 either
    b'{"type":"t","data":"\\ud800"}',
    b'{"type":"t","data":["\\udc00x"]}',
    b'{"type":"t","key":"\\ud800"}',
], ids=["byte-ff", "truncated", "encoded-surrogate", "lone-high", "lone-low", "key-surrogate"])
def test_batch_with_invalid_utf8_or_a_lone_surrogate_exits_4_and_appends_nothing(cli: Evlog, line: bytes) -> None:
    """`append --batch` rejects a line whose strings are not valid Unicode, naming the line; nothing is appended."""
    good = b'{"type":"ok","data":"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00"}\n'
    r = cli("append", "--batch", input=good + line + b"\n" + good)
    assert_one_error(r, 4, "line 2:")
    assert not cli.dir.exists() or cli.records() == []


def test_batch_with_valid_unicode_is_accepted(cli: Evlog) -> None:
    """Non-ASCII UTF-8 and escaped surrogate pairs are valid data and read back as given."""
    good = '{"type":"ok","data":"café \\u00e9 \\ud83d\\ude00 \\\\ud800"}\n'
    cli.batch(good * 3)
    assert [r["data"] for r in cli.records()] == ["café é 😀 \\ud800"] * 3


def test_stream_skips_a_line_with_invalid_utf8_and_exits_3(cli: Evlog) -> None:
    """`append --stream` reports a line that is not valid Unicode with its number, skips it and exits 3."""
    text = (b'{"type":"ok","data":1}\n{"type":"t","data":"\xff"}\n{"type":"t","data":"\\ud800"}\n'
            b'{"type":"ok","data":2}\n')
    r = cli("append", "--stream", input=text)
    assert r.rc == 3, r
    assert "line 2" in r.err and "line 3" in r.err
    assert [x["data"] for x in cli.records()] == [1, 2]


def nested(levels: int, leaf: str = "1") -> str:
    """JSON with `levels` arrays and objects nested in each other."""
    return '{"a":' * (levels // 2) + "[" * (levels - levels // 2) + leaf + "]" * (levels - levels // 2) \
        + "}" * (levels // 2)


def test_data_may_nest_100_levels_and_no_more(cli: Evlog) -> None:
    """`data` nested MAX_DEPTH (100) levels is accepted; one level more is invalid input (exit 4)."""
    assert cli.ok("append", "t", "--data", nested(100)).strip() == "0"
    assert_one_error(cli("append", "t", "--data", nested(101)), 4, "100 levels")
    assert cli.ok("append", "t", "f:=" + nested(99)).strip() == "1"
    assert_one_error(cli("append", "t", "f:=" + nested(100)), 4, "100 levels")
    assert [json.dumps(r["data"], separators=(",", ":")) for r in cli.records()] == \
        [nested(100), '{"f":' + nested(99) + "}"]
    assert cli.ok("append", "t").strip() == "2"  # appending goes on


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_batch_rejects_data_nested_too_deeply_even_100000_levels(cli: Evlog, fmt: str) -> None:
    """A `--batch` line nested past the limit, however deep, is invalid input naming the line (exit 4)."""
    cli.ok("init", "--format", fmt)
    for levels in (101, 100_000):
        text = '{"type":"ok"}\n' + f'{{"type":"t","data":{nested(levels)}}}\n'
        assert_one_error(cli("append", "--batch", input=text), 4, "line 2:", "100 levels")
    cli.batch(f'{{"type":"t","data":{nested(100)}}}\n')
    assert len(cli.records()) == 1


def test_data_nested_100000_levels_is_invalid_input_not_an_internal_error(cli: Evlog, tmp_path: Path) -> None:
    """`--data` nested 100,000 levels deep (in a file or stdin; 25,000 as an argument, which the
    system caps at 128 KiB) exits 4 and writes nothing."""
    deep = nested(100_000)
    (tmp_path / "deep.json").write_text(deep)
    assert_one_error(cli("append", "t", "--data", nested(25_000)), 4, "100 levels")
    assert_one_error(cli("append", "t", "--data", "@deep.json"), 4, "100 levels")
    assert_one_error(cli("append", "t", "--data", "-", input=deep), 4, "100 levels")
    assert not cli.dir.exists()


def test_stream_skips_a_line_nested_too_deeply_and_keeps_the_rest_of_its_group(cli: Evlog) -> None:
    """A `--stream` line nested past the limit is skipped with its line number; the lines with it are appended."""
    text = f'{{"type":"t","data":1}}\n{{"type":"t","data":{nested(100_000)}}}\n{{"type":"t","data":2}}\n'
    r = cli("append", "--stream", input=text)
    assert r.rc == 3, r
    assert "line 2" in r.err and "100 levels" in r.err
    assert [x["data"] for x in cli.records()] == [1, 2]


def test_the_depth_limit_is_documented(cli: Evlog) -> None:
    """The nesting limit is stated in `append --help` and in the README's section on appending."""
    assert "100 levels" in " ".join(cli.ok("append", "--help").split())
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "100 levels" in readme


# -- bad input is a usage error or invalid input, never an internal error -------------------

HUGE = "9" * 400


@pytest.mark.parametrize("args", [
    ["read", "--key", BAD_UTF8],
    ["read", "--subject", BAD_UTF8],
    ["read", "--source", BAD_UTF8],
    ["read", "--type", f"a.{BAD_UTF8}"],
    ["read", "--where", f"key == '{BAD_UTF8}'"],
    ["tail", "--key", BAD_UTF8],
    ["replay", "--group", BAD_UTF8, "--", "true"],
    ["replay", "--env", f"A={BAD_UTF8}", "--", "true"],
    ["replay", "--", f"/bin/{BAD_UTF8}"],
    ["hooks", "add", "h", "--", f"/bin/{BAD_UTF8}"],
    ["dlq", "list", "--key", BAD_UTF8],
], ids=lambda a: "-".join(x for x in a if x.startswith("-") and x != "--") or a[0])
def test_non_content_arguments_with_invalid_utf8_are_usage_errors(cli: Evlog, args: list[str]) -> None:
    """A filter or an option that is not event content, given bytes that are not UTF-8, is a usage error (exit 2)."""
    cli.ok("append", "t")
    assert_one_error(cli(*args), 2)


@pytest.mark.parametrize("args", [
    ["read", "--since", "99999999999999999d"],
    ["read", "--until", "99999999999999999d"],
    ["read", "--since", f"{HUGE}s"],
    ["read", "--since", f"{HUGE}.5ms"],
    ["read", "--since", "0001-01-01T00:00:00+01:00"],
    ["dlq", "purge", "--before", "99999999999999999d"],
    ["groups", "reset", "g", "--to-time", "99999999999999999d"],
    ["replay", "--timeout", f"{HUGE}s", "--", "true"],
    ["replay", "--backoff", f"{HUGE}ms", "--", "true"],
    ["replay", "--max-memory", f"{HUGE}KiB", "--", "true"],
    ["compact", "--max-age", f"{HUGE}d"],
    ["compact", "--max-bytes", HUGE],
    ["init", "--segment-bytes", f"{HUGE}MiB"],
    ["hooks", "add", "h", "--timeout", f"{HUGE}s", "--", "true"],
], ids=lambda a: f"{a[0]}{a[1] if a[1].startswith('-') else ' ' + a[3]}")
def test_huge_durations_times_and_sizes_are_usage_errors(cli: Evlog, args: list[str]) -> None:
    """A duration, time or size too large to mean anything is a usage error (exit 2) with a clear message."""
    if args[0] != "init":
        cli.ok("append", "t")
        (cli.dir / "groups").mkdir(exist_ok=True)
        (cli.dir / "groups" / "g.json").write_text('{"position":0}\n')
    line = assert_one_error(cli(*args), 2)
    assert "internal error" not in line


def test_an_integer_beyond_64_bits_is_invalid_input_in_a_messagepack_log(cli: Evlog) -> None:
    """A MessagePack log cannot hold integers beyond 64 bits: append and --batch exit 4 and write nothing."""
    cli.ok("init", "--format", "msgpack")
    assert_one_error(cli("append", "t", f"n:={2**64}"), 4, "64 bits")
    assert_one_error(cli("append", "t", "--data", f"[{-2**63 - 1}]"), 4, "64 bits")
    assert_one_error(cli("append", "--batch", input=f'{{"type":"t"}}\n{{"type":"t","data":{2**70}}}\n'), 4, "line 2:")
    cli.ok("append", "t", f"n:={2**64 - 1}", f"m:={-2**63}")
    assert [r["data"] for r in cli.records()] == [{"n": 2**64 - 1, "m": -2**63}]


def test_a_dir_with_a_newline_gives_one_error_line(cli: Evlog, tmp_path: Path) -> None:
    """A path holding a newline shows quoted in an error, which stays one line."""
    r = cli("-d", str(tmp_path / "a\nb"), "read")
    line = assert_one_error(r, 1, "no log at")
    assert "a\\nb" in line


@pytest.mark.parametrize("extra", [b"\xff = 1\n", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"],
                         ids=["not-utf8", "deep"])
def test_settings_that_are_not_utf8_or_too_deep_are_an_error_naming_the_file(cli: Evlog, extra: bytes) -> None:
    """An evlog.toml that is not UTF-8, or nests beyond what a parser can follow, is an error naming it (exit 1)."""
    cli.ok("init")
    with open(cli.dir / "evlog.toml", "ab") as f:
        f.write(extra)
    assert_one_error(cli("read"), 1, "evlog.toml")
