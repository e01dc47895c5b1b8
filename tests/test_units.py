"""Sizes, durations and times as users write them (evlog.units, SPEC 3 and 6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evlog.units import (
    MAX_SIZE,
    format_time,
    parse_duration,
    parse_duration_us,
    parse_size,
    parse_time_us,
    time_to_us,
)

NOW = 1_800_000_000_123_456  # a fixed "now" in µs (2027-01-15)
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, computed independently of evlog."""
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(microseconds=1)


# -- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096),
    ("0", 0),
    ("1KiB", 1024),
    ("512KiB", 512 * 1024),
    ("64MiB", 64 * 1024 * 1024),
    ("2GiB", 2 * 1024**3),
    ("64mib", 64 * 1024 * 1024),
    ("10kb", 10_000),
    ("3MB", 3_000_000),
    ("100B", 100),
    (" 7 KiB ", 7 * 1024),
])
def test_parse_size_accepts_plain_bytes_and_units(text, expected):
    """Sizes are plain bytes or a number with a binary (KiB) or decimal (kB) unit, case-insensitive."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KiB", "-1", "1.5MiB", "12 parsecs", "1KiBs", "0x10", "1 2"])
def test_parse_size_rejects_what_is_not_a_size(text):
    """Anything that is not a whole number with a known unit raises ValueError quoting the input."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["", "KiB", "MiB", "GiB"]))
def test_parse_size_multiplies_by_the_binary_unit(n, unit):
    """`N<unit>` is N times the unit's power of 1024, up to MAX_SIZE (2**63 - 1); more is refused."""
    factor = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    if n * factor <= MAX_SIZE:
        assert parse_size(f"{n}{unit}") == n * factor
    else:
        with pytest.raises(ValueError, match="too large"):
            parse_size(f"{n}{unit}")


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected_us"), [
    ("250ms", 250_000),
    ("90s", 90_000_000),
    ("15m", 15 * 60 * 1_000_000),
    ("2h", 2 * 3600 * 1_000_000),
    ("7d", 7 * 86400 * 1_000_000),
    ("0s", 0),
    ("1.5s", 1_500_000),
    (" 2m ", 120_000_000),
])
def test_parse_duration_us_reads_each_unit(text, expected_us):
    """Durations are a number and one of ms, s, m, h, d (SPEC 6)."""
    assert parse_duration_us(text) == expected_us


def test_parse_duration_is_in_seconds():
    """parse_duration gives seconds as a float."""
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("2m") == pytest.approx(120.0)


@pytest.mark.parametrize(("text", "expected_s"), [
    ("2h30m", 9_000), ("1w", 604_800), ("1w 2d", 777_600), ("1h30m15s", 5_415), ("1m500ms", 60.5),
    ("1.5h", 5_400), (" 2h 30m ", 9_000),
])
def test_parse_duration_reads_weeks_and_several_parts(text, expected_s):
    """A week is `w`; parts add up (`2h30m`), as a user writes them."""
    assert parse_duration_us(text) == round(expected_s * 1_000_000)


@pytest.mark.parametrize("text", ["", "10", "s", "5 minutes", "-5s", "1e3s", "5S", "5sec", "2h2h", "1h-30m",
                                  "1h30", "h30m"])
def test_parse_duration_rejects_bad_input(text):
    """A number without a unit, an unknown unit or a sign raises ValueError naming the input."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_us(text)


# -- times --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-27T08:00:00Z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27T08:00:00z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27t08:00:00Z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27T08:00:00.5Z", datetime(2026, 11, 27, 8, 0, 0, 500_000, tzinfo=UTC)),
    ("2026-11-27T08:00:00.123456Z", datetime(2026, 11, 27, 8, 0, 0, 123_456, tzinfo=UTC)),
    ("2026-11-27T08:00:00+02:00", datetime(2026, 11, 27, 6, tzinfo=UTC)),
    ("2026-11-27T08:00:00-05:30", datetime(2026, 11, 27, 13, 30, tzinfo=UTC)),
    ("2026-11-27T00:30:00+01:00", datetime(2026, 11, 26, 23, 30, tzinfo=UTC)),
    ("2026-11-27T08:00:00+00:00", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_parse_time_us_reads_rfc3339(text, expected):
    """RFC 3339 times with `Z` or a numeric offset are converted to UTC microseconds."""
    assert parse_time_us(text, now=NOW) == us(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
    ("2000-01-01", datetime(2000, 1, 1, tzinfo=UTC)),
])
def test_parse_time_us_reads_a_date_as_midnight_utc(text, expected):
    """A bare date means midnight UTC of that day (SPEC 6)."""
    assert parse_time_us(text, now=NOW) == us(expected)


@pytest.mark.parametrize(("text", "before_us"), [
    ("250ms", 250_000),
    ("90s", 90_000_000),
    ("15m", 900_000_000),
    ("2h", 7_200_000_000),
    ("7d", 604_800_000_000),
])
def test_parse_time_us_reads_a_duration_as_that_long_before_now(text, before_us):
    """A duration means that long before the given `now`."""
    assert parse_time_us(text, now=NOW) == NOW - before_us


def test_parse_time_us_duration_defaults_to_the_clock(monkeypatch):
    """Without an explicit `now`, a duration is measured back from the current time."""
    monkeypatch.setattr("evlog.units.now_us", lambda: NOW)
    assert parse_time_us("1s") == NOW - 1_000_000


@pytest.mark.parametrize("text", [
    "",
    "yesterday",
    "2026-02-30",                 # no such day
    "2026-11-27 25:00",
    "2026-13-01T00:00:00Z",
    "2026-11-27T25:00:00Z",
    "27/11/2026",
    "2026-11-27Z",
    "10",
])
def test_parse_time_us_rejects_what_is_not_a_time(text):
    """Impossible dates and times and other text raise ValueError."""
    with pytest.raises(ValueError):
        parse_time_us(text, now=NOW)


# -- record times --------------------------------------------------------------------------

MIN_US = us(datetime(1970, 1, 1, tzinfo=UTC))
MAX_US = us(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))


def test_format_time_has_the_spec_shape():
    """Record times are `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC."""
    t = us(datetime(2026, 11, 27, 8, 5, 9, 42, tzinfo=UTC))
    assert format_time(t) == "2026-11-27T08:05:09.000042Z"


@given(st.integers(min_value=MIN_US, max_value=MAX_US))
def test_format_time_round_trips_through_time_to_us(t):
    """format_time and time_to_us are inverse, and agree with datetime's own rendering."""
    text = format_time(t)
    assert TIME_RE.fullmatch(text)
    assert time_to_us(text) == t
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
    assert text == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.integers(min_value=MIN_US, max_value=MAX_US), st.integers(min_value=MIN_US, max_value=MAX_US))
def test_format_time_sorts_like_the_numbers(a, b):
    """Formatted times compare as strings the way their microseconds compare (readers rely on it)."""
    assert (format_time(a) < format_time(b)) == (a < b)


@given(st.integers(min_value=MIN_US, max_value=MAX_US))
def test_parse_time_us_reads_what_format_time_writes(t):
    """A stored record time is itself a valid --since/--until value meaning the same instant."""
    assert parse_time_us(format_time(t), now=NOW) == t


@pytest.mark.parametrize("text", ["2026-11-27T08:00:00", "2026-11-27 08:00", "2026-11-27 08:00:00.5"])
def test_parse_time_us_reads_a_time_without_a_zone_as_local_time(text):
    """A date and time without a zone is the machine's local time, as `date` shows it."""
    naive = datetime.fromisoformat(text)
    assert parse_time_us(text, now=NOW) == us(naive.astimezone(UTC))


@pytest.mark.parametrize(("text", "before_us"), [("2h30m", 9_000_000_000), ("1w", 604_800_000_000)])
def test_parse_time_us_reads_compound_durations_and_weeks_ago(text, before_us):
    assert parse_time_us(text, now=NOW) == NOW - before_us
