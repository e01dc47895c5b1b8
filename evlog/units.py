"""Sizes, durations and times as users write them, and record times as stored.

Record times are UTC strings ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (SPEC 4); inside
evlog they are also handled as integer microseconds since the epoch.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
_DURATION_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_size(text: str) -> int:
    """`64MiB`, `512KiB`, `1KiB`, `4096` -> bytes; ValueError otherwise."""
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 512KiB, 64MiB)")
    return int(m.group(1)) * _SIZE_UNITS[unit]


def parse_duration_us(text: str) -> int:
    """`250ms`, `90s`, `15m`, `2h`, `7d` -> microseconds; ValueError otherwise."""
    m = _DURATION_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use a number and ms, s, m, h or d, e.g. 90s)")
    return round(float(m.group(1)) * _DURATION_UNITS_US[m.group(2)])


def format_duration_us(us: int) -> str:
    """Microseconds as the largest whole unit that says them exactly (`90s`, `2h`, `250ms`)."""
    for unit in ("d", "h", "m", "s", "ms"):
        size = _DURATION_UNITS_US[unit]
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us / 1_000_000:g}s"


def parse_duration(text: str) -> float:
    """A duration in seconds."""
    return parse_duration_us(text) / 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def parse_time_us(text: str, now: int | None = None) -> int:
    """RFC 3339, a date (midnight UTC) or a duration before now -> microseconds."""
    text = text.strip()
    if _DURATION_RE.fullmatch(text):
        return (now_us() if now is None else now) - parse_duration_us(text)
    if _DATE_RE.fullmatch(text):
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"not a date: {text!r}") from None
        return _to_us(day)
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    iso = iso.replace("t", "T", 1)
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        moment = None
    if moment is None or "T" not in iso or moment.tzinfo is None:
        raise ValueError(f"not a time: {text!r} (use RFC 3339 like 2026-11-27T08:00:00Z, "
                         "a date like 2026-11-27, or a duration like 15m)")
    return _to_us(moment)


def _to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(us: int) -> str:
    """Microseconds since the epoch -> `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    secs, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


def time_to_us(text: str) -> int:
    """A stored record time -> microseconds (the inverse of format_time)."""
    secs = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                            int(text[11:13]), int(text[14:16]), int(text[17:19])))
    return secs * 1_000_000 + int(text[20:26])
