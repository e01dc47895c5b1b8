"""The log as a whole: segments, appending, reading, dedup, failures and torn tails (evlog.store.log).

`LogContract` holds the scenarios; it runs once per storage format (TestJsonlLog, TestMsgpackLog).
A hypothesis state machine checks the log against a plain Python list, for both formats.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from engine_helpers import append, append_n, first_item_offset, item, make_log, offsets, records
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import evlog.store.files
import evlog.store.index
import evlog.store.log
import evlog.store.writer
from evlog.errors import Busy, CorruptionError, EvlogError, LogNotFound
from evlog.settings import Settings
from evlog.store.log import Log
from evlog.store.reader import Range, Reader, last_frames, read_frames
from evlog.store.writer import open_writer
from evlog.units import format_time, time_to_us

T0 = 1_800_000_000_000_000
SEG = 1024


class Clock:
    """A controllable stand-in for evlog.store.writer.now_us."""

    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, us: int) -> None:
        self.t += us


class FailingOs:
    """Stands in for the `os` module inside evlog.store.writer: call number `n` of function `name` raises OSError."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n, self.calls = name, n, 0

    def __getattr__(self, attr):
        real = getattr(os, attr)
        if attr != self.name:
            return real

        def failing(*args, **kwargs):
            self.calls += 1
            if self.calls == self.n + 1:
                raise OSError(errno.EIO, f"injected failure of os.{attr}")
            return real(*args, **kwargs)

        return failing


def record_files(log: Log) -> dict[str, bytes]:
    """The record files of the log (not the derived index files), by name."""
    return {s.name: s.path.read_bytes() for s in log.segments()}


def segment_dir_names(log: Log) -> set[str]:
    return {n for n in os.listdir(log.segments_dir) if not n.startswith(".")}


def assert_indexes_match_rebuild(log: Log) -> None:
    for seg in log.segments():
        fd = seg.open()
        try:
            offs, times = seg.rebuild_index(fd, write=False)
        finally:
            os.close(fd)
        assert seg.index_path.read_bytes() == offs.data, seg.name
        assert seg.time_path.read_bytes() == times.data, seg.name


def next_frame(log: Log) -> bytes:
    """A whole frame for the next offset, as a writer would write it."""
    last = records(log, last=1)
    offset = last[0].offset + 1 if last else 0
    return log.codec.frame(offset, "torn-id", format_time(T0), log.codec.rest("torn", "s", None, "k", b'{"x":1}'))


class LogContract:
    """Scenarios every storage format must pass."""

    fmt: str

    def make(self, tmp_path: Path, segment_bytes: int = SEG, **settings) -> Log:
        return make_log(tmp_path / "log", self.fmt, segment_bytes=segment_bytes, **settings)

    # -- creating and opening --------------------------------------------------------------

    def test_create_makes_the_documented_layout(self, tmp_path):
        """A created log has DIR/evlog.toml and DIR/segments/, and reopens with the same settings."""
        log = self.make(tmp_path, index_interval_bytes=512, max_event_bytes=4096)
        assert (log.dir / "evlog.toml").is_file()
        assert (log.dir / "segments").is_dir()
        again = Log.open(log.dir)
        assert again.settings.format == self.fmt
        assert again.settings.segment_bytes == SEG
        assert again.settings.index_interval_bytes == 512
        assert again.settings.max_event_bytes == 4096
        assert again.settings.fsync == "never"

    def test_create_refuses_an_existing_log(self, tmp_path):
        """Creating a log where one exists is an error unless exist_ok, which opens it unchanged."""
        log = self.make(tmp_path)
        append_n(log, 3)
        other = "msgpack" if self.fmt == "jsonl" else "jsonl"
        with pytest.raises(EvlogError):
            Log.create(log.dir, Settings(format=other), exist_ok=False)
        opened = Log.create(log.dir, Settings(format=other), exist_ok=True)
        assert opened.settings.format == self.fmt
        assert offsets(opened) == [0, 1, 2]

    def test_open_of_a_missing_log_is_log_not_found(self, tmp_path):
        """Opening a directory without a log raises LogNotFound and creates nothing."""
        with pytest.raises(LogNotFound):
            Log.open(tmp_path / "nothing")
        assert not (tmp_path / "nothing").exists()

    def test_an_empty_log_reads_nothing(self, tmp_path):
        """A new log has no segments to speak of; every read and tail is empty."""
        log = self.make(tmp_path)
        assert records(log) == []
        assert records(log, start=5) == []
        assert records(log, last=3) == []
        assert records(log, since_us=T0) == []
        assert last_frames(log, 10)[0] == []

    # -- appending -------------------------------------------------------------------------

    def test_offsets_are_contiguous_across_many_segment_rolls(self, tmp_path):
        """Events appended in batches of many sizes get offsets 0..n-1 in order, over many small segments."""
        log = self.make(tmp_path)
        sizes = [1, 5, 1, 17, 3, 40, 2, 9, 1, 60, 11]
        expected = []
        for b, size in enumerate(sizes):
            events = [{"type": f"batch.{b}", "key": f"k{i % 4}", "data": {"b": b, "i": i, "pad": "p" * (i * 7 % 50)}}
                      for i in range(size)]
            result = append(log, events)
            assert (result.first, result.last, result.count, result.duplicates) == \
                (len(expected), len(expected) + size - 1, size, 0)
            expected += events
        got = records(log)
        assert [r.offset for r in got] == list(range(len(expected)))
        assert [(r.type, r.key, r.data) for r in got] == [(e["type"], e["key"], e["data"]) for e in expected]
        segs = log.segments()
        assert len(segs) > 10
        for seg, nxt in zip(segs, segs[1:], strict=False):
            size = seg.path.stat().st_size
            assert size <= SEG
            first_of_next = records(log, start=nxt.base, to=nxt.base)[0]
            assert first_of_next.offset == nxt.base
        for seg in segs:
            assert seg.name == f"{seg.base:020d}.{self.fmt}"
            assert records(log, start=seg.base, to=seg.base)[0].offset == seg.base

    def test_records_carry_every_field(self, tmp_path):
        """A stored record has the given type, source, subject, key and data, a UUIDv7 id and the append time."""
        log = self.make(tmp_path)
        clock = Clock(T0 + 123_456)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(evlog.store.writer, "now_us", clock)
            append(log, [{"type": "order.created", "source": "shop", "subject": "sub", "key": "c1",
                          "data": {"n": [1, 2.5, None, "ü\n"]}}, {"type": "x"}])
        a, b = records(log)
        assert (a.type, a.source, a.subject, a.key, a.data) == ("order.created", "shop", "sub", "c1",
                                                                {"n": [1, 2.5, None, "ü\n"]})
        assert (b.type, b.source, b.subject, b.key, b.data) == ("x", "test", None, None, None)
        assert a.time == b.time == format_time(T0 + 123_456)
        for r in (a, b):
            assert len(r.id) == 36 and r.id[14] == "7" and r.id[19] in "89ab"
        assert a.id != b.id

    def test_a_given_id_is_kept(self, tmp_path):
        """An event appended with an id is stored with exactly that id."""
        log = self.make(tmp_path)
        append(log, [{"type": "t", "id": "my-id-1"}, {"type": "t", "id": "ünïcode id"}])
        assert [r.id for r in records(log)] == ["my-id-1", "ünïcode id"]

    def test_an_event_larger_than_a_segment_gets_its_own_segment(self, tmp_path):
        """An event bigger than segment_bytes is written alone into a segment, and appends go on after it."""
        log = self.make(tmp_path)
        append_n(log, 3)
        big = {"type": "big", "data": "B" * (3 * SEG)}
        append(log, [big])
        append(log, ["after"])
        append(log, [{"type": "t"}, big, {"type": "t"}])
        got = records(log)
        assert [r.offset for r in got] == list(range(8))
        assert [r.type for r in got] == ["t", "t", "t", "big", "after", "t", "big", "t"]
        by_base = {s.base: s for s in log.segments()}
        for off in (3, 6):
            seg = by_base[off]
            assert [r.offset for r in records(log, start=off, to=off)] == [off]
            assert seg.path.stat().st_size > SEG
            frames = list(seg.frames(fd := seg.open()))
            os.close(fd)
            assert len(frames) == 1
        assert 4 in by_base and 7 in by_base

    def test_time_never_decreases_even_if_the_clock_goes_back(self, tmp_path, monkeypatch):
        """When the clock goes backwards, new records get the last record's time, also after reopening."""
        clock = Clock()
        monkeypatch.setattr(evlog.store.writer, "now_us", clock)
        log = self.make(tmp_path)
        append_n(log, 3)
        clock.advance(-10_000_000)
        append_n(log, 40)  # rolls segments too
        clock.advance(-5_000_000)
        append_n(log, 2)
        reopened = Log.open(log.dir)
        append_n(reopened, 2)
        clock.t = T0 + 1
        append_n(reopened, 1)
        times = [time_to_us(r.time) for r in records(reopened)]
        assert times == sorted(times)
        assert times[:-1] == [T0] * (len(times) - 1)
        assert times[-1] == T0 + 1

    def test_time_follows_the_clock(self, tmp_path, monkeypatch):
        """Each append is stamped with the clock's time when it is later than the last record's."""
        clock = Clock()
        monkeypatch.setattr(evlog.store.writer, "now_us", clock)
        log = self.make(tmp_path)
        for i in range(5):
            append_n(log, 2)
            clock.advance(1_000_000 + i)
        assert [time_to_us(r.time) for r in records(log)][::2] == [
            T0, T0 + 1_000_000, T0 + 2_000_001, T0 + 3_000_003, T0 + 4_000_006]

    # -- dedup -----------------------------------------------------------------------------

    def test_a_known_id_within_the_window_is_not_appended_again(self, tmp_path, monkeypatch):
        """An id seen within dedup_window is skipped and answered with the existing offset."""
        clock = Clock()
        monkeypatch.setattr(evlog.store.writer, "now_us", clock)
        log = self.make(tmp_path)
        append_n(log, 2)
        r = append(log, [{"type": "a", "id": "A"}])
        assert (r.first, r.count, first_item_offset(r)) == (2, 1, 2)
        clock.advance(60_000_000)
        append_n(log, 30)  # rolls: the id is found across segments
        again = append(log, [{"type": "a2", "id": "A"}])
        assert (again.count, again.duplicates, first_item_offset(again), again.first) == (0, 1, 2, None)
        mixed = append(Log.open(log.dir), [{"type": "b", "id": "B"}, {"type": "a3", "id": "A"}, {"type": "c"}])
        assert (mixed.count, mixed.duplicates, mixed.first, mixed.last) == (2, 1, 33, 34)
        got = records(log)
        assert [r.offset for r in got] == list(range(35))
        assert [r.type for r in got if r.id == "A"] == ["a"]
        assert [r.type for r in got[33:]] == ["b", "c"]

    def test_a_repeated_id_within_one_batch_is_appended_once(self, tmp_path):
        """The same id twice in one batch is stored once."""
        log = self.make(tmp_path)
        r = append(log, [{"type": "x", "id": "X"}, {"type": "y"}, {"type": "x2", "id": "X"}])
        assert (r.count, r.duplicates) == (2, 1)
        assert [(x.type, x.id == "X") for x in records(log)] == [("x", True), ("y", False)]

    def test_a_known_id_after_the_window_is_appended_again(self, tmp_path, monkeypatch):
        """Once dedup_window has passed, the same id is a new event."""
        clock = Clock()
        monkeypatch.setattr(evlog.store.writer, "now_us", clock)
        log = self.make(tmp_path, dedup_window_us=120_000_000)
        append(log, [{"type": "a", "id": "A"}])
        clock.advance(119_000_000)
        assert append(log, [{"type": "a", "id": "A"}]).count == 0
        clock.advance(2_000_000)
        r = append(log, [{"type": "a", "id": "A"}])
        assert (r.count, r.first) == (1, 1)
        assert [x.id for x in records(log)] == ["A", "A"]

    # -- reading ---------------------------------------------------------------------------

    def _timed_log(self, tmp_path, monkeypatch):
        """A log of 12 batches of 8 events, batch b appended at T0 + b seconds; returns it and the batch times."""
        clock = Clock()
        monkeypatch.setattr(evlog.store.writer, "now_us", clock)
        log = self.make(tmp_path)
        times = []
        for b in range(12):
            append(log, [{"type": f"t.{b % 3}", "key": f"k{i % 2}", "data": {"b": b, "i": i}} for i in range(8)])
            times.append(clock.t)
            clock.advance(1_000_000)
        assert len(log.segments()) > 3
        return log, times

    def test_read_by_offset_range(self, tmp_path, monkeypatch):
        """start is inclusive, to is inclusive; ranges outside the log are empty."""
        log, _ = self._timed_log(tmp_path, monkeypatch)
        n = 96
        for start in (0, 1, 7, 8, 50, 95, 96, 200):
            assert offsets(log, start=start) == list(range(start, n))
        for to in (0, 9, 95, 96, 500):
            assert offsets(log, to=to) == list(range(min(to, n - 1) + 1))
        assert offsets(log, start=10, to=20) == list(range(10, 21))
        assert offsets(log, start=20, to=20) == [20]
        assert offsets(log, start=21, to=20) == []

    def test_read_by_time_range(self, tmp_path, monkeypatch):
        """since is inclusive, until is exclusive, and both seek across segments."""
        log, times = self._timed_log(tmp_path, monkeypatch)
        for b, t in enumerate(times):
            assert offsets(log, since_us=t) == list(range(8 * b, 96))
            assert offsets(log, since_us=t + 1) == list(range(8 * (b + 1), 96))
            assert offsets(log, until_us=t) == list(range(8 * b))
            assert offsets(log, until_us=t + 1) == list(range(8 * (b + 1)))
        assert offsets(log, since_us=times[3], until_us=times[5]) == list(range(24, 40))
        assert offsets(log, since_us=times[0] - 10**9) == list(range(96))
        assert offsets(log, since_us=times[-1] + 1) == []
        assert offsets(log, until_us=times[0]) == []

    def test_read_last_n(self, tmp_path, monkeypatch):
        """last=N starts at the N-th last record (the whole log when it holds fewer), and combines with to/until."""
        log, times = self._timed_log(tmp_path, monkeypatch)
        for n in (1, 2, 8, 9, 40, 95, 96, 97, 1000):
            assert offsets(log, last=n) == list(range(max(0, 96 - n), 96))
        assert offsets(log, last=0) == []
        assert offsets(log, last=10, to=90) == list(range(86, 91))
        assert offsets(log, last=20, until_us=times[11]) == list(range(76, 88))

    def test_read_mixed_range_ends(self, tmp_path, monkeypatch):
        """An offset start with a time end, and a time start with an offset end, both hold."""
        log, times = self._timed_log(tmp_path, monkeypatch)
        assert offsets(log, start=5, until_us=times[2]) == list(range(5, 16))
        assert offsets(log, since_us=times[2], to=30) == list(range(16, 31))

    def test_tail_returns_the_last_records_oldest_first(self, tmp_path, monkeypatch):
        """tail(n) is the last n records in offset order; fewer when the log is shorter; none for n=0."""
        log, _ = self._timed_log(tmp_path, monkeypatch)
        every = [r.offset for r in records(log)]
        for n in (1, 5, 8, 30, 96, 200):
            assert [log.codec.record(f).offset for f in last_frames(log, n)[0]] == every[-n:]
        assert last_frames(log, 0)[0] == []
        frames, end = last_frames(log, 3)
        assert end == 96 and len(frames) == 3

    def test_tail_with_a_predicate(self, tmp_path, monkeypatch):
        """tail(n, match) is the last n matching records, oldest first, looking back across segments."""
        log, _ = self._timed_log(tmp_path, monkeypatch)
        every = records(log)

        def is_b3(frame: bytes) -> bool:
            return log.codec.record(frame).data["b"] == 3

        def is_k1(frame: bytes) -> bool:
            return log.codec.record(frame).key == "k1"

        expected_b3 = [r.offset for r in every if r.data["b"] == 3]
        for n in (1, 3, 8, 50):
            assert [log.codec.record(f).offset for f in last_frames(log, n, is_b3)[0]] == expected_b3[-n:]
        expected_k1 = [r.offset for r in every if r.key == "k1"]
        assert [log.codec.record(f).offset for f in last_frames(log, 20, is_k1)[0]] == expected_k1[-20:]
        assert last_frames(log, 5, lambda f: False)[0] == []

    def test_many_writers_at_once_get_contiguous_offsets(self, tmp_path):
        """Writers appending concurrently (each with its own lock) store every event exactly once, contiguously."""
        log = self.make(tmp_path)
        errors = []

        def worker(w: int) -> None:
            try:
                own = Log.open(log.dir)
                for i in range(25):
                    append(own, [{"type": "w", "data": [w, i, j]} for j in range(1 + i % 3)])
            except BaseException as e:  # noqa: B036 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        got = records(log)
        assert [r.offset for r in got] == list(range(len(got)))
        expected = sorted([w, i, j] for w in range(4) for i in range(25) for j in range(1 + i % 3))
        assert sorted(r.data for r in got) == expected
        for w in range(4):
            mine = [r.data[1:] for r in got if r.data[0] == w]
            assert mine == sorted(mine)  # each writer's events keep their order

    def test_a_second_locker_that_will_not_wait_is_busy(self, tmp_path):
        """While a writer holds the lock, lock(wait=False) raises Busy."""
        log = self.make(tmp_path)
        with open_writer(log):
            with pytest.raises(Busy):
                with Log.open(log.dir).lock(wait=False):
                    pass
        with log.lock(wait=False):
            pass

    # -- failures ----------------------------------------------------------------------------

    @pytest.mark.parametrize("fn", ["write", "fsync", "open"])
    def test_a_failing_append_changes_nothing_and_the_next_one_works(self, tmp_path, fn):
        """An OS error at any point of an append leaves the records as before; the next append continues."""
        log = self.make(tmp_path, fsync="always")
        append_n(log, 7)
        good = 7
        failures = 0
        for n in range(400):
            before_files, before_names = record_files(log), segment_dir_names(log)
            before = records(log)
            events = [{"type": "batch", "data": {"n": n, "i": i, "pad": "q" * 40}} for i in range(25)]
            with pytest.MonkeyPatch.context() as m:
                m.setattr(evlog.store.writer, "os", FailingOs(fn, n))
                try:
                    append(log, events)
                except OSError as e:
                    assert "injected" in str(e)
                    failed = True
                else:
                    failed = False
            if not failed:
                assert offsets(log) == list(range(good + 25))
                break
            failures += 1
            assert segment_dir_names(log) == before_names, f"failure at call {n}"
            assert record_files(log) == before_files, f"failure at call {n}"
            assert records(log) == before
            r = append(log, [{"type": "next", "data": n}])
            assert (r.first, r.count) == (good, 1), f"failure at call {n}"
            good += 1
        else:
            pytest.fail("the append never succeeded")
        assert failures >= 3
        assert_indexes_match_rebuild(log)
        got = records(log)
        assert [r.offset for r in got] == list(range(len(got)))

    def test_a_failure_while_creating_a_segment_changes_nothing(self, tmp_path, monkeypatch):
        """A batch that fails while a new segment is being set up leaves no trace, and offsets stay contiguous."""
        log = self.make(tmp_path, fsync="always")
        append_n(log, 3)
        before_files, before_names = record_files(log), segment_dir_names(log)

        def no_dir_sync(path):
            raise OSError(errno.EIO, "injected failure of fsync_dir")

        with pytest.MonkeyPatch.context() as m:
            m.setattr(evlog.store.files, "fsync_dir", no_dir_sync)
            with pytest.raises(OSError):
                append_n(log, 30)
        assert segment_dir_names(log) == before_names
        assert record_files(log) == before_files
        r = append_n(log, 1)
        assert r.first == 3
        assert offsets(log) == [0, 1, 2, 3]

    def test_an_exception_from_the_items_rolls_back_the_batch(self, tmp_path):
        """When the input fails part way (the spool cannot be read), nothing of the batch is kept."""
        log = self.make(tmp_path)
        append_n(log, 4)
        before = record_files(log)

        def items():
            for i in range(60):
                yield item(log, "partial", {"i": i, "pad": "z" * 30})
            raise RuntimeError("input broke")

        with pytest.raises(RuntimeError):
            with open_writer(log) as w:
                w.append(items())
        assert record_files(log) == before
        assert append_n(log, 1).first == 4

    # -- torn tails and corruption ----------------------------------------------------------

    @pytest.mark.parametrize("cut", ["one_byte", "header", "half", "all_but_the_last_byte"])
    def test_a_torn_tail_is_ignored_by_readers_and_cut_by_the_next_writer(self, tmp_path, cut):
        """Half a frame at the end is invisible to reads; the next writer sets it aside in quarantine/ and cuts it."""
        log = self.make(tmp_path)
        append_n(log, 20)
        expected = records(log)
        active = log.segments()[-1]
        clean = active.path.read_bytes()
        frame = next_frame(log)
        torn = frame[:{"one_byte": 1, "header": 9, "half": len(frame) // 2, "all_but_the_last_byte": -1}[cut]]
        with open(active.path, "ab") as f:
            f.write(torn)
        assert records(log) == expected
        assert records(log, start=15) == expected[15:]
        assert records(log, last=3) == expected[-3:]
        assert [log.codec.record(f) for f in last_frames(log, 4)[0]] == expected[-4:]
        assert last_frames(log, 1)[1] == 20
        r = append(log, [{"type": "after"}])
        assert r.first == 20
        assert active.path.read_bytes().startswith(clean)
        got = records(log)
        assert [x.offset for x in got] == list(range(21)) and got[-1].type == "after"
        kept = list((log.dir / "quarantine").iterdir())
        assert [p.read_bytes() for p in kept] == [torn]
        assert_indexes_match_rebuild(log)

    @pytest.mark.parametrize("frame_index", [0, 2])
    def test_a_damaged_record_in_a_sealed_segment_stops_a_read_at_its_offset(self, tmp_path, frame_index):
        """A read yields the records before a damaged one, then raises CorruptionError naming its offset."""
        log = self.make(tmp_path)
        append_n(log, 40, payload="x" * 20)
        seg = log.segments()[1]
        fd = seg.open()
        try:
            frames = list(seg.frames(fd))
        finally:
            os.close(fd)
        pos, frame = frames[frame_index]
        victim = log.codec.head(frame)[0]
        blob = bytearray(seg.path.read_bytes())
        blob[pos + len(frame) - 5] ^= 0x20
        seg.path.write_bytes(bytes(blob))
        for read_args in ({}, {"start": 1}, {"last": 39}):
            got = []
            with pytest.raises(CorruptionError) as err:
                for f in read_frames(log, Range(**read_args)):
                    got.append(log.codec.offset(f))
            if "last" not in read_args:  # (counting back for --last may stop at the damage before yielding)
                assert got == list(range(read_args.get("start", 0), victim))
            assert (err.value.offset, err.value.segment, err.value.position) == (victim, seg.name, pos)
        with pytest.raises(CorruptionError) as err:
            last_frames(log, 40)[0]
        assert err.value.offset == victim
        after = log.segments()[2].base
        assert offsets(log, start=after) == list(range(after, 40))

    def test_a_damaged_record_inside_the_active_segment_is_not_a_torn_tail(self, tmp_path):
        """Damage followed by valid records in the last segment is corruption, never a torn tail to cut."""
        log = self.make(tmp_path, segment_bytes=1 << 20)
        append_n(log, 10)
        seg = log.segments()[-1]
        fd = seg.open()
        try:
            pos, frame = list(seg.frames(fd))[4]
        finally:
            os.close(fd)
        blob = bytearray(seg.path.read_bytes())
        blob[pos + 12] ^= 0x01
        seg.path.write_bytes(bytes(blob))
        with pytest.raises(CorruptionError) as err:
            list(read_frames(log))
        assert err.value.offset == 4
        before = seg.path.read_bytes()
        try:
            append_n(log, 1)  # a writer may refuse, or append after the damage...
        except CorruptionError:
            pass
        assert seg.path.read_bytes().startswith(before)  # ...but never cuts the good records after it away


class TestJsonlLog(LogContract):
    fmt = "jsonl"


class TestMsgpackLog(LogContract):
    fmt = "msgpack"


# -- the log as a state machine, against a Python list ----------------------------------------------

type_st = st.sampled_from(["a", "a.b", "c.d.e", "x-y", 'q"uote', "back\\slash"])
key_st = st.none() | st.sampled_from(["k1", "k2", "ü", ""])
data_st = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=30),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
event_st = st.fixed_dictionaries({"type": type_st, "key": key_st, "data": data_st})


class LogMachine(RuleBasedStateMachine):
    """Appends, reads, tails and reopens, compared with a list of (offset, type, key, data)."""

    fmt = "jsonl"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="evlog-sm-"))
        self.log = make_log(self.tmp / "log", self.fmt, segment_bytes=1024)
        self.model: list[tuple[int, str, str | None, object]] = []

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _append(self, events) -> None:
        result = append(self.log, events)
        n = len(self.model)
        assert (result.first, result.last, result.count) == (n, n + len(events) - 1, len(events))
        for i, e in enumerate(events):
            self.model.append((n + i, e["type"], e["key"], e["data"]))

    def _rows(self, frames) -> list[tuple]:
        recs = [self.log.codec.record(f) for f in frames]
        return [(r.offset, r.type, r.key, r.data) for r in recs]

    @rule(event=event_st)
    def append_one(self, event):
        self._append([event])

    @rule(events=st.lists(event_st, min_size=1, max_size=25))
    def append_batch(self, events):
        self._append(events)

    @rule(big=st.integers(1100, 2500))
    def append_oversize(self, big):
        self._append([{"type": "big", "key": None, "data": "B" * big}])

    @rule(start=st.integers(0, 200), length=st.integers(0, 60))
    def read_range(self, start, length):
        to = start + length
        expected = [m for m in self.model if start <= m[0] <= to]
        assert self._rows(read_frames(self.log, Range(start=start, to=to))) == expected

    @rule(n=st.integers(0, 80))
    def read_last(self, n):
        expected = self.model[-n:] if n else []
        assert self._rows(read_frames(self.log, Range(last=n))) == expected

    @rule(n=st.integers(0, 80))
    def tail_n(self, n):
        expected = self.model[-n:] if n else []
        assert self._rows(last_frames(self.log, n)[0]) == expected

    @rule(n=st.integers(1, 30), key=key_st)
    def tail_matching_key(self, n, key):
        codec = self.log.codec
        rows = self._rows(last_frames(self.log, n, lambda f: codec.record(f).key == key)[0])
        assert rows == [m for m in self.model if m[2] == key][-n:]

    @rule()
    def reopen(self):
        self.log = Log.open(self.log.dir)

    @invariant()
    def whole_log_matches(self):
        assert self._rows(read_frames(self.log)) == self.model


class JsonlLogMachine(LogMachine):
    fmt = "jsonl"


class MsgpackLogMachine(LogMachine):
    fmt = "msgpack"


_machine_settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
TestJsonlLogMachine = JsonlLogMachine.TestCase
TestJsonlLogMachine.settings = _machine_settings
TestMsgpackLogMachine = MsgpackLogMachine.TestCase
TestMsgpackLogMachine.settings = _machine_settings


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_a_pending_batch_hides_its_segments_and_the_reader_ends_before_them(tmp_path: Path, fmt: str) -> None:
    """While a batch is pending from segment 0, readers see none of it and report the next offset as 0."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 40, payload="x" * 100)
    assert len(log.segments()) > 3
    log.pending_path.write_text("0 0\n")  # as if the batch that wrote all of this had not committed
    reader = Reader(log)
    assert [f for chunk in reader.chunks() for f in chunk] == []
    assert reader.next_offset == 0
    log.pending_path.unlink()
    assert offsets(log) == list(range(40))
