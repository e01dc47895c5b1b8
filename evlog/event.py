"""Events as callers give them: validation, ids, and the CloudEvents mapping (SPEC 4).

An accepted event becomes an *item*: the bytes of its frame that follow
`time`, prefixed with its id when the caller gave one (see Codec.item), ready
for the writer to give it an offset, a time and, without an id, a UUIDv7.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from evlog.errors import InvalidEvent
from evlog.framing import Codec, Record

TYPE_MAX = 256
ID_MAX = 256
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
    specversion: str | None = None
    partitionkey: str | None = None


decode_event = msgspec.json.Decoder(EventIn).decode
_json_encode = msgspec.json.Encoder().encode


def type_problem(type_: object) -> str | None:
    if not isinstance(type_, str):
        return "type must be a string"
    if _TYPE_RE.fullmatch(type_):
        return None
    if not type_:
        return "type is empty"
    if len(type_) > TYPE_MAX:
        return f"type is longer than {TYPE_MAX} characters"
    if "*" in type_ or ">" in type_:
        return f"type {type_!r} contains a wildcard (* or >)"
    return f"type {type_!r} must be printable ASCII without whitespace"


def _text_problem(name: str, value: str | None, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        return f"{name} contains a NUL character"
    if limit is not None and not 0 < len(value) <= limit:
        return f"{name} must be 1 to {limit} characters"
    return None


class Validator:
    """Turns input events into items for one log, remembering the types it has checked."""

    def __init__(self, codec: Codec, max_event_bytes: int, default_source: str) -> None:
        self.codec, self.max_event_bytes, self.default_source = codec, max_event_bytes, default_source
        self.known_types: dict[str, bytes] = {}  # valid types, JSON-encoded
        self.rest = codec.rest
        self.item_of = codec.item

    def item(self, type_: str, data_json: bytes | msgspec.Raw, key: str | None, subject: str | None,
             source: str | None, id_: str | None) -> bytes:
        """Validate one event (raises InvalidEvent) and encode it as an item."""
        if type_ not in self.known_types:
            problem = type_problem(type_)
            if problem:
                raise InvalidEvent(problem)
            if len(self.known_types) < 10_000:
                self.known_types[type_] = _json_encode(type_)
        if (key is not None and "\x00" in key) or (subject is not None and "\x00" in subject) \
                or (source is not None and "\x00" in source) or id_ is not None:
            problem = (_text_problem("key", key) or _text_problem("subject", subject)
                       or _text_problem("source", source) or _text_problem("id", id_, ID_MAX))
            if problem:
                raise InvalidEvent(problem)
        try:
            if not isinstance(data_json, msgspec.Raw):  # bytes from a caller: one compact line of JSON
                data_json = _json_encode(msgspec.json.decode(data_json))
            rest = self.rest(type_, source or self.default_source, subject, key, data_json)
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"data is not valid JSON: {e}") from None
        size = len(rest) + _FRAME_OVERHEAD + (36 if id_ is None else len(id_))
        if size > self.max_event_bytes:
            raise InvalidEvent(f"event is {size} bytes, over max_event_bytes ({self.max_event_bytes})")
        return rest if id_ is None else self.item_of(id_, rest)

    def from_lines(self, lines: list[bytes]) -> list[bytes]:
        """Items of many lines; raises at the first bad line (callers retry line by line for details).

        The common case (a known type, no id, no NUL) is encoded inline for JSON
        Lines logs; every other line takes `from_line`.
        """
        if self.codec.name != "jsonl":
            return [self.from_line(line) for line in lines]
        decode = decode_event
        known = self.known_types
        encode = _json_encode
        default_source = encode(self.default_source)
        limit = self.max_event_bytes - _FRAME_OVERHEAD - 36
        out: list[bytes] = []
        add = out.append
        for line in lines:
            ev = decode(line)
            t = known.get(ev.type)
            key, subject, source = ev.key, ev.subject, ev.source
            if t is None or ev.id is not None or ev.specversion is not None \
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
        try:
            ev = decode_event(line)
        except msgspec.ValidationError as e:
            raise InvalidEvent(_friendly(str(e))) from None
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"not valid JSON ({e})") from None
        key = ev.partitionkey if ev.specversion is not None else ev.key
        return self.item(ev.type, ev.data, key, ev.subject, ev.source, ev.id)


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
