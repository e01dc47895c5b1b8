"""Follow mode: new frames of the log as they are appended, by any process.

A follower keeps its place as (segment base, byte position, next offset).
It waits on filesystem notifications for the segments directory (watchfiles)
with a slow safety poll, reads whatever whole frames have appeared, and moves
to the next segment once one exists (a writer completes a segment before it
creates the next). When its segment disappears or is rewritten (compaction),
it finds its place again by offset, so every surviving event is printed
exactly once. Memory does not grow with time: nothing is kept but the place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

from evlog.store.framing import classify, corruption
from evlog.store.log import Log
from evlog.store.segment import Segment

SAFETY_POLL_MS = 1000  # look even without a notification this often (a missed event, a network file system)
TICK_MS = 100          # the watcher's timeout: how often it wakes with nothing to report
DEBOUNCE_MS = 20       # changes are reported at most this long after the first of them
STEP_MS = 10           # ... and once none followed for this long; also the watcher's idle wake-up period
POLL_BYTES = 4 << 20   # one poll hands over about this much at most: memory does not grow with a batch


class Follower:
    def __init__(self, log: Log, next_offset: int) -> None:
        self.log = log
        self.codec = log.codec
        self.next_offset = next_offset
        self.segment: Segment | None = None
        self.fd = -1
        self.ino = 0
        self.pos = 0
        self.more = False  # the last poll stopped at its byte limit

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _switch(self, seg: Segment | None) -> None:
        """Open `seg` and seek to the first record at or after next_offset."""
        self.close()
        self.segment = seg
        if seg is None:
            return
        try:
            self.fd = seg.open()
        except FileNotFoundError:
            self.segment = None
            return
        self.ino = os.fstat(self.fd).st_ino
        self.pos = seg.seek_offset(self.fd, self.next_offset, write=False)

    def _place(self, segs: list[Segment]) -> None:
        """Find the segment holding next_offset (or the first after it)."""
        chosen = None
        for seg in segs:
            if seg.base <= self.next_offset:
                chosen = seg
            elif chosen is None:
                chosen = seg
                break
            else:
                break
        self._switch(chosen)

    def poll(self, max_bytes: int = POLL_BYTES) -> list[bytes]:
        """Frames appended (and committed) since the last poll (possibly none), about `max_bytes` of them
        at most (a whole chunk read at a time); `more` tells whether there may be more right away."""
        out: list[bytes] = []
        taken = 0
        offset_of = self.codec.offset
        overhead = self.codec.overhead
        self.more = False
        while True:
            view = self.log.view()  # as every reader does: never past a pending write
            segs = view.segments
            if self.segment is None or not self._same_file():
                self._place(segs)
                if self.segment is None:
                    return out
            seg = self.segment
            assert seg is not None
            if view.end is None or seg.base > view.end[0]:
                return out  # a segment this view does not show (yet): wait for the commit
            stop = view.end[1] if seg.base == view.end[0] else None
            reader = seg.frames(self.fd, self.pos, stop)
            pos = self.pos
            for frames in reader.chunks():
                for frame in frames:
                    off = offset_of(frame)
                    if off >= self.next_offset:
                        out.append(frame)
                        self.next_offset = off + 1
                size = sum(map(len, frames)) + overhead * len(frames)
                pos += size
                taken += size
                if taken >= max_bytes:
                    self.pos, self.more = pos, True
                    return out
            self.pos = reader.end
            later = [s for s in segs if s.base > seg.base]
            if reader.bad is not None:
                size = os.fstat(self.fd).st_size
                if later or classify(self.codec, self.fd, reader.bad, size) is not None:
                    if seg.first_frame(self.fd, reader.bad) is None:
                        raise corruption(self.codec, seg.name, self.fd, reader.bad, self.next_offset - 1, seg.base)
                return out  # a record still being written
            if not later:
                return out
            self._switch(later[0])

    def _drain(self) -> Iterator[list[bytes]]:
        """Poll until nothing more is there, a bounded batch at a time."""
        while True:
            frames = self.poll()
            if frames:
                yield frames
            if not self.more:
                return

    def _same_file(self) -> bool:
        assert self.segment is not None
        try:
            return os.stat(self.segment.path).st_ino == self.ino
        except FileNotFoundError:
            return False

    def follow(self, interrupted: Callable[[], BaseException],
               stop: threading.Event | None = None) -> Iterator[list[bytes]]:
        """Batches of new frames until `stop` is set (or forever); `interrupted()` gives the exception
        for a signal noticed while waiting (the watcher reports any signal as KeyboardInterrupt)."""
        from watchfiles import watch

        # The watcher wakes every TICK_MS with an empty set when nothing happens: the first wake polls
        # (closing the gap between the backlog and the watcher's start), later ones only every
        # SAFETY_POLL_MS; a change polls at once.
        changes = watch(self.log.segments_dir, watch_filter=None, debounce=DEBOUNCE_MS, step=STEP_MS,
                        stop_event=stop, rust_timeout=TICK_MS, yield_on_timeout=True, recursive=False,
                        raise_interrupt=True)
        idle = SAFETY_POLL_MS  # poll at the first wake
        try:
            yield from self._drain()
            for changed in changes:
                if not changed and idle < SAFETY_POLL_MS:
                    idle += TICK_MS
                    continue
                idle = 0
                yield from self._drain()
        except KeyboardInterrupt:
            raise interrupted() from None
        finally:
            changes.close()
            self.close()
