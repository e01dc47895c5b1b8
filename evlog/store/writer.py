"""Appending: frames written to the active segment under the append lock, all or nothing.

Appends from any number of processes are serialised by an exclusive `flock`
on `DIR/.lock`, held only while frames are written, never while input is
awaited. Under the lock a writer reads the end of the active (last) segment
from its last index entry, sets aside and cuts off an incomplete last record
(a writer killed mid-append), gives each event the next offset and a time no
earlier than the last record's, and writes whole frames with O_APPEND. A
segment is sealed (fsynced) before the next one is created; a created file is
followed by an fsync of the directory.

What readers may see is never undone (see evlog.store.log): a write of several
records is marked before its first byte and committed by removing the marker;
while the marker is on disk (the file system is the judge) a failure cuts the
write back, and if even that fails the marker stays for the next writer. A
single record is visible once written: nothing after that takes it back.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import operator
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import msgspec

from evlog.errors import CorruptionError, EvlogError
from evlog.store import files
from evlog.store import index as idx
from evlog.store.framing import classify
from evlog.store.log import DamagedMarker, Log
from evlog.store.reader import Range, Reader
from evlog.store.segment import Segment
from evlog.units import format_time, now_us, time_to_us

WRITE_BUFFER = 4 << 20
APPEND_RUN = 4096
_ID_MARK = ord("I")  # first byte of an item that carries a caller's id (Codec.item)
_TIME_MARK = ord("T")  # first byte of an item that carries its own time (then 27 bytes of it, then the item)
_first_byte = operator.itemgetter(0)
TIME_LEN = 27


def split_time(item: bytes) -> tuple[str | None, bytes]:
    """(the item's own time or None, the item without it)."""
    if item[0] == _TIME_MARK:
        return item[1:1 + TIME_LEN].decode(), item[1 + TIME_LEN:]
    return None, item


@contextmanager
def open_writer(log: Log) -> Iterator[Writer]:
    """A Writer holding the log's append lock until the block ends."""
    with log.lock():
        w = Writer(log)
        try:
            yield w
        finally:
            w.close()


def _runs(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(items)
    while run := list(itertools.islice(it, size)):
        yield run


class AppendResult(msgspec.Struct):
    first: int | None
    last: int | None
    count: int
    first_item: int | None    # offset of the first input item, appended or found by its id
    duplicates: int
    raised: int = 0           # items whose own time was earlier than the log's newest, so raised to it


class Writer:
    """Appends frames to the active segment while holding the log's lock.

    `notes` collects what the writer did besides appending (an interrupted
    batch set aside, a damaged marker dropped), for the caller to report.
    """

    def __init__(self, log: Log) -> None:
        self.log = log
        self.codec = log.codec
        s = log.settings
        self.segment_bytes, self.interval, self.fsync = s.segment_bytes, s.index_interval_bytes, s.fsync
        self.fd = self.index_fd = self.time_fd = -1
        self.segment: Segment | None = None
        self.dirty = False
        self.recent_ids: dict[str, int] | None = None
        self.recent_since = 0  # the time from which recent_ids were read
        self.notes: list[str] = []
        self._needs_mark = self._marked = False
        self._created: list[Segment] = []
        self._open_active()
        self._created = []  # a segment this writer opened with is not undone by a failed append

    # -- state -------------------------------------------------------------------------

    def _open_active(self) -> None:
        log = self.log
        pending = log.pending()
        if isinstance(pending, DamagedMarker):
            # It names no position, so readers ignore it and may have seen every record: keep them all.
            log.pending_path.unlink()
            self._sync_dir(log.segments_dir)
            self.notes.append(f"removed a damaged commit marker {log.pending_path} ({pending.text!r}); "
                              "no record was set aside")
        elif pending is not None:
            from evlog.store.recovery import recover_pending  # (rarely needed: not on the append path)

            self.notes += recover_pending(log)  # a writer died mid-batch: its records were never visible
        segs = log.segments()
        if not segs:
            log.segments_dir.mkdir(exist_ok=True)
            self._create_segment(0)
            self.next_offset, self.last_time_us = 0, 0
            return
        seg = segs[-1]
        fd = os.open(seg.path, os.O_RDWR | os.O_APPEND)
        try:
            tail = self._active_tail(seg, fd)
        except BaseException:
            os.close(fd)
            raise
        self.segment, self.fd = seg, fd
        self.end = tail.end
        self.count = tail.count
        self.last_entry_pos = tail.last_entry_pos
        self.index_fd = os.open(seg.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.time_fd = os.open(seg.time_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        # New entries go right after the whole ones: cut a torn entry (a writer killed mid-write).
        os.ftruncate(self.index_fd, idx.HEADER.size + tail.indexed * idx.OFFSET_ENTRY.size)
        os.ftruncate(self.time_fd, idx.HEADER.size + tail.indexed * idx.TIME_ENTRY.size)
        if tail.new_entries:
            off, tim = seg.encode_entries(tail.new_entries)
            os.write(self.index_fd, off)
            os.write(self.time_fd, tim)
        if tail.last_offset is not None:
            self.next_offset = tail.last_offset + 1
            self.last_time_us = time_to_us(tail.last_time or "")
        else:
            self.next_offset = seg.base
            self.last_time_us = self._previous_time(segs[:-1])

    def _active_tail(self, seg: Segment, fd: int):  # noqa: ANN202 - evlog.store.segment.Tail
        """The end of the active segment, its torn tail cut; CorruptionError when it is damaged.

        The active segment was never compacted, so its offsets run on from its base without a gap:
        a last offset that does not follow from the count (a forged or misplaced record) would make
        this writer hand out offsets past it.
        """
        tail = seg.tail(fd, write=True)
        if tail.count and tail.last_offset != seg.base + tail.count - 1:
            seg.rebuild_index(fd, write=True)  # an index whose counts are wrong, or the records are
            tail = seg.tail(fd, write=True)
            if tail.last_offset != seg.base + tail.count - 1:
                raise CorruptionError(seg.name, tail.end, tail.last_offset,
                                      f"the last offset does not follow the segment's {tail.count} records "
                                      f"from {seg.base}; run `evlog verify --repair`")
        if tail.bad is not None:
            size = os.fstat(fd).st_size
            if classify(self.codec, fd, tail.bad, size) is not None:
                raise CorruptionError(seg.name, tail.bad, (tail.last_offset or seg.base - 1) + 1,
                                      "damaged record in the active segment; run `evlog verify --repair`")
            self._cut_torn_tail(seg, fd, tail.bad, size)
        return tail

    def _previous_time(self, sealed: list[Segment]) -> int:
        for seg in reversed(sealed):
            try:
                fd = seg.open()
            except FileNotFoundError:
                continue  # removed by a compaction
            try:
                tail = seg.tail(fd, write=True)
            finally:
                os.close(fd)
            if tail.last_time:
                return time_to_us(tail.last_time)
        return 0

    def _cut_torn_tail(self, seg: Segment, fd: int, bad: int, size: int) -> None:
        """Set the incomplete last record aside in DIR/quarantine/, then truncate it away."""
        keep = files.quarantine(self.log.dir, f"{seg.name}.{bad}", "torn", os.pread(fd, size - bad, bad))
        os.ftruncate(fd, bad)
        os.fsync(fd)
        self.notes.append(f"cut an incomplete last record ({size - bad} bytes) from {seg.name} into {keep}")

    def _create_segment(self, base: int) -> None:
        log = self.log
        seg = Segment(log.segments_dir, base, self.codec, self.interval, log.fsync)
        self._created.append(seg)  # from here on a failure removes it again
        try:
            fd = os.open(seg.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            self._created.remove(seg)  # not ours to remove
            fd = os.open(seg.path, os.O_RDWR | os.O_APPEND)
            if os.fstat(fd).st_size:
                os.close(fd)
                raise EvlogError(f"segment {seg.name} exists already and is not empty") from None
        for path, magic in ((seg.index_path, idx.OFFSET_MAGIC), (seg.time_path, idx.TIME_MAGIC)):
            with open(path, "wb") as f:
                f.write(idx.header(magic, base))
        self.segment, self.fd = seg, fd
        self.end = self.count = 0
        self.last_entry_pos = None
        self.index_fd = os.open(seg.index_path, os.O_WRONLY | os.O_APPEND)
        self.time_fd = os.open(seg.time_path, os.O_WRONLY | os.O_APPEND)
        self._sync_dir(log.segments_dir)

    def _sync_dir(self, path: Path) -> None:
        if self.fsync != "never":
            files.fsync_dir(path)

    def _close_files(self) -> None:
        for fd in (self.fd, self.index_fd, self.time_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.index_fd = self.time_fd = -1

    def close(self) -> None:
        self._close_files()

    # -- dedup ---------------------------------------------------------------------------

    def _recent(self, own_us: int | None = None) -> dict[str, int]:
        """Ids of the records appended within dedup_window, with their offsets; for an item that carries its
        own time (an import), also of the records within dedup_window before that time, so that importing
        history again finds the records it gave the first time (they got that time, or a later one)."""
        window = self.log.settings.dedup_window_us
        since = now_us() - window
        if own_us is not None:
            since = min(since, own_us - window)
        if self.recent_ids is None:
            self.recent_ids, self.recent_since = self._ids(Range(since_us=since)), since
        elif since < self.recent_since:  # only the part not read yet
            older = self._ids(Range(since_us=since, until_us=self.recent_since))
            for id_, off in self.recent_ids.items():
                older.setdefault(id_, off)
            self.recent_ids, self.recent_since = older, since
        return self.recent_ids

    def _ids(self, rng: Range) -> dict[str, int]:
        head = self.codec.head
        ids: dict[str, int] = {}
        for frame in Reader(self.log).frames(rng):
            off, id_, _ = head(frame)
            ids.setdefault(id_, off)
        return ids

    # -- appending -----------------------------------------------------------------------

    def append(self, items: Iterable[bytes], sync: bool = True) -> AppendResult:
        """Append the items (see Codec.item) in order, all or nothing; known ids are skipped.

        Items are framed in runs of APPEND_RUN; a run with no caller's id is
        framed at once by Codec.framer, the hot path of `append --batch`.
        With `sync` False (fsync = batch, a stream while its input flows) the
        data and the commit are not synced here: the caller calls sync_segments
        before it acknowledges anything. Segments sealed meanwhile still are.
        """
        if self.segment is None:
            raise EvlogError("this writer failed earlier; open a new one")
        newest = self.last_time_us  # no record may get an earlier time than this (SPEC 4)
        t_us = max(now_us(), newest)
        generated = self.codec.framer(format_time(t_us), t_us // 1000)
        start_state = (self.segment, self.end, self.count, self.next_offset, self.last_entry_pos)
        self._created = []
        self._written = False  # some record's bytes are wholly in the file
        self._sync_now = sync
        self._buf: list[bytes] = []
        self._index_buf: list[tuple[int, int, int, int]] = []
        self._buffered = 0
        first_item_offset: int | None = None
        duplicates = raised = 0
        offset = self.next_offset
        # More than one record: atomic by a commit marker (see the module docstring).
        self._marked = False
        self._needs_mark = not (isinstance(items, list) and len(items) <= 1)
        try:
            for run in _runs(items, APPEND_RUN):
                marks = set(map(_first_byte, run))
                if _ID_MARK in marks or _TIME_MARK in marks:  # caller's ids or times: item by item
                    frames, times, dups, up, newest, first_item = self._frame_each(run, offset, t_us, newest)
                    duplicates += dups
                    raised += up
                    if first_item_offset is None:
                        first_item_offset = first_item
                    if frames:
                        self._put(frames, offset, times)
                else:
                    if newest > t_us:  # an earlier run carried times ahead of this batch's
                        t_us = newest
                        generated = self.codec.framer(format_time(t_us), t_us // 1000)
                    frames = generated(offset, run)
                    newest = t_us
                    if first_item_offset is None:
                        first_item_offset = offset
                    self._put(frames, offset, t_us)
                offset += len(frames)
                self.next_offset = offset
            self._flush()
            if sync and self.fsync != "never" and self.dirty:
                os.fsync(self.fd)
                self.dirty = False
            self._commit()
        except BaseException as e:
            if self._undo(start_state) and isinstance(e, OSError):
                raise EvlogError(f"offsets {start_state[3]}..{offset - 1} were written but then {e.strerror or e}; "
                                 "they are in the log: do not append them again") from e
            raise
        self.last_time_us = newest
        appended = offset - start_state[3]
        first = start_state[3] if appended else None
        last = offset - 1 if appended else None
        return AppendResult(first, last, appended, first_item_offset, duplicates, raised)

    def _frame_each(self, run: list[bytes], offset: int, t_us: int,
                    newest: int) -> tuple[list[bytes], list[int], int, int, int, int | None]:
        """Frames of a run item by item: a caller's id is checked against dedup_window (a known one is
        skipped), a caller's time is kept unless it is earlier than the newest so far, which it is then
        raised to. Returns (frames, their times, duplicates, times raised, the newest time after them, the
        offset of the run's first item: appended, or found by its id)."""
        codec = self.codec
        frames: list[bytes] = []
        times: list[int] = []
        duplicates = raised = 0
        first_item: int | None = None
        for item in run:
            own, item = split_time(item)
            own_us = None if own is None else time_to_us(own)
            when = max(t_us, newest) if own_us is None else max(own_us, newest)
            if own_us is not None and own_us < newest:
                raised += 1
            at = offset + len(frames)
            if item[0] == _ID_MARK:
                id_, rest = codec.split_item(item)
                recent = self._recent(own_us)
                seen = recent.get(id_)
                if seen is not None:
                    duplicates += 1
                    first_item = seen if first_item is None else first_item
                    continue
                recent[id_] = at
                frame = codec.frame(at, id_, format_time(when), rest)
            else:
                frame = codec.framer(format_time(when), when // 1000)(at, [item])[0]
            first_item = at if first_item is None else first_item
            newest = when
            frames.append(frame)
            times.append(when)
        return frames, times, duplicates, raised, newest, first_item

    def _put(self, frames: list[bytes], offset: int, t_us: int | list[int]) -> None:
        """Buffer frames with offsets offset.. (and one time, or one each), adding index entries and sealing
        full segments."""
        pos0 = self.end + self._buffered
        starts = list(itertools.accumulate(map(len, frames), initial=pos0))
        if starts[-1] > self.segment_bytes and (pos0 or len(frames) > 1):
            for i, frame in enumerate(frames):  # this run fills the segment: one by one, rolling
                pos = self.end + self._buffered
                if pos and pos + len(frame) > self.segment_bytes:
                    self._flush()
                    self._seal()
                    self._create_segment(offset + i)
                self._put_run([frame], offset + i, t_us if isinstance(t_us, int) else [t_us[i]])
            return
        self._put_run(frames, offset, t_us, starts)

    def _put_run(self, frames: list[bytes], offset: int, t_us: int | list[int],
                 starts: list[int] | None = None) -> None:
        """Buffer frames that fit in the active segment."""
        if starts is None:
            starts = list(itertools.accumulate(map(len, frames), initial=self.end + self._buffered))
        last = self.last_entry_pos
        n = len(frames)
        j = 0 if last is None else bisect.bisect_left(starts, last + self.interval, 0, n)
        while j < n:
            self._index_buf.append((offset + j, starts[j], self.count + j, t_us if isinstance(t_us, int) else t_us[j]))
            last = starts[j]
            j = bisect.bisect_left(starts, last + self.interval, j + 1, n)
        self.last_entry_pos = last
        self.count += n
        self._buf.extend(frames)
        self._buffered += starts[-1] - starts[0]
        if self._buffered >= WRITE_BUFFER:
            self._flush()

    def _mark(self) -> None:
        """Before the first byte of a multi-record write: say where it begins, durably."""
        assert self.segment is not None
        write_marker(self.log, self.segment.base, self.end, self._sync_now)
        self._marked = True

    def _commit(self) -> None:
        """The commit point of a multi-record write: its marker goes."""
        if self._marked:  # (segments sealed during the write were fsynced as they were sealed)
            self.log.pending_path.unlink()
            self._marked = False
            if self._sync_now:
                self._sync_dir(self.log.segments_dir)

    def _flush(self) -> None:
        if self._buf and self._needs_mark and not self._marked:
            self._mark()
        if self._buf:
            data = b"".join(self._buf)
            self._buf, self._buffered = [], 0
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            self.end += len(data)
            self.dirty = self._written = True
        if self._index_buf:
            assert self.segment is not None
            off, tim = self.segment.encode_entries(self._index_buf)
            self._index_buf = []
            os.write(self.index_fd, off)
            os.write(self.time_fd, tim)

    def _seal(self) -> None:
        if self._needs_mark and not self._marked:
            self._mark()
        if self.fsync != "never" and self.dirty:
            os.fsync(self.fd)
        self.dirty = False
        self._close_files()

    def _undo(self, state: tuple) -> bool:
        """After a failed append: cut back what is not visible; keep what readers may have seen.
        Returns whether records of the failed append stay in the log.

        With a marker in place (on disk: the file system says whether the commit
        happened) the write is invisible: its new segments are removed and its
        first segment cut back, and only then the marker goes; if cutting fails,
        the marker stays for the next writer to act on. Without one (a single
        record, or a failure after the commit) nothing is cut: a whole record is
        visible, and a partial one is a torn tail for the next writer.
        """
        segment, end, count, next_offset, last_entry_pos = state
        self._close_files()
        self._buf, self._buffered, self._index_buf = [], 0, []
        self.recent_ids = None
        self.segment = None  # this writer is done; its lock holder opens a new one to go on
        created, self._created = self._created, []
        if not (self._marked and os.path.lexists(self.log.pending_path)):
            self._marked = False
            kept = self._written
            for seg in created:  # only a segment that holds nothing: a whole record in it is visible
                with suppress(FileNotFoundError, OSError):
                    if os.stat(seg.path).st_size == 0:
                        seg.path.unlink()
                        seg.index_path.unlink(missing_ok=True)
                        seg.time_path.unlink(missing_ok=True)
            return kept
        try:
            for seg in created:
                for p in (seg.path, seg.index_path, seg.time_path):
                    with suppress(FileNotFoundError):
                        p.unlink()
            fd = os.open(segment.path, os.O_RDWR)
            try:
                os.ftruncate(fd, end)
                os.fsync(fd)
                segment.rebuild_index(fd, write=True)  # entries may point past the new end
            finally:
                os.close(fd)
        except OSError:
            return False  # the marker stays: readers keep ignoring these bytes; the next writer sets them aside
        self.log.pending_path.unlink(missing_ok=True)
        self._marked = False
        self.next_offset = next_offset
        return False


def write_marker(log: Log, base: int, position: int, sync: bool = True) -> None:
    """Create the commit marker naming (base, position), durably unless `sync` is False."""
    path = log.pending_path
    target = f"{base} {position}"
    try:
        os.symlink(target, path)
    except FileExistsError:
        raise EvlogError(f"{path} exists: another write did not finish; run again") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        files.write_atomic(path, target.encode() + b"\n", True)  # no symlinks here: a synced file
        return
    if log.fsync and sync:
        files.fsync_dir(log.segments_dir)


def sync_segments(log: Log, first_base: int) -> None:
    """Make durable what appends with sync=False left: the segments from `first_base` on, and the directory
    (the commits' marker removals)."""
    if not log.fsync:
        return
    for seg in log.segments():
        if seg.base >= first_base:
            try:
                fd = seg.open()
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    files.fsync_dir(log.segments_dir)
