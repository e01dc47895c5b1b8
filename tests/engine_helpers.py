"""Shared helpers for the engine's unit and property tests (not a test module)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from evlog.ingest.event import Validator
from evlog.settings import Settings
from evlog.store.framing import Record
from evlog.store.log import Log
from evlog.store.reader import Range, read_frames
from evlog.store.writer import AppendResult, open_writer

FORMATS = ("jsonl", "msgpack")


def make_log(directory: Path, fmt: str, segment_bytes: int = 1024, **settings: Any) -> Log:
    """A new log at `directory` with small segments and no fsync (tests do not need durability)."""
    settings.setdefault("fsync", "never")
    return Log.create(directory, Settings(format=fmt, segment_bytes=segment_bytes, **settings), exist_ok=False)


def validator(log: Log, source: str = "test") -> Validator:
    return Validator(log.codec, log.settings.max_event_bytes, source)


def encoder(v: Validator):
    """The Validator's method that validates one event into what Writer.append takes."""
    return getattr(v, "item", None) or v.pending  # `pending` in older versions of evlog.ingest.event


def item(log: Log, type_: str = "t", data: Any = None, *, key: str | None = None,
         subject: str | None = None, source: str | None = None, id_: str | None = None):
    """One validated event, ready for Writer.append."""
    return encoder(validator(log))(type_, msgspec.json.encode(data), key, subject, source, id_)


def append(log: Log, events: Iterable[dict[str, Any] | str]) -> AppendResult:
    """Append events given as dicts (type, data, key, subject, source, id) or bare type strings."""
    make = encoder(validator(log))
    items = []
    for ev in events:
        if isinstance(ev, str):
            ev = {"type": ev}
        items.append(make(ev["type"], msgspec.json.encode(ev.get("data")), ev.get("key"),
                               ev.get("subject"), ev.get("source"), ev.get("id")))
    with open_writer(log) as w:
        return w.append(items)


def append_n(log: Log, n: int, type_: str = "t", payload: str = "") -> AppendResult:
    """Append n events whose data is {"i": <index>, "p": payload}."""
    return append(log, [{"type": type_, "data": {"i": i, "p": payload}} for i in range(n)])


def records(log: Log, **read_args: Any) -> list[Record]:
    return [log.codec.record(f) for f in read_frames(log, Range(**read_args))]


def offsets(log: Log, **read_args: Any) -> list[int]:
    return [r.offset for r in records(log, **read_args)]


def flip_byte(path: Path, pos: int, mask: int = 0x01) -> None:
    """Flip bits of the byte at `pos` in place."""
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ mask]))


def first_item_offset(result: AppendResult) -> int | None:
    """The offset of the first input item of an append (appended, or found by its id)."""
    if hasattr(result, "first_item"):
        return result.first_item
    return result.offsets[0] if result.offsets else None  # older AppendResult


def split_at(codec, data: bytes, pos: int, final: bool):
    """codec.split of `data` (which starts at file position `pos`), giving each frame with its position.

    Returns ([(position, frame)], bytes consumed, stopped at a bad frame).
    """
    if len(inspect.signature(codec.split).parameters) == 3:  # older split(data, pos, final) gave positions
        return codec.split(data, pos, final)
    frames, used, bad = codec.split(data, final)
    out = []
    for frame in frames:
        out.append((pos, frame))
        pos += len(codec.stored(frame))
    return out, used, bad


def append_undecodable(directory: Path) -> int:
    """Append, past every check, a record whose checksum holds but whose data is not UTF-8 (as older versions
    of evlog let in); returns its offset."""
    log = Log.open(directory)
    if log.codec.name == "jsonl":
        rest = b'"type":"bad","source":"old","subject":null,"key":"k","data":"\xff"'
    else:
        rest = msgspec.msgpack.encode(("bad", "old", None, "k"))[1:] + b"\xa1\xff"  # fixarray header dropped
    with open_writer(log) as w:
        result = w.append([rest])
    assert result.first is not None
    return result.first
