"""`evlog mirror SRC DST`: a consumer of one log whose handler is another log (either backend), keeping ids,
times and order.

Each chunk the source reader gives is validated for the destination and
appended to it as one write (all or nothing; on NATS, atomic chunks), with
each record's id and time (SPEC 4 times on import: a time earlier than the
destination's newest is raised to it). Then the position moves past it.

Where a run starts:

- with `--group NAME`, at the source's group NAME (a checkpoint file of a
  local source, the durable consumer's acknowledged prefix on NATS), saved
  after every chunk;
- without, after the destination's newest event, looked up by its id in the
  source (from its time on, as times are kept; else from the beginning), so
  the destination itself is the checkpoint: a mirror into a log that only it
  writes to resumes exactly. A destination whose newest event is not in the
  source needs --group.

Either way a run killed between appending a chunk and saving its position
repeats at most that chunk, and the destination drops the repeat by id: the
ids are found again because they keep their times (see evlog.store.writer's
dedup; on NATS, the server's duplicate window). And with --group the start
also moves past the destination's newest event when the source has it after
the checkpoint, so that repeat does not even happen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import msgspec

from evlog.errors import EvlogError
from evlog.ingest.append import Appended, Target
from evlog.query.filters import Filter
from evlog.store.backend import EventLog
from evlog.store.reader import Range
from evlog.units import time_to_us

FIND_AFTER_CHECKPOINT = 200_000  # records searched for the destination's newest after a group's checkpoint
SAVE_EVERY = 1.0  # seconds between checkpoints of a NATS source's group (a local one's: every chunk)


class MirrorSummary(Appended):
    """count: copied into the destination (first..last there); duplicates: already there by id; raised: times
    earlier than the destination's newest, raised to it."""

    skipped: int = 0      # not matching the filters
    position: int = 0     # the source offset the next run starts at

    def as_dict(self) -> dict[str, object]:
        return {"events": self.count, "duplicates": self.duplicates, "raised": self.raised,
                "first": self.first, "last": self.last, "position": self.position}

    def text(self) -> str:
        text = f"mirrored {self.count} event{'s' if self.count != 1 else ''}"
        if self.count:
            text += f" (destination offsets {self.first}..{self.last})"
        if self.duplicates:
            text += f", {self.duplicates} already there"
        if self.raised:
            text += f", {self.raised} time{'s' if self.raised != 1 else ''} raised to the destination's newest"
        return text + f"; the source is copied up to offset {self.position}"


class Mirror:
    def __init__(self, source: EventLog, target: Target, flt: Filter, *, group: str | None = None,
                 progress: Callable[[MirrorSummary], None] | None = None) -> None:
        self.src, self.target, self.flt, self.group = source, target, flt, group
        self.select = flt.compile_chunk(source.codec)
        self.progress = progress
        self.summary = MirrorSummary()
        self.validator = target.validator(None)
        self.dst: EventLog | None = target.log(self.validator) if target.exists else None
        self.groups = None
        self.saved, self.last_save = 0, 0.0
        if group is not None:
            from evlog.consumers.checkpoints import check_name
            from evlog.consumers.state import groups_of

            check_name(group)
            self.groups = groups_of(source)

    # -- where to start ----------------------------------------------------------------------------

    def start(self) -> int:
        saved = None
        if self.groups is not None:
            assert self.group is not None
            saved = self.groups.get(self.group)
        newest = self._destination_newest()
        if newest is None:
            return saved or 0
        id_, time = newest
        if saved is not None:  # chunks appended but not checkpointed: start past them
            found = self._find(id_, Range(since_us=time_to_us(time)), FIND_AFTER_CHECKPOINT)
            if found is None or found < saved:
                found = self._find(id_, Range(start=saved), FIND_AFTER_CHECKPOINT)
            return found + 1 if found is not None and found >= saved else saved
        found = self._find(id_, Range(since_us=time_to_us(time)))
        if found is None:
            found = self._find(id_, Range())
        if found is None:
            raise EvlogError(f"the destination's newest event (id {id_}) is not in the source, so there is no "
                             "place to resume from: mirror into a log only this mirror writes to, or give --group "
                             "NAME to keep a checkpoint in the source")
        return found + 1

    def _destination_newest(self) -> tuple[str, str] | None:
        if self.dst is None:
            return None
        frames, _ = self.dst.reader().tail(1, None)
        if not frames:
            return None
        _, id_, time = self.dst.codec.head(frames[0])
        return id_, time

    def _find(self, id_: str, rng: Range, limit: int | None = None) -> int | None:
        """The source offset of the record with this id in the range (at most `limit` records looked at)."""
        head = self.src.codec.head
        seen = 0
        for chunk in self.src.reader().chunks(rng):
            for frame in chunk:
                offset, fid, _ = head(frame)
                if fid == id_:
                    return offset
            seen += len(chunk)
            if limit is not None and seen >= limit:
                return None
        return None

    # -- copying -------------------------------------------------------------------------------------

    def run(self, follow: bool = False, stop: threading.Event | None = None,
            interrupted: Callable[[], BaseException] = KeyboardInterrupt) -> MirrorSummary:
        position = self.start()
        self.summary.position = self.saved = position
        reader = self.src.reader(self.flt.types)
        try:
            for chunk in reader.chunks(Range(start=position)):
                self._copy(chunk)
            if follow:
                position = max(self.summary.position, reader.next_offset)
                for chunk in self.src.follow(position, self.flt.types, stop, interrupted):
                    self._copy(chunk)
        finally:
            self._save(force=True)
        return self.summary

    def _save(self, force: bool = False) -> None:
        """Checkpoint the position in the source's group: every chunk on a local source, every SAVE_EVERY
        seconds on a NATS one (moving a durable consumer means making it again), and at the end."""
        if self.groups is None or self.group is None or self.summary.position == self.saved:
            return
        now = time.monotonic()
        if force or self.src.kind == "local" or now - self.last_save >= SAVE_EVERY:
            self.groups.set(self.group, self.summary.position)
            self.saved, self.last_save = self.summary.position, now

    def _copy(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        src = self.src.codec
        end = src.offset(chunk[-1]) + 1
        matched = chunk if self.select is None else self.select(chunk)
        self.summary.skipped += len(chunk) - len(matched)
        if matched:
            for part in _parts(matched):
                items = [self.validator.from_line(src.json(f)) for f in part]
                if self.dst is None:
                    self.dst = self.target.log(self.validator)
                self.summary.add(self.dst.append(items))
        self.summary.position = end
        self._save()
        if self.progress is not None:
            self.progress(self.summary)


def _parts(frames: list[bytes], size: int = 10_000) -> Iterator[list[bytes]]:
    for i in range(0, len(frames), size):
        yield frames[i:i + size]


def summary_json(summary: MirrorSummary) -> bytes:
    return msgspec.json.encode(summary.as_dict()) + b"\n"
