"""Reader visibility and recovery (SPEC 7): no reader ever sees what is later undone, and no recovery
costs a committed record.

The scenarios interleave a reader and a writer at the exact instants that matter, by running
the writer inside a hook the reader calls (reading the commit marker, seeking in a segment).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import msgspec
import pytest
from engine_helpers import FORMATS, append, append_n, make_log, offsets, records

import evlog.store.files
import evlog.store.index
import evlog.store.writer
from evlog.errors import CorruptionError, EvlogError, SettingsError
from evlog.store import compact as compact_mod
from evlog.store import info as stats
from evlog.store import verify as verify_mod
from evlog.store.follow import Follower
from evlog.store.log import Log
from evlog.store.segment import Segment
from evlog.units import format_time, time_to_us

PAD = "x" * 100


def uncommitted_batch(log: Log, n: int) -> None:
    """A batch of n events that marks and writes, then dies before its commit (a SIGKILLed writer)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            evlog.store.writer.Writer._commit = lambda self: os._exit(0)  # everything is written; no commit
            append(log, [{"type": "uncommitted", "data": {"i": i, "pad": PAD}} for i in range(n)])
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def quarantined(log: Log) -> list[Path]:
    q = log.dir / "quarantine"
    return sorted(q.iterdir()) if q.is_dir() else []


# -- 1. a follower never delivers an uncommitted batch ------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_follower_never_sees_a_batch_marked_between_its_two_looks(tmp_path: Path, fmt: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that marks and writes right after a follower read the marker stays invisible to it;
    after the batch is set aside, the follower delivers the real events at those offsets."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 3, payload=PAD)
    follower = Follower(log, 3)
    real_pending = Log.pending
    injected = []

    def pending_then_batch(self: Log):
        got = real_pending(self)
        if not injected:
            injected.append(True)
            uncommitted_batch(log, 12)  # marks and writes, across segment rolls, after this look
        return got

    monkeypatch.setattr(Log, "pending", pending_then_batch)
    assert follower.poll() == []
    monkeypatch.setattr(Log, "pending", real_pending)
    assert follower.poll() == []  # the marker is there now
    real = append(log, [{"type": "real", "data": i} for i in range(5)])  # sets the batch aside first
    assert (real.first, real.last) == (3, 7)
    got = [log.codec.record(f) for f in follower.poll()]
    assert [(r.offset, r.type) for r in got] == [(o, "real") for o in range(3, 8)]
    assert [r.id for r in got] == [r.id for r in records(log, start=3)]
    follower.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_single_append_whose_fsync_fails_stays_in_the_log(tmp_path: Path, fmt: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A record written without a commit marker is visible at once, so a failure after its write
    (an fsync error, a Ctrl-C) never takes it back or gives its offset to another event."""
    log = make_log(tmp_path / "log", fmt, fsync="always")
    append_n(log, 2)
    for exc in (OSError(errno.EIO, "injected"), KeyboardInterrupt()):
        seen = len(offsets(log))

        def failing_fsync(fd: int, exc: BaseException = exc) -> None:
            raise exc

        with monkeypatch.context() as m:
            m.setattr(evlog.store.writer.os, "fsync", failing_fsync)
            with pytest.raises(EvlogError if isinstance(exc, OSError) else KeyboardInterrupt) as raised:
                append(log, [{"type": "single", "data": seen}])
        if isinstance(exc, OSError):
            assert f"offsets {seen}..{seen} were written" in str(raised.value)
        assert offsets(log) == list(range(seen + 1)), "a written record was taken back"
    assert append(log, [{"type": "after"}]).first == 4
    assert [r.type for r in records(log)] == ["t", "t", "single", "single", "after"]


# -- 2. seeking and reading use the same file ----------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_read_that_seeks_before_a_key_compaction_reads_the_same_file(tmp_path: Path, fmt: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction that rewrites a segment between a reader's seek and its read costs the reader no
    surviving event and no false corruption."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=4096, index_interval_bytes=256)
    events = [{"type": "t", "key": f"k{i % 7}", "data": {"i": i, "pad": PAD}} for i in range(300)]
    append(log, events)
    assert len(log.segments()) > 4
    survivors_before = offsets(log, start=40)
    real_seek = Segment.seek_offset
    compacted = []

    def seek_then_compact(self: Segment, fd: int, target: int, write: bool) -> int:
        pos = real_seek(self, fd, target, write)
        if not compacted:
            compacted.append(None)  # (the compaction seeks too)
            compacted[0] = compact_mod.compact(log, compact_mod.Plan(keys=True))
        return pos

    monkeypatch.setattr(Segment, "seek_offset", seek_then_compact)
    got = offsets(log, start=40)
    assert compacted and compacted[0].rewritten
    monkeypatch.setattr(Segment, "seek_offset", real_seek)
    assert_one_pass(got, survivors_before, offsets(log, start=40))


def assert_one_pass(got: list[int], before: list[int], after: list[int]) -> None:
    """A read during a compaction returns each record once, in order, every survivor included (and
    perhaps some that the compaction removed after the read passed them)."""
    assert got == sorted(set(got)), "a record twice or out of order"
    assert set(after) <= set(got), f"survivors skipped: {sorted(set(after) - set(got))[:10]}"
    assert set(got) <= set(before)
    assert len(after) < len(before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_read_by_time_that_seeks_before_a_key_compaction_reads_the_same_file(
        tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same holds for a read that seeks by time."""
    clock = [1_800_000_000_000_000]
    monkeypatch.setattr(evlog.store.writer, "now_us", lambda: clock[0])
    log = make_log(tmp_path / "log", fmt, segment_bytes=4096, index_interval_bytes=256)
    for i in range(300):
        append(log, [{"type": "t", "key": f"k{i % 7}", "data": {"i": i, "pad": PAD}}])
        clock[0] += 1_000_000
    since = 1_800_000_000_000_000 + 40 * 1_000_000
    before = offsets(log, since_us=since)
    real_seek = Segment.seek_time
    done = []

    def seek_then_compact(self: Segment, fd: int, t_us: int, write: bool) -> int:
        pos = real_seek(self, fd, t_us, write)
        if not done:
            done.append(None)
            done[0] = compact_mod.compact(log, compact_mod.Plan(keys=True))
        return pos

    monkeypatch.setattr(Segment, "seek_time", seek_then_compact)
    got = offsets(log, since_us=since)
    assert done and done[0].rewritten
    monkeypatch.setattr(Segment, "seek_time", real_seek)
    assert_one_pass(got, before, offsets(log, since_us=since))


# -- 3. an empty or damaged commit marker costs nothing committed ------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00", b"garbage", b"12"])
def test_an_unreadable_commit_marker_costs_no_committed_record(tmp_path: Path, fmt: str, content: bytes) -> None:
    """An empty or unreadable marker (a power loss with fsync = never) hides nothing from readers and
    makes the next writer set nothing aside."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 20, payload=PAD)
    assert len(log.segments()) >= 4
    log.pending_path.write_bytes(content)
    assert offsets(log) == list(range(20))
    assert stats.info(log)["events"] == 20
    report = verify_mod.verify(log)
    assert report.ok and any("marker" in w for w in report.warnings)
    assert append_n(log, 1).first == 20
    assert offsets(log) == list(range(21))
    assert quarantined(log) == []
    assert not os.path.lexists(log.pending_path)


# -- 4. a rollback that fails keeps the batch invisible --------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_batch_whose_rollback_fails_is_never_committed(tmp_path: Path, fmt: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """When a failed batch cannot be cut back (the truncate fails too), its marker stays, so readers
    never see it; the next writer sets it aside and continues at the same offset."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 4)

    real_ftruncate = os.ftruncate
    failing = []

    def commit_fails(self: object) -> None:
        failing.append(True)  # everything is written; then the commit fails
        raise OSError(errno.EIO, "injected failure of the commit")

    def ftruncate(fd: int, size: int) -> None:
        if failing:  # and so does cutting the batch back
            raise OSError(errno.EIO, "injected failure of ftruncate")
        real_ftruncate(fd, size)

    with monkeypatch.context() as m:
        m.setattr(evlog.store.writer.Writer, "_commit", commit_fails)
        m.setattr(evlog.store.writer.os, "ftruncate", ftruncate)
        with pytest.raises(OSError):
            append(log, [{"type": "failed", "data": {"i": i, "pad": PAD}} for i in range(30)])
    assert os.path.lexists(log.pending_path), "the failed batch was committed"
    assert offsets(log) == [0, 1, 2, 3]
    assert append(log, [{"type": "next"}]).first == 4
    assert [r.type for r in records(log)] == ["t"] * 4 + ["next"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_interrupt_after_the_commit_point_keeps_the_batch(tmp_path: Path, fmt: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that arrives after a batch's marker is gone (while the directory is being synced) leaves
    the batch in the log: readers may have seen it."""
    log = make_log(tmp_path / "log", fmt, fsync="always")
    append_n(log, 2)
    real_fsync_dir = evlog.store.files.fsync_dir

    def interrupted_after_commit(path: Path) -> None:
        real_fsync_dir(path)
        if not os.path.lexists(log.pending_path) and Path(path) == log.segments_dir:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(evlog.store.files, "fsync_dir", interrupted_after_commit)
        with pytest.raises(KeyboardInterrupt):
            append_n(log, 5)
    assert offsets(log) == list(range(7))
    assert append_n(log, 1).first == 7


# -- 5. verify and repair during a compaction ------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_during_a_key_compaction_reports_a_healthy_log_healthy(tmp_path: Path, fmt: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment rewritten while verify checks it (its new index in place, its old records open) is
    not reported as damaged."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=4096, index_interval_bytes=256)
    append(log, [{"type": "t", "key": f"k{i % 5}", "data": {"i": i, "pad": PAD}} for i in range(200)])
    real_load = Segment.load_index
    done = []

    def load_after_compaction(self: Segment):
        if not done:
            done.append(None)  # (the compaction loads index files too)
            done[0] = compact_mod.compact(log, compact_mod.Plan(keys=True))
        return real_load(self)

    monkeypatch.setattr(Segment, "load_index", load_after_compaction)
    report = verify_mod.verify(log)
    assert done and done[0].rewritten
    assert report.ok, report.problems


def test_repair_waits_for_a_running_compaction(tmp_path: Path) -> None:
    """verify --repair and compaction never run at the same time: repair waits for the compaction lock."""
    log = make_log(tmp_path / "log", "jsonl")
    append_n(log, 10)
    finished = threading.Event()
    with compact_mod.compaction_lock(log, wait=False):
        t = threading.Thread(target=lambda: (verify_mod.verify(log, repair=True), finished.set()))
        t.start()
        assert not finished.wait(0.5), "repair ran while a compaction held its lock"
    t.join(10)
    assert finished.is_set()


# -- 6. index rebuilds: temporary names, leftovers, fsync ------------------------------------------

def test_index_rebuilds_from_many_threads_do_not_collide(tmp_path: Path) -> None:
    """Threads of one process rebuilding the same index files at once never trip over each other's
    temporary files."""
    target = tmp_path / "00000000000000000000.index"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def rewrite(n: int) -> None:
        start.wait()
        try:
            for i in range(300):
                evlog.store.files.write_atomic(target, b"%d %d\n" % (n, i), fsync=False)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=rewrite, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_temporary_files_of_dead_processes_are_cleaned_up(tmp_path: Path) -> None:
    """A compaction removes temporary files left by processes that died; files of live ones stay."""
    log = make_log(tmp_path / "log", "jsonl")
    append_n(log, 30, payload=PAD)
    dead_pid = 2 ** 22 + 12345  # above the default pid_max: no such process
    stale = log.segments_dir / f".00000000000000000000.index.{dead_pid}.abcd.tmp"
    live = log.segments_dir / f".00000000000000000000.index.{os.getpid()}.abcd.tmp"
    stale_group = log.dir / "groups" / f".g.json.{dead_pid}.ef.tmp"
    stale_group.parent.mkdir()
    for p in (stale, live, stale_group):
        p.write_bytes(b"left over")
    compact_mod.compact(log, compact_mod.Plan())
    assert not stale.exists() and not stale_group.exists()
    assert live.exists()


def test_readers_do_not_fsync_with_fsync_never(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that rebuilds a missing index of a log with fsync = never does not fsync."""
    log = make_log(tmp_path / "log", "jsonl", fsync="never")
    append_n(log, 30, payload=PAD)
    for seg in log.segments()[:-1]:
        seg.index_path.unlink()
    calls = []
    monkeypatch.setattr(evlog.store.files.os, "fsync", lambda fd: calls.append(fd))
    assert offsets(log, start=25) == list(range(25, 30))
    assert calls == []


# -- 7. forged offsets ------------------------------------------------------------------------------

def forge(log: Log, seg: Segment, index: int, new_offset: int) -> bytes:
    """Rewrite record `index` of `seg` in place with another offset and a valid checksum."""
    data = seg.path.read_bytes()
    fd = seg.open()
    try:
        found = list(seg.frames(fd))
    finally:
        os.close(fd)
    pos, frame = found[index]
    rec = log.codec.record(frame)
    forged = log.codec.frame(new_offset, rec.id, rec.time, log.codec.rest(
        rec.type, rec.source, rec.subject, rec.key, msgspec.json.encode(rec.data)))
    old = log.codec.stored(frame)
    seg.path.write_bytes(data[:pos] + forged + data[pos + len(old):])
    return forged


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_forged_offset_in_the_active_segment_is_reported_and_repaired(tmp_path: Path, fmt: str) -> None:
    """A record rewritten with a far offset and a valid checksum is reported; repair sets it aside,
    keeps the records after it, and the next append follows the last real offset."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1 << 20)
    append_n(log, 11)
    seg = log.segments()[-1]
    forge(log, seg, 4, 1_000_000)
    report = verify_mod.verify(log)
    assert not report.ok
    assert any(p.offset == 1_000_000 for p in report.problems)
    repaired = verify_mod.verify(log, repair=True)
    assert repaired.ok, repaired.problems
    assert offsets(log) == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert append_n(log, 1).first == 11
    assert verify_mod.verify(log).ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_forged_last_offset_stops_the_writer(tmp_path: Path, fmt: str) -> None:
    """A writer refuses to continue after a last record whose offset does not follow its segment's
    records (it would hand out offsets past a forged one)."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1 << 20)
    append_n(log, 6)
    forge(log, log.segments()[-1], 5, 1_000_000)
    with pytest.raises(CorruptionError):
        append_n(log, 1)
    assert verify_mod.verify(log, repair=True).ok
    assert append_n(log, 1).first == 5


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_forged_offset_beyond_the_next_segment_is_reported(tmp_path: Path, fmt: str) -> None:
    """A record of a sealed segment whose offset reaches the next segment's base is out of place."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 40, payload=PAD)
    segs = log.segments()
    forge(log, segs[1], 0, segs[2].base + 3)
    report = verify_mod.verify(log)
    assert not report.ok
    assert verify_mod.verify(log, repair=True).ok
    assert offsets(log) == [o for o in range(40) if o != segs[1].base]


# -- 8. a complete garbage line at the end is corruption, not a torn write ---------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_complete_garbage_frame_at_the_end_is_corruption(tmp_path: Path, fmt: str) -> None:
    """Bytes after the last record that end a frame (a newline, a whole MessagePack frame) cannot be an
    interrupted write: verify reports corruption and readers stop there with exit 5's error."""
    log = make_log(tmp_path / "log", fmt)
    append_n(log, 5)
    seg = log.segments()[-1]
    if fmt == "jsonl":
        junk = b'{"offset":5,"garbage":true,"crc32":"00000000"}\n'
    else:
        payload = b"\x98" + b"\x05" * 20
        import struct
        import zlib
        junk = struct.pack("<HII", 0xE71F, len(payload), zlib.crc32(payload) ^ 1) + payload
    with open(seg.path, "ab") as f:
        f.write(junk)
    report = verify_mod.verify(log)
    assert not report.ok
    with pytest.raises(CorruptionError):
        offsets(log)
    with pytest.raises(CorruptionError):
        append_n(log, 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_cut_frame_at_the_end_is_still_a_torn_write(tmp_path: Path, fmt: str) -> None:
    """A prefix of a real frame (what a killed writer leaves) stays an incomplete last record."""
    log = make_log(tmp_path / "log", fmt)
    append_n(log, 5)
    seg = log.segments()[-1]
    frame = log.codec.frame(5, "x", format_time(time_to_us(records(log)[-1].time)),
                            log.codec.rest("t", "s", None, None, b"1"))
    for cut in (1, 5, 11, len(frame) - 1):
        data = seg.path.read_bytes()
        with open(seg.path, "ab") as f:
            f.write(frame[:cut])
        assert offsets(log) == list(range(5))
        assert verify_mod.verify(log).ok
        seg.path.write_bytes(data)


# -- 9. the format setting must match the segments --------------------------------------------------

def test_a_changed_format_setting_is_refused(tmp_path: Path) -> None:
    """Changing `format` in evlog.toml under an existing log is refused, not a silent fork of the log;
    verify names the foreign segment files."""
    log = make_log(tmp_path / "log", "jsonl")
    append_n(log, 3)
    toml = Log.settings_path(log.dir)
    toml.write_text(toml.read_text().replace('format = "jsonl"', 'format = "msgpack"'))
    changed = Log.open(log.dir)
    with pytest.raises(SettingsError, match="format"):
        append_n(changed, 1)
    with pytest.raises(SettingsError, match="format"):
        offsets(changed)
    report = verify_mod.verify(changed)
    assert not report.ok
    assert any("jsonl" in p.problem for p in report.problems)
    assert [p.name for p in changed.segments_dir.iterdir() if p.suffix == ".msgpack"] == []


# -- 10. info agrees with readers -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_info_does_not_count_an_uncommitted_batch(tmp_path: Path, fmt: str) -> None:
    """`info` counts what readers see: not the records of a batch that has not committed."""
    log = make_log(tmp_path / "log", fmt, segment_bytes=1024)
    append_n(log, 3, payload=PAD)
    uncommitted_batch(log, 20)
    facts = stats.info(log)
    assert offsets(log) == [0, 1, 2]
    assert (facts["events"], facts["first_offset"], facts["last_offset"]) == (3, 0, 2)
    assert facts["segments"] == len(log.view().segments)


def test_errors_are_evlog_errors() -> None:
    """(sanity) the errors raised above belong to the exception tree."""
    assert issubclass(SettingsError, EvlogError) and issubclass(CorruptionError, EvlogError)
