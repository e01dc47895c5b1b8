"""Settings of a log: `DIR/evlog.toml`, validated with errors naming the key.

Sizes are bytes or strings like "64MiB"; durations are strings like "2m".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from evlog.errors import SettingsError
from evlog.units import format_duration_us, parse_duration_us, parse_size

FORMATS = ("jsonl", "msgpack")
FSYNC_MODES = ("always", "batch", "never")
MIN_SEGMENT_BYTES = 1024


class Retention(msgspec.Struct, frozen=True):
    max_age_us: int | None = None
    max_bytes: int | None = None
    max_events: int | None = None


class Compaction(msgspec.Struct, frozen=True):
    keys: bool = False
    tombstone_retention_us: int = 24 * 3_600_000_000


class Settings(msgspec.Struct, frozen=True):
    format: str = "jsonl"
    segment_bytes: int = 64 * 1024 * 1024
    index_interval_bytes: int = 4096
    fsync: str = "always"
    max_event_bytes: int = 1024 * 1024
    dedup_window_us: int = 120_000_000
    retention: Retention = msgspec.field(default_factory=Retention)
    compaction: Compaction = msgspec.field(default_factory=Compaction)
    dead_letter_max_entries: int = 10_000


def render(settings: Settings) -> str:
    """The text of evlog.toml for these settings; unset retention limits appear commented out."""
    r, c = settings.retention, settings.compaction

    def limit(name: str, value: str | None, example: str) -> str:
        return f"{name} = {value}\n" if value is not None else f"# {name} = {example}\n"

    return (
        "# evlog settings (see `man evlog`). Sizes: bytes or 64MiB/512KiB; durations: 90s, 15m, 2h, 7d.\n"
        f'format = "{settings.format}"\n'
        f"segment_bytes = {settings.segment_bytes}\n"
        f"index_interval_bytes = {settings.index_interval_bytes}\n"
        f'fsync = "{settings.fsync}"\n'
        f"max_event_bytes = {settings.max_event_bytes}\n"
        f'dedup_window = "{format_duration_us(settings.dedup_window_us)}"\n'
        "\n[retention]\n"
        + limit("max_age", None if r.max_age_us is None else f'"{format_duration_us(r.max_age_us)}"', '"7d"')
        + limit("max_bytes", None if r.max_bytes is None else str(r.max_bytes), '"10GiB"')
        + limit("max_events", None if r.max_events is None else str(r.max_events), "1000000")
        + "\n[compaction]\n"
        f"keys = {'true' if c.keys else 'false'}\n"
        f'tombstone_retention = "{format_duration_us(c.tombstone_retention_us)}"\n'
        "\n[dead_letter]\n"
        f"max_entries = {settings.dead_letter_max_entries}\n"
    )


def load(path: Path) -> Settings:
    """Read and validate evlog.toml."""
    import tomllib

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(path, "(file)", f"not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise SettingsError(path, "(file)", f"not valid UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise SettingsError(path, "(file)", "not valid TOML: nested too deeply") from None
    except OSError as e:
        raise SettingsError(path, "(file)", f"cannot read: {e.strerror}") from None
    return from_dict(doc, path)


Size = Annotated[int, msgspec.Meta(ge=0)] | str
Count = Annotated[int, msgspec.Meta(ge=0)]


class _RetentionIn(msgspec.Struct, forbid_unknown_fields=True):
    max_age: str | None = None
    max_bytes: Size | None = None
    max_events: Count | None = None


class _CompactionIn(msgspec.Struct, forbid_unknown_fields=True):
    keys: bool = False
    tombstone_retention: str = "24h"


class _DeadLetterIn(msgspec.Struct, forbid_unknown_fields=True):
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000


class _SettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    """evlog.toml as written: types checked by msgspec, units (sizes, durations) read afterwards."""

    format: Literal["jsonl", "msgpack"] = "jsonl"
    segment_bytes: Size = 64 * 1024 * 1024
    index_interval_bytes: Size = 4096
    fsync: Literal["always", "batch", "never"] = "always"
    max_event_bytes: Size = 1024 * 1024
    dedup_window: str = "2m"
    retention: _RetentionIn = msgspec.field(default_factory=_RetentionIn)
    compaction: _CompactionIn = msgspec.field(default_factory=_CompactionIn)
    dead_letter: _DeadLetterIn = msgspec.field(default_factory=_DeadLetterIn)


def from_dict(doc: dict[str, Any], path: Path | str = "evlog.toml") -> Settings:
    """Validate a parsed evlog.toml; a SettingsError names the file, the key and the problem."""
    try:
        raw = msgspec.convert(doc, _SettingsIn, strict=True)
    except msgspec.ValidationError as e:
        raise _error(path, str(e)) from None

    def size(key: str, value: int | str | None, minimum: int = 0) -> int | None:
        if value is None:
            return None
        try:
            n = parse_size(value) if isinstance(value, str) else value
        except ValueError as e:
            raise SettingsError(path, key, str(e)) from None
        if n < minimum:
            raise SettingsError(path, key, f"must be at least {minimum}")
        return n

    def duration(key: str, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_duration_us(value)
        except ValueError as e:
            raise SettingsError(path, key, str(e)) from None

    r, c = raw.retention, raw.compaction
    return Settings(
        format=raw.format,
        segment_bytes=size("segment_bytes", raw.segment_bytes, MIN_SEGMENT_BYTES) or 0,
        index_interval_bytes=size("index_interval_bytes", raw.index_interval_bytes, 1) or 0,
        fsync=raw.fsync,
        max_event_bytes=size("max_event_bytes", raw.max_event_bytes, 64) or 0,
        dedup_window_us=duration("dedup_window", raw.dedup_window) or 0,
        retention=Retention(max_age_us=duration("retention.max_age", r.max_age),
                            max_bytes=size("retention.max_bytes", r.max_bytes),
                            max_events=r.max_events),
        compaction=Compaction(keys=c.keys,
                              tombstone_retention_us=duration("compaction.tombstone_retention",
                                                              c.tombstone_retention) or 0),
        dead_letter_max_entries=raw.dead_letter.max_entries,
    )


# (Patterns for messages, compiled on first use by re's cache: not at every start-up.)
_MESSAGE = r"(?P<what>.*?)(?: - at `\$(?P<where>[^`]*)`)?"
_UNKNOWN = r"Object contains unknown field `(?P<name>[^`]*)`"
_GOT = r"Expected `[^`]*`, got `(?P<got>[^`]*)`|Invalid enum value (?P<value>.*)"
_SIZE, _DURATION = 'a size like 4096 or "64MiB"', 'a duration like "90s" or "7d"'
_KIND = {
    "format": "jsonl or msgpack", "fsync": "always, batch or never", "segment_bytes": _SIZE,
    "index_interval_bytes": _SIZE, "max_event_bytes": _SIZE, "dedup_window": _DURATION,
    "retention": "a table", "retention.max_age": _DURATION, "retention.max_bytes": _SIZE,
    "retention.max_events": "an integer of at least 0", "compaction": "a table", "compaction.keys": "true or false",
    "compaction.tombstone_retention": _DURATION, "dead_letter": "a table",
    "dead_letter.max_entries": "an integer of at least 1",
}


def _error(path: Path | str, message: str) -> SettingsError:
    """msgspec's "Expected `int`, got `str` - at `$.retention.max_events`" as a SettingsError naming the key."""
    m = re.fullmatch(_MESSAGE, message, re.S)
    what, key = (m.group("what"), (m.group("where") or "").lstrip(".")) if m else (message, "")
    unknown = re.fullmatch(_UNKNOWN, what)
    if unknown:
        return SettingsError(path, f"{key}.{unknown.group('name')}".lstrip("."), "unknown setting")
    if key not in _KIND:
        return SettingsError(path, key or "(file)", (what[:1].lower() + what[1:]) or "invalid")
    got = re.fullmatch(_GOT, what)
    but = f", not {got.group('got') or got.group('value')}" if got else ""
    return SettingsError(path, key, f"must be {_KIND[key]}{but}")


def write_new(path: Path, settings: Settings) -> bool:
    """Create evlog.toml unless it exists (atomically); True when this call created it."""
    tmp = path.with_name(f".evlog.toml.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(settings))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # no-clobber commit: a concurrent creator's file wins
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
