"""Reading records: the frames of a range, the last n, the next offset.

A reader takes one view of the log (see evlog.store.log) and reads no further.
Readers see only whole frames that pass their checksum; bytes after the last
valid frame of the last segment that could be an interrupted write are
ignored; anything else that fails its check is corruption. A reader opens each
segment once and seeks and reads through the same descriptor, so a compaction
that replaces a file in between cannot make a position found in one file be
read in another.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from evlog.errors import CorruptionError, EvlogError
from evlog.store.framing import Codec, classify, corruption
from evlog.store.log import VIEW_TRIES, Log
from evlog.store.segment import Segment
from evlog.units import format_time


@dataclass(frozen=True)
class Range:
    """A range of the log: where reading starts (an offset, a time, or the n-th last record; at most one,
    or the beginning) and where it stops (an offset, inclusive; a time, exclusive; or never)."""

    start: int | None = None
    since_us: int | None = None
    last: int | None = None
    to: int | None = None
    until_us: int | None = None

    @property
    def bounded(self) -> bool:
        """Whether the range ends before the log does."""
        return self.to is not None or self.until_us is not None


EVERYTHING = Range()


def read_frames(log: Log, rng: Range = EVERYTHING) -> Iterator[bytes]:
    """The frames of the range, in offset order; raises CorruptionError at a bad record."""
    return Reader(log).frames(rng)


def last_frames(log: Log, n: int, match: Callable[[bytes], bool] | None = None) -> tuple[list[bytes], int]:
    """The last n frames (that match), oldest first, and the offset after the last record of the log."""
    return Reader(log).tail(n, match)


def next_offset(log: Log) -> int:
    """The offset the next appended event will get (as far as readers can tell)."""
    return Reader(log).tail(0, None)[1]


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

    def frames(self, rng: Range = EVERYTHING) -> Iterator[bytes]:
        for chunk in self.chunks(rng):
            yield from chunk

    def chunks(self, rng: Range = EVERYTHING) -> Iterator[list[bytes]]:
        """The frames of the range in offset order, a list at a time; raises CorruptionError at a bad record."""
        try:
            yield from self._chunks(rng.start, rng.since_us, rng.last, rng.to, rng.until_us)
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
