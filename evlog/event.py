"""Events as callers give them: validation, ids, and the CloudEvents mapping (SPEC 4).

An accepted event becomes a `Pending` (its id, or None for a generated one,
and the frame bytes that follow `time`), ready for the writer to give it an
offset and a time.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

import msgspec

from evlog.errors import InvalidEvent
from evlog.framing import Codec, Record

TYPE_MAX = 256
ID_MAX = 256
_TYPE_RE = re.compile(r"[!-)+-=?-~]{1,256}")
# Bytes of a frame besides the id and the fields after `time`: the offset
# (20 digits at most), the time, field names and the checksum.
_FRAME_OVERHEAD = 100


class Pending(NamedTuple):
    id: str | None
    rest: bytes
    size: int  # the record's size as a JSON line, at most


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
    """Turns input events into Pending items for one log, remembering types it has checked."""

    def __init__(self, codec: Codec, max_event_bytes: int, default_source: str) -> None:
        self.codec, self.max_event_bytes, self.default_source = codec, max_event_bytes, default_source
        self.good_types: set[str] = set()

    def pending(self, type_: str, data_json: bytes, key: str | None, subject: str | None,
                source: str | None, id_: str | None) -> Pending:
        """Validate one event (raises InvalidEvent) and encode what follows its time."""
        if type_ not in self.good_types:
            problem = type_problem(type_)
            if problem:
                raise InvalidEvent(problem)
            self.good_types.add(type_)
        if key is not None or subject is not None or source is not None or id_ is not None:
            problem = (_text_problem("key", key) or _text_problem("subject", subject)
                       or _text_problem("source", source) or _text_problem("id", id_, ID_MAX))
            if problem:
                raise InvalidEvent(problem)
        try:
            rest = self.codec.rest(type_, source or self.default_source, subject, key, data_json)
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"data is not valid JSON: {e}") from None
        size = len(rest) + (36 if id_ is None else len(id_)) + _FRAME_OVERHEAD
        if size > self.max_event_bytes:
            raise InvalidEvent(f"event is {size} bytes, over max_event_bytes ({self.max_event_bytes})")
        return Pending(id_, rest, size)

    def from_line(self, line: bytes) -> Pending:
        """One input line (JSON object) -> Pending; raises InvalidEvent with the reason."""
        try:
            ev = decode_event(line)
        except msgspec.ValidationError as e:
            raise InvalidEvent(_friendly(str(e))) from None
        except msgspec.DecodeError as e:
            raise InvalidEvent(f"not valid JSON ({e})") from None
        key = ev.partitionkey if ev.specversion is not None else ev.key
        return self.pending(ev.type, bytes(ev.data), key, ev.subject, ev.source, ev.id)


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


def uuid7_factory(ms: int):
    """A function making UUIDv7 strings for the millisecond `ms`: time-sortable, random below."""
    prefix = f"{(ms >> 16) & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-7"
    pool = bytearray()

    def make() -> str:
        nonlocal pool
        if len(pool) < 10:
            pool = bytearray(os.urandom(10 * 512))
        r = int.from_bytes(pool[:10], "big")
        del pool[:10]
        rand_a = r >> 68
        var_hi = 0x8 | ((r >> 64) & 0x3)
        return f"{prefix}{rand_a:03x}-{var_hi:x}{(r >> 52) & 0xFFF:03x}-{r & 0xFFFFFFFFFFFF:012x}"

    return make


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
