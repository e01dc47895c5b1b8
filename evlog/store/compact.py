"""Compaction: retention of whole sealed segments, and key compaction (SPEC 6 compact).

Only sealed segments are touched: the last segment when compaction starts is
the active one and is never read or changed (an appender may seal it and
start another meanwhile; that one is not touched either). Appends, reads and
followers go on throughout; one compaction runs at a time (`DIR/.compact.lock`).

Retention deletes whole segments, oldest first: the data file is unlinked
first (readers that have it open finish reading it), then its index files.

Key compaction reads the sealed segments once to find the newest offset of
every key (memory grows with keys, not events), then rewrites each segment
that loses records:

    1. write the kept frames, unchanged, to `segments/.NAME.compact`, fsync
    2. write its index files to `.NAME.index.compact` / `.timeindex.compact`
    3. remove the old index files (missing ones are rebuilt on use)
    4. rename the data file over NAME            <- the point of no return
    5. rename the index files into place, fsync the directory

A compaction killed before step 4 leaves the old segment whole, plus private
temporary files that readers ignore and the next compaction removes; killed
after it, the new segment is whole and its index files, if stale, are
rebuilt on use. Either way each segment reads as its before or its after
state. Offsets and ids never change; a segment left empty is removed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import msgspec

from evlog.errors import Busy
from evlog.store import files
from evlog.store.framing import RawRecord
from evlog.store.log import Log
from evlog.store.segment import Segment
from evlog.units import now_us, time_to_us

TEMP_SUFFIX = ".compact"
_CRASH_ENV = "EVLOG_TEST_COMPACT_KILL_AT"  # tests: SIGKILL this process at durable step k


@dataclass
class Plan:
    max_age_us: int | None = None
    max_bytes: int | None = None
    max_events: int | None = None
    keys: bool = False


@dataclass
class Stats:
    segments: int = 0
    events: int = 0
    bytes: int = 0


@dataclass
class Result:
    before: Stats
    after: Stats
    deleted: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    removed_events: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, int]:
        return {"segments_before": self.before.segments, "segments_after": self.after.segments,
                "events_before": self.before.events, "events_after": self.after.events,
                "bytes_before": self.before.bytes, "bytes_after": self.after.bytes}

    def text(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"{verb} {self.before.events - self.after.events} events: "
                f"segments {self.before.segments} -> {self.after.segments}, "
                f"events {self.before.events} -> {self.after.events}, "
                f"bytes {self.before.bytes} -> {self.after.bytes}"
                + (f" ({len(self.deleted)} deleted, {len(self.rewritten)} rewritten)" if not self.dry_run else ""))


class _KeyInfo(msgspec.Struct, gc=False):
    key: str | None = None
    time: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


@dataclass
class _Seg:
    seg: Segment
    count: int
    size: int
    files_size: int
    last_time_us: int | None


class _Steps:
    """Counts durable steps; a test can ask for a SIGKILL at step k."""

    def __init__(self) -> None:
        self.n = 0
        at = os.environ.get(_CRASH_ENV)
        self.kill_at = int(at) if at and at.isdigit() else None

    def __call__(self) -> None:
        self.n += 1
        if self.kill_at is not None and self.n >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def compaction_lock(log: Log, wait: bool) -> Iterator[None]:
    import fcntl

    fd = os.open(log.dir / ".compact.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy("another compaction is running on this log (use --wait to wait for it)") from None
        yield
    finally:
        os.close(fd)


def compact(log: Log, plan: Plan, *, dry_run: bool = False, wait: bool = False,
            progress: Callable[[int, int], None] | None = None) -> Result:
    with compaction_lock(log, wait):
        if not dry_run:
            _clean_leftovers(log)
        return _Compaction(log, plan, dry_run, progress).run()


def _clean_leftovers(log: Log) -> None:
    """Remove what a killed compaction left (temporary files, index files of deleted segments), and
    the temporary files of other evlog processes that died."""
    for d in (log.segments_dir, log.dir, log.dir / "groups"):
        files.clean_temporary(d)
    try:
        names = os.listdir(log.segments_dir)
    except FileNotFoundError:
        return
    stems = {n[:20] for n in names if n.endswith(log.codec.suffix) and not n.startswith(".")}
    for n in names:
        path = log.segments_dir / n
        if n.startswith(".") and n.endswith(TEMP_SUFFIX):
            path.unlink(missing_ok=True)
        elif (n.endswith(".index") or n.endswith(".timeindex")) and n[:20].isdigit() and n[:20] not in stems \
                and stems and n[:20] < max(stems):
            # Deletion unlinks the data file first, so these outlived theirs. (A writer creates a
            # segment's data file before its index files, so a newest segment is never touched.)
            path.unlink(missing_ok=True)


class _Compaction:
    def __init__(self, log: Log, plan: Plan, dry_run: bool, progress: Callable[[int, int], None] | None) -> None:
        self.log, self.plan, self.dry_run, self.progress = log, plan, dry_run, progress
        self.codec = log.codec
        self.fsync = log.settings.fsync != "never"
        self.step = _Steps()

    def run(self) -> Result:
        with self.log.lock():  # a moment with no write under way: every segment but the last is sealed
            segs = self.log.segments()
            pending = self.log.pending()
        described = [self._describe(s, i == len(segs) - 1) for i, s in enumerate(segs)]
        infos = [i for i in described if i is not None]
        before = Stats(len(infos), sum(i.count for i in infos), sum(i.files_size for i in infos))
        result = Result(before, Stats(), dry_run=self.dry_run)
        if not infos:
            result.after = before
            return result
        active, sealed = infos[-1], infos[:-1]
        if isinstance(pending, tuple):  # a dead writer's batch from this segment on: the next writer's
            sealed = [i for i in sealed if i.seg.base < pending[0]]
        doomed = self._retention(sealed, before)
        kept = [i for i in sealed if i not in doomed]
        total_steps = len(doomed) + (2 * len(kept) if self.plan.keys else 0)
        done = 0
        for info in doomed:
            result.deleted.append(info.seg.name)
            result.removed_events += info.count
            if not self.dry_run:
                self._delete(info.seg)
            done += 1
            self._progress(done, total_steps)
        after_infos = list(kept)
        if self.plan.keys and kept:
            newest = self._newest_by_key(kept)
            done += len(kept)
            after_infos = []
            for info in kept:
                new_info = self._rewrite(info, newest)
                done += 1
                self._progress(done, total_steps)
                if new_info is not info:
                    result.rewritten.append(info.seg.name)
                    result.removed_events += info.count - (new_info.count if new_info else 0)
                if new_info is not None:
                    after_infos.append(new_info)
        if doomed and not self.dry_run and self.fsync:
            files.fsync_dir(self.log.segments_dir)
        after_infos.append(active)
        result.after = Stats(len(after_infos), sum(i.count for i in after_infos),
                             sum(i.files_size for i in after_infos))
        return result

    def _progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    # -- looking -------------------------------------------------------------------------

    def _describe(self, seg: Segment, is_active: bool) -> _Seg | None:
        try:
            fd = seg.open()
        except FileNotFoundError:
            return None
        try:
            tail = seg.tail(fd, write=not is_active and not self.dry_run)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        files = size
        for p in (seg.index_path, seg.time_path):
            try:
                files += p.stat().st_size
            except FileNotFoundError:
                pass
        last_us = time_to_us(tail.last_time) if tail.last_time else None
        return _Seg(seg, tail.count, size, files, last_us)

    def _retention(self, sealed: list[_Seg], before: Stats) -> list[_Seg]:
        """Sealed segments to delete, oldest first."""
        plan = self.plan
        doomed: list[_Seg] = []
        if plan.max_age_us is not None:
            cutoff = now_us() - plan.max_age_us
            for info in sealed:
                if info.last_time_us is not None and info.last_time_us < cutoff:
                    doomed.append(info)
                elif info.count:
                    break  # times never decrease: later segments are newer still
                else:
                    doomed.append(info)
        events, size = before.events, before.bytes
        for info in doomed:
            events -= info.count
            size -= info.files_size
        for info in sealed[len(doomed):]:
            over_events = plan.max_events is not None and events > plan.max_events
            over_bytes = plan.max_bytes is not None and size > plan.max_bytes
            if not (over_events or over_bytes):
                break
            doomed.append(info)
            events -= info.count
            size -= info.files_size
        return doomed

    def _frames(self, seg: Segment) -> Iterator[tuple[int, bytes]]:
        fd = seg.open()
        try:
            reader = seg.frames(fd)
            yield from reader
            if reader.bad is not None:
                from evlog.store.framing import corruption

                raise corruption(self.codec, seg.name, fd, reader.bad, None)
        finally:
            os.close(fd)

    def _key_info(self) -> Callable[[bytes], tuple[int, str | None, str, bool]]:
        """frame -> (offset, key, time, is a tombstone)."""
        offset_of = self.codec.offset
        if self.codec.name == "jsonl":
            dec = msgspec.json.Decoder(_KeyInfo).decode

            def jsonl(frame: bytes) -> tuple[int, str | None, str, bool]:
                k = dec(frame)
                return offset_of(frame), k.key, k.time, bytes(k.data) == b"null"

            return jsonl
        dec_mp = msgspec.msgpack.Decoder(RawRecord).decode
        null = msgspec.msgpack.encode(None)

        def mp(frame: bytes) -> tuple[int, str | None, str, bool]:
            k = dec_mp(frame)
            return k.offset, k.key, k.time, bytes(k.data) == null

        return mp

    def _newest_by_key(self, sealed: list[_Seg]) -> dict[str, int]:
        """key -> offset of its newest event among the sealed segments (minus expired tombstones)."""
        info = self._key_info()
        newest: dict[str, int] = {}
        tomb_time: dict[str, str] = {}
        for s in sealed:
            for _, frame in self._frames(s.seg):
                off, key, t, tomb = info(frame)
                if key is None:
                    continue
                newest[key] = off
                if tomb:
                    tomb_time[key] = t
                else:
                    tomb_time.pop(key, None)
        retention = self.log.settings.compaction.tombstone_retention_us
        cutoff = now_us() - retention
        for key, t in tomb_time.items():
            if time_to_us(t) < cutoff:
                newest[key] = -1  # an expired tombstone: the key goes entirely
        return newest

    # -- changing ----------------------------------------------------------------------------

    def _delete(self, seg: Segment) -> None:
        seg.path.unlink(missing_ok=True)  # first: readers list segments by their data files
        self.step()
        seg.index_path.unlink(missing_ok=True)
        seg.time_path.unlink(missing_ok=True)
        self.step()

    def _rewrite(self, info: _Seg, newest: dict[str, int]) -> _Seg | None:
        """The segment without its superseded keyed events; the same _Seg when nothing goes.

        One streaming pass writes the kept frames to the temporary file (or, for a
        dry run, only counts them), so memory does not grow with the segment.
        """
        seg = info.seg
        key_info = self._key_info()
        stored = self.codec.stored
        head = self.codec.head
        d = self.log.segments_dir
        tmp = d / f".{seg.name}{TEMP_SUFFIX}"
        out = None if self.dry_run else open(tmp, "wb")  # noqa: SIM115 - closed below, on every path
        entries: list[tuple[int, int, int, int]] = []
        pos = kept = removed = 0
        last_entry: int | None = None
        try:
            for _, frame in self._frames(seg):
                off, key, _, _ = key_info(frame)
                if key is not None and newest.get(key) != off:
                    removed += 1
                    continue
                data = stored(frame)
                if last_entry is None or pos - last_entry >= seg.interval:
                    entries.append((off, pos, kept, time_to_us(head(frame)[2])))
                    last_entry = pos
                if out is not None:
                    out.write(data)
                pos += len(data)
                kept += 1
            if out is not None:
                out.flush()
                if self.fsync and removed and kept:
                    os.fsync(out.fileno())
        finally:
            if out is not None:
                out.close()
        if not removed or not kept:
            tmp.unlink(missing_ok=True)
            if not removed:
                return info
            if not self.dry_run:
                self._delete(seg)
            return None
        off_data, time_data = seg.encode_entries(entries, with_header=True)
        if self.dry_run:
            return _Seg(seg, kept, pos, pos + len(off_data) + len(time_data), info.last_time_us)
        self.step()
        tmp_index = d / f".{seg.index_path.name}{TEMP_SUFFIX}"
        tmp_time = d / f".{seg.time_path.name}{TEMP_SUFFIX}"
        for path, data in ((tmp_index, off_data), (tmp_time, time_data)):
            with open(path, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        self.step()
        # The old index files would be wrong for the new records: they go first (missing index
        # files are merely rebuilt on use), so no instant leaves an index that lies.
        seg.index_path.unlink(missing_ok=True)
        seg.time_path.unlink(missing_ok=True)
        self.step()
        os.replace(tmp, seg.path)  # the point of no return: the segment is now its compacted self
        self.step()
        os.replace(tmp_index, seg.index_path)
        os.replace(tmp_time, seg.time_path)
        if self.fsync:
            files.fsync_dir(d)
        self.step()
        return _Seg(seg, kept, pos, pos + len(off_data) + len(time_data), info.last_time_us)


def plan_from(log: Log, *, max_age_us: int | None, max_bytes: int | None, max_events: int | None,
              keys: bool | None) -> Plan:
    """Flags override evlog.toml."""
    r = log.settings.retention
    return Plan(
        max_age_us=max_age_us if max_age_us is not None else r.max_age_us,
        max_bytes=max_bytes if max_bytes is not None else r.max_bytes,
        max_events=max_events if max_events is not None else r.max_events,
        keys=keys if keys else log.settings.compaction.keys,
    )
