"""The hub of `evlog serve`: one follower for every client, and a ring of the newest events.

A single follower thread (one filesystem watcher) reads each new frame once
into a ring of the newest events, bounded in count and bytes. Every client has
a cursor (the next offset it should see) and reads the ring at its own pace; a
client whose cursor is older than the ring (its backlog, or a burst larger
than the ring) reads from disk instead (the server does that). Offsets make
every hand-over gap-free and duplicate-free.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Iterator
from typing import Protocol

from evlog.report import Report, quiet
from evlog.store.backend import EventLog

RING_EVENTS = 50_000       # newest events kept in memory for all clients together
RING_BYTES = 32 << 20      # ... and at most this many bytes of them (frames and their JSON)
RING_STEP = 1_000          # events taken at once, from the ring or from disk ...
STEP_BYTES = 1 << 20       # ... and at most this many bytes of them (frames and JSON), or one bigger event
FOLLOW_RETRY = (0.5, 5.0)  # following that failed is tried again after this long, doubling up to the second


class Listener(Protocol):
    """A client of the hub: woken when there is news."""

    wake: asyncio.Event


Entry = tuple[int, bytes, bytes]  # offset, frame, the record as JSON


class Hub:
    """Follows the log once for every client and keeps the newest frames in a bounded ring.

    Clients read the ring at their own pace through their own cursor (an
    offset); one that is behind the ring reads from disk instead. So a burst
    larger than the ring costs nothing but disk reads, and memory stays the
    ring's, whatever clients do. A client that does not take what is there
    for STALL_SECONDS is closed with 1013.

    The follower thread hands new entries to the event loop a step at a time
    (RING_STEP events, STEP_BYTES bytes) and waits until each step is in the
    ring, so nothing piles up between the thread and the loop.
    """

    def __init__(self, log: EventLog, loop: asyncio.AbstractEventLoop, report: Report = quiet) -> None:
        self.log, self.loop, self.report = log, loop, report
        self.clients: set[Listener] = set()
        self.next_offset = log.next_offset()
        self.ring: list[Entry] = []
        self.ring_ends: list[int] = []  # per entry: bytes of the ring's entries up to it, counted since start
        self.ring_bytes = 0
        self.problem: str | None = None  # why following fails, while it does (set on the loop)
        self.failures = 0
        self.following = False  # the follower thread's own view: its current try has polled successfully
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="evlog-hub", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _follow(self) -> None:
        """Follow the log until stopped; when following fails (a damaged record, an I/O error), report it
        and try again from the next offset, with backoff, so that streaming recovers by itself (after
        `evlog verify --repair`, say)."""
        delay = FOLLOW_RETRY[0]
        while not self.stop.is_set():
            self.following = False
            try:
                self._follow_once()
                return
            except Exception as e:  # noqa: BLE001 - reported once per outage; the next try may succeed
                if self.stop.is_set():
                    return
                self.loop.call_soon_threadsafe(self._failed, f"following the log failed: {e}")
            if self.following:  # it worked for a while: a new outage starts the backoff again
                delay = FOLLOW_RETRY[0]
            if self.stop.wait(delay):
                return
            delay = min(FOLLOW_RETRY[1], delay * 2)

    def _follow_once(self) -> None:
        if self.log.kind != "local":  # a NATS log: the server's consumer reports trouble as it starts
            frames_iter = self.log.follow(self.next_offset, (), self.stop, KeyboardInterrupt)
            self._followed()
            self._hand_all(frames_iter)
            return
        from evlog.store.follow import Follower

        follower = Follower(self.log.log, self.next_offset)  # type: ignore[attr-defined]
        try:
            frames = follower.poll()  # raises at once while the damage that stopped the last try is there
        except BaseException:
            follower.close()
            raise
        self._followed()
        for batch in self._steps(frames):
            if not self._hand_over(batch):
                return
        self._hand_all(follower.follow(lambda: KeyboardInterrupt(), stop=self.stop))

    def _followed(self) -> None:
        self.following = True
        if self.problem is not None:
            self.loop.call_soon_threadsafe(self._recovered)

    def _hand_all(self, frames_iter: Iterator[list[bytes]]) -> None:
        for frames in frames_iter:
            for batch in self._steps(frames):
                if not self._hand_over(batch):
                    return

    def _failed(self, problem: str) -> None:
        if self.problem is None:  # logged once per outage, however often it is tried again
            self.report("error", problem + " (trying again; /health reports it until following works)")
        self.problem = problem
        self.failures += 1

    def _recovered(self) -> None:
        if self.problem is not None:
            self.report("info", f"following the log again from offset {self.next_offset}")
        self.problem = None

    def _steps(self, frames: list[bytes]) -> Iterator[list[Entry]]:
        """`frames` as entries, a step (RING_STEP events, STEP_BYTES bytes, at least one event) at a time."""
        offset_of, to_json = self.log.codec.offset, self.log.codec.json
        batch: list[Entry] = []
        size = 0
        for f in frames:
            j = to_json(f)
            batch.append((offset_of(f), f, j))
            size += len(f) + len(j)
            if len(batch) >= RING_STEP or size >= STEP_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _hand_over(self, batch: list[Entry]) -> bool:
        """Put `batch` in the ring (on the loop) and wait until it is there; False when stopping."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(self._publish, batch, done)
        while not done.wait(0.5):
            if self.stop.is_set():
                return False
        return True

    def _publish(self, batch: list[Entry], done: threading.Event | None = None) -> None:
        end = self.ring_ends[-1] if self.ring_ends else 0
        for _, f, j in batch:
            end += len(f) + len(j)
            self.ring_ends.append(end)
        self.ring.extend(batch)
        self.ring_bytes = end - (self.ring_ends[0] - _size(self.ring[0]))
        drop = 0
        while len(self.ring) - drop > RING_EVENTS or (self.ring_bytes > RING_BYTES and len(self.ring) - drop > 1):
            self.ring_bytes -= _size(self.ring[drop])
            drop += 1
        if drop:
            del self.ring[:drop]
            del self.ring_ends[:drop]
        self.next_offset = batch[-1][0] + 1
        for c in self.clients:
            c.wake.set()
        if done is not None:
            done.set()

    def from_ring(self, offset: int) -> list[Entry] | None:
        """Entries from `offset` on, a step at most (RING_STEP events, STEP_BYTES bytes, at least one), or None
        when `offset` is older than the ring."""
        ring = self.ring
        if not ring or offset < ring[0][0]:
            return None
        i = bisect.bisect_left(ring, offset, key=_offset_of)  # offsets increase; after a repair, with gaps
        if i == len(ring):
            return []
        ends = self.ring_ends
        budget = ends[i] - _size(ring[i]) + STEP_BYTES
        j = bisect.bisect_right(ends, budget, i, min(len(ring), i + RING_STEP))
        return ring[i:max(j, i + 1)]


def _size(entry: Entry) -> int:
    return len(entry[1]) + len(entry[2])


def _offset_of(entry: Entry) -> int:
    return entry[0]
