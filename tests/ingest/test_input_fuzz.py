"""Every input parser either accepts its input or raises an EvlogError (ValueError where its contract says so and
every caller converts it) - never any other exception; and what append accepts, readers can decode.

Each property runs a few hundred examples by default; its `_slow` twin (`-m slow`) runs many more.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import TRACEBACK, Evlog
from engine_helpers import FORMATS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evlog.consumers.checkpoints import Groups
from evlog.consumers.deadletter import DeadLetters
from evlog.consumers.hooks import Registry
from evlog.errors import EvlogError
from evlog.ingest.append import payload
from evlog.ingest.event import Validator, block_ok
from evlog.ingest.spool import Spool, read_batch
from evlog.settings import from_dict, load
from evlog.store.framing import CODECS
from evlog.units import parse_duration_us, parse_size, parse_time_us

FAST, SLOW = 150, 5000
NOW = 1_800_000_000_000_000


def fuzz(*strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], tuple[Any, Any]]:
    """A property as two tests: a quick one and a `slow` one with many more examples."""

    def wrap(check: Callable[..., None]) -> tuple[Any, Any]:
        def make(n: int) -> Any:
            return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))(
                given(*strategies)(check))

        return make(FAST), pytest.mark.slow(make(SLOW))

    return wrap


# -- strategies -------------------------------------------------------------------------------------

FRAGMENTS = [b"{", b"}", b"[", b"]", b'"', b"\\", b"\\u", b"d800", b"dc00", b"\\ud83d\\ude00", b"\xff", b"\xc3",
             b"\xed\xa0\x80", b"\x00", b'"type"', b'"t"', b'"a.b"', b":", b",", b" ", b"\n", b"1e400", b"1e-400",
             b"9" * 30, b"-", b"0.5", b"null", b"true", b'"data"', b'"key"', b'"id"', b'"source"', b'"subject"',
             b'"specversion"', b'"1.0"', b'"partitionkey"', b'"offset"', b'"time"', b"[" * 120, b"]" * 120,
             b"{\"a\":" * 60, b"}" * 60, str(2**64).encode(), str(-2**63 - 1).encode(), b"\xf0\x9f\x98\x80"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
event_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["t", "order.created", "", "a b", "x" * 300]) | st.text(max_size=10)},
    optional={"data": json_values, "key": st.none() | st.text(max_size=10), "id": st.text(max_size=5),
              "subject": st.text(max_size=5), "source": st.text(max_size=5), "specversion": st.just("1.0"),
              "partitionkey": st.text(max_size=5)})
mutated = st.tuples(event_objects.map(lambda e: json.dumps(e).encode()), st.integers(0, 200),
                    st.sampled_from(FRAGMENTS)).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:])
event_lines = (event_objects.map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogatepass"))
               | mutated | st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(b"".join)
               | st.binary(max_size=80))
texts = st.text(max_size=40) | st.lists(st.sampled_from(["1", "9" * 30, "9" * 400, "d", "s", "ms", ".", "5", "-",
                                                         "T", ":", "Z", "+", "2026-11-27", "T08:00:00", "e",
                                                         "KiB", "\udcff", " ", "\n", "٣"]), max_size=8).map("".join)


def validators() -> st.SearchStrategy[Validator]:
    return st.sampled_from([Validator(CODECS[f], 4096, "test") for f in FORMATS])


def decodes(v: Validator, item: bytes) -> None:
    """A reader can decode the record this item becomes."""
    codec = v.codec
    if item.startswith(b"I"):
        id_, rest = codec.split_item(item)
    else:
        id_, rest = "01a23b45-1ad8-7835-806d-75e490a61c0f", item
    frame = codec.frame(7, id_, "2026-11-27T08:00:00.000000Z", rest)
    stored = codec.split(frame, True)[0][0]
    record = codec.record(stored)
    msgspec.json.decode(codec.json(stored))
    assert record.offset == 7


# -- event lines ------------------------------------------------------------------------------------

@fuzz(validators(), event_lines)
def _line(v: Validator, line: bytes) -> None:
    """An input line becomes an item that readers can decode, or InvalidEvent."""
    try:
        item = v.from_line(line)
    except EvlogError:
        return
    decodes(v, item)


test_an_event_line_is_an_item_readers_decode_or_invalid, test_event_lines_slow = _line


@fuzz(validators(), st.lists(event_lines, max_size=6))
def _lines(v: Validator, lines: list[bytes]) -> None:
    """Many lines become items (each as `from_line` would make it) or raise InvalidEvent or a decode error."""
    lines = [line for line in lines if b"\n" not in line]
    try:
        items = v.from_lines(lines, block_ok(b"\n".join(lines)))
    except (EvlogError, msgspec.MsgspecError):
        return
    assert items == [v.from_line(line) for line in lines]


test_many_lines_are_items_like_one_at_a_time_or_an_error, test_many_lines_slow = _lines


@fuzz(st.sampled_from(FORMATS), st.lists(event_lines, max_size=6))
def _batch(fmt: str, lines: list[bytes]) -> None:
    """read_batch of any input spools items readers can decode, or raises InvalidLine."""
    v = Validator(CODECS[fmt], 4096, "test")
    with tempfile.TemporaryFile() as f:
        f.write(b"\n".join(lines))
        f.seek(0)
        try:
            spool = read_batch(f.fileno(), v, Spool(None, v.codec))
        except EvlogError:
            return
    for item in spool:
        decodes(v, item)


test_a_batch_spools_items_readers_decode_or_names_a_line, test_batch_slow = _batch


# -- FIELD items and --data -------------------------------------------------------------------------

fields = st.lists(st.text(max_size=3).flatmap(
    lambda name: st.sampled_from(["=", ":=", ""]).flatmap(
        lambda op: texts.map(lambda value: name + op + value)))
    | event_lines.map(lambda b: "n:=" + b.decode("utf-8", "surrogateescape")), max_size=4)


@fuzz(validators(), fields, st.none() | texts | event_lines.map(lambda b: b.decode("utf-8", "surrogateescape")))
def _payload(v: Validator, items: list[str], data: str | None) -> None:
    """FIELD items and --data give data that readers can decode, or a usage error or invalid input."""
    if data in ("-",) or (data or "").startswith("@"):
        data = None
    try:
        raw = payload(items, data)
        item = v.item("t", raw, None, None, None, None)
    except EvlogError:
        return
    decodes(v, item)


test_field_items_and_data_give_decodable_data_or_an_error, test_payload_slow = _payload


@fuzz(validators(), texts, texts, texts, texts, texts)
def _arguments(v: Validator, type_: str, key: str, subject: str, source: str, id_: str) -> None:
    """Any command-line strings as type, key, subject, source and id give a decodable item or InvalidEvent."""
    try:
        item = v.item(type_, b'"x"', key, subject, source, id_ or None)
    except EvlogError:
        return
    decodes(v, item)


test_event_arguments_give_a_decodable_item_or_invalid_input, test_arguments_slow = _arguments


# -- times, sizes, durations --------------------------------------------------------------------------

@fuzz(texts)
def _units(text: str) -> None:
    """Times, sizes and durations parse to integers in range, or raise ValueError (callers make it exit 2)."""
    for parse in (parse_size, parse_duration_us, lambda t: parse_time_us(t, now=NOW)):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert isinstance(value, int) and -2**63 <= value < 2**63


test_units_parse_in_range_or_raise_value_error, test_units_slow = _units


# -- hooks.toml, evlog.toml, dead-letter lines, checkpoints -----------------------------------------------

TOML_WORDS = ["0s", "30s", "9" * 40 + "d", "64MiB", "data ==", "*", "jsonl", "never", "true"]
toml_values = st.recursive(
    st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=12) | st.sampled_from(TOML_WORDS),
    lambda inner: st.lists(inner, max_size=3), max_leaves=8)
hook_tables = st.dictionaries(
    st.sampled_from(["command", "types", "key", "subject", "source", "where", "retries", "timeout", "batch", "paused",
                     "other"]), toml_values, max_size=6)


def toml_text(doc: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else str(v)

    return "".join(f"[hooks.{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                   for name, table in doc.items())


def in_tmp(write: Callable[[Path], None], read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as d:
        write(Path(d))
        return read(Path(d))


@fuzz(st.dictionaries(st.sampled_from(["a", "b-1", "x_y", "bad.name"]), hook_tables, max_size=2).map(toml_text)
      | st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def _hooks(text: str) -> None:
    """hooks.toml of any text loads hooks that can run, or raises an EvlogError naming the file."""
    try:
        hooks = in_tmp(lambda d: (d / "hooks.toml").write_text(text, "utf-8", "surrogateescape"),
                       lambda d: Registry(d, fsync=False).load())
    except EvlogError as e:
        assert "hooks.toml" in str(e)
        return
    for hook in hooks.values():
        assert hook.command and hook.batch >= 1 and hook.retries >= 0
        hook.filter().compile(CODECS["jsonl"])


test_hooks_toml_loads_or_names_the_file, test_hooks_toml_slow = _hooks


settings_docs = st.dictionaries(
    st.sampled_from(["format", "segment_bytes", "index_interval_bytes", "fsync", "max_event_bytes", "dedup_window",
                     "retention", "compaction", "dead_letter", "other"]),
    toml_values | st.dictionaries(st.sampled_from(["max_age", "max_bytes", "max_events", "keys",
                                                   "tombstone_retention", "max_entries", "x"]), toml_values,
                                  max_size=3), max_size=6)


@fuzz(settings_docs)
def _settings(doc: dict[str, Any]) -> None:
    """from_dict of any document gives Settings or a SettingsError naming the key."""
    try:
        from_dict(doc)
    except EvlogError:
        pass


test_settings_documents_load_or_raise_settings_error, test_settings_slow = _settings


@fuzz(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def _settings_text(text: str) -> None:
    """evlog.toml of any text loads or raises a SettingsError."""
    try:
        in_tmp(lambda d: (d / "evlog.toml").write_bytes(text.encode("utf-8", "surrogateescape")),
               lambda d: load(d / "evlog.toml"))
    except EvlogError:
        pass


test_settings_text_loads_or_raises_settings_error, test_settings_text_slow = _settings_text


entry_lines = (st.builds(lambda e: json.dumps(e), st.fixed_dictionaries(
    {"dlq_id": st.integers(-2, 2**70) | st.text(max_size=3)},
    optional={"event": json_values | st.just({"offset": 1, "id": "i", "time": "t", "type": "t", "source": "s",
                                              "subject": None, "key": None}),
              "attempts": json_values, "command": json_values, "containment": json_values, "hook": json_values}))
    | event_lines.map(lambda b: b.decode("utf-8", "surrogateescape")) | st.sampled_from(["5", "[1,2]", "null"]))


@fuzz(st.lists(entry_lines, max_size=4))
def _dead_letters(lines: list[str]) -> None:
    """A dead-letter file of any lines gives entries or an EvlogError naming the file."""
    text = "\n".join(lines).encode("utf-8", "surrogateescape")
    try:
        entries = in_tmp(lambda d: (d / "dead-letter.jsonl").write_bytes(text),
                         lambda d: DeadLetters(d, 10, fsync=False).entries())
    except EvlogError as e:
        assert "dead-letter.jsonl" in str(e)
        return
    for e in entries:
        assert isinstance(e, dict) and isinstance(e["dlq_id"], int)


test_dead_letter_lines_are_entries_or_name_the_file, test_dead_letters_slow = _dead_letters


@fuzz(st.binary(max_size=40) | st.builds(lambda p: json.dumps({"position": p}).encode(), json_values),
      st.text(max_size=10))
def _checkpoints(data: bytes, name: str) -> None:
    """A checkpoint file of any bytes, under any group name, gives a position >= 0 or an EvlogError."""
    def write(d: Path) -> None:
        (d / "groups").mkdir()
        (d / "groups" / "g.json").write_bytes(data)

    try:
        position = in_tmp(write, lambda d: (Groups(d, fsync=False).get("g"), Groups(d, fsync=False).get(name)))
    except EvlogError:
        return
    assert position[0] is None or position[0] >= 0


test_checkpoints_read_or_raise, test_checkpoints_slow = _checkpoints


# -- the command line --------------------------------------------------------------------------------

NASTY = ["\udcff", "9" * 400, "99999999999999999d", "a\nb", "../../x", "٣"]


@pytest.mark.parametrize("template", [
    ["append", "t", "f={}", "--key", "{}"], ["append", "t", "--data", "{}"], ["read", "--since", "{}"],
    ["read", "--where", "data == {}", "--type", "{}"], ["read", "--from", "{}"],
    ["groups", "reset", "{}", "--to", "1"], ["hooks", "add", "h", "--timeout", "{}", "--", "{}"],
    ["dlq", "purge", "--before", "{}"], ["replay", "--max-memory", "{}", "--", "true"],
    ["compact", "--max-bytes", "{}"], ["-d", "{}", "info"],
], ids=lambda t: " ".join(t).replace("{}", "X"))
def test_nasty_arguments_never_give_an_internal_error(cli: Evlog, template: list[str]) -> None:
    """Surrogate-escaped bytes, huge numbers, newlines and ../ in arguments give a documented exit code and one
    error line at most: never an internal error, never a traceback."""
    cli.ok("append", "t")
    for nasty in NASTY:
        args = [part.replace("{}", nasty) for part in template]
        r = cli(*args, timeout=30)
        assert TRACEBACK not in r.err and "internal error" not in r.err, (args, r)
        assert r.rc in (0, 1, 2, 3, 4, 5), (args, r)
        assert len([line for line in r.err.splitlines() if line.startswith("evlog: error:")]) <= 1, (args, r)
    assert not (cli.tmp / "x.json").exists() and not os.path.exists(cli.dir.parent.parent / "x.json")
