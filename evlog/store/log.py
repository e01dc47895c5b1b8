"""The log as a whole: its directory, segments, the append lock, writing and reading.

Writing. Appends from any number of processes are serialised by an
exclusive `flock` on `DIR/.lock`, held only while frames are written, never
while input is awaited. Under the lock a writer reads the end of the active
(last) segment from its last index entry, sets aside and cuts off an
incomplete last record (a writer killed mid-append), gives each event the
next offset and a time no earlier than the last record's, and writes whole
frames with O_APPEND. A segment is sealed (fsynced) before the next one is
created; a created file is followed by an fsync of the directory.

Visibility (SPEC 7: a record any reader may have seen is never truncated or
given to another event). A write of one record is visible as soon as its
bytes are in the file: whatever fails after that (an fsync error, Ctrl-C) never
takes it back. A write of more than one record (a batch, a group commit) is
made atomic by a commit marker, `segments/.pending`, a symbolic link whose
target names where the write begins ("BASE POSITION"): created (and the
directory fsynced) before the first byte, removed at the commit. A symlink is
created whole or not at all, even by a power loss, so the marker is never
empty. Until the commit the write is invisible to every reader, so a failure
cuts it off; if even that fails, the marker stays and the next writer (or
`verify --repair`) moves the bytes to DIR/quarantine/. The file system is the
judge of the commit: a failure while the marker is still there is undone,
one after it is gone is not.

Reading takes no lock. A reader takes a *view*: it lists the segments, notes
the size of the last one, then reads the marker, and reads no further than
either (`Log.view`). The order matters: a batch that marks after the size
was noted begins past it. Readers see only whole frames that pass their
checksum; bytes after the last valid frame of the last segment that could be
an interrupted write are ignored; anything else that fails its check is
corruption. A reader opens each segment once and seeks and reads through the
same descriptor, so a compaction that replaces a file in between cannot make
a position found in one file be read in another.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import itertools
import operator
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

import msgspec

from evlog import settings as settings_mod
from evlog.errors import Busy, CorruptionError, EvlogError, LogNotFound, SettingsError
from evlog.settings import Settings
from evlog.store import index as idx
from evlog.store.framing import CODECS, Codec, classify, codec_for, corruption
from evlog.store.segment import Segment
from evlog.units import format_time, now_us, time_to_us

SEGMENT_RE = re.compile(r"(\d{20})\.(jsonl|msgpack)")
PENDING = ".pending"
WRITE_BUFFER = 4 << 20
APPEND_RUN = 4096
VIEW_TRIES = 20
_ID_MARK = ord("I")  # first byte of an item that carries a caller's id (Codec.item)
_first_byte = operator.itemgetter(0)


class DamagedMarker:
    """A commit marker that names no position (left by a power loss or damage): it is ignored."""

    def __init__(self, text: str) -> None:
        self.text = text


Pending = tuple[int, int]  # (segment base, byte position) where an uncommitted write begins


class View(NamedTuple):
    """What a reader may read: these segments, and in the segment `end[0]` no byte at or past `end[1]`."""

    segments: list[Segment]
    end: Pending | None


def _runs(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(items)
    while run := list(itertools.islice(it, size)):
        yield run


def default_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "evlog"


class AppendResult(msgspec.Struct):
    first: int | None
    last: int | None
    count: int
    first_item: int | None    # offset of the first input item, appended or found by its id
    duplicates: int


class Log:
    def __init__(self, directory: Path, settings: Settings) -> None:
        self.dir = directory
        self.settings = settings
        self.codec: Codec = codec_for(settings.format)
        self.segments_dir = directory / "segments"
        self.lock_path = directory / ".lock"
        self.fsync = settings.fsync != "never"

    # -- opening -------------------------------------------------------------------

    @staticmethod
    def settings_path(directory: Path) -> Path:
        return directory / "evlog.toml"

    @classmethod
    def open(cls, directory: Path) -> Log:
        path = cls.settings_path(directory)
        if not path.is_file():
            raise LogNotFound(directory)
        return cls(directory, settings_mod.load(path))

    @classmethod
    def create(cls, directory: Path, settings: Settings, exist_ok: bool) -> Log:
        """Create the log (directory, settings, segments/); an existing one is an error unless exist_ok."""
        path = cls.settings_path(directory)
        if path.is_file():
            if exist_ok:
                return cls.open(directory)
            raise EvlogError(f"a log already exists at {directory}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "segments").mkdir(exist_ok=True)
            created = settings_mod.write_new(path, settings)
            if settings.fsync != "never":
                idx.fsync_dir(directory)
        except OSError as e:
            raise EvlogError(f"cannot create a log at {directory}: {e.strerror}") from None
        if not created and not exist_ok:
            raise EvlogError(f"a log already exists at {directory}")
        return cls.open(directory) if not created else cls(directory, settings)

    # -- segments ------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The segments, oldest first. Segment files of the other format mean `format` was changed
        under an existing log: that is refused (SettingsError), never a second log beside the first."""
        try:
            names = os.listdir(self.segments_dir)
        except FileNotFoundError:
            return []
        suffix = self.codec.suffix
        bases = []
        for n in names:
            if SEGMENT_RE.fullmatch(n):
                if not n.endswith(suffix):
                    raise self.format_mismatch(n)
                bases.append(int(n[:20]))
        bases.sort()
        interval = self.settings.index_interval_bytes
        return [Segment(self.segments_dir, b, self.codec, interval, self.fsync) for b in bases]

    def format_mismatch(self, name: str) -> SettingsError:
        other = next(c.name for c in CODECS.values() if name.endswith(c.suffix))
        return SettingsError(self.settings_path(self.dir), "format",
                             f"is {self.codec.name!r} but the log's segments are {other} ({name}); "
                             f"set it back to {other!r}")

    def view(self) -> View:
        """The segments and the end readers stop at (see the module docstring)."""
        for _ in range(VIEW_TRIES):
            segs = self.segments()
            if not segs:
                return View([], None)
            try:
                end = (segs[-1].base, os.stat(segs[-1].path).st_size)
            except FileNotFoundError:
                continue  # an interrupted batch's segment was set aside meanwhile: look again
            pending = self.pending()  # after the size
            if pending is not None and not isinstance(pending, DamagedMarker) and pending <= end:
                return View([s for s in segs if s.base <= pending[0]], pending)
            return View(segs, end)
        raise EvlogError(f"the segments of {self.dir} keep changing; try again")

    # -- locking -------------------------------------------------------------------

    @contextmanager
    def lock(self, wait: bool = True) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise Busy(f"the log at {self.dir} is locked by another process") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def writer(self) -> Iterator[Writer]:
        with self.lock():
            w = Writer(self)
            try:
                yield w
            finally:
                w.close()

    # -- reading -------------------------------------------------------------------

    def read(self, *, start: int | None = None, since_us: int | None = None, last: int | None = None,
             to: int | None = None, until_us: int | None = None) -> Iterator[bytes]:
        """The frames of the range, in offset order; raises CorruptionError at a bad record."""
        return Reader(self).frames(start=start, since_us=since_us, last=last, to=to, until_us=until_us)

    def tail_with_end(self, n: int, match: Callable[[bytes], bool] | None = None) -> tuple[list[bytes], int]:
        """The last n frames (that match), and the offset after the last record of the log."""
        return Reader(self).tail(n, match)

    def next_offset(self) -> int:
        """The offset the next appended event will get (as far as readers can tell)."""
        return Reader(self).tail(0, None)[1]

    @property
    def pending_path(self) -> Path:
        return self.segments_dir / PENDING

    def pending(self) -> Pending | DamagedMarker | None:
        """Where an uncommitted multi-record write begins, if one is open.

        The marker is a symlink; a regular file (older versions) is read too.
        One that names no position is a DamagedMarker: readers ignore it.
        """
        path = self.pending_path
        try:
            text = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            try:
                text = path.read_bytes().decode("ascii", "replace")
            except FileNotFoundError:
                return None
        parts = text.split()
        if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
        return DamagedMarker(text)

    def reader(self) -> Reader:
        return Reader(self)


class Reader:
    """Reads frames across the segments of one view, seeking with the index files.

    Each segment is opened once: seeking and reading use the same descriptor.
    `chunks()` (and `tail()`) close them when done.
    """

    def __init__(self, log: Log) -> None:
        self.log = log
        self.codec = log.codec
        self._fds: dict[int, int] = {}  # segment number -> descriptor
        self._take_view()

    def _take_view(self) -> None:
        self.close()
        view = self.log.view()
        self.segments = view.segments
        self.limit = view.end
        self.next_offset = self.segments[-1].base if self.segments else 0  # after the last frame read

    def _open(self, i: int) -> int | None:
        """The descriptor of segment i, opened once; None when the file is gone (compacted away)."""
        fd = self._fds.get(i)
        if fd is None:
            try:
                fd = self._fds[i] = self.segments[i].open()
            except FileNotFoundError:
                return None
        return fd

    def _close(self, i: int) -> None:
        fd = self._fds.pop(i, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for i in list(getattr(self, "_fds", {})):
            self._close(i)

    def _stop(self, seg: Segment) -> int | None:
        return self.limit[1] if self.limit is not None and seg.base == self.limit[0] else None

    def frames(self, *, start: int | None = None, since_us: int | None = None, last: int | None = None,
               to: int | None = None, until_us: int | None = None) -> Iterator[bytes]:
        for chunk in self.chunks(start=start, since_us=since_us, last=last, to=to, until_us=until_us):
            yield from chunk

    def chunks(self, *, start: int | None = None, since_us: int | None = None, last: int | None = None,
               to: int | None = None, until_us: int | None = None) -> Iterator[list[bytes]]:
        """The frames of the range in offset order, a list at a time; raises CorruptionError at a bad record."""
        try:
            yield from self._chunks(start, since_us, last, to, until_us)
        finally:
            self.close()

    def _chunks(self, start: int | None, since_us: int | None, last: int | None, to: int | None,
                until_us: int | None) -> Iterator[list[bytes]]:
        begin = None
        for _ in range(VIEW_TRIES):
            if not self.segments:
                return
            begin = self._begin(start, since_us, last)
            if begin is not None:
                break
            self._take_view()  # a segment it needed went away (compaction): look again
        if begin is None:
            raise EvlogError(f"the segments of {self.log.dir} keep changing; try again")
        begin_seg, begin_pos = begin
        segs = self.segments
        codec = self.codec
        offset_of = codec.offset
        time_of = _time_getter(codec)
        until = format_time(until_us) if until_us is not None else None
        since = format_time(since_us) if since_us is not None else None
        skipping = start is not None or since is not None
        for i in range(begin_seg, len(segs)):
            seg = segs[i]
            fd = self._open(i)
            if fd is None:
                continue  # removed since it was listed (compaction); its successor follows
            reader = seg.frames(fd, begin_pos if i == begin_seg else 0, self._stop(seg))
            last_frame = None
            for chunk in reader.chunks():
                last_frame = chunk[-1]
                if skipping:  # offsets increase and times never decrease: bisect for the start
                    lo = 0 if start is None else bisect.bisect_left(chunk, start, key=offset_of)
                    if since is not None:
                        lo = bisect.bisect_left(chunk, since, lo, key=time_of)
                    if lo == len(chunk):
                        continue
                    skipping = False
                    chunk = chunk[lo:] if lo else chunk
                if to is not None and offset_of(chunk[-1]) > to:
                    k = bisect.bisect_right(chunk, to, key=offset_of)
                    self.next_offset = offset_of(chunk[k])  # the first record past the range
                    yield chunk[:k]
                    return
                if until is not None and time_of(chunk[-1]) >= until:
                    k = bisect.bisect_left(chunk, until, key=time_of)
                    self.next_offset = offset_of(chunk[k])
                    yield chunk[:k]
                    return
                yield chunk
            if last_frame is not None:
                self.next_offset = offset_of(last_frame) + 1
            if reader.bad is not None:
                self._bad(seg, fd, reader.bad, i == len(segs) - 1, last_frame)
            self._close(i)

    def _begin(self, start: int | None, since_us: int | None, last: int | None) -> tuple[int, int] | None:
        """(segment number, position) where reading the range starts; None when a segment it needed
        is gone."""
        segs = self.segments
        begin_seg, begin_pos = 0, 0
        if last is not None:
            begin_seg, begin_pos = self._last_start(last)
        if start is not None:
            i = max(0, _floor_base(segs, start))
            if (i, 0) > (begin_seg, begin_pos):
                fd = self._open(i)
                if fd is None:
                    return None
                begin_seg, begin_pos = i, segs[i].seek_offset(fd, start, self._may_write(i))
        if since_us is not None:
            found = self._seek_time(since_us)
            if found is None:
                return None
            if found > (begin_seg, begin_pos):
                begin_seg, begin_pos = found
        return begin_seg, begin_pos

    def _bad(self, seg: Segment, fd: int, bad: int, is_last: bool, prev: bytes | None) -> None:
        """Stop quietly at an incomplete last record (or one finished past where this reader looks);
        raise at corruption."""
        if is_last and seg.first_frame(fd, bad) is not None:
            return  # whole now: it was being written when this reader took its view
        size = os.fstat(fd).st_size
        if is_last and classify(self.codec, fd, bad, size) is None:
            return
        prev_offset = self.codec.offset(prev) if prev is not None else None
        raise corruption(self.codec, seg.name, fd, bad, prev_offset, seg.base)

    def _may_write(self, i: int) -> bool:
        """Readers rewrite a damaged index only for sealed segments; the writer owns the active one."""
        return i < len(self.segments) - 1

    def _seek_time(self, t_us: int) -> tuple[int, int] | None:
        segs = self.segments
        lo, hi = 0, len(segs) - 1
        # The last segment whose first record is older than t_us (segment times never decrease).
        found = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            fd = self._open(mid)
            if fd is None:
                return None
            first = segs[mid].first_time_us(fd)
            if first is not None and first < t_us:
                found, lo = mid, mid + 1
            else:
                hi = mid - 1
        fd = self._open(found)
        if fd is None:
            return None
        return found, segs[found].seek_time(fd, t_us, self._may_write(found))

    def _reverse_chunks(self) -> Iterator[tuple[int, int, list[tuple[int, bytes]], CorruptionError | None]]:
        """(segment number, chunk position, frames of one index chunk, the damage that ended the
        chunk early or None), from the end of the log backwards.

        Each chunk must begin with the record its index entry names; when one
        does not, the index is wrong (not the data): it is rebuilt and the
        segment walked again. A segment walked to its start is closed; the one
        a caller stops in stays open for reading on.
        """
        segs = self.segments
        offset_of = self.codec.offset
        for i in range(len(segs) - 1, -1, -1):
            fd = self._open(i)
            if fd is None:
                continue
            yield from self._segment_chunks(i, segs[i], fd, offset_of, i == len(segs) - 1)
            self._close(i)

    def _segment_chunks(self, i: int, seg: Segment, fd: int, offset_of: Callable[[bytes], int],
                        is_last: bool) -> Iterator[tuple[int, int, list[tuple[int, bytes]], CorruptionError | None]]:
        limit = self._stop(seg)
        starts = [s for s in seg.chunk_starts(fd, self._may_write(i)) if limit is None or s[1] < limit] \
            or [(seg.base, 0)]
        below: int | None = limit  # chunks from here to the end are not to be read (again)
        for attempt in range(2):
            stops: list[int | None] = [pos for _, pos in starts[1:]]
            stops.append(below)
            for j in range(len(starts) - 1, -1, -1):
                first_offset, pos = starts[j]
                reader = seg.frames(fd, pos, stops[j])
                frames = list(reader)
                if attempt == 0 and pos and (not frames or offset_of(frames[0][1]) != first_offset):
                    break  # the entry does not name the record it points at: a wrong index
                damage = None
                if reader.bad is not None:
                    try:
                        self._bad(seg, fd, reader.bad, is_last and stops[j] == limit,
                                  frames[-1][1] if frames else None)
                    except CorruptionError as e:
                        damage = e
                yield i, pos, frames, damage
                below = pos
            else:
                return
            rebuilt, _ = seg.rebuild_index(fd, self._may_write(i))
            starts = [(e[0], e[1]) for e in rebuilt if below is None or e[1] < below] or [(seg.base, 0)]

    def _last_start(self, n: int) -> tuple[int, int]:
        """Where the n-th last record starts (the log's start when it holds fewer).

        Whole segments are skipped by their record counts (from their index
        files), so a large n costs a look at each segment's end, not a read of
        the log. In the segment that holds the n-th last record, when damage
        lies within the last n records, reading starts at the damaged chunk,
        so the records before the damage are printed before the error.
        """
        if n <= 0:
            return len(self.segments), 0
        need = n
        offset_of = self.codec.offset
        for i in range(len(self.segments) - 1, -1, -1):
            seg = self.segments[i]
            fd = self._open(i)
            if fd is None:
                continue
            count = seg.tail(fd, self._may_write(i), self._stop(seg)).count
            if count < need:
                need -= count
                self._close(i)
                continue
            for _, pos, frames, damage in self._segment_chunks(i, seg, fd, offset_of, i == len(self.segments) - 1):
                if damage is not None:
                    return i, pos
                if len(frames) >= need:
                    return i, frames[len(frames) - need][0]
                need -= len(frames)
            return i, 0
        return 0, 0

    def tail(self, n: int, match: Callable[[bytes], bool] | None) -> tuple[list[bytes], int]:
        """The last n frames (that match), oldest first, and the offset after the log's last record."""
        try:
            return self._tail(n, match)
        finally:
            self.close()

    def _tail(self, n: int, match: Callable[[bytes], bool] | None) -> tuple[list[bytes], int]:
        end: int | None = None
        got: list[list[bytes]] = []
        have = 0
        for _, _, frames, damage in self._reverse_chunks():
            if damage is not None:
                raise damage
            if end is None and frames:
                end = self.codec.offset(frames[-1][1]) + 1
            if n <= 0:
                break
            chosen = [f for _, f in frames if match is None or match(f)]
            if chosen:
                got.append(chosen)
                have += len(chosen)
                if have >= n:
                    break
        out = [f for chunk in reversed(got) for f in chunk]
        return (out[-n:] if n > 0 else []), (self.next_offset if end is None else end)


def _floor_base(segs: list[Segment], offset: int) -> int:
    lo, hi = 0, len(segs)
    while lo < hi:
        mid = (lo + hi) // 2
        if segs[mid].base <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def _time_getter(codec: Codec) -> Callable[[bytes], str]:
    if codec.name == "jsonl":
        def jsonl_time(frame: bytes) -> str:
            i = frame.index(b',"time":"') + 9
            return frame[i:i + 27].decode()
        return jsonl_time
    return lambda frame: codec.head(frame)[2]


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
        keep = quarantine(self.log, f"{seg.name}.{bad}", "torn", os.pread(fd, size - bad, bad))
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
            idx.fsync_dir(path)

    def _close_files(self) -> None:
        for fd in (self.fd, self.index_fd, self.time_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.index_fd = self.time_fd = -1

    def close(self) -> None:
        self._close_files()

    # -- dedup ---------------------------------------------------------------------------

    def _recent(self) -> dict[str, int]:
        """Ids of the records appended within dedup_window, with their offsets."""
        if self.recent_ids is None:
            since = now_us() - self.log.settings.dedup_window_us
            head = self.codec.head
            recent: dict[str, int] = {}
            for frame in Reader(self.log).frames(since_us=since):
                off, id_, _ = head(frame)
                recent.setdefault(id_, off)
            self.recent_ids = recent
        return self.recent_ids

    # -- appending -----------------------------------------------------------------------

    def append(self, items: Iterable[bytes], sync: bool = True) -> AppendResult:
        """Append the items (see Codec.item) in order, all or nothing; known ids are skipped.

        Items are framed in runs of APPEND_RUN; a run with no caller's id is
        framed at once by Codec.framer, the hot path of `append --batch`.
        """
        if self.segment is None:
            raise EvlogError("this writer failed earlier; open a new one")
        t_us = max(now_us(), self.last_time_us)
        time_str = format_time(t_us)
        generated = self.codec.framer(time_str, t_us // 1000)
        frame_with_id = self.codec.frame
        split_item = self.codec.split_item
        start_state = (self.segment, self.end, self.count, self.next_offset, self.last_entry_pos)
        self._created = []
        self._written = False  # some record's bytes are wholly in the file
        self._buf: list[bytes] = []
        self._index_buf: list[tuple[int, int, int, int]] = []
        self._buffered = 0
        first_item_offset: int | None = None
        duplicates = 0
        offset = self.next_offset
        # More than one record: atomic by a commit marker (see the module docstring).
        self._marked = False
        self._needs_mark = not (isinstance(items, list) and len(items) <= 1)
        try:
            for run in _runs(items, APPEND_RUN):
                if _ID_MARK in map(_first_byte, run):  # caller's ids: check each against the window
                    frames: list[bytes] = []
                    for item in run:
                        if item[0] == _ID_MARK:
                            id_, rest = split_item(item)
                            recent = self._recent()
                            seen = recent.get(id_)
                            if seen is not None:
                                duplicates += 1
                                if first_item_offset is None:
                                    first_item_offset = seen
                                continue
                            recent[id_] = offset + len(frames)
                            frames.append(frame_with_id(offset + len(frames), id_, time_str, rest))
                        else:
                            frames += generated(offset + len(frames), [item])
                        if first_item_offset is None:
                            first_item_offset = offset
                else:
                    frames = generated(offset, run)
                    if first_item_offset is None:
                        first_item_offset = offset
                if frames:
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
        self.last_time_us = t_us
        appended = offset - start_state[3]
        first = start_state[3] if appended else None
        last = offset - 1 if appended else None
        return AppendResult(first, last, appended, first_item_offset, duplicates)

    def _put(self, frames: list[bytes], offset: int, t_us: int) -> None:
        """Buffer frames with offsets offset.., adding index entries and sealing full segments."""
        pos0 = self.end + self._buffered
        starts = list(itertools.accumulate(map(len, frames), initial=pos0))
        if starts[-1] > self.segment_bytes and (pos0 or len(frames) > 1):
            for i, frame in enumerate(frames):  # this run fills the segment: one by one, rolling
                pos = self.end + self._buffered
                if pos and pos + len(frame) > self.segment_bytes:
                    self._flush()
                    self._seal()
                    self._create_segment(offset + i)
                self._put_run([frame], offset + i, t_us)
            return
        self._put_run(frames, offset, t_us, starts)

    def _put_run(self, frames: list[bytes], offset: int, t_us: int, starts: list[int] | None = None) -> None:
        """Buffer frames that fit in the active segment."""
        if starts is None:
            starts = list(itertools.accumulate(map(len, frames), initial=self.end + self._buffered))
        last = self.last_entry_pos
        n = len(frames)
        j = 0 if last is None else bisect.bisect_left(starts, last + self.interval, 0, n)
        while j < n:
            self._index_buf.append((offset + j, starts[j], self.count + j, t_us))
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
        write_marker(self.log, self.segment.base, self.end)
        self._marked = True

    def _commit(self) -> None:
        """The commit point of a multi-record write: its marker goes."""
        if self._marked:  # (segments sealed during the write were fsynced as they were sealed)
            self.log.pending_path.unlink()
            self._marked = False
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


def write_marker(log: Log, base: int, position: int) -> None:
    """Create the commit marker naming (base, position) and make it durable."""
    path = log.pending_path
    target = f"{base} {position}"
    try:
        os.symlink(target, path)
    except FileExistsError:
        raise EvlogError(f"{path} exists: another write did not finish; run again") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        idx.write_atomic(path, target.encode() + b"\n", True)  # no symlinks here: a synced file
        return
    if log.fsync:
        idx.fsync_dir(log.segments_dir)


def quarantine(log: Log, name: str, why: str, data: bytes) -> Path:
    """Keep `data` in DIR/quarantine/NAME.STAMP.WHY, durably; returns the path."""
    qdir = log.dir / "quarantine"
    qdir.mkdir(exist_ok=True)
    keep = qdir / f"{name}.{time.time_ns()}.{why}"
    with open(keep, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    idx.fsync_dir(qdir)
    return keep


def recover_pending(log: Log) -> list[str]:
    """Undo the pending multi-record write of a dead writer (call with the append lock held).

    Its bytes go to DIR/quarantine/ first: a segment it created is moved there
    whole, the part of the segment it began in is copied, then cut off. A
    damaged marker (one that names no position) is removed and nothing is cut.
    """
    pending = log.pending()
    if pending is None:
        return []
    if isinstance(pending, DamagedMarker):
        log.pending_path.unlink(missing_ok=True)
        idx.fsync_dir(log.segments_dir)
        return [f"removed a damaged commit marker ({pending.text!r}); no record was set aside"]
    base, pos = pending
    actions = []
    qdir = log.dir / "quarantine"
    qdir.mkdir(exist_ok=True)
    stamp = time.time_ns()
    for seg in log.segments():
        if seg.base > base:
            keep = qdir / f"{seg.name}.{stamp}.uncommitted"
            os.replace(seg.path, keep)  # the data file first: readers list segments by it
            seg.index_path.unlink(missing_ok=True)
            seg.time_path.unlink(missing_ok=True)
            actions.append(f"moved {seg.name}, written by an interrupted batch, to {keep}")
        elif seg.base == base:
            fd = os.open(seg.path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                if size > pos:
                    keep = quarantine(log, f"{seg.name}.{pos}", "uncommitted", os.pread(fd, size - pos, pos))
                    os.ftruncate(fd, pos)
                    os.fsync(fd)
                    actions.append(f"cut {size - pos} bytes of an interrupted batch from {seg.name} into {keep}")
                seg.rebuild_index(fd, write=True)
            finally:
                os.close(fd)
    idx.fsync_dir(qdir)
    idx.fsync_dir(log.segments_dir)
    log.pending_path.unlink(missing_ok=True)  # last: until here, readers keep ignoring those bytes
    idx.fsync_dir(log.segments_dir)
    return actions
