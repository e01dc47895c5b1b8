"""The --where expression language (SPEC 6 "Filters", `--where EXPR`)."""

from __future__ import annotations

import ast
import builtins
import io
import operator
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import re2
from conftest import Evlog, assert_one_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evlog.query.where
from evlog.errors import ExitCode, UsageError, WhereError
from evlog.query.where import FIELDS, compile_where

RECORD: dict[str, Any] = {
    "offset": 7,
    "id": "01JDQ0000000000000000000",
    "time": "2026-11-27T08:00:00.000000Z",
    "type": "order.created",
    "source": "shop",
    "subject": None,
    "key": "cust-1",
    "data": {
        "n": 5,
        "f": 1.0,
        "neg": -2,
        "ok": True,
        "no": False,
        "zero": 0,
        "one": 1,
        "s": "hello world",
        "none": None,
        "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}],
        "tags": ["x", "y"],
        "nested": {"a": {"b": [1, [2, 3]]}},
        "in": 1,
        "not": 2,
        "true": "t",
        "quote": 'say "hi"',
        "nl": "a\nb",
        "tab": "\t",
        "bs": "\\",
        "dotesc": "\\.",
        "mix": "it's \"both\"",
        "emoji": "\U0001f600",
        "copy": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}],
    },
}


def check(text: str, record: dict[str, Any] = RECORD) -> bool:
    result = compile_where(text)(record)
    assert result is True or result is False
    return result


TABLE = [
    # == : same kind only; numbers by value; bool is not a number
    ("data.n == 5", True),
    ("data.n == 5.0", True),
    ("data.f == 1", True),
    ("1 == 1.0", True),
    ("data.ok == true", True),
    ("data.ok == 1", False),
    ("data.one == true", False),
    ("data.no == 0", False),
    ("data.zero == false", False),
    ("true == 1", False),
    ("false == 0", False),
    ('"1" == 1', False),
    ("null == false", False),
    ("null == null", True),
    ("data.none == null", True),
    ("subject == null", True),
    ("data.missing == null", True),
    ("data.missing == data.none", True),
    ('type == "order.created"', True),
    ('"order.created" == type', True),
    ('type == "order"', False),
    ("offset == 7", True),
    ('id == "01JDQ0000000000000000000"', True),
    ('source == "shop"', True),
    ('key == "cust-1"', True),
    ('time == "2026-11-27T08:00:00.000000Z"', True),
    ('data.tags == ["x", "y"]', True),
    ('data.tags == ["y", "x"]', False),
    ('data.tags == ["x"]', False),
    ("[1, 2.0] == [1.0, 2]", True),
    ("[true] == [1]", False),
    ("[] == []", True),
    ("[[1], null] == [[1.0], null]", True),
    ("data.items == data.copy", True),
    ("data.items[0] == data.copy[0]", True),
    ("data.items[0] == data.items[1]", False),
    ("data.nested.a == data.nested.a", True),
    ("data.nested.a == data.nested", False),
    ("data.nested == [1]", False),
    ('data.s == "hello world"', True),
    # != is the negation of ==
    ("data.n != 5", False),
    ("data.n != 6", True),
    ("data.ok != 1", True),
    ("data.missing != null", False),
    ('data.tags != ["x", "y"]', False),
    ("true != 1", True),
    # paths: nested access; missing, out of range or non-container is null
    ('data.items[0].sku == "A1"', True),
    ("data.items[1].qty == 1", True),
    ("data.items[2] == null", True),
    ("data.items[2].sku == null", True),
    ("data.nested.a.b[1][0] == 2", True),
    ("data.nested.a.b[1][5] == null", True),
    ("data.s[0] == null", True),
    ("data.n.x == null", True),
    ("data.tags.x == null", True),
    ("data.items.sku == null", True),
    ("data[0] == null", True),
    ("type.x == null", True),
    ("data.in == 1", True),
    ("data.not == 2", True),
    ('data.true == "t"', True),
    ("data . items [ 1 ] . qty == 1", True),
    # ordering: two numbers or two strings; anything else is false
    ("data.n > 4", True),
    ("data.n > -1", True),
    ("data.n>-1", True),
    ("data.neg < -1", True),
    ("data.neg > -2.5", True),
    ("data.n >= 5", True),
    ("data.n < 5", False),
    ("data.n <= 5.0", True),
    ("data.f < 1.5", True),
    ("4 < data.n", True),
    ("6 <= data.n", False),
    ("data.n > data.f", True),
    ('"a" < "b"', True),
    ('type > "order"', True),
    ('type < "order.d"', True),
    ('time >= "2026-11-27"', True),
    ('time < "2026-11-27"', False),
    ('data.n > "4"', False),
    ('data.n < "4"', False),
    ('"4" < data.n', False),
    ("data.ok > 0", False),
    ("data.ok >= true", False),
    ("true > false", False),
    ("data.none < 1", False),
    ("data.none >= null", False),
    ("data.missing > -100", False),
    ("data.missing <= data.missing", False),
    ("data.tags <= data.tags", False),
    ("[1] < [2]", False),
    ("offset >= 7", True),
    ("1e3 == 1000", True),
    ("-0.5 < 0", True),
    ("1.5e-1 == 0.15", True),
    ("2E+2 == 200", True),
    # in / not in: list membership by ==, or substring of a string
    ('"x" in data.tags', True),
    ('"z" in data.tags', False),
    ("1 in [1.0, 2]", True),
    ("1.0 in [1]", True),
    ("true in [1]", False),
    ("1 in [true]", False),
    ("0 in [false, null]", False),
    ("false in [0, false]", True),
    ("null in [null]", True),
    ("null in []", False),
    ("data.missing in [null, 1]", True),
    ('"wor" in data.s', True),
    ('"" in data.s', True),
    ('"WOR" in data.s', False),
    ('data.s in "say hello world!"', True),
    ("5 in data.s", False),
    ('"x" in data.n', False),
    ('"x" in data.missing', False),
    ('"x" in data.nested', False),
    ('"sku" in data.items[0]', False),
    ("[1, 2] in [[1, 2], [3]]", True),
    ("[1, 2] in [[2, 1]]", False),
    ("data.items[1] in data.items", True),
    ("data.nested.a in [data.nested.a]", True),
    ('type in ["order.created", "order.paid"]', True),
    ('type in ["order.paid"]', False),
    ("type in [source, key]", False),
    ("key in [source, key]", True),
    ('data.n in [4, data.f, "5", 5.0]', True),
    ('"z" not in data.tags', True),
    ('"x" not in data.tags', False),
    ("5 not in data.s", True),
    ('"x" not in null', True),
    ("true not in [1]", True),
    ("data.items[0] not in data.copy", False),
    # matches: re.search, anchors respected, non-strings never match
    (r'type matches "^order\\."', True),
    (r'type matches "^order\\.created$"', True),
    (r'"orderXcreated" matches "^order\\."', False),
    (r'"orderXcreated" matches "^order."', True),
    ('type matches "created"', True),
    ('type matches "^created"', False),
    ('type matches "order$"', False),
    (r'data.s matches "\bworld$"', True),
    (r'data.s matches "\\bworld$"', True),
    (r'data.s matches "\d"', False),
    (r'key matches "-\d$"', True),
    ('data.n matches "5"', False),
    ('data.ok matches "True"', False),
    ('data.missing matches ".*"', False),
    ('data.none matches ""', False),
    ('data.tags matches "x"', False),
    ('data.nested matches "a"', False),
    ("data.s matches 'HELLO'", False),
    ("data.s matches '(?i)HELLO'", True),
    # string literals and escapes
    ("data.s == 'hello world'", True),
    (r'data.quote == "say \"hi\""', True),
    (r"data.quote == 'say \"hi\"'", True),
    (r"'it\'s' == " + '"it\'s"', True),
    ("data.mix == 'it\\'s \"both\"'", True),
    (r'data.nl == "a\nb"', True),
    ('data.nl == "a\nb"', True),
    (r'data.tab == "\t"', True),
    (r'"\r" == "' + "\r" + '"', True),
    (r'data.bs == "\\"', True),
    (r'data.dotesc == "\."', True),
    (r'data.dotesc == "\\."', True),
    (r'"\/" == "/"', True),
    (r'"\u00e9" == "é"', True),
    (r'"\u00E9" == "\u00e9"', True),
    (r'data.emoji == "\ud83d\ude00"', True),
    ('data.emoji == "\U0001f600"', True),
    (r'"\ud83d" == "\ud83d"', True),
    (r'"\q" == "\\q"', True),
    # and / or / not, precedence, and values used as conditions
    ('data.n > 4 and type == "order.created"', True),
    ("data.n > 4 and false", False),
    ("false or data.ok", True),
    ("false or data.no", False),
    ("data.no or data.missing or data.ok", True),
    ("data.ok and data.ok and data.n == 5 and true", True),
    ("data.ok and data.ok and data.n == 6 and true", False),
    ("not data.ok", False),
    ("not data.missing", True),
    ("not data.n", True),
    ("not not data.ok", True),
    ("not not not data.ok", False),
    ("true or true and false", True),
    ("(true or true) and false", False),
    ("false and true or true", True),
    ("false and (true or true)", False),
    ("not true == false", True),
    ("not data.n > 4", False),
    ("not data.n > 4 or true", True),
    ("not (data.n > 4 or true)", False),
    ('"x" not in data.tags or not "z" in data.tags', True),
    ("data.ok", True),
    ("data.no", False),
    ("data.n", False),
    ("data.one", False),
    ("data.s", False),
    ("data.tags", False),
    ("data.missing", False),
    ("true", True),
    ("false", False),
    ("null", False),
    ("1", False),
    ('"true"', False),
    ("[true]", False),
    ("(data.ok)", True),
    ("((data.ok))", True),
    ("(data.n) == 5", True),
    ("(data.n) > 4", True),
    ("(data.n > 4) == true", True),
    ("(data.n > 9) == false", True),
    ("(data.n > 4) == 1", False),
    ("[(data.n > 4), data.ok] == [true, true]", True),
    ("(data.ok or data.n) == true", True),
    ("(data.n or data.n) == 5", False),
    ("(not data.n) == true", True),
    (" \t data.ok \n ", True),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_operator_table(text: str, expected: bool) -> None:
    """Each expression in the table gives the SPEC's verdict on the sample record."""
    assert check(text) is expected


@pytest.mark.parametrize("record", [
    {},
    {"data": None},
    {"data": []},
    {"data": "just a string"},
    {"data": 5},
    {"data": {"items": None}},
    {"data": {"items": {"0": 1}}},
    {"data": {"items": "abc"}},
    {"offset": 0, "id": "x", "time": "t", "type": "a", "source": "s", "subject": None, "key": None,
     "data": {"n": [], "s": {}, "items": [None]}},
])
def test_odd_records_never_raise(record: dict[str, Any]) -> None:
    """Expressions over records with missing, null or odd-shaped fields answer without raising."""
    for text, _ in TABLE:
        check(text, record)
    assert check("data.items[0].sku == null", record) is True
    assert check("data.n > 4", record) is False


def test_incompatible_values_never_raise() -> None:
    """Comparing values of different kinds is false, never a TypeError."""
    record = {"data": {"a": 1, "b": "1", "c": [1], "d": {"x": 1}, "e": None, "f": True, "g": b"raw",
                      "h": float("nan"), "i": 10**400, "j": float("inf")}}
    names = [f"data.{k}" for k in "abcdefghijz"]
    for left in names:
        for right in names:
            for op in ("==", "!=", "<", "<=", ">", ">=", "in", "not in"):
                check(f"{left} {op} {right}", record)
            check(f'{left} matches "1"', record)
    assert check("data.a < data.b", record) is False
    assert check("data.h == data.h", record) is False
    assert check("data.i > data.j", record) is False
    assert check("data.i > 1e308", record) is True
    assert check("data.g == data.g", record) is False


def test_deeply_nested_data_does_not_raise() -> None:
    """Equality over data nested deeper than the recursion limit answers false instead of raising."""
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    other: Any = 1
    for _ in range(5000):
        other = [other]
    record = {"data": {"a": deep, "b": other}}
    assert check("data.a == data.b", record) is False
    assert check("data.a in [data.b]", record) is False


def test_literal_list_membership_separates_kinds() -> None:
    """A literal list with mixed kinds keeps bools, numbers, strings, nulls and containers apart."""
    text = 'data.v in [1, "1", true, null, [1], [], 2.5]'
    # Pairs, not a dict: 1, 1.0 and True would be one dict key.
    verdicts = [(1, True), (1.0, True), ("1", True), (True, True), (None, True), ([1], True), ([], True),
                (2.5, True), (False, False), (0, False), ("true", False), ([True], False), (2, False),
                ("2.5", False), ([1.0], True), ({}, False)]
    for value, expected in verdicts:
        assert check(text, {"data": {"v": value}}) is expected, value
        assert check(text.replace(" in ", " not in "), {"data": {"v": value}}) is not expected, value
    assert check(text, {"data": {"v": {}}}) is False


def test_matches_pattern_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regular expression is compiled when the expression is, not per record."""
    predicate = compile_where(r'type matches "^order\\."')

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pattern compiled while evaluating")

    monkeypatch.setattr(re, "compile", no_compile)
    monkeypatch.setattr(re2, "compile", no_compile)
    assert predicate(RECORD) is True
    assert predicate({**RECORD, "type": "orders"}) is False


MALFORMED = [
    ("data.n >", 8),
    ('(type == "a"', 12),
    ('type = "a"', 5),
    ('type == "unterminated', 8),
    ("type matches", 12),
    ("data.n > 4 and", 14),
    ('type == "a" type', 12),
    ('type matches "("', 13),
    ('__import__("os").system("touch PWNED")', 0),
    ("", 0),
    ("   ", 3),
    ("and", 0),
    ("data.", 5),
    ("data.n ==", 9),
    ("foo == 1", 0),
    ("True", 0),
    ("data.x == None", 10),
    ("type == 'a' && key == 'b'", 12),
    ("type == 'a' || key == 'b'", 12),
    ("!data.ok", 0),
    ("data.n == 1 == 1", 12),
    ("data.n in [1] in [2]", 14),
    ("data.n not 5", 11),
    ("not in [1]", 4),
    ("data.f(1)", 6),
    ("data[x]", 5),
    ("data[-1]", 5),
    ("data[1.5]", 5),
    ("data['k']", 5),
    ("data[0", 6),
    ("data.0", 5),
    ("[1, 2", 5),
    ("[1,]", 3),
    ("[1 2]", 3),
    ("()", 1),
    ("(data.ok))", 9),
    ("[data.n > 4]", 8),
    ("1abc == 1", 0),
    ("1. == 1", 0),
    ("- 1 == -1", 0),
    ("data.n + 1", 7),
    (r'"\u12" == 1', 1),
    ('"abc\\', 0),
    ("'abc", 0),
    ("type matches type", 13),
    ("type matches 5", 13),
    ('type matches ("a")', 13),
    ('type matches "[a-"', 13),
    ('type matches "a{2,1}"', 13),
    ("data.n >\n", 9),
    ("data.n ==\n== 1", 10),
    ("data.ok and or data.ok", 12),
    ("data.ok data.ok", 8),
    ("data.n = = 1", 7),
    ("data.n => 1", 7),
    ("type matches 'a' 'b'", 17),
    ("1" * 5000 + " == 1", 0),
    ("(" * 100 + "true" + ")" * 100, 64),
    ("not " * 100 + "true", 256),
    ("[" * 100 + "]" * 100, 64),
    ("type == `ls`", 8),
    ("type == $(touch X)", 8),
    ("type; rm -rf /", 4),
]


@pytest.mark.parametrize(("text", "position"), MALFORMED)
def test_malformed_expression_is_a_where_error(text: str, position: int) -> None:
    """A malformed expression raises WhereError at the expected position, with a one-line message."""
    with pytest.raises(WhereError) as info:
        compile_where(text)
    error = info.value
    assert isinstance(error.position, int) and 0 <= error.position <= len(text)
    assert error.position == position, str(error)
    message = str(error)
    assert "\n" not in message and "\r" not in message
    assert message.isprintable()
    assert f"column {position + 1}" in message


def test_where_error_is_a_usage_error() -> None:
    """WhereError is a UsageError (exit 2) and names the expression and the problem."""
    with pytest.raises(UsageError) as info:
        compile_where("data.n >")
    assert isinstance(info.value, WhereError)
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.text == "data.n >"
    assert "expected a value after '>'" in str(info.value)
    assert str(info.value).endswith("in: data.n >")


def test_invalid_regex_message_names_the_problem() -> None:
    """An invalid regular expression is reported with re's reason, pointing at the literal."""
    with pytest.raises(WhereError) as info:
        compile_where('type matches "("')
    assert info.value.position == 13
    assert "invalid regular expression" in str(info.value)
    assert "missing )" in str(info.value)


# --- the regular expression dialect: RE2 ---------------------------------------------------

RE2_FEATURES = [
    (r'type matches "(?i)^ORDER\\.CREATED$"', "order.created", True),
    (r'data.s matches "\\pL+ \\pL+"', "hello world", True),
    (r'data.s matches "^\\p{Greek}+$"', "αβγ", True),
    (r'data.s matches "^[[:alpha:]]+$"', "abc", True),
    (r'data.s matches "(?P<word>wor)ld"', "hello world", True),
    (r'data.s matches "^a.+?b\\z"', "axxb", True),
    (r'data.s matches "\\Ahello"', "hello world", True),
    (r'data.s matches "\\x{263a}"', "smile ☺", True),
    (r'data.s matches "\\Q.*\\E"', "a.*b", True),
    (r'data.s matches "\\Q.*\\E"', "abc", False),
    (r'data.s matches "(?m)^b$"', "a\nb\nc", True),
    (r'data.s matches "a$"', "a\n", False),  # `$` is the end of the text (Python's re would say true)
    (r'data.s matches "^\\d+$"', "١٢", False),  # `\d` is ASCII digits only
]


@pytest.mark.parametrize(("text", "value", "expected"), RE2_FEATURES)
def test_matches_speaks_re2(text: str, value: str, expected: bool) -> None:
    """`matches` takes RE2 syntax (flags, Unicode classes, named groups, \\A \\z \\Q..\\E) with RE2's meaning."""
    assert check(text, {"data": {"s": value}, "type": value}) is expected


RE2_REJECTS = [
    (r"(a)\1", "invalid escape sequence"),
    ("(?=a)", "(?="),
    ("(?!a)", "(?!"),
    ("(?<=a)b", "(?<="),
    ("(?<!a)b", "(?<!"),
    ("(?P<x>a)(?P=x)", "(?P"),
    ("(?>a)", "(?>"),
    ("a++", "++"),
    (r"\Z", "invalid escape sequence"),
    ("a{1001}", "{1001}"),
]


@pytest.mark.parametrize(("pattern", "reason"), RE2_REJECTS)
def test_a_pattern_outside_re2_is_a_usage_error_at_the_pattern(pattern: str, reason: str) -> None:
    """Backreferences, look-around, atomic groups, possessive and huge repetitions are WhereErrors at the pattern."""
    text = "type matches " + '"' + pattern.replace("\\", "\\\\") + '"'
    with pytest.raises(WhereError) as info:
        compile_where(text)
    assert info.value.position == 13, str(info.value)
    message = str(info.value)
    assert "invalid regular expression" in message and "RE2" in message and reason in message, message
    assert message.isprintable()


def test_a_pattern_rejected_by_re2_prints_nothing_but_the_error(cli: Evlog) -> None:
    """On the CLI a pattern outside RE2 is exit 2 with one error line that points at the pattern."""
    cli.ok("append", "order.created")
    r = cli("read", "--where", r'type matches "(a)\1"')
    line = assert_one_error(r, ExitCode.USAGE, "column 14", "RE2", "invalid escape sequence")
    assert "bad --where expression" in line


@pytest.mark.parametrize("where", [
    'data.s matches "(a+)+$"',
    '"' + "a" * 60 + '!" matches "(a+)+$"',  # a constant expression: not evaluated while parsing
    '(data.s matches "(a|aa)*c") or data.s matches "^(a|a?)+$"',
])
def test_a_catastrophic_pattern_is_linear_on_the_cli(cli: Evlog, where: str) -> None:
    """Patterns that backtrack exponentially under Python's re run in linear time (the run ends at all)."""
    cli.batch([{"type": "t", "data": {"s": "a" * 60 + "!"}}, {"type": "t", "data": {"s": "a" * 5000}}])
    r = cli("read", "--where", where, "--format", "json", timeout=30)
    assert r.rc == 0, r.err
    expected = 0 if where.startswith('"') else 1  # the long run of a's matches; nothing ending in "!" does
    assert len(r.out.splitlines()) == expected, r.out[:200]


def test_matches_imports_re2_only_when_an_expression_uses_it() -> None:
    """Expressions without `matches` (and `evlog append`) never load the regular expression engine."""
    code = ("import sys; from evlog.query.where import compile_where; compile_where('data.n > 1 and type == \"a\"');"
            "print('re2' in sys.modules); compile_where('type matches \"a\"'); print('re2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


# --- property test: a random expression tree against a reference evaluator ---------------

KEYS = ["a", "b", "n", "in", "not", "true", "x_1"]
STRINGS = ["", "a", "b", "ab", "a.b", "order.created", "é", "\U0001f600", 'q"', "q'", "back\\slash", "l\nf"]
PATTERNS = ["^a", "a$", "b", "^$", r"\.", ".", "a|b", r"^order\.", "é", r"\d", "^[ab]+$", "(?i)A"]
NUMBERS = [0, 1, -1, 2, 1.0, 0.5, -1.5, 2.0, 10**20, 1e-7]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(-3, 3),
    st.sampled_from(STRINGS),
    st.text(alphabet="ab.\\\"' \n\té\U0001f600", max_size=4),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
    max_leaves=8,
)
records = st.fixed_dictionaries({
    "offset": st.integers(0, 3),
    "id": st.sampled_from(STRINGS),
    "time": st.sampled_from(["2026-11-27T08:00:00.000000Z", "2026-11-28T00:00:00.000000Z"]),
    "type": st.sampled_from(["order.created", "order.paid", "a", "ab"]),
    "source": st.sampled_from(STRINGS),
    "subject": st.none() | st.sampled_from(STRINGS),
    "key": st.none() | st.sampled_from(STRINGS),
    # Mostly an object, so that paths into `data` find values to compare.
    "data": st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6) | json_values,
})

literal_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3), max_leaves=5)
literals = st.builds(lambda v, quote, ascii_only: ("lit", v, quote, ascii_only),
                     literal_values, st.sampled_from(['"', "'"]), st.booleans())
steps = st.lists(st.one_of(st.sampled_from(KEYS), st.integers(0, 2)), max_size=2)
paths = st.builds(lambda field, s: ("path", field, tuple(s)), st.sampled_from(FIELDS), steps)
OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]


def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just("cmp"), st.sampled_from(OPS), children, children),
        st.tuples(st.just("matches"), children, st.sampled_from(PATTERNS), st.sampled_from(['"', "'"])),
        st.tuples(st.just("and"), children, children),
        st.tuples(st.just("or"), children, children),
        st.tuples(st.just("not"), children),
        st.tuples(st.just("paren"), children),
        st.tuples(st.just("list"), st.lists(children, max_size=3).map(tuple)),
    )


trees = st.recursive(st.one_of(literals, paths), extend, max_leaves=10)


def render_string(s: str, quote: str, ascii_only: bool) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == quote:
            out.append("\\" + quote)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ascii_only and ord(ch) > 0xFFFF:
            high, low = divmod(ord(ch) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
        elif ascii_only and ord(ch) > 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def render_literal(v: Any, quote: str, ascii_only: bool) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return render_string(v, quote, ascii_only)
    return "[" + ", ".join(render_literal(x, quote, ascii_only) for x in v) + "]"


def render(node: Any) -> str:
    """The expression text of a tree, with parentheses only where precedence needs them."""
    kind = node[0]
    if kind == "lit":
        return render_literal(node[1], node[2], node[3])
    if kind == "path":
        return node[1] + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in node[2])
    if kind == "cmp":
        return f"{operand(node[2])} {node[1]} {operand(node[3])}"
    if kind == "matches":
        return f"{operand(node[1])} matches {render_string(node[2], node[3], False)}"
    if kind in ("and", "or"):
        weaker = ("or",) if kind == "and" else ()
        parts = [f"({render(x)})" if x[0] in weaker else render(x) for x in node[1:]]
        return f" {kind} ".join(parts)
    if kind == "not":
        inner = node[1]
        return "not " + (f"({render(inner)})" if inner[0] in ("and", "or") else render(inner))
    if kind == "paren":
        return f"({render(node[1])})"
    return "[" + ", ".join(operand(x) for x in node[1]) + "]"


def operand(node: Any) -> str:
    """A tree as a value: conditions go in parentheses."""
    text = render(node)
    return f"({text})" if node[0] in ("cmp", "matches", "and", "or", "not") else text


def kind_of(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "list"
    return "object"


def ref_eq(a: Any, b: Any) -> bool:
    if kind_of(a) != kind_of(b):
        return False
    if kind_of(a) == "list":
        return len(a) == len(b) and all(ref_eq(x, y) for x, y in zip(a, b, strict=True))
    if kind_of(a) == "object":
        return set(a) == set(b) and all(ref_eq(a[k], b[k]) for k in a)
    return bool(a == b)


ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def ref_cmp(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return ref_eq(a, b)
    if op == "!=":
        return not ref_eq(a, b)
    if op == "in":
        if kind_of(b) == "list":
            return any(ref_eq(a, x) for x in b)
        return kind_of(a) == kind_of(b) == "string" and a in b
    if op == "not in":
        return not ref_cmp("in", a, b)
    if kind_of(a) == kind_of(b) and kind_of(a) in ("number", "string"):
        return bool(ORDER[op](a, b))
    return False


def ref_path(record: dict[str, Any], field: str, path: tuple[str | int, ...]) -> Any:
    value = record.get(field)
    for step in path:
        if isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        elif isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        else:
            return None
    return value


def ref_value(node: Any, record: dict[str, Any]) -> Any:
    """What a tree is worth on a record, by the SPEC, without looking at any text."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return ref_path(record, node[1], node[2])
    if kind == "cmp":
        return ref_cmp(node[1], ref_value(node[2], record), ref_value(node[3], record))
    if kind == "matches":
        value = ref_value(node[1], record)
        # These patterns mean in RE2 what they mean in Python's re with ASCII classes, once `$` (in RE2
        # the very end of the text, in re also before a final newline) is written `\Z`.
        return isinstance(value, str) and re.search(node[2].replace("$", r"\Z"), value, re.ASCII) is not None
    if kind == "and":
        return ref_holds(node[1], record) and ref_holds(node[2], record)
    if kind == "or":
        return ref_holds(node[1], record) or ref_holds(node[2], record)
    if kind == "not":
        return not ref_holds(node[1], record)
    if kind == "paren":
        return ref_value(node[1], record)
    return [ref_value(x, record) for x in node[1]]


def ref_holds(node: Any, record: dict[str, Any]) -> bool:
    return ref_value(node, record) is True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, record_list=st.lists(records, min_size=1, max_size=4))
def test_compiled_expression_agrees_with_reference(tree: Any, record_list: list[dict[str, Any]]) -> None:
    """A rendered random expression gives the reference evaluator's verdict on random records."""
    text = render(tree)
    predicate = compile_where(text)
    for record in record_list:
        assert predicate(record) is ref_holds(tree, record), text


def twin(v: Any) -> Any:
    """An equal value of another Python type: ints become floats, inside lists and objects too."""
    if isinstance(v, bool) or not isinstance(v, int | list | dict):
        return v
    if isinstance(v, int):
        return float(v) if abs(v) < 2**53 else v
    if isinstance(v, list):
        return [twin(x) for x in v]
    return {k: twin(x) for k, x in v.items()}


def cousin(v: Any) -> Any:
    """A value that Python's == confuses with `v` but the SPEC does not: bools and 0/1 swapped."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, list):
        return [cousin(x) for x in v]
    if isinstance(v, dict):
        return {k: cousin(x) for k, x in v.items()}
    return v


def has_object(v: Any) -> bool:
    return isinstance(v, dict) or isinstance(v, list) and any(has_object(x) for x in v)


PICKS = {
    "other": lambda a, other: other,
    "same": lambda a, other: a,
    "twin": lambda a, other: twin(a),
    "cousin": lambda a, other: cousin(a),
    "holds twin": lambda a, other: [other, twin(a)],
    "holds cousin": lambda a, other: [cousin(a), other],
}


@settings(max_examples=400)
@given(a=json_values, other=json_values, pick=st.sampled_from(list(PICKS)),
       op=st.sampled_from(OPS), quote=st.sampled_from(['"', "'"]))
def test_any_two_values_compare_as_the_reference_says(a: Any, other: Any, pick: str, op: str, quote: str) -> None:
    """`x OP y` matches the reference, whether each side is a path or a literal."""
    b = PICKS[pick](a, other)
    expected = ref_cmp(op, a, b)
    record = {"data": {"a": a, "b": b}}
    left = ["data.a"] + ([] if has_object(a) else [render_literal(a, quote, False)])
    right = ["data.b"] + ([] if has_object(b) else [render_literal(b, quote, True)])
    for x in left:
        for y in right:
            assert check(f"{x} {op} {y}", record) is expected, f"{x} {op} {y}"


@given(record=records)
def test_paths_read_what_the_reference_reads(record: dict[str, Any]) -> None:
    """`path == literal` holds exactly when the reference finds an equal value at that path."""
    for field in FIELDS:
        for key in KEYS:
            for path in ((), (key,), (key, 0), (0,), (0, key), (key, key)):
                node = ("path", field, path)
                value = ref_path(record, field, path)
                if not isinstance(value, list | dict):
                    lit = ("lit", value, '"', False)
                    assert check(f"{render(node)} == {render(lit)}", record) is True
                assert check(f"{render(node)} == null", record) is (value is None)


# --- safety: no eval, no exec, no files ----------------------------------------------------


HOSTILE = [
    'type == "$(touch X)"',
    "type == '`touch Y`'",
    'data.s == "$(touch X)" and data.s matches "touch" and not "; touch W" in data.s',
    '"__import__(\'os\').system(\'touch V\')" == type',
    "data.s in ['{0.__class__}', '%s%n', '${jndi:x}']",
    "data.__class__.__mro__ == null and data.__dict__ == null",  # keys looked up, not attributes
]
HOSTILE_MALFORMED = [
    '__import__("os").system("touch PWNED")',
    "open('PWNED', 'w')",
    "exec('import os')",
    'data.s == "x" or eval("1")',
    "lambda: 1",
    "[x for x in data]",
    "type == 'a'; import os",
]


def test_evaluation_never_evals_execs_or_touches_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling and evaluating hostile expressions calls no eval/exec/compile and opens no file."""
    monkeypatch.chdir(tmp_path)
    calls: list[str] = []

    def forbid(name: str) -> Any:
        def forbidden(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} called during --where")
        return forbidden

    record = {**RECORD, "data": {"s": "$(touch X)"}}
    errors = []
    try:
        for name in ("eval", "exec", "compile", "open"):
            monkeypatch.setattr(builtins, name, forbid(name))
        monkeypatch.setattr(io, "open", forbid("io.open"))
        monkeypatch.setattr(os, "system", forbid("os.system"))
        results = [compile_where(text)(record) for text in HOSTILE]
        for text in HOSTILE_MALFORMED:
            try:
                compile_where(text)
            except WhereError as e:
                errors.append(e)
    finally:
        monkeypatch.undo()  # before anything reports: pytest itself needs open and compile
    assert calls == []
    assert results == [False, False, True, False, False, True]
    assert len(errors) == len(HOSTILE_MALFORMED)
    assert list(tmp_path.iterdir()) == []


def test_module_uses_no_dynamic_code_or_io() -> None:
    """where.py imports only re, re2 and typing helpers, and names no eval, exec, compile, open or os."""
    tree = ast.parse(Path(evlog.query.where.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {"__future__", "re", "re2", "collections.abc", "typing", "evlog.errors"}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "os"}
    compile_owners = {ast.unparse(node.value) for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr == "compile"}
    assert compile_owners == {"re", "re2"}


def test_predicate_is_reusable_and_stateless() -> None:
    """One compiled predicate gives the same verdicts however often and in whatever order it is called."""
    predicate = compile_where('data.n > 4 and type matches "^order\\\\." or key in ["k1", "k2"]')
    records = [RECORD, {**RECORD, "data": {"n": 1}}, {**RECORD, "key": "k2", "type": "x"}, {}]
    first = [predicate(r) for r in records]
    assert first == [True, False, True, False]
    assert [predicate(r) for r in reversed(records)] == first[::-1]
