"""Settings of a log: `DIR/evlog.toml`, validated with errors naming the key (evlog.settings, SPEC 3)."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evlog.errors import EvlogError, ExitCode, SettingsError
from evlog.settings import Compaction, Retention, Settings, from_dict, load, render, write_new

MiB = 1024 * 1024


def test_defaults_are_the_spec_defaults():
    """An empty evlog.toml gives the defaults of SPEC 3."""
    s = from_dict({})
    assert s.format == "jsonl"
    assert s.segment_bytes == 64 * MiB
    assert s.index_interval_bytes == 4096
    assert s.fsync == "always"
    assert s.max_event_bytes == 1 * MiB
    assert s.dedup_window_us == 2 * 60 * 1_000_000
    assert s.retention == Retention(None, None, None)
    assert s.compaction.keys is False
    assert s.compaction.tombstone_retention_us == 24 * 3600 * 1_000_000
    assert s.dead_letter_max_entries == 10_000
    assert s == Settings()


def test_every_setting_is_read():
    """Each documented key, top-level and in its table, reaches the Settings."""
    s = from_dict({
        "format": "msgpack",
        "segment_bytes": "1KiB",
        "index_interval_bytes": 512,
        "fsync": "batch",
        "max_event_bytes": "2MiB",
        "dedup_window": "90s",
        "retention": {"max_age": "7d", "max_bytes": "10GiB", "max_events": 1000},
        "compaction": {"keys": True, "tombstone_retention": "1h"},
        "dead_letter": {"max_entries": 5},
    })
    assert s == Settings(
        format="msgpack", segment_bytes=1024, index_interval_bytes=512, fsync="batch",
        max_event_bytes=2 * MiB, dedup_window_us=90_000_000,
        retention=Retention(max_age_us=7 * 86400 * 1_000_000, max_bytes=10 * 1024**3, max_events=1000),
        compaction=Compaction(keys=True, tombstone_retention_us=3600 * 1_000_000),
        dead_letter_max_entries=5,
    )


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_each_fsync_mode_is_accepted(fsync):
    """fsync is one of always, batch, never."""
    assert from_dict({"fsync": fsync}).fsync == fsync


@pytest.mark.parametrize(("doc", "key"), [
    ({"colour": "blue"}, "colour"),
    ({"segment_size": 1024}, "segment_size"),
    ({"retention": {"max_agee": "7d"}}, "retention.max_agee"),
    ({"compaction": {"key": True}}, "compaction.key"),
    ({"dead_letter": {"max": 3}}, "dead_letter.max"),
])
def test_unknown_keys_are_errors_naming_the_key(doc, key):
    """A key evlog does not know is an error that names it, with its table."""
    with pytest.raises(SettingsError) as err:
        from_dict(doc, "x/evlog.toml")
    assert err.value.key == key
    assert key in str(err.value)
    assert "x/evlog.toml" in str(err.value)


@pytest.mark.parametrize(("doc", "key"), [
    ({"format": "xml"}, "format"),
    ({"format": 1}, "format"),
    ({"segment_bytes": "big"}, "segment_bytes"),
    ({"segment_bytes": 1.5}, "segment_bytes"),
    ({"segment_bytes": True}, "segment_bytes"),
    ({"segment_bytes": 1023}, "segment_bytes"),
    ({"segment_bytes": "1000B"}, "segment_bytes"),
    ({"index_interval_bytes": 0}, "index_interval_bytes"),
    ({"index_interval_bytes": "4 apples"}, "index_interval_bytes"),
    ({"index_interval_bytes": [1]}, "index_interval_bytes"),
    ({"fsync": "sometimes"}, "fsync"),
    ({"fsync": True}, "fsync"),
    ({"max_event_bytes": -1}, "max_event_bytes"),
    ({"max_event_bytes": 10}, "max_event_bytes"),
    ({"max_event_bytes": {"a": 1}}, "max_event_bytes"),
    ({"dedup_window": 120}, "dedup_window"),
    ({"dedup_window": "2 fortnights"}, "dedup_window"),
    ({"retention": 5}, "retention"),
    ({"retention": {"max_age": 7}}, "retention.max_age"),
    ({"retention": {"max_age": "a week"}}, "retention.max_age"),
    ({"retention": {"max_bytes": "lots"}}, "retention.max_bytes"),
    ({"retention": {"max_bytes": -5}}, "retention.max_bytes"),
    ({"retention": {"max_events": "1000"}}, "retention.max_events"),
    ({"retention": {"max_events": -1}}, "retention.max_events"),
    ({"retention": {"max_events": True}}, "retention.max_events"),
    ({"retention": {"max_events": 1.0}}, "retention.max_events"),
    ({"compaction": "on"}, "compaction"),
    ({"compaction": {"keys": "yes"}}, "compaction.keys"),
    ({"compaction": {"keys": 1}}, "compaction.keys"),
    ({"compaction": {"tombstone_retention": 24}}, "compaction.tombstone_retention"),
    ({"compaction": {"tombstone_retention": "1 day"}}, "compaction.tombstone_retention"),
    ({"dead_letter": []}, "dead_letter"),
    ({"dead_letter": {"max_entries": 0}}, "dead_letter.max_entries"),
    ({"dead_letter": {"max_entries": "many"}}, "dead_letter.max_entries"),
    ({"dead_letter": {"max_entries": False}}, "dead_letter.max_entries"),
])
def test_ill_typed_values_are_errors_naming_the_key(doc, key):
    """A value of the wrong type or out of range is a SettingsError naming the file and the key."""
    with pytest.raises(SettingsError) as err:
        from_dict(doc, "some/evlog.toml")
    assert err.value.key == key
    assert str(err.value).startswith(f"some/evlog.toml: {key}: ")
    assert err.value.problem


def test_settings_errors_are_runtime_errors():
    """An unusable evlog.toml is a runtime error (exit 1), not a usage error."""
    with pytest.raises(EvlogError) as err:
        from_dict({"fsync": "x"})
    assert err.value.exit_code == ExitCode.ERROR


def test_load_names_the_file_when_it_is_not_toml(tmp_path):
    """A file that is not valid TOML is an error naming the file."""
    path = tmp_path / "evlog.toml"
    path.write_text("format = \n")
    with pytest.raises(SettingsError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert "TOML" in str(err.value)


def test_load_reports_a_bad_key_with_the_path(tmp_path):
    """load() validates what it reads, naming the file and the dotted key."""
    path = tmp_path / "evlog.toml"
    path.write_text('[retention]\nmax_age = "forever"\n')
    with pytest.raises(SettingsError) as err:
        load(path)
    assert err.value.key == "retention.max_age"
    assert str(path) in str(err.value)


def test_render_parses_back_to_the_defaults(tmp_path):
    """The evlog.toml written for a new log is valid TOML that loads as the defaults."""
    text = render(Settings())
    tomllib.loads(text)  # valid TOML on its own
    path = tmp_path / "evlog.toml"
    path.write_text(text)
    assert load(path) == Settings()


@given(
    fmt=st.sampled_from(["jsonl", "msgpack"]),
    segment_bytes=st.integers(min_value=1024, max_value=1 << 40),
    interval=st.integers(min_value=1, max_value=1 << 30),
    fsync=st.sampled_from(["always", "batch", "never"]),
    max_event=st.integers(min_value=64, max_value=1 << 30),
    dedup_us=st.integers(min_value=0, max_value=30 * 86400).map(lambda s: s * 1_000_000),
)
def test_render_round_trips_top_level_settings(fmt, segment_bytes, interval, fsync, max_event, dedup_us):
    """Every top-level setting written by render() is read back unchanged."""
    s = Settings(format=fmt, segment_bytes=segment_bytes, index_interval_bytes=interval, fsync=fsync,
                 max_event_bytes=max_event, dedup_window_us=dedup_us)
    assert from_dict(tomllib.loads(render(s))) == s


def test_render_keeps_a_sub_second_dedup_window():
    """A dedup window that is not a whole number of seconds survives render() and load."""
    s = Settings(dedup_window_us=1_500_000)
    assert from_dict(tomllib.loads(render(s))).dedup_window_us == 1_500_000


def test_write_new_never_clobbers(tmp_path):
    """write_new creates evlog.toml once; a second call leaves the first file alone."""
    path = tmp_path / "evlog.toml"
    assert write_new(path, Settings(format="msgpack")) is True
    assert write_new(path, Settings(format="jsonl")) is False
    assert load(path).format == "msgpack"
    assert [p.name for p in tmp_path.iterdir()] == ["evlog.toml"]
