"""Events as callers give them: validation, ids, and the CloudEvents mapping (evlog.ingest.event, SPEC 4)."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from engine_helpers import FORMATS, encoder, make_log, records, validator
from hypothesis import given
from hypothesis import strategies as st

import evlog.store.log
import evlog.store.writer
import evlog.units
from evlog.errors import ExitCode, InvalidEvent
from evlog.ingest.event import Validator, cloudevent, type_problem
from evlog.store.framing import CODECS, Record
from evlog.store.reader import read_frames
from evlog.store.writer import open_writer
from evlog.units import format_time, time_to_us

T0 = 1_800_000_000_000_000
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


@pytest.fixture(params=FORMATS)
def log(request, tmp_path):
    return make_log(tmp_path / "log", request.param, max_event_bytes=2048)


def store(log, items) -> list[Record]:
    with open_writer(log) as w:
        w.append(items)
    return records(log)


# -- types -------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["a", "order.created", "x" * 256, PRINTABLE.replace("*", "").replace(">", ""),
                                   'q"uote', "back\\slash", "!#$%&'()+,-./:;<=?@[]^_`{|}~", "a..b", "."])
def test_valid_types_are_accepted(type_):
    """Types of 1-256 printable ASCII characters without whitespace, `*` or `>` are valid."""
    assert type_problem(type_) is None


@pytest.mark.parametrize("type_", ["a..b", ".a", "a.", ".", "x.y..z"])
def test_types_with_empty_tokens_are_refused_for_a_nats_log_in_every_path(type_):
    """A NATS log's types are subject suffixes: a validator for one refuses empty tokens, whether the type
    comes as arguments or in lines (the fast path of from_lines included, after a valid line)."""
    codec = CODECS["jsonl"]
    nats = Validator(codec, 1 << 20, "test", subject_types=True)
    local = Validator(codec, 1 << 20, "test")
    with pytest.raises(InvalidEvent, match="empty tokens"):
        nats.item(type_, b"null", None, None, None, None)
    line = json.dumps({"type": type_}).encode()
    for _ in range(2):  # the second time the type would be known, if it had been accepted
        with pytest.raises(InvalidEvent, match="empty tokens"):
            nats.from_lines([b'{"type":"ok.type"}', line])
    assert local.item(type_, b"null", None, None, None, None)
    assert len(local.from_lines([b'{"type":"ok.type"}', line])) == 2


@pytest.mark.parametrize(("type_", "reason"), [
    ("", "empty"),
    ("x" * 257, "256"),
    ("order created", "whitespace"),
    ("order\tcreated", "whitespace"),
    ("order\n", "whitespace"),
    ("ordér", "ASCII"),
    ("a\x00b", "ASCII"),
    ("a\x7fb", "ASCII"),
    ("order.*", "wildcard"),
    ("order.>", "wildcard"),
    ("a*b", "wildcard"),
    (5, "string"),
    (None, "string"),
])
def test_invalid_types_are_rejected_with_a_reason(type_, reason):
    """Each way of breaking the SPEC 4 type rule is named in the reason."""
    problem = type_problem(type_)
    assert problem is not None and reason in problem


@given(st.text(max_size=300))
def test_type_rule_agrees_with_the_spec(type_):
    """type_problem accepts exactly the strings SPEC 4 allows."""
    allowed = 1 <= len(type_) <= 256 and all(0x21 <= ord(c) <= 0x7E and c not in "*>" for c in type_)
    assert (type_problem(type_) is None) is allowed


# -- one event ------------------------------------------------------------------------------------


def test_an_accepted_event_is_stored_as_given(log):
    """What the validator accepts is appended with its type, data, key, subject, source and id."""
    make = encoder(validator(log, source="default-src"))
    items = [
        make("order.created", b'{"n":1,"s":"\\u00fc\\n"}', "k", "sub", "src", "id-1"),
        make("t", b"null", None, None, None, None),
    ]
    a, b = store(log, items)
    assert (a.type, a.data, a.key, a.subject, a.source, a.id) == ("order.created", {"n": 1, "s": "ü\n"}, "k", "sub",
                                                                  "src", "id-1")
    assert (b.type, b.data, b.key, b.subject, b.source) == ("t", None, None, None, "default-src")


@pytest.mark.parametrize(("args", "reason"), [
    (("bad type", b"1", None, None, None, None), "whitespace"),
    (("t", b"1", "a\x00b", None, None, None), "key"),
    (("t", b"1", None, "a\x00b", None, None), "subject"),
    (("t", b"1", None, None, "a\x00b", None), "source"),
    (("t", b"1", None, None, None, ""), "id"),
    (("t", b"1", None, None, None, "i" * 257), "id"),
    (("t", b"1", None, None, None, "a\x00"), "id"),
])
def test_invalid_fields_are_rejected_with_a_reason(log, args, reason):
    """A bad type, or a NUL or bad length in key, subject, source or id, raises InvalidEvent naming the field."""
    with pytest.raises(InvalidEvent) as err:
        encoder(validator(log))(*args)
    assert reason in str(err.value)
    assert err.value.exit_code == ExitCode.INVALID_INPUT


@pytest.mark.parametrize("data", [b'{"a":', b"nope", b"", b'{"a":1}x', b"[1,]"])
def test_data_that_is_not_json_is_rejected(log, data):
    """Data bytes that are not one JSON value raise InvalidEvent; nothing unreadable reaches the log."""
    with pytest.raises(InvalidEvent, match="JSON"):
        encoder(validator(log))("t", data, None, None, None, None)


def test_pretty_printed_data_is_stored_readably(log):
    """Valid JSON data with newlines and spaces in it is stored so that it reads back as the same value."""
    item = encoder(validator(log))("t", b'{\n  "a": [1,\n 2]\n}\n', None, None, None, None)
    (rec,) = store(log, [item])
    assert rec.data == {"a": [1, 2]}


def test_an_oversize_event_is_rejected(log):
    """An event whose encoded size exceeds max_event_bytes is rejected, naming the limit."""
    make = encoder(validator(log))
    make("t", json.dumps("x" * 1500).encode(), None, None, None, None)
    with pytest.raises(InvalidEvent, match="max_event_bytes") as err:
        make("t", json.dumps("x" * 3000).encode(), None, None, None, None)
    assert "2048" in str(err.value)
    with pytest.raises(InvalidEvent, match="max_event_bytes"):
        make("t", b"1", "k" * 3000, None, None, None)


def test_accepted_events_fit_within_max_event_bytes(log):
    """Whatever the validator accepts is stored as a record no larger than max_event_bytes."""
    make = encoder(validator(log))
    accepted = []
    for n in range(1700, 2100, 10):
        try:
            accepted.append(make("t", json.dumps("x" * n).encode(), "key", "subject", None, None))
        except InvalidEvent:
            break
    assert accepted
    store(log, accepted)
    for seg in log.segments():
        fd = seg.open()
        try:
            for _, frame in seg.frames(fd):
                assert len(frame) <= 2048
        finally:
            os.close(fd)


# -- input lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"data": 1}', "type"),
    (b'{"type": 5}', "type"),
    (b'{"type": ""}', "empty"),
    (b'{"type": "a b"}', "whitespace"),
    (b'{"type": "t", "key": 5}', "key"),
    (b'{"type": "t", "key": ["a"]}', "key"),
    (b'{"type": "t", "subject": {}}', "subject"),
    (b'{"type": "t", "source": 1.5}', "source"),
    (b'{"type": "t", "id": 7}', "id"),
    (b'{"type": "t", "data": }', "JSON"),
    (b'{"type": "t"', "JSON"),
    (b"not json", "JSON"),
    (b"[1, 2]", "object"),
    (b'"order.created"', "object"),
])
def test_bad_lines_are_rejected_with_a_clear_reason(log, line, reason):
    """Each kind of bad input line raises InvalidEvent whose message names the problem."""
    with pytest.raises(InvalidEvent) as err:
        validator(log).from_line(line)
    assert reason in str(err.value)
    assert "Traceback" not in str(err.value)


def test_an_event_line_is_stored_as_given(log):
    """A plain event line keeps its type, data, key, subject, source and id; missing fields take defaults."""
    v = validator(log, source="dflt")
    lines = [b'{"type":"a","data":{"x":[1,2]},"key":"k","subject":"s","source":"src","id":"i1"}',
             b'{"type":"b"}', b'{"type":"c","data":null,"key":null}']
    a, b, c = store(log, [v.from_line(x) for x in lines])
    assert (a.type, a.data, a.key, a.subject, a.source, a.id) == ("a", {"x": [1, 2]}, "k", "s", "src", "i1")
    assert (b.type, b.data, b.key, b.subject, b.source) == ("b", None, None, None, "dflt")
    assert (c.type, c.data, c.key) == ("c", None, None)


def test_a_cloudevents_line_maps_partitionkey_to_key_keeps_its_time_and_ignores_sequence(log, monkeypatch):
    """A CloudEvents line takes its key from `partitionkey`; its `time` is kept (SPEC 4, times on import: the
    log is empty) and its `sequence` replaced by the log's offset."""
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: T0)
    ce = {"specversion": "1.0", "id": "ce-1", "source": "urn:shop", "type": "order.created",
          "time": "2020-01-01T00:00:00Z", "subject": "sub", "datacontenttype": "application/json",
          "partitionkey": "cust-9", "sequence": "4711", "key": "not-this", "data": {"n": 1}}
    (rec,) = store(log, [validator(log).from_line(json.dumps(ce).encode())])
    assert (rec.offset, rec.id, rec.source, rec.type, rec.subject, rec.key, rec.data) == (
        0, "ce-1", "urn:shop", "order.created", "sub", "cust-9", {"n": 1})
    assert rec.time == "2020-01-01T00:00:00.000000Z"


# -- times on import (SPEC 4) -------------------------------------------------------------------------

def test_an_input_time_is_kept_when_not_earlier_than_the_newest(log, monkeypatch):
    """Lines that carry times keep them, in order; one earlier than the newest is raised to it and counted;
    a line without a time gets the append time, never earlier than the newest."""
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: T0)
    v = validator(log)
    lines = [b'{"type":"t","time":"2020-01-01T00:00:00Z"}', b'{"type":"t","time":"2020-01-02T00:00:00.5+01:00"}',
             b'{"type":"t","time":"2019-12-31T00:00:00Z"}', b'{"type":"t"}']
    with open_writer(log) as w:
        result = w.append([v.from_line(line) for line in lines])
    assert result.raised == 1
    assert [r.time for r in records(log)] == ["2020-01-01T00:00:00.000000Z", "2020-01-01T23:00:00.500000Z",
                                              "2020-01-01T23:00:00.500000Z", format_time(T0)]
    with open_writer(log) as w:
        assert w.append([v.from_line(lines[1])]).raised == 1  # now earlier than the newest (T0)
    assert records(log)[-1].time == format_time(T0)


def test_log_time_ignores_input_times(log, monkeypatch):
    """With keep_times off (--log-time), every event gets the append time."""
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: T0)
    v = Validator(log.codec, log.settings.max_event_bytes, "s", keep_times=False)
    (rec,) = store(log, [v.from_line(b'{"type":"t","time":"2020-01-01T00:00:00Z"}')])
    assert rec.time == format_time(T0)


@pytest.mark.parametrize("time", ["yesterday", "2020-01-01", "2999-01-01T00:00:00Z", "1960-01-01T00:00:00Z", "x" * 80])
def test_a_bad_or_future_input_time_is_invalid_input(log, time):
    """An input time that is no RFC 3339 time, lies more than a minute ahead, or before 1970, is invalid."""
    with pytest.raises(InvalidEvent, match="time"):
        validator(log).from_line(json.dumps({"type": "t", "time": time}).encode())


def test_a_cloudevents_line_without_partitionkey_has_no_key(log):
    """A CloudEvent without the partitioning extension is stored with a null key."""
    ce = {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "key": "ignored"}
    (rec,) = store(log, [validator(log).from_line(json.dumps(ce).encode())])
    assert rec.key is None


def test_a_read_json_record_is_accepted_and_keeps_its_id(log, tmp_path, monkeypatch):
    """A line printed by `read --format json` is re-imported with its id and its offset is the log's own; its
    time, earlier than the newest of the log it goes into, is raised to that."""
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: T0)
    monkeypatch.setattr(evlog.units, "now_us", lambda: T0 + 5_000_000)  # the clock import checks times against
    v = validator(log)
    make = encoder(v)
    store(log, [make("a", b'{"n":1}', "k", "s", "src", None), make("b", b"[1]", None, None, None, "given")])
    exported = [log.codec.json(f) for f in read_frames(log)]
    other = make_log(tmp_path / "other", "jsonl")
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: T0 + 5_000_000)
    store(other, [make_filler(other)] * 3)
    imported = store(other, [validator(other).from_line(line) for line in exported])[3:]
    originals = records(log)
    for orig, new in zip(originals, imported, strict=True):
        assert (new.id, new.type, new.source, new.subject, new.key, new.data) == \
            (orig.id, orig.type, orig.source, orig.subject, orig.key, orig.data)
        assert new.offset == orig.offset + 3
        assert new.time == format_time(T0 + 5_000_000)


def make_filler(log):
    return encoder(validator(log))("filler", b"null", None, None, None, None)


def test_reimporting_read_output_within_the_window_appends_nothing(log):
    """Re-importing `read --format json` output into the same log within dedup_window adds nothing twice."""
    make = encoder(validator(log))
    store(log, [make("a", b"1", None, None, None, None) for _ in range(5)])
    exported = [log.codec.json(f) for f in read_frames(log)]
    with open_writer(log) as w:
        result = w.append([validator(log).from_line(line) for line in exported])
    assert (result.count, result.duplicates) == (0, 5)
    assert len(records(log)) == 5


# -- ids ---------------------------------------------------------------------------------------------


def uuid_ms(text: str) -> int:
    """The unix millisecond stored in the first 48 bits of a UUIDv7."""
    return int.from_bytes(uuid.UUID(text).bytes[:6], "big")


def test_generated_ids_are_uuid7_of_the_append_time_and_sort_by_time(log, monkeypatch):
    """Generated ids are RFC 9562 version 7 UUIDs carrying the append millisecond, sorting in append order."""
    clock = [T0]
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: clock[0])
    make = encoder(validator(log))
    for step in (0, 1_000, 1, 250_000, 60_000_000):
        clock[0] += step
        store(log, [make("t", b"null", None, None, None, None) for _ in range(7)])
    recs = records(log)
    ids = [r.id for r in recs]
    assert len(set(ids)) == len(ids)
    for r in recs:
        u = uuid.UUID(r.id)
        assert str(u) == r.id  # canonical form, lower case
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert uuid_ms(r.id) == time_to_us(r.time) // 1000
    batches = [ids[i:i + 7] for i in range(0, len(ids), 7)]
    for batch in batches:
        assert batch == sorted(batch)  # within a batch, in offset order
    for earlier, later in zip(batches, batches[1:], strict=False):
        if uuid_ms(later[0]) > uuid_ms(earlier[0]):
            assert max(earlier) < min(later)


@pytest.mark.parametrize("ms", [0, 1, 0xFFFF, 0x1_0000, 0x1_0000_0000, 1_800_000_000_123, 253_402_300_799_999])
def test_generated_ids_carry_any_millisecond(tmp_path, monkeypatch, ms):
    """Ids generated at any millisecond from 1970 to 9999 carry exactly that millisecond."""
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: ms * 1000 + 999)
    log = make_log(tmp_path / "log", "jsonl")
    (rec,) = store(log, [encoder(validator(log))("t", b"null", None, None, None, None)])
    assert uuid.UUID(rec.id).version == 7
    assert uuid_ms(rec.id) == ms


# -- CloudEvents output -------------------------------------------------------------------------------


def test_cloudevent_maps_a_record_as_spec_4_says():
    """A record becomes a CloudEvents 1.0 object: key as partitionkey, offset as a decimal string sequence."""
    rec = Record(42, "id-1", "2026-11-27T08:00:00.000000Z", "order.created", "shop", "sub", "c1", {"n": 1})
    assert cloudevent(rec) == {
        "specversion": "1.0", "id": "id-1", "source": "shop", "type": "order.created",
        "time": "2026-11-27T08:00:00.000000Z", "subject": "sub", "datacontenttype": "application/json",
        "partitionkey": "c1", "sequence": "42", "data": {"n": 1},
    }


def test_cloudevent_leaves_out_a_null_subject_and_key():
    """A null subject or key is left out of the CloudEvent; data null stays."""
    ce = cloudevent(Record(0, "i", "2026-11-27T08:00:00.000000Z", "t", "s", None, None, None))
    assert "subject" not in ce and "partitionkey" not in ce
    assert ce["data"] is None and ce["sequence"] == "0"


def test_a_cloudevent_reads_back_as_the_same_event(log, tmp_path):
    """A record rendered as a CloudEvent and appended to another log keeps id, type, source, subject, key, data."""
    make = encoder(validator(log))
    store(log, [make("a.b", b'{"x":[1,{"y":null}]}', "k", "s", "src", None), make("c", b"3", None, None, "o", None)])
    first = records(log)
    other = make_log(tmp_path / "other", log.settings.format)
    lines = [json.dumps(cloudevent(r)).encode() for r in first]
    again = store(other, [validator(other).from_line(x) for x in lines])
    assert [(r.id, r.type, r.source, r.subject, r.key, r.data) for r in again] == \
        [(r.id, r.type, r.source, r.subject, r.key, r.data) for r in first]


# -- the checks that keep records decodable ------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (b'{"a":"[[[","b":[1,[2]]}', 3), (b'"\\\\"[[]]', 2), (b'["\\"]"]', 1), (b"1", 0), (b'"open [[', 0),
    (b"[" * 100_000 + b"]" * 100_000, 100_000),
])
def test_depth_counts_nesting_outside_strings_without_recursion(text, expected):
    """depth() counts arrays and objects, not brackets inside strings, however deep, without recursing."""
    from evlog.ingest.event import depth

    assert depth(text) == expected


@pytest.mark.parametrize("text", [
    b"[" * 102 + b'"' + b'\\"' * 200_000, b"[" * 102 + b'"\\' * 200_000, (b"1" * 300 + b",") * 2000,
    b"\\u" * 200_000, b"\\\\" * 200_000 + b"\\ud800", b'"' * 200_000 + b"[" * 200,
])
def test_the_exact_checks_take_linear_time_on_hostile_input(text):
    """json_problem on hostile lines of hundreds of KiB returns at once (a quadratic scan would take hours)."""
    from evlog.ingest.event import json_problem

    json_problem(text, 101)


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"type":"t","data":"\\ud800"}', "lone surrogate"),
    (b'{"type":"t","data":"\\udc00"}', "lone surrogate"),
    (b'{"type":"t","data":"\xff"}', "UTF-8"),
    (b'{"type":"t","data":' + b"[" * 101 + b"]" * 101 + b"}", "100 levels"),
    (b'{"type":"t","data":' + b"1" * 5000 + b"}", "out of range"),
])
def test_lines_readers_could_not_decode_are_rejected(log, line, reason):
    """A line whose data readers could not decode is InvalidEvent with the reason."""
    with pytest.raises(InvalidEvent, match=reason):
        validator(log).from_line(line)


def test_a_float_beyond_a_double_is_kept_where_the_format_can_hold_it(log):
    """1e400 is JSON a JSON Lines log keeps as written (readers see infinity); MessagePack cannot hold it."""
    line = b'{"type":"t","data":1e400}'
    if log.codec.name == "jsonl":
        assert b"1e400" in validator(log).from_line(line)
    else:
        with pytest.raises(InvalidEvent, match="out of range"):
            validator(log).from_line(line)


def test_escaped_backslashes_and_surrogate_pairs_are_fine(log):
    """`\\\\ud800` (an escaped backslash) and a high-low surrogate pair are valid text."""
    v = validator(log)
    for line in (b'{"type":"t","data":"\\\\ud800"}', b'{"type":"t","data":"\\ud83d\\ude00"}',
                 b'{"type":"t","data":' + b"[" * 100 + b"]" * 100 + b"}"):
        v.from_line(line)
