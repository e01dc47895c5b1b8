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
_DURATION_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000,
                      "w": 604_800_000_000}
_DURATION_PART = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)"
_DURATION_RE = re.compile(rf"\s*(?:{_DURATION_PART}\s*)+")  # one or more parts: 90s, 2h30m, 1w 2d
_DURATION_PART_RE = re.compile(_DURATION_PART)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


MAX_SIZE = 2**63 - 1                        # bytes: what a signed 64-bit file offset can say
MAX_DURATION_US = 36_500 * 86_400_000_000  # 100 years: a longer wait cannot be slept (threading.TIMEOUT_MAX)
MIN_TIME_US = -62_135_596_800_000_000      # 0001-01-01T00:00:00Z
MAX_TIME_US = 253_402_300_799_999_999      # 9999-12-31T23:59:59.999999Z


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 event`, `2 events`, `0 retries`: a count with its noun (a regular plural unless given)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def parse_size(text: str) -> int:
    """`64MiB`, `512KiB`, `1KiB`, `4096` -> bytes; ValueError otherwise (also past MAX_SIZE)."""
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 512KiB, 64MiB)")
    digits = m.group(1)
    if len(digits) > 20 or int(digits) * _SIZE_UNITS[unit] > MAX_SIZE:
        raise ValueError(f"size too large: {text!r} (at most {MAX_SIZE} bytes)")
    return int(digits) * _SIZE_UNITS[unit]


def parse_duration_us(text: str) -> int:
    """`250ms`, `90s`, `15m`, `2h`, `7d`, `1w`, or several of them (`2h30m`, `1w 2d`: each unit once) ->
    microseconds; ValueError otherwise (also past MAX_DURATION_US)."""
    parts = _DURATION_PART_RE.findall(text) if _DURATION_RE.fullmatch(text) else []
    if not parts:
        raise ValueError(f"not a duration: {text!r} (use a number and ms, s, m, h, d or w, e.g. 90s or 2h30m)")
    units = [unit for _, unit in parts]
    if len(set(units)) != len(units):
        raise ValueError(f"not a duration: {text!r} (give each unit once, e.g. 2h30m)")
    us = sum(float(n) * _DURATION_UNITS_US[unit] for n, unit in parts)  # inf for hundreds of digits: refused below
    if not us <= MAX_DURATION_US:
        raise ValueError(f"duration too long: {text!r} (at most 36500d, 100 years)")
    return round(us)


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
    """RFC 3339, a date and time without a zone (local time, as `date` shows it: `2026-12-03 06:55`,
    `2026-12-03T06:55:30`), a date (midnight UTC) or a duration before now -> microseconds; ValueError
    otherwise, also for a time outside the years 1 to 9999."""
    text = text.strip()
    if _DURATION_RE.fullmatch(text):
        t = (now_us() if now is None else now) - parse_duration_us(text)
        if t < MIN_TIME_US:
            raise ValueError(f"{text!r} ago is before the year 1")
        return t
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
    if moment is None or ("T" not in iso and " " not in iso):
        raise ValueError(f"not a time: {text!r} (use RFC 3339 like 2026-11-27T08:00:00Z, a local time like "
                         "2026-11-27 08:00, a date like 2026-11-27, or a duration like 15m)")
    if moment.tzinfo is None:  # the machine's local time, as `date` shows it
        try:
            moment = moment.astimezone()
        except (OverflowError, OSError, ValueError):  # outside what the C library's local time handles
            raise ValueError(f"not a time in the years 1 to 9999: {text!r}") from None
    return _to_us(moment)


def _to_us(moment: datetime) -> int:
    try:
        delta = moment - _EPOCH
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in the year 0
        raise ValueError(f"not a time in the years 1 to 9999: {moment.isoformat()}") from None
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise ValueError(f"not a time in the years 1 to 9999: {moment.isoformat()}")
    return us


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(us: int) -> str:
    """Microseconds since the epoch -> `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    secs, micros = divmod(us, 1_000_000)
    t = time.gmtime(secs)  # %Y would not pad years before 1000, and these strings are compared as text
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{micros:06d}Z")


def time_to_us(text: str) -> int:
    """A stored record time -> microseconds (the inverse of format_time)."""
    secs = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                            int(text[11:13]), int(text[14:16]), int(text[17:19])))
    return secs * 1_000_000 + int(text[20:26])
