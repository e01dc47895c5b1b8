"""Record frames: how one record is laid out as bytes in a segment, per format (evlog.store.framing)."""

from __future__ import annotations

import json
import os
import re
import zlib

import pytest
from engine_helpers import split_at
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evlog.store.framing import CODECS, FrameReader, JsonlCodec, MsgpackCodec, Record, classify, codec_for, corruption
from evlog.units import format_time

CODEC_NAMES = sorted(CODECS)
FIELD_ORDER = ["offset", "id", "time", "type", "source", "subject", "key", "data"]
TYPE_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "*>")

# -- strategies ------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=20,
)
types = st.text(alphabet=TYPE_ALPHABET, min_size=1, max_size=40)
times = st.integers(min_value=0, max_value=253402300799999999).map(format_time)


@st.composite
def records(draw, offset=None):
    return Record(
        offset=draw(st.integers(min_value=0, max_value=2**63 - 1)) if offset is None else offset,
        id=draw(text),
        time=draw(times),
        type=draw(types),
        source=draw(text),
        subject=draw(st.none() | text),
        key=draw(st.none() | text),
        data=draw(json_values),
    )


def encode(codec, rec: Record) -> bytes:
    """The bytes a writer puts in a segment for `rec`."""
    rest = codec.rest(rec.type, rec.source, rec.subject, rec.key, json.dumps(rec.data).encode())
    return codec.frame(rec.offset, rec.id, rec.time, rest)


def sequential(draw_records: list[Record]) -> list[Record]:
    return [Record(i, r.id, r.time, r.type, r.source, r.subject, r.key, r.data) for i, r in enumerate(draw_records)]


def same(a: Record, b: Record) -> bool:
    """Equal records, comparing data as JSON values (so 1 == 1.0 stays distinguishable from True)."""
    return a == b and json.dumps(a.data, sort_keys=True) == json.dumps(b.data, sort_keys=True)


@pytest.fixture(params=CODEC_NAMES)
def codec(request):
    return CODECS[request.param]


def test_codec_for_names_both_formats():
    """The two storage formats have their codec and file suffix."""
    assert isinstance(codec_for("jsonl"), JsonlCodec) and codec_for("jsonl").suffix == ".jsonl"
    assert isinstance(codec_for("msgpack"), MsgpackCodec) and codec_for("msgpack").suffix == ".msgpack"


# -- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODEC_NAMES)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records(), min_size=1, max_size=6))
def test_frames_split_back_into_the_same_records(name, recs):
    """Frames written one after another split back into exactly the records that were framed."""
    codec = CODECS[name]
    frames = [encode(codec, r) for r in recs]
    data = b"".join(frames)
    found, used, bad = split_at(codec, data, 1000, True)
    assert not bad
    assert used == len(data)
    assert len(found) == len(recs)
    pos = 1000
    for (p, frame), rec, raw in zip(found, recs, frames, strict=True):
        assert p == pos
        pos += len(raw)
        assert same(codec.record(frame), rec)
        assert codec.head(frame) == (rec.offset, rec.id, rec.time)
        assert codec.offset(frame) == rec.offset


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(rec=records())
def test_json_rendering_is_the_record_in_spec_order(name, rec):
    """codec.json(frame) is one JSON object with the SPEC 4 fields in order, without the checksum."""
    codec = CODECS[name]
    (_, frame), = split_at(codec, encode(codec, rec), 0, True)[0]
    rendered = codec.json(frame)
    assert b"\n" not in rendered
    doc = json.loads(rendered)
    assert list(doc) == FIELD_ORDER
    assert doc == {f: getattr(rec, f) for f in FIELD_ORDER}


@given(rec=records())
def test_jsonl_lines_are_valid_json_with_a_crc32_field(rec):
    """A JSONL frame is one line of valid JSON whose last field `crc32` checks the rest of the line."""
    line = encode(CODECS["jsonl"], rec)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert list(doc) == [*FIELD_ORDER, "crc32"]
    assert re.fullmatch(r"[0-9a-f]{8}", doc["crc32"])
    body = line[: line.rindex(b',"crc32":')]
    assert int(doc["crc32"], 16) == zlib.crc32(body)
    assert {k: doc[k] for k in FIELD_ORDER} == {f: getattr(rec, f) for f in FIELD_ORDER}


def test_newlines_inside_strings_stay_inside_the_line():
    """Newlines and quotes in any string field are escaped, so one record is still one line."""
    codec = CODECS["jsonl"]
    rec = Record(3, "a\nb", format_time(0), 'x"\\y', "s\r\n", "sub\n", "k\n", {"t\n": ["\n", {"\n": "\u2028"}]})
    line = encode(codec, rec)
    assert line.count(b"\n") == 1
    (_, frame), = split_at(codec, line, 0, True)[0]
    assert same(codec.record(frame), rec)


def test_msgpack_frame_header_layout():
    """A MessagePack frame is magic 0xE71F, the payload length and its crc32, little-endian, then the payload."""
    codec = CODECS["msgpack"]
    frame = encode(codec, Record(1, "i", format_time(0), "t", "s", None, None, None))
    payload = frame[10:]
    assert frame[:2] == b"\x1f\xe7"
    assert int.from_bytes(frame[2:6], "little") == len(payload)
    assert int.from_bytes(frame[6:10], "little") == zlib.crc32(payload)


# -- damage ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODEC_NAMES)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records(), min_size=1, max_size=4), data=st.data())
def test_any_single_changed_byte_is_detected(name, recs, data):
    """Changing any one byte of any frame makes split stop there and report it bad, never return it."""
    codec = CODECS[name]
    frames = [encode(codec, r) for r in sequential(recs)]
    k = data.draw(st.integers(0, len(frames) - 1), label="frame")
    i = data.draw(st.integers(0, len(frames[k]) - 1), label="byte")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != frames[k][i]), label="value")
    damaged = bytearray(frames[k])
    damaged[i] = new
    blob = b"".join(frames[:k]) + bytes(damaged) + b"".join(frames[k + 1:])
    found, used, bad = split_at(codec, blob, 0, True)
    assert bad
    assert used == sum(len(f) for f in frames[:k])
    assert [codec.head(f)[0] for _, f in found] == list(range(k))


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(rec1=records(offset=0), rec2=records(offset=1), data=st.data())
def test_an_incomplete_last_frame_waits_unless_final(name, rec1, rec2, data):
    """A frame cut short at the end is left for the next call, or reported bad when the data is final."""
    codec = CODECS[name]
    f1, f2 = encode(codec, rec1), encode(codec, rec2)
    cut = data.draw(st.integers(1, len(f2) - 1), label="cut")
    blob = f1 + f2[:cut]
    found, used, bad = split_at(codec, blob, 0, False)
    assert [p for p, _ in found] == [0] and used == len(f1) and not bad
    found, used, bad = split_at(codec, blob, 0, True)
    assert [p for p, _ in found] == [0] and used == len(f1) and bad
    # the rest of the frame arriving later completes it
    found, used, bad = split_at(codec, f2, len(f1), True)
    assert [p for p, _ in found] == [len(f1)] and used == len(f2) and not bad


def test_split_of_nothing_is_clean(codec):
    """Empty data holds no frames and is not damage, final or not."""
    assert split_at(codec, b"", 0, True) == ([], 0, False)
    assert split_at(codec, b"", 0, False) == ([], 0, False)


@pytest.mark.parametrize("name", CODEC_NAMES)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records(), min_size=3, max_size=3), data=st.data())
def test_resync_finds_the_next_valid_frame(name, recs, data):
    """After a damaged frame, resync points at the start of the next valid frame."""
    codec = CODECS[name]
    f0, f1, f2 = (encode(codec, r) for r in sequential(recs))
    i = data.draw(st.integers(0, len(f0) - 1), label="byte")
    damaged = bytearray(f0)
    damaged[i] ^= 0xFF
    blob = bytes(damaged) + f1 + f2
    assert split_at(codec, blob, 0, True)[2]
    # A JSONL frame that lost its newline runs into the next line, which is then damaged too.
    lost_newline = name == "jsonl" and i == len(f0) - 1
    assert codec.resync(blob, 1) == len(f0) + (len(f1) if lost_newline else 0)


def test_resync_skips_garbage_between_frames(codec):
    """Arbitrary garbage between frames is skipped up to the next frame that checks."""
    f0, f1 = (encode(codec, Record(i, "id", format_time(i), "t", "s", None, None, {"i": i})) for i in range(2))
    garbage = b"\x00junk\n{\"offset\":9,\"crc32\":\"00000000\"}\n\x1f\xe7\xff\xff\xff\xffrest\n"
    blob = f0 + garbage + f1
    assert codec.resync(blob, len(f0) + 1) == len(f0) + len(garbage)


def test_resync_finds_nothing_in_a_torn_tail(codec):
    """When nothing valid follows, resync returns None (the damage is a torn tail)."""
    f0 = encode(codec, Record(0, "id", format_time(0), "t", "s", None, None, [1, 2, 3]))
    assert codec.resync(f0[: len(f0) // 2], 1) is None
    assert codec.resync(f0, 1) is None


def test_guess_offset_reads_the_offset_of_a_damaged_frame(codec):
    """A frame whose data is damaged still tells which offset it claims."""
    frame = bytearray(encode(codec, Record(4711, "id", format_time(0), "t", "s", None, None, "payload-data")))
    frame[-8] ^= 0x01
    assert split_at(codec, bytes(frame), 0, True)[2]
    assert codec.guess_offset(bytes(frame)) == 4711
    assert codec.guess_offset(b"\x00" * 40) is None


# -- reading files ---------------------------------------------------------------------------


def write_segment(path, codec, recs) -> tuple[list[bytes], int]:
    frames = [encode(codec, r) for r in recs]
    path.write_bytes(b"".join(frames))
    return frames, path.stat().st_size


def read_all(path, codec, **kw):
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = FrameReader(codec, fd, **kw)
        return list(reader), reader
    finally:
        os.close(fd)


def sample_records(n: int, big_every: int = 0, big_size: int = 0) -> list[Record]:
    return [Record(i, f"id-{i}", format_time(i * 1000), f"t.{i % 3}", "s", None, f"k{i % 2}",
                   {"i": i, "pad": "x" * (big_size if big_every and i % big_every == 0 else i % 7)})
            for i in range(n)]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_frame_reader_reads_every_frame_whatever_the_chunk_size(tmp_path, codec, chunk):
    """FrameReader yields each frame with its position, across chunk boundaries, and ends cleanly."""
    recs = sample_records(40)
    path = tmp_path / "seg"
    frames, size = write_segment(path, codec, recs)
    got, reader = read_all(path, codec, chunk=chunk)
    positions = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    assert [p for p, _ in got] == positions
    assert [codec.record(f) for _, f in got] == recs
    assert reader.end == size and reader.bad is None


def test_frame_reader_handles_records_larger_than_the_chunk(tmp_path, codec):
    """Records many times larger than the read chunk are read whole."""
    recs = sample_records(12, big_every=4, big_size=5000)
    path = tmp_path / "seg"
    _, size = write_segment(path, codec, recs)
    got, reader = read_all(path, codec, chunk=16)
    assert [codec.record(f) for _, f in got] == recs
    assert reader.end == size and reader.bad is None


def test_frame_reader_starts_and_stops_at_positions(tmp_path, codec):
    """Reading from one frame's position up to another's yields exactly the frames between."""
    recs = sample_records(20)
    path = tmp_path / "seg"
    frames, _ = write_segment(path, codec, recs)
    start = sum(len(f) for f in frames[:5])
    stop = sum(len(f) for f in frames[:12])
    got, reader = read_all(path, codec, start=start, stop=stop, chunk=5)
    assert [codec.offset(f) for _, f in got] == list(range(5, 12))
    assert reader.end == stop and reader.bad is None


@pytest.mark.parametrize("chunk", [4, 1 << 20])
def test_frame_reader_reports_where_a_torn_tail_begins(tmp_path, codec, chunk):
    """A frame cut short at the end of the file stops the reader with `bad` at its position."""
    recs = sample_records(10)
    path = tmp_path / "seg"
    frames, _ = write_segment(path, codec, recs)
    whole = sum(len(f) for f in frames[:9])
    with open(path, "r+b") as f:
        f.truncate(whole + len(frames[9]) // 2)
    got, reader = read_all(path, codec, chunk=chunk)
    assert [codec.offset(f) for _, f in got] == list(range(9))
    assert reader.bad == whole and reader.end == whole
    fd = os.open(path, os.O_RDONLY)
    try:
        assert classify(codec, fd, whole, os.fstat(fd).st_size) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("chunk", [4, 1 << 20])
def test_frame_reader_stops_at_a_damaged_frame(tmp_path, codec, chunk):
    """A damaged frame in the middle stops the reader at its position; classify finds the next one."""
    recs = sample_records(10)
    path = tmp_path / "seg"
    frames, _ = write_segment(path, codec, recs)
    at = sum(len(f) for f in frames[:4])
    blob = bytearray(path.read_bytes())
    blob[at + len(frames[4]) // 2] ^= 0x40
    path.write_bytes(bytes(blob))
    got, reader = read_all(path, codec, chunk=chunk)
    assert [codec.offset(f) for _, f in got] == list(range(4))
    assert reader.bad == at
    fd = os.open(path, os.O_RDONLY)
    try:
        assert classify(codec, fd, at, os.fstat(fd).st_size) == at + len(frames[4])
        err = corruption(codec, "seg", fd, at, 3)
    finally:
        os.close(fd)
    assert err.offset == 4 and err.position == at and err.segment == "seg"


@given(st.data())
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_frame_reader_agrees_with_split_for_any_chunk(tmp_path, data):
    """For any chunk size and start frame, FrameReader yields what one split of the whole file does."""
    name = data.draw(st.sampled_from(CODEC_NAMES), label="codec")
    codec = CODECS[name]
    recs = sample_records(data.draw(st.integers(1, 15), label="n"), big_every=5, big_size=300)
    path = tmp_path / f"seg-{name}"
    frames, _ = write_segment(path, codec, recs)
    first = data.draw(st.integers(0, len(frames) - 1), label="first")
    chunk = data.draw(st.integers(1, 200), label="chunk")
    start = sum(len(f) for f in frames[:first])
    expected, _, bad = split_at(codec, path.read_bytes()[start:], start, True)
    assume(not bad)
    got, reader = read_all(path, codec, start=start, chunk=chunk)
    assert got == expected
    assert reader.bad is None
