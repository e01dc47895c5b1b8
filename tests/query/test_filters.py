"""The filters shared by every command that selects events (evlog.query.filters, SPEC 6 "Filters")."""

from __future__ import annotations

import json

import pytest
from engine_helpers import FORMATS, append, make_log, split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from evlog.errors import UsageError
from evlog.query.filters import Filter, type_pattern
from evlog.store.framing import CODECS
from evlog.store.reader import read_frames
from evlog.units import format_time

TYPE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "*>")


def reference_match(pattern: str, type_: str) -> bool:
    """SPEC 6, read literally: tokens split on `.`; `*` is exactly one token; a last `>` is one or more."""
    p, t = pattern.split("."), type_.split(".")
    if p[-1] == ">":
        if len(t) < len(p):
            return False
        p, t = p[:-1], t[: len(p) - 1]
    if len(p) != len(t):
        return False
    return all(a == "*" or a == b for a, b in zip(p, t, strict=True))


def frame_for(codec, type_, *, key=None, subject=None, source="src", data=None, offset=0):
    rest = codec.rest(type_, source, subject, key, json.dumps(data).encode())
    frame = codec.frame(offset, f"id-{offset}", format_time(offset), rest)
    (_, body), = split_at(codec, frame, 0, True)[0]
    return body


# -- type patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "type_", "expected"), [
    ("order.created", "order.created", True),
    ("order.created", "order.created.v2", False),
    ("order.created", "order", False),
    ("order.created", "order.create", False),
    ("order.*", "order.created", True),
    ("order.*", "order.created.v2", False),
    ("order.*", "order", False),
    ("order.>", "order.created", True),
    ("order.>", "order.created.v2", True),
    ("order.>", "order", False),
    ("order.>", "orders.created", False),
    ("*.created", "order.created", True),
    ("*.created", "invoice.created", True),
    ("*.created", "order.created.v2", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("*", "order", True),
    ("*", "order.created", False),
    (">", "order", True),
    (">", "order.created.v2", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.b.d", False),
    ("a.*.>", "a.b.c.d", True),
    ("a.*.>", "a.b", False),
    ("Order.created", "order.created", False),
])
def test_type_patterns_match_as_the_spec_says(pattern, type_, expected):
    """`*` matches one token, a last `>` one or more, anything else exactly (SPEC 6 examples)."""
    assert type_pattern(pattern)(type_) is expected
    assert reference_match(pattern, type_) is expected


@pytest.mark.parametrize("pattern", ["", " ", "a b", "a.b ", "\torder", "a*", "*a", "a.b*", "**", "a.>.b", ">.a",
                                     "a>", ">>", "a.>x", "order.cre*ted"])
def test_bad_type_patterns_are_usage_errors(pattern):
    """Empty patterns, whitespace, and wildcards that are not whole tokens (or `>` not last) are usage errors."""
    with pytest.raises(UsageError):
        type_pattern(pattern)
    with pytest.raises(UsageError):
        Filter(types=["ok", pattern]).compile(CODECS["jsonl"])


tokens = st.text(alphabet=TYPE_CHARS.replace(".", ""), min_size=0, max_size=3)
types = st.lists(tokens, min_size=1, max_size=4).map(".".join).filter(lambda t: 0 < len(t) <= 256)
pattern_tokens = st.one_of(tokens, st.just("*"))


@st.composite
def patterns(draw):
    toks = draw(st.lists(pattern_tokens, min_size=1, max_size=4))
    if draw(st.booleans()):
        toks.append(">")
    pattern = ".".join(toks)
    return pattern or "*"  # the empty pattern is a usage error, tested above


@settings(max_examples=300)
@given(st.lists(patterns(), min_size=1, max_size=3), types)
def test_type_filter_agrees_with_the_spec_on_both_codecs(pats, type_):
    """For any patterns and type, the compiled filter matches iff some pattern matches per SPEC 6, in both formats."""
    expected = any(reference_match(p, type_) for p in pats)
    for name in FORMATS:
        codec = CODECS[name]
        predicate = Filter(types=pats).compile(codec)
        assert predicate is not None
        frame = frame_for(codec, type_)
        assert predicate(frame) is expected
        assert predicate(frame) is expected  # again, from the verdict cache


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("type_", ['a"b', "a\\b", "a\\", '"', "\\", 'x.y"z', "x.\\\\.y", 'q\\"'])
def test_types_that_json_escapes_still_match(name, type_):
    """A type holding `"` or `\\` (escaped in JSON) matches exactly and by wildcard, on the raw-bytes fast path too."""
    codec = CODECS[name]
    frame = frame_for(codec, type_)
    assert Filter(types=[type_]).compile(codec)(frame) is True
    assert Filter(types=[type_ + "x"]).compile(codec)(frame) is False
    assert Filter(types=[type_.split(".")[0] + ".>"]).compile(codec)(frame) is ("." in type_)
    assert Filter(types=[">"]).compile(codec)(frame) is True
    other = frame_for(codec, "a")
    assert Filter(types=[type_]).compile(codec)(other) is False


@pytest.mark.parametrize("name", FORMATS)
def test_escaped_type_verdicts_do_not_leak_between_frames(name):
    """Frames whose types share a raw prefix up to an escaped quote are judged each on its own type."""
    codec = CODECS[name]
    pred = Filter(types=['a\\"b']).compile(codec)
    frames = [frame_for(codec, t) for t in ['a\\"b', 'a\\"c', 'a\\', 'a\\"b', "a"]]
    assert [pred(f) for f in frames] == [True, False, False, True, False]


def test_an_empty_filter_compiles_to_none():
    """With no filters given there is no predicate at all."""
    assert Filter().empty()
    assert Filter().compile(CODECS["jsonl"]) is None
    assert not Filter(key="").empty()


# -- key, subject, source, and all together ------------------------------------------------------


EVENTS = [
    {"type": "order.created", "key": "c1", "subject": "s1", "source": "shop", "data": {"n": 1}},
    {"type": "order.created", "key": "c2", "subject": "s1", "source": "shop", "data": {"n": 2}},
    {"type": "order.created.v2", "key": "c1", "subject": None, "source": "shop", "data": {"n": 3}},
    {"type": "order.paid", "key": "c1", "subject": "s2", "source": "bank", "data": {"n": 4}},
    {"type": "invoice.created", "key": None, "subject": "s1", "source": "bank", "data": {"n": 5}},
    {"type": "order.paid", "key": "", "subject": "", "source": "shop", "data": {"n": 6}},
    {"type": "order.paid", "key": "C1", "subject": "S1", "source": "Shop", "data": {"n": 7}},
]


@pytest.fixture(params=FORMATS)
def log(request, tmp_path):
    log = make_log(tmp_path / "log", request.param, segment_bytes=1024)
    append(log, EVENTS * 3)
    return log


def selected(log, flt: Filter) -> list[int]:
    predicate = flt.compile(log.codec)
    return [log.codec.record(f).data["n"] for f in read_frames(log) if predicate is None or predicate(f)]


def expected_ns(cond) -> list[int]:
    return [e["data"]["n"] for e in EVENTS * 3 if cond(e)]


@pytest.mark.parametrize("field", ["key", "subject", "source"])
@pytest.mark.parametrize("value", ["c1", "s1", "shop", "bank", "", "C1", "nope"])
def test_key_subject_and_source_match_exactly(log, field, value):
    """--key, --subject and --source match the whole value, case-sensitively; null matches no string."""
    assert selected(log, Filter(**{field: value})) == expected_ns(lambda e: e[field] == value)


def test_several_type_patterns_match_any_of_them(log):
    """Repeated --type patterns select events that match any one of them."""
    got = selected(log, Filter(types=["invoice.*", "order.*.v2"]))
    assert got == expected_ns(lambda e: e["type"] in ("invoice.created", "order.created.v2"))
    assert selected(log, Filter(types=["order.paid", "order.paid"])) == expected_ns(lambda e: e["type"] == "order.paid")


def test_all_filters_must_hold(log):
    """Type, key, subject, source and where filters combine with AND."""
    flt = Filter(types=["order.>"], key="c1", source="shop")
    assert selected(log, flt) == expected_ns(
        lambda e: e["type"].startswith("order.") and e["key"] == "c1" and e["source"] == "shop")
    flt = Filter(types=["order.*"], key="c1", subject="s1", source="shop", where="data.n < 2")
    assert selected(log, flt) == [1, 1, 1]
    flt = Filter(types=["*.created"], subject="s1", where="data.n >= 2")
    assert selected(log, flt) == [2, 5] * 3
    assert selected(log, Filter(types=["order.paid"], key="c2")) == []


def test_where_filters_see_the_same_record_in_both_formats(log):
    """--where evaluates over the whole record, fields and data, whatever the storage format."""
    assert selected(log, Filter(where='key == "c1" and data.n in [1, 4]')) == [1, 4] * 3
    assert selected(log, Filter(where="subject == null")) == expected_ns(lambda e: e["subject"] is None)
    assert selected(log, Filter(where='type matches "^order\\\\.created"')) == expected_ns(
        lambda e: e["type"].startswith("order.created"))
    assert selected(log, Filter(where="offset < 3")) == [1, 2, 3]
