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
from evlog.framing import Codec

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


class _MetaArray(msgspec.Struct, gc=False, array_like=True):
    offset: int
    id: str
    time: str
    type: str
    source: str
    subject: str | None = None
    key: str | None = None


_decode_meta_json = msgspec.json.Decoder(_Meta).decode
_decode_meta_mp = msgspec.msgpack.Decoder(_MetaArray).decode
_decode_json = msgspec.json.decode


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
            return lambda frame: match(_decode_meta_mp(frame).type)
        verdicts: dict[bytes, bool] = {}

        def jsonl_type(frame: bytes) -> bool:
            # `,"time":"<27 bytes>","type":"` then the type, which holds no `"` unless escaped.
            start = frame.index(b',"time":"') + 46
            end = frame.index(b'"', start)
            raw = frame[start:end]
            v = verdicts.get(raw)
            if v is None:
                if b"\\" in raw or raw.endswith(b"\\"):
                    return match(_decode_meta_json(frame).type)
                v = verdicts[raw] = match(raw.decode())
                if len(verdicts) > 100_000:
                    verdicts.clear()
            return v

        return jsonl_type

    def _meta_check(self, codec: Codec) -> Predicate:
        decode = _decode_meta_json if codec.name == "jsonl" else _decode_meta_mp
        key, subject, source = self.key, self.subject, self.source

        def meta(frame: bytes) -> bool:
            m = decode(frame)
            return ((key is None or m.key == key) and (subject is None or m.subject == subject)
                    and (source is None or m.source == source))

        return meta

    def _where_check(self, codec: Codec) -> Predicate:
        from evlog.where import compile_where

        predicate = compile_where(self.where or "")
        if codec.name == "jsonl":
            return lambda frame: predicate(_decode_json(frame))
        record = codec.record

        def mp_where(frame: bytes) -> bool:
            return predicate(msgspec.structs.asdict(record(frame)))

        return mp_where
