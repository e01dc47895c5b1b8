"""Record frames: how one record is laid out as bytes in a segment, per format.

JSON Lines (`.jsonl`): one record per line, still valid JSON, its fields in
SPEC 4 order followed by a fixed-width checksum field::

    {"offset":7,"id":"…","time":"2026-11-27T08:00:00.000000Z","type":"t",
     "source":"evlog","subject":null,"key":null,"data":{…},"crc32":"1a2b3c4d"}\\n
    └──────────────────────── body ────────────────────────┘└──── 20 bytes ───┘

    crc32 = zlib.crc32(body), as 8 lowercase hex digits; the line ends "}\\n".
    A record's JSON (for `read --format json`) is the body plus "}".

MessagePack (`.msgpack`): a 10-byte header and a payload::

    +--------+-----------+-----------+---------------------------------------+
    | magic  | length    | crc32     | payload: msgpack array of 8 items     |
    | u16 LE | u32 LE    | u32 LE    | [offset, id, time, type, source,      |
    | 0xE71F | payload   | of the    |  subject, key, data]                  |
    |        | bytes     | payload   |                                       |
    +--------+-----------+-----------+---------------------------------------+

A frame that fails its check is either an incomplete last record (a writer
died mid-append: nothing valid follows it in the last segment) or corruption.
"""

from __future__ import annotations

import itertools
import operator
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

import msgspec

from evlog.errors import CorruptionError, UndecodableRecord
from evlog.ids import uuid7_prefix

CRC_SUFFIX_LEN = 20
_BODY = b'{"offset":%d%b%012x%b%b'   # offset, ',"id":"' + id prefix, id counter, time, rest
_LINE = b'%b,"crc32":"%08x"}\n'
_CRC_SUFFIX = b',"crc32":"%08x"}'
_OFFSET_PREFIX = b'{"offset":'
_body = operator.itemgetter(slice(None, -CRC_SUFFIX_LEN))
_crc_field = operator.itemgetter(slice(-CRC_SUFFIX_LEN, None))
_TIME_MARK = b'","time":"'

MP_HEADER = struct.Struct("<HII")
MP_MAGIC = 0xE71F
assert MP_HEADER.size == 10
_MP_MAGIC_BYTES = MP_HEADER.pack(MP_MAGIC, 0, 0)[:2]
_MP_MAX_PAYLOAD = 1 << 30

READ_CHUNK = 1 << 20
_ID_LEN = struct.Struct("<I")


class Record(msgspec.Struct, gc=False):
    """A stored event, fields in SPEC 4 order."""

    offset: int
    id: str
    time: str
    type: str
    source: str
    subject: str | None
    key: str | None
    data: Any = None


class RawRecord(msgspec.Struct, gc=False, array_like=True):
    """A MessagePack payload's fields, `data` left undecoded (for checks on the other fields)."""

    offset: int
    id: str
    time: str
    type: str
    source: str
    subject: str | None
    key: str | None
    data: msgspec.Raw


class _Peek(msgspec.Struct, gc=False, array_like=True):
    offset: int
    id: str
    time: str


_json_encode = msgspec.json.Encoder().encode
_json_record = msgspec.json.Decoder(Record, float_hook=float).decode  # a float out of range: infinity
_decode_str = msgspec.json.Decoder(str).decode
_mp_encode = msgspec.msgpack.Encoder().encode
_mp_record = msgspec.msgpack.Decoder(tuple[int, str, str, str, str, str | None, str | None, Any]).decode
_mp_peek = msgspec.msgpack.Decoder(_Peek).decode
_crc32 = zlib.crc32


class Codec:
    """Encodes records into frames and finds frames in segment bytes."""

    name: str
    suffix: str

    def rest(self, type_: str, source: str, subject: str | None, key: str | None,
             data_json: bytes | msgspec.Raw) -> bytes:
        """The fields after `time`, encoded once, before offset and time are known."""
        raise NotImplementedError

    def frame(self, offset: int, id_: str, time: str, rest: bytes) -> bytes:
        raise NotImplementedError

    def item(self, id_: str, rest: bytes) -> bytes:
        """An item with a caller's id: b"I", the id, a separator, the rest (a rest never starts with "I")."""
        raise NotImplementedError

    def split_item(self, item: bytes) -> tuple[str, bytes]:
        raise NotImplementedError

    def framer(self, time: str, ms: int) -> Callable[[int, list[bytes]], list[bytes]]:
        """frames(first offset, rests) for one batch: generated UUIDv7 ids and one append time."""
        prefix, start = uuid7_prefix(ms)
        frame = self.frame

        def frames(offset: int, rests: list[bytes]) -> list[bytes]:
            return [frame(o, f"{prefix}{(start + o) & 0xFFFF_FFFF_FFFF:012x}", time, rest)
                    for o, rest in zip(itertools.count(offset), rests, strict=False)]

        return frames

    overhead: int  # stored bytes of a frame besides the frame itself

    def split(self, data: bytes, final: bool) -> tuple[list[bytes], int, bool]:
        """Valid frames at the start of `data`.

        Returns (frames, bytes consumed, stopped at a bad frame). Without
        `final`, an incomplete frame at the end is left for the next call.
        """
        raise NotImplementedError

    def record(self, frame: bytes) -> Record:
        raise NotImplementedError

    def head(self, frame: bytes) -> tuple[int, str, str]:
        """(offset, id, time) of a valid frame, without decoding its data."""
        raise NotImplementedError

    def offset(self, frame: bytes) -> int:
        """The offset of a valid frame, as cheaply as the format allows."""
        raise NotImplementedError

    def json(self, frame: bytes) -> bytes:
        """The record as one compact JSON object (no newline)."""
        return _json_encode(self.record(frame))

    def json_lines(self, frames: list[bytes]) -> bytes:
        """The records as JSON Lines (`read --format json`, a handler's stdin)."""
        return b"".join(self.json(f) + b"\n" for f in frames)

    def stored(self, frame: bytes) -> bytes:
        """A frame as it is stored in a segment (what `split` found it in)."""
        raise NotImplementedError

    def resync(self, data: bytes, start: int) -> int | None:
        """Index in `data` (>= start) where a valid frame begins, or None."""
        raise NotImplementedError

    def incomplete(self, data: bytes) -> bool:
        """Whether `data`, the bytes from a bad frame to the end of a segment, can be what an
        interrupted write leaves: a frame cut short (or zeros, what a power loss can leave in a
        file's last blocks). A whole frame that fails its check is corruption, not a torn write."""
        raise NotImplementedError

    def guess_offset(self, data: bytes) -> int | None:
        """The offset a damaged frame claims, when it can still be read."""
        return None


class JsonlCodec(Codec):
    name = "jsonl"
    suffix = ".jsonl"

    def __init__(self) -> None:
        self._strings: dict[str, bytes] = {}

    def _cached(self, text: str) -> bytes:
        """JSON of a string that recurs (types, sources), encoded once."""
        b = self._strings.get(text)
        if b is None:
            b = _json_encode(text)
            if len(self._strings) < 10_000:
                self._strings[text] = b
        return b

    def rest(self, type_: str, source: str, subject: str | None, key: str | None,
             data_json: bytes | msgspec.Raw) -> bytes:
        return b'"type":%b,"source":%b,"subject":%b,"key":%b,"data":%b' % (
            self._cached(type_), self._cached(source),
            b"null" if subject is None else _json_encode(subject),
            b"null" if key is None else _json_encode(key), data_json)

    def frame(self, offset: int, id_: str, time: str, rest: bytes) -> bytes:
        body = b'{"offset":%d,"id":%b,"time":"%b",%b' % (offset, _json_encode(id_), time.encode(), rest)
        return b'%b,"crc32":"%08x"}\n' % (body, _crc32(body))

    def item(self, id_: str, rest: bytes) -> bytes:
        return b"I%b\x1f%b" % (_json_encode(id_), rest)  # a JSON string never holds a raw \x1f

    def split_item(self, item: bytes) -> tuple[str, bytes]:
        sep = item.index(b"\x1f")
        return msgspec.json.decode(item[1:sep]), item[sep + 1:]

    def framer(self, time: str, ms: int) -> Callable[[int, list[bytes]], list[bytes]]:
        prefix, start = uuid7_prefix(ms)
        head = b',"id":"' + prefix.encode()
        stamp = b'","time":"' + time.encode() + b'",'
        body_of = _BODY.__mod__
        line_of = _LINE.__mod__
        crc = _crc32

        def frames(offset: int, rests: list[bytes]) -> list[bytes]:
            # The hot path of `append --batch`: every step is a map, run in C.
            n = len(rests)
            ids = range(start + offset, start + offset + n)
            if ids.stop > 0xFFFF_FFFF_FFFF:
                ids = [i & 0xFFFF_FFFF_FFFF for i in ids]  # type: ignore[assignment]
            bodies = list(map(body_of, zip(range(offset, offset + n), repeat(head), ids, repeat(stamp), rests)))  # noqa: B905
            return list(map(line_of, zip(bodies, map(crc, bodies), strict=True)))

        return frames

    overhead = 1

    def split(self, data: bytes, final: bool) -> tuple[list[bytes], int, bool]:
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: an unfinished line
        crc = _crc32
        suffix = _CRC_SUFFIX.__mod__
        # The hot path of every read: each line's checksum checked by maps, run in C, one comparison per line.
        if all(map(operator.eq, map(suffix, map(crc, map(_body, lines))), map(_crc_field, lines))):
            return lines, len(data) - len(tail), bool(final and tail)
        for line in lines:  # a line failed: which one
            # The checksum covers the body; the comparison covers every byte of the suffix.
            if suffix(crc(line[:-CRC_SUFFIX_LEN])) != line[-CRC_SUFFIX_LEN:]:
                good = lines[:lines.index(line)]
                return good, sum(map(len, good)) + len(good), True
        return lines, len(data) - len(tail), bool(final and tail)

    def record(self, frame: bytes) -> Record:
        try:
            return _json_record(frame)
        except (msgspec.DecodeError, RecursionError) as e:
            raise undecodable(self, frame, e) from None

    def head(self, frame: bytes) -> tuple[int, str, str]:
        # Sliced, never decoded whole: the data may be large or deep. The first `","time":"` ends the
        # id, since a quote inside a JSON string is escaped.
        comma = frame.index(b",", 10)
        t = frame.index(_TIME_MARK, comma)
        try:
            id_ = _decode_str(frame[comma + 6:t + 1])
        except msgspec.DecodeError as e:
            raise undecodable(self, frame, e) from None
        return int(frame[10:comma]), id_, frame[t + 10:t + 37].decode()

    def offset(self, frame: bytes) -> int:
        return int(frame[10:frame.index(b",", 10)])

    def json(self, frame: bytes) -> bytes:
        out = frame[:-CRC_SUFFIX_LEN] + b"}"
        if not out.isascii():
            self._check_utf8([frame])
        return out

    def json_lines(self, frames: list[bytes]) -> bytes:
        # The hot path of `read`: each body without its checksum field, joined by "}\n" in one call.
        out = b"}\n".join(map(_body, frames)) + b"}\n" if frames else b""
        if not out.isascii():
            self._check_utf8(frames)
        return out

    def _check_utf8(self, frames: list[bytes]) -> None:
        """Frames pass through as they are stored; one that is not UTF-8 (forged, or written by an older
        version) would break every consumer downstream: it is an undecodable record (exit 5)."""
        for frame in frames:
            try:
                frame.decode()
            except UnicodeDecodeError as e:
                raise undecodable(self, frame, e) from None

    def stored(self, frame: bytes) -> bytes:
        return frame + b"\n"

    def resync(self, data: bytes, start: int) -> int | None:
        nl = data.find(b"\n", start)
        while nl != -1:
            frames, _, _ = self.split(data[nl + 1:data.find(b"\n", nl + 1) + 1], False)
            if frames:
                return nl + 1
            nl = data.find(b"\n", nl + 1)
        return None

    def incomplete(self, data: bytes) -> bool:
        return b"\n" not in data  # the newline is written last: a line that has one is whole

    def guess_offset(self, data: bytes) -> int | None:
        if data.startswith(_OFFSET_PREFIX):
            end = data.find(b",", 10, 40)
            if end > 10 and data[10:end].isdigit():
                return int(data[10:end])
        return None


class MsgpackCodec(Codec):
    name = "msgpack"
    suffix = ".msgpack"

    def rest(self, type_: str, source: str, subject: str | None, key: str | None,
             data_json: bytes | msgspec.Raw) -> bytes:
        data = msgspec.json.decode(data_json)
        return _mp_encode((type_, source, subject, key, data))[1:]  # without the array header

    def item(self, id_: str, rest: bytes) -> bytes:
        raw = id_.encode()
        return b"I" + _ID_LEN.pack(len(raw)) + raw + rest

    def split_item(self, item: bytes) -> tuple[str, bytes]:
        (n,) = _ID_LEN.unpack_from(item, 1)
        return item[5:5 + n].decode(), item[5 + n:]

    def frame(self, offset: int, id_: str, time: str, rest: bytes) -> bytes:
        payload = b"\x98" + _mp_encode((offset, id_, time))[1:] + rest
        return MP_HEADER.pack(MP_MAGIC, len(payload), _crc32(payload)) + payload

    overhead = MP_HEADER.size

    def split(self, data: bytes, final: bool) -> tuple[list[bytes], int, bool]:
        out: list[bytes] = []
        i, n = 0, len(data)
        unpack = MP_HEADER.unpack_from
        while i + 10 <= n:
            magic, length, crc = unpack(data, i)
            if magic != MP_MAGIC or length > _MP_MAX_PAYLOAD:
                return out, i, True
            end = i + 10 + length
            if end > n:
                break
            payload = data[i + 10:end]
            if _crc32(payload) != crc:
                return out, i, True
            out.append(payload)
            i = end
        return out, i, bool(final and i < n)

    def record(self, frame: bytes) -> Record:
        try:
            return Record(*_mp_record(frame))
        except (msgspec.DecodeError, RecursionError) as e:
            raise undecodable(self, frame, e) from None

    def stored(self, frame: bytes) -> bytes:
        return MP_HEADER.pack(MP_MAGIC, len(frame), _crc32(frame)) + frame

    def head(self, frame: bytes) -> tuple[int, str, str]:
        p = _mp_peek(frame)
        return p.offset, p.id, p.time

    def offset(self, frame: bytes) -> int:
        return _mp_peek(frame).offset

    def resync(self, data: bytes, start: int) -> int | None:
        i = data.find(_MP_MAGIC_BYTES, start)
        while i != -1:
            frames, _, _ = self.split(data[i:], True)
            if frames:
                return i
            i = data.find(_MP_MAGIC_BYTES, i + 1)
        return None

    def incomplete(self, data: bytes) -> bool:
        if not data.strip(b"\0"):
            return True
        if len(data) < MP_HEADER.size:
            return _MP_MAGIC_BYTES.startswith(data[:2])
        magic, length, _ = MP_HEADER.unpack_from(data)
        return magic == MP_MAGIC and MP_HEADER.size + length > len(data)

    def guess_offset(self, data: bytes) -> int | None:
        """The offset at the start of a payload (array header 0x98, then a msgpack uint)."""
        if len(data) < 12 or data[10] != 0x98:
            return None
        tag = data[11]
        if tag < 0x80:
            return tag
        widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if tag in widths and len(data) >= 12 + widths[tag]:
            return int.from_bytes(data[12:12 + widths[tag]], "big")
        return None


CODECS: dict[str, Codec] = {"jsonl": JsonlCodec(), "msgpack": MsgpackCodec()}


def codec_for(fmt: str) -> Codec:
    return CODECS[fmt]


class FrameReader:
    """Reads the valid frames of one segment file from a position, in order.

    Iterating gives (position, frame); `chunks()` gives lists of frames, the
    fast path for readers that need no positions. Afterwards `end` is the
    position after the last valid frame and `bad` is None (a clean end of
    file) or the position of a frame that failed its check or was cut short.
    `stop` bounds the reading (exclusive).
    """

    def __init__(self, codec: Codec, fd: int, start: int = 0, stop: int | None = None,
                 chunk: int = READ_CHUNK) -> None:
        self.codec, self.fd, self.start, self.stop, self.chunk = codec, fd, start, stop, chunk
        self.end = start
        self.bad: int | None = None

    def chunks(self) -> Iterator[list[bytes]]:
        pos = self.start
        carry = b""
        split = self.codec.split
        pread = os.pread
        stop = self.stop
        while True:
            size = self.chunk if stop is None else min(self.chunk, stop - pos - len(carry))
            block = pread(self.fd, size, pos + len(carry)) if size > 0 else b""
            final = not block
            data = carry + block if carry else block
            if not data:
                break
            frames, used, bad = split(data, final)
            pos += used
            self.end = pos
            if frames:
                yield frames
            if bad:
                self.bad = pos
                return
            if final:
                break
            carry = data[used:]
            if len(carry) > 4 * self.chunk:
                self.chunk *= 2  # a record larger than the chunk: read more at once
        self.end = pos

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        pos = self.start
        overhead = self.codec.overhead
        for frames in self.chunks():
            for frame in frames:
                yield pos, frame
                pos += len(frame) + overhead


def undecodable(codec: Codec, frame: bytes, e: BaseException) -> UndecodableRecord:
    """The error for a frame whose checksum holds but whose fields cannot be decoded."""
    try:
        offset: int | None = codec.offset(frame)
    except (ValueError, msgspec.MsgspecError):
        offset = None
    why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
    return UndecodableRecord(offset, f"the record cannot be decoded ({why})")


def classify(codec: Codec, fd: int, bad: int, size: int) -> int | None:
    """None when the bytes from the bad frame at `bad` to `size` are an incomplete last record (a
    torn write); else where the damage ends: the next valid frame, or `size`.

    Reads the rest of the file at once: it is at most one segment, and this
    only runs on damage.
    """
    data = os.pread(fd, max(0, size - bad), bad)
    found = codec.resync(data, 1)
    if found is not None:
        return bad + found
    return None if codec.incomplete(data) else size


def corruption(codec: Codec, segment: str, fd: int, bad: int, previous_offset: int | None,
               base: int | None = None) -> CorruptionError:
    """The error for a bad frame: its offset as the frame claims it, else the one after the
    previous record, else (the first record of a segment) the segment's base offset."""
    head = os.pread(fd, 64, bad)
    offset = codec.guess_offset(head)
    if offset is None and previous_offset is not None:
        offset = previous_offset + 1
    if offset is None and bad == 0:
        offset = base
    return CorruptionError(segment, bad, offset, "checksum mismatch or damaged frame")
