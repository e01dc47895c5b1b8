"""Settings of a log: `DIR/evlog.toml`, validated with errors naming the key.

Sizes are bytes or strings like "64MiB"; durations are strings like "2m".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def from_dict(doc: dict[str, Any], path: Path | str = "evlog.toml") -> Settings:
    v = _Validator(path)
    known_top = {"format", "segment_bytes", "index_interval_bytes", "fsync", "max_event_bytes",
                 "dedup_window", "retention", "compaction", "dead_letter"}
    v.unknown(doc, known_top, "")
    retention = v.table(doc, "retention", {"max_age", "max_bytes", "max_events"})
    compaction = v.table(doc, "compaction", {"keys", "tombstone_retention"})
    dead_letter = v.table(doc, "dead_letter", {"max_entries"})
    d = Settings()
    segment_bytes = v.size(doc, "segment_bytes", d.segment_bytes)
    if segment_bytes < MIN_SEGMENT_BYTES:
        raise SettingsError(path, "segment_bytes", f"must be at least {MIN_SEGMENT_BYTES} bytes")
    return Settings(
        format=v.choice(doc, "format", FORMATS, d.format),
        segment_bytes=segment_bytes,
        index_interval_bytes=v.size(doc, "index_interval_bytes", d.index_interval_bytes, minimum=1),
        fsync=v.choice(doc, "fsync", FSYNC_MODES, d.fsync),
        max_event_bytes=v.size(doc, "max_event_bytes", d.max_event_bytes, minimum=64),
        dedup_window_us=v.duration(doc, "dedup_window", d.dedup_window_us),
        retention=Retention(
            max_age_us=v.duration(retention, "max_age", None, "retention."),
            max_bytes=v.size(retention, "max_bytes", None, prefix="retention."),
            max_events=v.integer(retention, "max_events", None, "retention."),
        ),
        compaction=Compaction(
            keys=v.boolean(compaction, "keys", False, "compaction."),
            tombstone_retention_us=v.duration(compaction, "tombstone_retention",
                                              d.compaction.tombstone_retention_us, "compaction."),
        ),
        dead_letter_max_entries=v.integer(dead_letter, "max_entries", d.dead_letter_max_entries,
                                          "dead_letter.", minimum=1) or d.dead_letter_max_entries,
    )


class _Validator:
    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> SettingsError:
        return SettingsError(self.path, key, problem)

    def unknown(self, doc: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in doc:
            if key not in known:
                raise self.fail(prefix + key, "unknown setting")

    def table(self, doc: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        self.unknown(value, known, name + ".")
        return value

    def choice(self, doc: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
        value = doc.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def size(self, doc: dict[str, Any], key: str, default: Any, *, minimum: int = 0,
             prefix: str = "") -> Any:
        value = doc.get(key, default)
        if value is None or (value is default and key not in doc):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.fail(prefix + key, f"must be a size like 4096 or \"64MiB\", not {value!r}")
        try:
            size = parse_size(value) if isinstance(value, str) else value
        except ValueError as e:
            raise self.fail(prefix + key, str(e)) from None
        if size < minimum:
            raise self.fail(prefix + key, f"must be at least {minimum}")
        return size

    def duration(self, doc: dict[str, Any], key: str, default: Any, prefix: str = "") -> Any:
        if key not in doc:
            return default
        value = doc[key]
        if not isinstance(value, str):
            raise self.fail(prefix + key, f"must be a duration string like \"90s\" or \"7d\", not {value!r}")
        try:
            return parse_duration_us(value)
        except ValueError as e:
            raise self.fail(prefix + key, str(e)) from None

    def integer(self, doc: dict[str, Any], key: str, default: Any, prefix: str = "", *,
                minimum: int = 0) -> Any:
        if key not in doc:
            return default
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(prefix + key, f"must be an integer of at least {minimum}, not {value!r}")
        return value

    def boolean(self, doc: dict[str, Any], key: str, default: bool, prefix: str = "") -> bool:
        value = doc.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(prefix + key, f"must be true or false, not {value!r}")
        return value


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
