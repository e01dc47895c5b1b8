r"""The ``--where`` expression language (SPEC 6 "Filters"), parsed once into closures.

Grammar (EBNF; keywords are lowercase; whitespace may stand between tokens)::

    expr    = or ;
    or      = and , { "or" , and } ;
    and     = not , { "and" , not } ;
    not     = "not" , not | cmp ;
    cmp     = value , [ cmpop , value | "matches" , STRING ] ;
    cmpop   = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" , "in" ;
    value   = literal | path | "(" , expr , ")" ;
    literal = NUMBER | STRING | "true" | "false" | "null"
            | "[" , [ value , { "," , value } ] , "]" ;
    path    = FIELD , { "." , NAME | "[" , INDEX , "]" } ;
    FIELD   = "offset" | "id" | "time" | "type" | "source" | "subject" | "key" | "data" ;
    NAME    = ( letter | "_" ) , { letter | digit | "_" } ;  (* Unicode letters; keywords too *)
    INDEX   = digit , { digit } ;
    NUMBER  = [ "-" ] , digit , { digit } , [ "." , digit , { digit } ]
            , [ ( "e" | "E" ) , [ "+" | "-" ] , digit , { digit } ] ;
    STRING  = '"' , { char | escape } , '"' | "'" , { char | escape } , "'" ;
    escape  = "\" , ( "\" | '"' | "'" | "n" | "t" | "r" | "/" | "u" , 4 * hexdigit ) ;

Any other backslash pair is kept as written, for regular expressions: in
``type matches "^order\\."`` the pattern is ``^order\.``, and ``"\d"`` stays
``\d``. A ``\uD83D\uDE00`` surrogate pair makes one character. The pattern of
``matches`` must be a string literal; it is compiled once, here.

The pattern's dialect is RE2's (https://github.com/google/re2/wiki/Syntax),
through the ``google-re2`` package, imported only when an expression uses
``matches``. Matching takes time linear in the text whatever the pattern, so
no pattern from a user or a network client can make a filter slow. RE2 has
flags (``(?i)``, ``(?m)``, ``(?s)``), Unicode classes (``\pL``,
``\p{Greek}``), named groups, ``\A``, ``\z`` and ``\Q...\E``; it has no
backreferences, look-around, atomic groups or possessive repetitions, and a
pattern using them (or too large to compile) is a WhereError at the pattern.
Unlike Python's ``re``, ``$`` is the end of the text (not before a final
newline) unless ``(?m)`` is given, and ``\d``, ``\w``, ``\s``, ``\b`` are
ASCII classes.

Meaning, beyond SPEC:

- A value standing where a condition is expected (the whole expression, or an
  operand of ``and``, ``or``, ``not``) holds only when it is exactly ``true``:
  ``data.ok`` selects ``{"ok": true}``, not ``{"ok": 1}`` or ``{"ok": "yes"}``.
  Parentheses keep a value as it is: ``(data.n) > 1`` compares the number.
- ``.name`` on anything but an object, and ``[i]`` on anything but a list or
  past its end, give ``null``, as a missing field does.
- Values are plain JSON types as decoders produce them; anything else (bytes,
  a ``str`` subclass) equals nothing and orders against nothing.
- Evaluation never raises and never touches anything but the record; equality
  between values nested deeper than Python's recursion limit is false.
- Parsing evaluates nothing: an expression over literals alone (``"a" matches
  "b"``, ``1 < 2``) is worked out per record like any other, so the cost of
  parsing depends on the text alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from evlog.errors import WhereError

__all__ = ["FIELDS", "WhereError", "compile_where"]

FIELDS = ("offset", "id", "time", "type", "source", "subject", "key", "data")

Record = dict[str, Any]
Getter = Callable[[Record], Any]

_MAX_DEPTH = 64  # nesting of ( [ and not; keeps parsing far from Python's recursion limit
_KEYWORDS = frozenset({"and", "or", "not", "in", "matches", "true", "false", "null"})
_CONSTANTS = {"true": True, "false": False, "null": None}
_CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NUMBER = (int, float)  # tested by exact class, so bool is not a number
# The kind of each JSON type: `==` needs equal kinds, and bool is its own kind.
_KIND = {int: "n", float: "n", bool: "b", str: "s", type(None): "z", list: "l", dict: "d"}

_WS_RE = re.compile(r"\s*")
_TOKEN_RE = re.compile(
    r"(?P<num>-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[^\W\d]\w*)"
    r"|(?P<op>==|!=|<=|>=|<|>|[()\[\],.])"
    r"|(?P<quote>[\"'])"
)
_NUM_TAIL_RE = re.compile(r"[\w.]")
_PLAIN = {'"': re.compile(r'[^"\\]*'), "'": re.compile(r"[^'\\]*")}
_HEX4_RE = re.compile(r"[0-9A-Fa-f]{4}")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "/": "/"}
_CHAR_HINTS = {
    "=": "a single '=' is not an operator (compare with '==')",
    "&": "'&' is not an operator (use 'and')",
    "|": "'|' is not an operator (use 'or')",
    "!": "'!' is not an operator (use 'not' or '!=')",
    "-": "'-' only starts a negative number (there is no arithmetic)",
}


class _Tok(NamedTuple):
    kind: str  # num, str, name, op, end
    value: Any
    start: int
    end: int


class _Node:
    """A compiled value: `fn(record)`, whether it always gives a bool, and its constant."""

    __slots__ = ("fn", "is_bool", "is_const", "const")

    def __init__(self, fn: Getter, is_bool: bool = False) -> None:
        self.fn, self.is_bool, self.is_const, self.const = fn, is_bool, False, None


def compile_where(text: str) -> Callable[[Record], bool]:
    """Parse `text` once into a predicate over a record dict; WhereError when malformed."""
    node = _Parser(text).parse()
    if node.is_const:
        return (lambda r: True) if node.const is True else (lambda r: False)
    return _truth(node).fn


# --- parsing ----------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0
        self.bare = False  # whether the last comparison parsed was a value alone
        self.prev = _Tok("end", None, 0, 0)
        self.tok = self._lex(0)

    def fail(self, position: int, problem: str) -> NoReturn:
        raise WhereError(self.text, position, problem)

    def parse(self) -> _Node:
        if self.tok.kind == "end":
            self.fail(self.tok.start, "the expression is empty")
        node = self.parse_or()
        if self.tok.kind != "end":
            self.fail_after_cmp("the end of the expression")
        return node

    # The lexer runs one token ahead of the parser, so the leftmost problem is reported.

    def advance(self) -> None:
        self.prev = self.tok
        self.tok = self._lex(self.tok.end)

    def _lex(self, pos: int) -> _Tok:
        text = self.text
        pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            return _Tok("end", None, len(text), len(text))
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            self.fail(pos, _CHAR_HINTS.get(ch, f"unexpected character {ch!r}"))
        kind, end = m.lastgroup, m.end()
        if kind == "num":
            return _Tok("num", self._number(m.group(), pos, end), pos, end)
        if kind == "quote":
            value, end = self._string(pos)
            return _Tok("str", value, pos, end)
        return _Tok(kind or "", m.group(), pos, end)

    def _number(self, raw: str, start: int, end: int) -> int | float:
        if _NUM_TAIL_RE.match(self.text, end):
            self.fail(start, "malformed number")
        if raw.lstrip("-").isdigit():
            try:
                return int(raw)
            except ValueError:  # more digits than int() takes
                self.fail(start, "the number is too long")
        return float(raw)

    def _string(self, start: int) -> tuple[str, int]:
        """The value of the quoted string at `start`, and the index after its closing quote."""
        text, quote = self.text, self.text[start]
        plain = _PLAIN[quote]
        out: list[str] = []
        i = start + 1
        while True:
            m = plain.match(text, i)
            out.append(m.group())  # type: ignore[union-attr]
            i = m.end()  # type: ignore[union-attr]
            if i + (text[i : i + 1] == "\\") >= len(text):
                self.fail(start, f"unterminated string (no closing {quote!r})")
            if text[i] == quote:
                return "".join(out), i + 1
            esc = text[i + 1]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 2
            elif esc == "u":
                code = self._hex4(i)
                i += 6
                if 0xD800 <= code < 0xDC00 and text.startswith("\\u", i) and _HEX4_RE.fullmatch(text, i + 2, i + 6):
                    low = int(text[i + 2 : i + 6], 16)
                    if 0xDC00 <= low < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                out.append(chr(code))
            else:
                out.append(text[i : i + 2])
                i += 2

    def _hex4(self, i: int) -> int:
        if not _HEX4_RE.fullmatch(self.text, i + 2, i + 6):
            self.fail(i, "\\u must be followed by four hex digits")
        return int(self.text[i + 2 : i + 6], 16)

    # Grammar rules, one method each.

    def at(self, kind: str, value: str) -> bool:
        return self.tok.kind == kind and self.tok.value == value

    def parse_or(self) -> _Node:
        parts = [self.parse_and()]
        while self.at("name", "or"):
            self.advance()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else _logical(parts, all_=False)

    def parse_and(self) -> _Node:
        parts = [self.parse_not()]
        while self.at("name", "and"):
            self.advance()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else _logical(parts, all_=True)

    def parse_not(self) -> _Node:
        if not self.at("name", "not"):
            return self.parse_cmp()
        self.enter()
        self.advance()
        node = _negate(_truth(self.parse_not()))
        self.depth -= 1
        return node

    def parse_cmp(self) -> _Node:
        left = self.parse_value()
        tok = self.tok
        self.bare = False
        if tok.kind == "op" and tok.value in _CMP_OPS:
            op = tok.value
        elif tok.kind == "name" and tok.value == "in":
            op = "in"
        elif tok.kind == "name" and tok.value == "not":
            self.advance()
            if not self.at("name", "in"):
                self.fail(self.tok.start, "expected 'in' after 'not' here (to negate, put 'not' first)")
            op = "not in"
        elif tok.kind == "name" and tok.value == "matches":
            self.advance()
            pattern = self.tok
            if pattern.kind != "str":
                self.fail(pattern.start, "expected a string literal (the regular expression) after 'matches'"
                          + self.found())
            search = self.regex(pattern)
            self.advance()
            return _matches(left, search)
        else:
            self.bare = True
            return left
        self.advance()
        return _compare(op, left, self.parse_value())

    def regex(self, pattern: _Tok) -> Callable[[bytes], Any]:
        """The search function of an RE2 pattern, over UTF-8 bytes; a WhereError at the pattern when RE2 refuses it."""
        import re2  # only here: most expressions have no `matches`, and `evlog append` none

        options = re2.Options()
        options.log_errors = False  # RE2 would print its own line on stderr
        options.never_capture = True  # only "is there a match" is asked
        try:
            return re2.compile(pattern.value.encode("utf-8", "surrogatepass"), options).search
        except re2.error as e:
            reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            self.fail(pattern.start, f"invalid regular expression {pattern.value!r} (RE2 syntax): {reason}")

    def parse_value(self) -> _Node:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.advance()
            return _const(tok.value)
        if tok.kind == "name":
            if tok.value in _CONSTANTS:
                self.advance()
                return _const(_CONSTANTS[tok.value])
            if tok.value in FIELDS:
                return self.parse_path()
            if tok.value not in _KEYWORDS:
                hint = {"True": "true", "False": "false", "None": "null", "nil": "null"}.get(tok.value)
                self.fail(tok.start, f"unknown name {tok.value!r} ("
                          + (f"did you mean {hint}?)" if hint else f"a path starts with one of {', '.join(FIELDS)})"))
        elif tok.value == "(":
            self.enter()
            self.advance()
            node = self.parse_or()
            if not self.at("op", ")"):
                self.fail_after_cmp(f"')' to close the '(' at column {tok.start + 1}")
            self.depth -= 1
            self.advance()
            return node
        elif tok.value == "[":
            return self.parse_list()
        after = "" if self.prev.kind == "end" else f" after {self.describe(self.prev)}"
        self.fail(tok.start, "expected a value" + after + self.found())

    def parse_list(self) -> _Node:
        open_ = self.tok
        self.enter()
        self.advance()
        items: list[_Node] = []
        if not self.at("op", "]"):
            items.append(self.parse_value())
            while self.at("op", ","):
                self.advance()
                items.append(self.parse_value())
            if not self.at("op", "]"):
                self.fail(self.tok.start, f"expected ',' or ']' to close the '[' at column {open_.start + 1}"
                          + self.found())
        self.depth -= 1
        self.advance()
        return _list(items)

    def parse_path(self) -> _Node:
        field = self.tok.value
        self.advance()
        steps: list[str | int] = []
        while self.tok.kind == "op" and self.tok.value in (".", "["):
            self.advance()
            tok = self.tok
            if self.prev.value == ".":
                if tok.kind != "name":
                    hint = f" (use [{tok.value}] for a list item)" if tok.kind == "num" else ""
                    self.fail(tok.start, "expected a field name after '.'" + self.found() + hint)
                steps.append(tok.value)
            else:
                if tok.kind != "num" or not self.text[tok.start : tok.end].isdigit():
                    hint = " (use .name for an object's field)" if tok.kind == "str" else ""
                    self.fail(tok.start, "expected a list index (a whole number from 0) after '['" + hint)
                self.advance()
                if not self.at("op", "]"):
                    self.fail(self.tok.start, "expected ']' after the index" + self.found())
                steps.append(tok.value)
            self.advance()
        return _Node(_getter(field, steps))

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail(self.tok.start, f"the expression is nested more than {_MAX_DEPTH} levels deep")

    def fail_after_cmp(self, wanted: str) -> NoReturn:
        tok, prev = self.tok, self.prev
        if (tok.kind == "op" and tok.value in _CMP_OPS) or (tok.kind == "name" and tok.value in ("in", "matches")):
            self.fail(tok.start, "comparisons cannot be chained (join them with 'and')")
        if tok.value == "(" and prev.kind in ("name", "op") and prev.value not in ("(", "["):
            self.fail(tok.start, "there are no function calls")
        operator = "an operator, " if self.bare else ""
        self.fail(tok.start, f"expected {operator}'and', 'or' or {wanted}" + self.found())

    def found(self) -> str:
        return "" if self.tok.kind == "end" else f", found {self.describe(self.tok)}"

    def describe(self, tok: _Tok) -> str:
        if tok.kind == "str":
            return "a string"
        if tok.kind == "num":
            return f"the number {self.text[tok.start:tok.end]}"
        if tok.kind == "end":
            return "the end"
        return repr(tok.value)


# --- building the closures ----------------------------------------------------------


def _const(value: Any) -> _Node:
    node = _Node(lambda r: value)
    node.is_bool, node.is_const, node.const = value is True or value is False, True, value
    return node




def _getter(field: str, steps: list[str | int]) -> Getter:
    if not steps:
        return lambda r: r.get(field)
    if len(steps) == 1 and isinstance(steps[0], str):
        name = steps[0]

        def get1(r: Record) -> Any:
            v = r.get(field)
            return v.get(name) if v.__class__ is dict else None

        return get1
    path = tuple((s, 0) if isinstance(s, str) else (None, s) for s in steps)

    def get(r: Record) -> Any:
        v = r.get(field)
        for name, index in path:
            if name is not None:
                if v.__class__ is not dict:
                    return None
                v = v.get(name)
            elif v.__class__ is list and index < len(v):
                v = v[index]
            else:
                return None
        return v

    return get


def _list(items: list[_Node]) -> _Node:
    """A list value; a list of literals is a literal (its items are values already, nothing is evaluated)."""
    if all(item.is_const for item in items):
        return _const([item.const for item in items])
    fns = tuple(item.fn for item in items)
    return _Node(lambda r: [f(r) for f in fns])


def _truth(node: _Node) -> _Node:
    """`node` as a condition: a value holds only when it is exactly true."""
    if node.is_bool:
        return node
    f = node.fn
    return _Node(lambda r: f(r) is True, is_bool=True)


def _negate(node: _Node) -> _Node:
    f = node.fn
    return _Node(lambda r: not f(r), is_bool=True)


def _logical(parts: list[_Node], all_: bool) -> _Node:
    nodes = [_truth(p) for p in parts]
    fns = tuple(n.fn for n in nodes)
    fn: Getter
    if len(fns) == 2:
        a, b = fns
        fn = (lambda r: a(r) and b(r)) if all_ else (lambda r: a(r) or b(r))
    elif all_:
        fn = lambda r: all(f(r) for f in fns)  # noqa: E731
    else:
        fn = lambda r: any(f(r) for f in fns)  # noqa: E731
    return _Node(fn, is_bool=True)


def _eq(a: Any, b: Any) -> bool:
    """SPEC `==`: equal values of the same kind (numbers by value; bool is no number)."""
    ka = _KIND.get(a.__class__)
    if ka is None or ka != _KIND.get(b.__class__):
        return False
    if ka == "l":
        return len(a) == len(b) and all(map(_eq, a, b))
    if ka == "d":
        return a.keys() == b.keys() and all(_eq(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return _eq(a, b)
    except RecursionError:
        return False


def _contains(x: Any, container: Any) -> bool:
    """SPEC `in`: an element `==` x of a list, or a substring of a string."""
    if container.__class__ is list:
        return any(_equal(x, item) for item in container)
    return container.__class__ is str and x.__class__ is str and x in container


def _order(op: str, a: Any, b: Any) -> bool:
    ka = a.__class__
    if not ((ka in _NUMBER and b.__class__ in _NUMBER) or (ka is str and b.__class__ is str)):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _compare(op: str, left: _Node, right: _Node) -> _Node:
    if op == "!=":
        return _negate(_compare("==", left, right))
    if op == "not in":
        return _negate(_compare("in", left, right))
    if op != "in" and left.is_const and not right.is_const:
        op, left, right = _FLIPPED[op], right, left
    f, g = left.fn, right.fn
    fn: Getter
    if not right.is_const:
        if op == "==":
            fn = lambda r: _equal(f(r), g(r))  # noqa: E731
        elif op == "in":
            fn = lambda r: _contains(f(r), g(r))  # noqa: E731
        else:
            fn = lambda r: _order(op, f(r), g(r))  # noqa: E731
    elif op == "==":
        fn = _eq_const(f, right.const)
    elif op == "in":
        fn = _in_const(f, right.const)
    else:
        fn = _order_const(op, f, right.const)
    return _Node(fn, is_bool=True)


def _eq_const(f: Getter, c: Any) -> Getter:
    kind = _KIND.get(c.__class__)
    if kind == "s":
        return lambda r: (v := f(r)).__class__ is str and v == c
    if kind == "n":
        return lambda r: (v := f(r)).__class__ in _NUMBER and v == c
    if kind in ("b", "z"):
        return lambda r: f(r) is c
    return lambda r: _equal(f(r), c)


def _order_const(op: str, f: Getter, c: Any) -> Getter:
    kind = _KIND.get(c.__class__)
    if kind == "n":
        if op == "<":
            return lambda r: (v := f(r)).__class__ in _NUMBER and v < c
        if op == "<=":
            return lambda r: (v := f(r)).__class__ in _NUMBER and v <= c
        if op == ">":
            return lambda r: (v := f(r)).__class__ in _NUMBER and v > c
        return lambda r: (v := f(r)).__class__ in _NUMBER and v >= c
    if kind == "s":
        if op == "<":
            return lambda r: (v := f(r)).__class__ is str and v < c
        if op == "<=":
            return lambda r: (v := f(r)).__class__ is str and v <= c
        if op == ">":
            return lambda r: (v := f(r)).__class__ is str and v > c
        return lambda r: (v := f(r)).__class__ is str and v >= c
    return lambda r: False


def _in_const(f: Getter, c: Any) -> Getter:
    if c.__class__ is str:
        return lambda r: (v := f(r)).__class__ is str and v in c
    if c.__class__ is not list:
        return lambda r: False
    # Scalars go into sets by kind, so that `true in [1]` stays false.
    strings = frozenset(x for x in c if x.__class__ is str)
    numbers = frozenset(x for x in c if x.__class__ in _NUMBER)
    flags = frozenset(x for x in c if x is True or x is False or x is None)
    nested = [x for x in c if x.__class__ in (list, dict)]

    def member(r: Record) -> bool:
        v = f(r)
        k = v.__class__
        if k is str:
            return v in strings
        if k in _NUMBER:
            return v in numbers
        if v is True or v is False or v is None:
            return v in flags
        return (k is list or k is dict) and any(_equal(v, x) for x in nested)

    return member


def _matches(left: _Node, search: Callable[[bytes], Any]) -> _Node:
    f = left.fn

    def matches(r: Record) -> bool:
        v = f(r)
        # Only a literal in the expression can hold a lone surrogate; it must not raise either.
        return v.__class__ is str and search(v.encode("utf-8", "surrogatepass")) is not None

    return _Node(matches, is_bool=True)
