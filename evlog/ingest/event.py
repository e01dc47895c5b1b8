"""Events as callers give them: validation, ids, and the CloudEvents mapping (SPEC 4).

An accepted event becomes an *item*: the bytes of its frame that follow
`time`, prefixed with its id when the caller gave one (see Codec.item), ready
for the writer to give it an offset, a time and, without an id, a UUIDv7.

Input is checked before it is stored (SPEC 7), so that every reader can
decode every record later: its text must be UTF-8 without lone surrogate
escapes (`"\\ud800"`), and `data` may nest arrays and objects at most
MAX_DEPTH levels deep. A whole block of input lines is checked at C speed
(`block_ok`); only a block that fails that test is checked line by line.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import msgspec

from evlog.errors import InvalidEvent
from evlog.store.framing import Codec, Record

TYPE_MAX = 256
ID_MAX = 256
MAX_DEPTH = 100
"""The most levels of arrays and objects that `data` may nest (SPEC 7: a documented limit)."""
_TYPE_RE = re.compile(r"[!-)+-=?-~]{1,256}")
# Bytes of a frame besides the id and the fields after `time`: the offset
# (20 digits at most), the time, field names and the checksum.
_FRAME_OVERHEAD = 100


class EventIn(msgspec.Struct, gc=False):
    """An input line: an event object, a `read --format json` record, or a CloudEvent."""

    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")
    key: str | None = None
    subject: str | None = None
    source: str | None = None
    id: str | None = None
    time: str | None = None
    specversion: str | None = None
    partitionkey: str | None = None


decode_event = msgspec.json.Decoder(EventIn).decode
_json_encode = msgspec.json.Encoder().encode

def _lazy(pattern: bytes, flags: int = 0) -> Callable[[], re.Pattern[bytes]]:
    """A pattern compiled on first use: these serve the slow paths, not every `evlog append`."""
    return functools.cache(lambda: re.compile(pattern, flags))


# An escape sequence, consumed whole from the left so that `\\\\u` (an escaped backslash) is no \\u escape;
# group 1 is set for a surrogate escape that is not half of a high-low pair.
_ESCAPE = _lazy(rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                     rb"|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)", re.S)
# A JSON string; one left open runs to the end, so that no later quote starts another scan (linear time).
_STRING = _lazy(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)
# An integer readers could not decode (more digits than Python reads: its int_max_str_digits). A float out of
# range is fine: readers decode it as infinity (framing's decoders use float_hook=float).
MAX_INT_DIGITS = 4300
_BIG_NUMBER = _lazy(rb"(?<![0-9])[0-9]{%d}" % (MAX_INT_DIGITS + 1))
_decode_any = msgspec.json.Decoder(float_hook=float).decode
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPEN_OR_NL = bytes(b for b in range(256) if b not in b"[{\n")
_OPEN_AS_BRACE = bytes.maketrans(b"[", b"{")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def block_ok(block: bytes, depth: int = MAX_DEPTH + 1) -> bool:
    """True when no line of `block` needs a closer look: valid UTF-8 without any \\u escape, and no line
    with more than `depth` opening brackets (so none nested deeper). Runs at C speed."""
    if b"\\" in block and b"\\u" in block:
        return False
    if not block.isascii():
        try:
            codecs.utf_8_decode(block, "strict", False)  # an unfinished character at the end: the next block's
        except UnicodeDecodeError:
            return False
    return b"{" * (depth + 1) not in block.translate(_OPEN_AS_BRACE, _NOT_OPEN_OR_NL)


def text_problem(text: bytes) -> str | None:
    """Why JSON text could not be decoded later: bytes that are not UTF-8, or a lone surrogate escape."""
    if not text.isascii():
        try:
            text.decode()
        except UnicodeDecodeError as e:
            return f"not valid UTF-8 (byte {e.start})"
    if b"\\u" in text:
        for m in _ESCAPE().finditer(text):
            if m.group(1):
                return f"a lone surrogate escape (\\{m.group(1).decode()}) is not valid Unicode"
    return None


def depth(text: bytes) -> int:
    """How deep arrays and objects nest in JSON text, found without recursion."""
    brackets = _STRING().sub(b'""', text).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def json_problem(text: bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why JSON text (data, or a line holding data one level down) must not be stored, or None."""
    if not (text.isascii() and b"\\u" not in text):
        problem = text_problem(text)
        if problem:
            return problem
    if text.count(b"[") + text.count(b"{") > max_depth and depth(text) > max_depth:
        return f"data is nested more than {MAX_DEPTH} levels deep"
    if len(text) > MAX_INT_DIGITS and _BIG_NUMBER().search(text):
        try:
            _decode_any(text)
        except msgspec.ValidationError as e:  # "Number out of range", "Integer value out of range"
            why = str(e).split(" - at ")[0]
            return f"{why[0].lower()}{why[1:]}: readers could not decode it"
        except msgspec.DecodeError:
            pass  # malformed JSON: the caller's decoder says where
    return None


def utf8_problem(name: str, value: str) -> str | None:
    """A command-line string holding bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    if value.isascii():
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{name} is not valid UTF-8"
    return None


def type_problem(type_: object) -> str | None:
    if not isinstance(type_, str):
        return "type must be a string"
    if _TYPE_RE.fullmatch(type_):
        return None
    if utf8_problem("type", type_):
        return "type is not valid UTF-8"
    if not type_:
        return "type is empty"
    if len(type_) > TYPE_MAX:
        return f"type is longer than {TYPE_MAX} characters"
    if "*" in type_ or ">" in type_:
        return f"type {type_!r} contains a wildcard (* or >)"
    return f"type {type_!r} must be printable ASCII without whitespace"


def subject_type_problem(type_: str) -> str | None:
    """On a NATS log a type is a subject suffix, which has no empty tokens (SPEC 3)."""
    if type_.startswith(".") or type_.endswith(".") or ".." in type_:
        return f"type {type_!r} is not valid on a NATS log: a subject has no empty tokens"
    return None


def header_id_problem(id_: str) -> str | None:
    """On a NATS log an id is a header value (Nats-Msg-Id), which holds no line break and is read without
    the whitespace around it."""
    if "\r" in id_ or "\n" in id_:
        return f"id {id_!r} is not valid on a NATS log: a message header holds no line breaks"
    if id_ != id_.strip():
        return f"id {id_!r} is not valid on a NATS log: a message header drops whitespace at its ends"
    return None


def _text_problem(name: str, value: str | None, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if utf8_problem(name, value):
        return f"{name} is not valid UTF-8"
    if "\x00" in value:
        return f"{name} contains a NUL character"
    if limit is not None and not 0 < len(value) <= limit:
        return f"{name} must be 1 to {limit} characters"
    return None


class Validator:
    """Turns input events into items for one log, remembering the types it has checked."""

    def __init__(self, codec: Codec, max_event_bytes: int, default_source: str, keep_times: bool = True,
                 subject_types: bool = False) -> None:
        problem = _text_problem("source", default_source)
        if problem:
            raise InvalidEvent(problem)
        self.codec, self.max_event_bytes, self.default_source = codec, max_event_bytes, default_source
        self.keep_times = keep_times  # an input line's own time is kept (SPEC 4), unless --log-time
        self.subject_types = subject_types  # types must be subject suffixes (a NATS log)
        self.known_types: dict[str, bytes] = {}  # valid types, JSON-encoded
        self.rest = codec.rest
        self.item_of = codec.item

    def item(self, type_: str, data_json: bytes | msgspec.Raw, key: str | None, subject: str | None,
             source: str | None, id_: str | None, time: str | None = None) -> bytes:
        """Validate one event (raises InvalidEvent) and encode it as an item.

        `data_json` is bytes of JSON from a caller (checked here), or msgspec.Raw
        that `from_line` or `appending.payload` has checked already.
        """
        if type_ not in self.known_types:
            problem = type_problem(type_) or (subject_type_problem(type_) if self.subject_types else None)
            if problem:
                raise InvalidEvent(problem)
            if len(self.known_types) < 10_000:
                self.known_types[type_] = _json_encode(type_)
        if (key is not None and "\x00" in key) or (subject is not None and "\x00" in subject) \
                or (source is not None and "\x00" in source) or id_ is not None:
            problem = (_text_problem("key", key) or _text_problem("subject", subject)
                       or _text_problem("source", source) or _text_problem("id", id_, ID_MAX)
                       or (header_id_problem(id_) if self.subject_types and id_ is not None else None))
            if problem:
                raise InvalidEvent(problem)
        try:
            if not isinstance(data_json, msgspec.Raw):  # bytes from a caller: one compact line of JSON
                problem = json_problem(data_json)
                if problem:
                    raise InvalidEvent(problem)
                data_json = _json_encode(msgspec.json.decode(data_json))
            rest = self.rest(type_, source or self.default_source, subject, key, data_json)
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"data is not valid JSON: {e}") from None
        except OverflowError:  # MessagePack holds integers of at most 64 bits
            raise InvalidEvent(f"data holds an integer that a {self.codec.name} log cannot store "
                               "(beyond 64 bits)") from None
        except UnicodeEncodeError:  # a caller's string with lone surrogates
            raise InvalidEvent("the event holds text that is not valid UTF-8") from None
        size = len(rest) + _FRAME_OVERHEAD + (36 if id_ is None else len(id_))
        if size > self.max_event_bytes:
            raise InvalidEvent(f"event is {size} bytes, over max_event_bytes ({self.max_event_bytes})")
        item = rest if id_ is None else self.item_of(id_, rest)
        return item if time is None or not self.keep_times else timed(import_time(time), item)

    def from_lines(self, lines: list[bytes], checked: bool = False) -> list[bytes]:
        """Items of many lines; raises at the first bad line (callers retry line by line for details).

        The common case (a known type, no id, no NUL) is encoded inline for JSON
        Lines logs; every other line takes `from_line`. `checked` says that the
        lines passed `block_ok` together; otherwise each line is tested alone.
        """
        if self.codec.name != "jsonl":
            return [self.from_line(line) for line in lines]
        decode = decode_event
        known = self.known_types
        encode = _json_encode
        default_source = encode(self.default_source)
        limit = self.max_event_bytes - _FRAME_OVERHEAD - 36
        deep = MAX_DEPTH + 1
        out: list[bytes] = []
        add = out.append
        for line in lines:
            if not checked and not (line.isascii() and b"\\u" not in line
                                    and line.count(b"[") + line.count(b"{") <= deep):
                add(self.from_line(line))
                continue
            ev = decode(line)
            t = known.get(ev.type)
            key, subject, source = ev.key, ev.subject, ev.source
            if t is None or ev.id is not None or ev.specversion is not None or ev.time is not None \
                    or (key is not None and "\x00" in key) or (subject is not None and "\x00" in subject) \
                    or (source is not None and "\x00" in source):
                add(self.from_line(line))
                continue
            rest = b'"type":%b,"source":%b,"subject":%b,"key":%b,"data":%b' % (
                t, default_source if not source else encode(source),
                b"null" if subject is None else encode(subject), b"null" if key is None else encode(key), ev.data)
            if len(rest) > limit:
                add(self.from_line(line))
                continue
            add(rest)
        return out

    def from_line(self, line: bytes) -> bytes:
        """One input line (a JSON object) -> an item; raises InvalidEvent with the reason."""
        problem = json_problem(line, MAX_DEPTH + 1)
        if problem:
            raise InvalidEvent(problem)
        try:
            ev = decode_event(line)
        except msgspec.ValidationError as e:
            raise InvalidEvent(_friendly(str(e))) from None
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"not valid JSON ({e})") from None
        key = ev.partitionkey if ev.specversion is not None else ev.key
        return self.item(ev.type, ev.data, key, ev.subject, ev.source, ev.id, ev.time)


FUTURE_US = 60_000_000  # an input time at most this far ahead of the machine's clock


def import_time(text: str) -> str:
    """An input line's `time` as a record holds it (UTC, microseconds); InvalidEvent for one that is no
    RFC 3339 time or lies more than a minute ahead of the clock (SPEC 4, times on import)."""
    from evlog.units import format_time, now_us, parse_time_us

    try:
        us = parse_time_us(text) if "T" in text or "t" in text else None
    except ValueError:
        us = None
    if us is None or len(text) > 64:
        raise InvalidEvent(f"time {text[:64]!r} is not an RFC 3339 time like 2026-11-27T08:00:00Z")
    if us > now_us() + FUTURE_US:
        raise InvalidEvent(f"time {text!r} is more than a minute ahead of this machine's clock")
    if us < 0:
        raise InvalidEvent(f"time {text!r} is before 1970")
    return format_time(us)


def timed(time: str, item: bytes) -> bytes:
    """An item that carries its own time (see evlog.store.writer.split_time)."""
    return b"T" + time.encode() + item


def _friendly(message: str) -> str:
    m = re.fullmatch(r"Expected `(.+?)`, got `(.+?)` - at `\$\.?(.*)`", message)
    if m:
        return f"{m.group(3) or 'the line'} must be {_kind(m.group(1))}, not {m.group(2)}"
    if message.startswith("Expected `object`"):
        return "an event must be a JSON object"
    if "missing required field `type`" in message:
        return "missing required field `type`"
    return message


def _kind(expected: str) -> str:
    return {"str | null": "a string or null", "str": "a string", "object": "an object"}.get(expected, expected)


def cloudevent(rec: Record) -> dict[str, Any]:
    """SPEC 4: the record as a CloudEvents 1.0 object."""
    ce: dict[str, Any] = {"specversion": "1.0", "id": rec.id, "source": rec.source, "type": rec.type,
                          "time": rec.time}
    if rec.subject is not None:
        ce["subject"] = rec.subject
    ce["datacontenttype"] = "application/json"
    if rec.key is not None:
        ce["partitionkey"] = rec.key
    ce["sequence"] = str(rec.offset)
    ce["data"] = rec.data
    return ce
