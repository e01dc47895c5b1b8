"""Machine output formats of records: json, cloudevents, data (SPEC 6 "Output formats").

Each renderer turns a frame into the bytes of one output line. `pretty` is
for people and lives with the terminal code in evlog.cli.pretty.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from evlog.ingest.event import cloudevent
from evlog.store.framing import Codec, undecodable

FORMATS = ("pretty", "json", "cloudevents", "data")
Render = Callable[[bytes], bytes]

_encode = msgspec.json.Encoder().encode


class _DataOnly(msgspec.Struct, gc=False):
    data: msgspec.Raw = msgspec.Raw(b"null")


_decode_data = msgspec.json.Decoder(_DataOnly).decode


def renderer(fmt: str, codec: Codec) -> Render:
    """The renderer of a machine format for frames of `codec`."""
    if fmt == "json":
        to_json = codec.json
        return lambda frame: to_json(frame) + b"\n"
    if fmt == "cloudevents":
        record = codec.record
        return lambda frame: _encode(cloudevent(record(frame))) + b"\n"
    if fmt == "data":
        if codec.name == "jsonl":
            return lambda frame: _utf8(codec, frame, bytes(_decode_data(frame).data)) + b"\n"
        record = codec.record
        return lambda frame: _encode(record(frame).data) + b"\n"
    raise ValueError(fmt)


def _utf8(codec: Codec, frame: bytes, out: bytes) -> bytes:
    """`out`, taken from `frame` as it is stored, when it is UTF-8; else the frame is undecodable."""
    if not out.isascii():
        try:
            out.decode()
        except UnicodeDecodeError as e:
            raise undecodable(codec, frame, e) from None
    return out


def renderer_many(fmt: str, codec: Codec) -> Callable[[list[bytes]], bytes]:
    """Render a list of frames at once (the hot path of `read`)."""
    if fmt == "json":
        return codec.json_lines
    one = renderer(fmt, codec)
    return lambda frames: b"".join(map(one, frames))
