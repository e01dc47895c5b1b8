"""The filters shared by every command that selects events (SPEC 6 "Filters").

A filter is compiled once into a predicate over a frame's bytes. Cheap tests
run first and on the raw bytes where the layout allows it (the type of a
JSON Lines frame sits at a fixed place after the time, and a type's verdict
is cached), so most records that fail are never fully decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from evlog.errors import UsageError
from evlog.store.framing import Codec, RawRecord, undecodable

Predicate = Callable[[bytes], bool]


def type_pattern(pattern: str) -> Callable[[str], bool]:
    """A matcher for one `--type` pattern: `*` is one token, a last `>` one or more."""
    if not pattern or any(c.isspace() for c in pattern):
        raise UsageError(f"bad --type pattern {pattern!r}")
    tokens = pattern.split(".")
    if ">" in tokens[:-1] or any(("*" in t and t != "*") or (">" in t and t != ">") for t in tokens):
        raise UsageError(f"bad --type pattern {pattern!r}: `*` and `>` must be whole tokens, `>` only last")
    if "*" not in tokens and ">" not in tokens:
        return pattern.__eq__
    tail = tokens[-1] == ">"
    fixed = tokens[:-1] if tail else tokens

    def match(type_: str) -> bool:
        parts = type_.split(".")
        if (len(parts) <= len(fixed)) if tail else (len(parts) != len(fixed)):
            return False
        return all(p == "*" or p == t for p, t in zip(fixed, parts, strict=False))

    return match


class _Meta(msgspec.Struct, gc=False):
    type: str
    source: str
    subject: str | None = None
    key: str | None = None


_decode_meta_json = msgspec.json.Decoder(_Meta).decode
_decode_meta_mp = msgspec.msgpack.Decoder(RawRecord).decode
_decode_json = msgspec.json.Decoder(float_hook=float).decode  # a float out of range: infinity
_encode = msgspec.json.Encoder().encode
_TYPE_MARK = b'","type":'  # in a JSON Lines frame, first found right before the type


@dataclass
class Filter:
    types: list[str] = field(default_factory=list)
    key: str | None = None
    subject: str | None = None
    source: str | None = None
    where: str | None = None

    def empty(self) -> bool:
        return not (self.types or self.key is not None or self.subject is not None
                    or self.source is not None or self.where)

    def compile(self, codec: Codec) -> Predicate | None:
        """A predicate over frames, or None when there is nothing to filter."""
        if self.empty():
            return None
        checks: list[Predicate] = []
        if self.types:
            checks.append(self._type_check(codec))
        if self.key is not None or self.subject is not None or self.source is not None:
            checks.append(self._meta_check(codec))
        if self.where:
            checks.append(self._where_check(codec))
        if len(checks) == 1:
            return checks[0]
        return lambda frame: all(check(frame) for check in checks)

    def compile_chunk(self, codec: Codec) -> Callable[[list[bytes]], list[bytes]] | None:
        """Like compile, over a list of frames at once, deciding on raw bytes where it can.

        In a JSON Lines frame the first `","type":` is the type field (the id
        before it is a JSON string, whose quotes are escaped), so exact type
        patterns are a `startswith` at that place, and any other pattern or a
        key has a substring that every match holds, which rules most records
        out before any decoding.
        """
        match = self.compile(codec)
        if match is None:
            return None
        if codec.name != "jsonl":
            return lambda chunk: list(filter(match, chunk))
        if self.types and all("*" not in p and ">" not in p for p in self.types):
            exact = tuple(b'","type":' + _encode(p) + b',"source":' for p in self.types)
            rest = Filter([], self.key, self.subject, self.source, self.where).compile(codec)
            if rest is None:
                return lambda chunk: [f for f in chunk if f.startswith(exact, f.find(_TYPE_MARK))]
            return lambda chunk: [f for f in chunk if f.startswith(exact, f.find(_TYPE_MARK)) and rest(f)]
        needles = self._needles()
        if len(needles) == 1:
            needle = needles[0]
            return lambda chunk: [f for f in chunk if needle in f and match(f)]
        if needles:
            return lambda chunk: [f for f in chunk if any(n in f for n in needles) and match(f)]
        return lambda chunk: list(filter(match, chunk))

    def _needles(self) -> list[bytes]:
        """Byte strings of which a matching JSON Lines frame holds at least one (empty: no such hint)."""
        if self.key is not None:
            return [b',"key":' + _encode(self.key) + b',"data":']
        needles = []
        for pattern in self.types:
            tokens = pattern.split(".")
            literal = []
            for t in tokens:
                if t in ("*", ">"):
                    break
                literal.append(t)
            if not literal:
                return []  # a pattern starting with a wildcard: no literal to look for
            text = ".".join(literal)
            if len(literal) == len(tokens):
                needles.append(b'","type":' + _encode(text) + b',"source":')
            else:
                needles.append(b'","type":' + _encode(text + ".")[:-1])
        return needles

    def type_matcher(self) -> Callable[[str], bool]:
        matchers = [type_pattern(p) for p in self.types]
        verdicts: dict[str, bool] = {}

        def match(type_: str) -> bool:
            v = verdicts.get(type_)
            if v is None:
                v = verdicts[type_] = any(m(type_) for m in matchers)
                if len(verdicts) > 100_000:
                    verdicts.clear()
            return v

        return match

    def _type_check(self, codec: Codec) -> Predicate:
        match = self.type_matcher()
        if codec.name != "jsonl":
            def mp_type(frame: bytes) -> bool:
                try:
                    return match(_decode_meta_mp(frame).type)
                except (msgspec.MsgspecError, RecursionError) as e:
                    raise undecodable(codec, frame, e) from None

            return mp_type
        verdicts: dict[bytes, bool] = {}

        def jsonl_type(frame: bytes) -> bool:
            start = frame.find(_TYPE_MARK) + 10  # the type's JSON string, past its opening quote
            raw = frame[start:frame.index(b'"', start)]
            v = verdicts.get(raw)
            if v is None:
                if b"\\" in raw:  # an escaped character: decode properly
                    try:
                        return match(_decode_meta_json(frame).type)
                    except (msgspec.MsgspecError, RecursionError) as e:
                        raise undecodable(codec, frame, e) from None
                v = verdicts[raw] = match(raw.decode("utf-8", "replace"))
                if len(verdicts) > 100_000:
                    verdicts.clear()
            return v

        return jsonl_type

    def _meta_check(self, codec: Codec) -> Predicate:
        decode = _decode_meta_json if codec.name == "jsonl" else _decode_meta_mp
        key, subject, source = self.key, self.subject, self.source

        def meta(frame: bytes) -> bool:
            try:
                m = decode(frame)
            except (msgspec.MsgspecError, RecursionError) as e:
                raise undecodable(codec, frame, e) from None
            return ((key is None or m.key == key) and (subject is None or m.subject == subject)
                    and (source is None or m.source == source))

        return meta

    def _where_check(self, codec: Codec) -> Predicate:
        from evlog.query.where import compile_where

        predicate = compile_where(self.where or "")
        if codec.name == "jsonl":
            def jsonl_where(frame: bytes) -> bool:
                try:
                    rec = _decode_json(frame)
                except (msgspec.MsgspecError, RecursionError) as e:
                    raise undecodable(codec, frame, e) from None
                return predicate(rec)

            return jsonl_where
        record = codec.record

        def mp_where(frame: bytes) -> bool:
            return predicate(msgspec.structs.asdict(record(frame)))

        return mp_where
