"""Consumers of a NATS log: groups as durable JetStream consumers, dead letters in a stream.

A group NAME is the durable pull consumer `evlog_NAME` on the log's stream, with
explicit acks. `replay --group NAME` started on several machines binds them all
to that one consumer, so they share the work (competing consumers): the server
hands each event to one of them and gives it to another when it is not acked
in time. Each process runs its events as a local replay does (retries, backoff,
`--concurrency` handlers, a key's events one at a time and in order within the
process) and acks an event once its handler succeeded or its dead-letter entry
is stored; that ack is the checkpoint. So delivery is at least once, as locally.

What differs from a local group:

- Order per key holds within one process. Events of one key handed to two
  processes may run at the same time, and an event redelivered after a crash
  or a timeout runs after later ones. One process with `--concurrency 1` keeps
  the log's order.
- `--concurrency N` and `--batch B`: a process fetches at most 2 x N x B events
  ahead, and the durable consumer allows max_ack_pending = 8 x N x B events in
  flight across all its processes (raised, never lowered, when a process starts
  with a larger window), enough for several processes to share the work.
- Events a process holds are kept alive with "working" acks every ACK_WAIT / 3
  seconds; a process that dies stops doing that, and its events go to another
  process after ACK_WAIT.
- Type filters are the consumer's filter subjects (the server filters); the
  other filters run in the process, which acks events that do not match.
- A group's position is the offset after its acknowledged prefix (the
  consumer's ack floor), and its lag the events it has still to finish.

Dead letters are messages of the stream STREAM_DLQ (subject STREAM_DLQ.entry),
one JSON entry each, as in the local file. An entry's dlq_id is its stream
sequence; an updated entry (after a failed `dlq retry`) is stored again with
its dlq_id kept and the old message deleted. The stream holds at most
max_entries messages (discard new): a full one refuses new entries, and the
consumer stops with DeadLetterFull instead of dropping anything.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from evlog.consumers.checkpoints import check_name
from evlog.consumers.consumer import Consumer, _Result
from evlog.consumers.deadletter import Containment
from evlog.errors import DeadLetterFull
from evlog.store.nats import CURSOR_TIMEOUT, NatsLog, _ack_fields, _fetch, _time_of
from evlog.units import format_time, now_us

PREFIX = "evlog_"
ACK_WAIT = 30.0           # seconds an unacked event stays with a process that stopped saying it works on it
FETCH_ROOM = 2            # a process fetches FETCH_ROOM x concurrency x batch events ahead
GROUP_ROOM = 8            # max_ack_pending = GROUP_ROOM x concurrency x batch
MAX_FETCH = 10_000
PULL_EXPIRES = 0.5        # seconds a pull request waits for events
ACK, NAK, WORKING = b"+ACK", b"-NAK", b"+WPI"
DLQ_SUBJECT = "entry"
MAX_MSGS_EXCEEDED = 10077  # a stream with discard new refused a message: it is full
_encode = msgspec.json.Encoder().encode


def durable(name: str) -> str:
    return PREFIX + check_name(name)


class NatsGroups:
    """Groups as durable consumers; the same methods as evlog.consumers.checkpoints.Groups."""

    def __init__(self, log: NatsLog) -> None:
        self.log = log

    def _info(self, name: str) -> Any:
        from nats.js.errors import NotFoundError

        async def get() -> Any:
            try:
                return await self.log._js.consumer_info(self.log.stream, durable(name))
            except NotFoundError:
                return None

        return self.log._retrying(get, "reading the group")

    def get(self, name: str) -> int | None:
        """The offset after the group's acknowledged prefix; None when there is no such group."""
        info = self._info(name)
        return None if info is None else int(info.ack_floor.stream_seq)

    def lag(self, name: str) -> int | None:
        info = self._info(name)
        return None if info is None else int(info.num_pending) + int(info.num_ack_pending)

    def names(self) -> list[str]:
        async def names() -> list[str]:
            return [c.name for c in await self.log._js.consumers_info(self.log.stream)]

        found = self.log._retrying(names, "listing the groups")
        return sorted(n[len(PREFIX):] for n in found if n.startswith(PREFIX))

    def set(self, name: str, position: int) -> None:
        """Move the group: its consumer is made again, starting at `position` (keeping its filters)."""
        info = self._info(name)
        config = info.config if info is not None else None
        self.delete(name)
        self.create(name, position, config)

    def create(self, name: str, position: int | None, like: Any = None, *, start_time_us: int | None = None,
               types: list[str] | None = None, window: int = 1) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        log = self.log
        if like is not None:
            config = like
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq, config.opt_start_time = (position or 0) + 1, None
        else:
            subjects = log.filter_subjects(types or [])
            config = ConsumerConfig(
                durable_name=durable(name), ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_deliver=-1,
                max_ack_pending=GROUP_ROOM * window, description="an evlog group",
                filter_subjects=subjects if len(subjects) > 1 else None,
                filter_subject=subjects[0] if len(subjects) == 1 else None)
            if start_time_us is not None:
                import datetime

                config.deliver_policy = DeliverPolicy.BY_START_TIME
                config.opt_start_time = datetime.datetime.fromtimestamp(start_time_us / 1e6, datetime.UTC)
            elif position:
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = position + 1
            else:
                config.deliver_policy = DeliverPolicy.ALL
        log._retrying(lambda: log._js.add_consumer(log.stream, config), "creating the group")

    def delete(self, name: str) -> bool:
        from nats.js.errors import NotFoundError

        async def delete() -> bool:
            try:
                return bool(await self.log._js.delete_consumer(self.log.stream, durable(name)))
            except NotFoundError:
                return False

        return self.log._retrying(delete, "deleting the group")


class NatsDeadLetters:
    """Dead letters in the stream STREAM_DLQ; the same methods as evlog.consumers.deadletter.DeadLetters."""

    def __init__(self, log: NatsLog) -> None:
        self.log = log
        self.stream = log.dlq_stream
        self.subject = f"{self.stream}.{DLQ_SUBJECT}"

    def _messages(self) -> list[tuple[int, dict[str, Any]]]:
        """(sequence, entry) of every message, oldest first."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        log = self.log

        async def read() -> list[tuple[int, dict[str, Any]]]:
            info = await log._js.stream_info(self.stream)
            if not info.state.messages:
                return []
            last = info.state.last_seq
            config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                    inactive_threshold=30.0, mem_storage=True, num_replicas=1)
            sub = await log._js.pull_subscribe("", stream=self.stream, config=config)
            out: list[tuple[int, dict[str, Any]]] = []
            try:
                while True:
                    msgs = await _fetch(sub, 1000, 1.0)
                    if not msgs:
                        if (await sub.consumer_info()).num_pending == 0:
                            return out
                        raise TimeoutError("the dead letters stopped coming")  # (read again, from the start)
                    for m in msgs:
                        seq, _, pending = _ack_fields(m.reply)
                        entry = msgspec.json.decode(m.data)
                        if "dlq_id" not in entry:
                            entry = {"dlq_id": seq, **entry}
                        out.append((seq, entry))
                        if seq >= last or pending == 0:
                            return out
            finally:
                await sub.unsubscribe()

        return log._retrying(read, "reading the dead letters")

    def entries(self) -> list[dict[str, Any]]:
        return [e for _, e in self._messages()]

    def count(self) -> int:
        return int(self.log._retrying(lambda: self.log._js.stream_info(self.stream), "reading the dead "
                                      "letters").state.messages)

    def add(self, *, group: str | None, hook: str | None, command: list[str], attempts: int,
            exit_code: int | None, error: str, stderr: bytes, event: Any,
            containment: Containment | None = None) -> int:
        """Store one entry (acknowledged by the server: durable); returns its dlq_id."""
        entry: dict[str, Any] = {
            "failed_at": format_time(now_us()), "group": group, "hook": hook, "command": command,
            "attempts": attempts, "exit_code": exit_code, "error": error,
            "stderr": stderr.decode("utf-8", "replace"), "event": event,
        }
        if containment is not None:
            entry["containment"] = msgspec.structs.asdict(containment)
        return self._store(entry)

    def _store(self, entry: dict[str, Any]) -> int:
        from nats.js.errors import APIError

        log = self.log

        async def publish() -> int:
            try:
                return int((await log._js.publish(self.subject, _encode(entry))).seq)
            except APIError as e:
                if e.err_code == MAX_MSGS_EXCEEDED:
                    raise DeadLetterFull(self.stream, self.max_entries()) from None
                raise

        return log._retrying(publish, "storing a dead letter")

    def max_entries(self) -> int:
        info = self.log._retrying(lambda: self.log._js.stream_info(self.stream), "reading the dead letters")
        return int(info.config.max_msgs)

    def rewrite(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        """Replace the entries with change(entries): removed ones are deleted, changed ones stored again
        (keeping their dlq_id) before their old message is deleted."""
        messages = self._messages()
        kept = change([dict(e) for _, e in messages])
        by_id = {e["dlq_id"]: e for e in kept}
        log = self.log
        for seq, old in messages:
            new = by_id.get(old["dlq_id"])
            if new == old:
                continue
            if new is not None:
                self._store(new)
            log._retrying(functools.partial(log._js.delete_msg, self.stream, seq), "deleting a dead letter")


class NatsGroupConsumer(Consumer):
    """`replay --group` on a NATS log: one of the processes sharing the group's durable consumer."""

    def __init__(self, log: NatsLog, *args: Any, **kwargs: Any) -> None:
        super().__init__(log, *args, **kwargs)
        assert self.group is not None
        self.nats: NatsLog = log
        self.window = max(1, self.opts.concurrency * self.opts.batch)
        self.held: dict[int, bytes] = {}  # offset -> reply subject of an event fetched and not acked yet
        self.shown: list[bytes] = []  # reply subjects of events a dry run showed (handed back at the end)
        self.held_lock = threading.Lock()
        self.pulls: Any = None  # the feeder's requests and their connection (evlog.store.nats_wire)
        self.fed = threading.Event()  # the feeder has stopped

    def start_position(self) -> int | None:
        return None  # the durable consumer knows where it is

    def planned(self) -> int | None:
        """What the group's consumer still has to deliver or have acknowledged, without filters or bounds."""
        r = self.rng
        if self.follow or self.select is not None or self.types or r.to is not None or r.until_us is not None:
            return None
        info = NatsGroups(self.nats)._info(self.group or "")
        if info is None:
            return super().planned()
        return int(info.num_pending) + int(info.num_ack_pending)

    def _bind(self) -> None:
        """Make the group's consumer on first use (from the range's start, or the beginning); give it this
        run's filters and a window at least this process's."""
        groups = NatsGroups(self.nats)
        name = self.group
        assert name is not None
        info = groups._info(name)
        r = self.rng
        if info is None:
            if r.last is not None:
                start = max(0, self.nats.next_offset() - r.last)
                groups.create(name, start, types=self.types, window=self.window)
            else:
                groups.create(name, r.start, start_time_us=r.since_us, types=self.types, window=self.window)
        else:
            self._start_ignored(int(info.ack_floor.stream_seq))
            c = info.config
            subjects = self.nats.filter_subjects(self.types)
            current = c.filter_subjects or ([c.filter_subject] if c.filter_subject else [])
            if sorted(current) != sorted(subjects) or (c.max_ack_pending or 0) < GROUP_ROOM * self.window:
                c.filter_subjects = subjects if len(subjects) > 1 else None
                c.filter_subject = subjects[0] if len(subjects) == 1 else None
                c.max_ack_pending = max(c.max_ack_pending or 0, GROUP_ROOM * self.window)
                log = self.nats
                log._retrying(lambda: log._js.add_consumer(log.stream, c), "updating the group")

    def _connect(self) -> Any:
        """Pull requests for the group's consumer, on a connection of their own (see evlog.store.nats_wire)."""
        from evlog.store.nats_wire import Deliveries, Wire

        log = self.nats
        wire = Wire(log.location.servers, creds=log.creds, timeout=CURSOR_TIMEOUT)
        batch = max(1, min(MAX_FETCH, FETCH_ROOM * self.window) // 2)
        return Deliveries(wire, log.stream, durable(self.group or ""), log.prefix, batch=batch, depth=2,
                          expires_ns=int(PULL_EXPIRES * 1e9), acks=True)

    def _feed(self, out: queue.Queue[Any]) -> None:
        """Feeder thread: pull from the durable consumer, at most FETCH_ROOM x window ahead; hand matching
        events on as tasks and ack the others. Without --follow, ends when the group has nothing pending."""
        from evlog.store.nats_wire import Status, WireError

        try:
            log = self.nats
            self._bind()
            beat = threading.Thread(target=self._keep_alive, daemon=True, name="evlog-nats-progress")
            beat.start()
            r = self.rng
            until = format_time(r.until_us) if r.until_us is not None else None
            offset_of = log.codec.offset
            batch = self.opts.batch
            room = min(MAX_FETCH, FETCH_ROOM * self.window)
            while not self.stop.is_set():
                try:
                    if self.pulls is None:
                        self.pulls = self._connect()
                    pulls = self.pulls
                    with self.held_lock:
                        free = room - len(self.held)
                    if free >= pulls.batch:
                        pulls.ask()
                    elif pulls.idle:
                        time.sleep(0.01)
                        continue
                    frames = pulls.take()
                    replies, pulls.replies = pulls.replies, []
                except (OSError, WireError, Status):  # the connection is made again: go on
                    self._disconnect()
                    if self.stop.wait(0.5):
                        break
                    continue
                if not frames:
                    if not self.follow and pulls.idle and self._drained():
                        break
                    continue
                kept, beyond = [], []
                for frame, reply in zip(frames, replies, strict=True):
                    offset = offset_of(frame)
                    if (r.to is not None and offset > r.to) or (until is not None and _time_of(frame) >= until):
                        beyond.append(reply)
                        continue
                    with self.held_lock:
                        self.held[offset] = reply
                    kept.append(frame)
                if beyond:  # past the range: for a later run, at once
                    self._tell(beyond, NAK)
                matched = kept if self.select is None else self.select(kept)
                if len(matched) != len(kept):
                    keep = {offset_of(f) for f in matched}
                    self._ack([offset_of(f) for f in kept if offset_of(f) not in keep])
                for i in range(0, len(matched), batch):
                    part = matched[i:i + batch]
                    out.put((part, offset_of(part[-1]) + 1))
                if beyond:
                    break
            out.put(("end", log.next_offset()))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            out.put(("error", e))
        finally:
            self.fed.set()

    def _disconnect(self) -> None:
        pulls, self.pulls = self.pulls, None
        if pulls is not None:
            pulls.wire.close()

    def _drained(self) -> bool:
        info = NatsGroups(self.nats)._info(self.group or "")
        return info is None or int(info.num_pending) == 0

    def _keep_alive(self) -> None:
        """Tell the server every ACK_WAIT / 3 that the held events are being worked on."""
        while not self.stop.wait(ACK_WAIT / 3):
            with self.held_lock:
                replies = list(self.held.values())
            if replies:
                try:
                    self._tell(replies, WORKING)
                except Exception:  # noqa: BLE001, S110 - the next beat tries again; the server redelivers
                    pass

    def _tell(self, replies: list[bytes], verb: bytes) -> None:
        """Acknowledge (or nak, or say "working on") deliveries by their reply subjects: one write on the
        feeder's connection, or through the client library while that is being made again."""
        pulls = self.pulls
        if pulls is not None:
            try:
                pulls.wire.send(b"".join(b"PUB %b %d\r\n%b\r\n" % (r, len(verb), verb) for r in replies))
                return
            except OSError:
                pass
        nc = self.nats._nc
        self.nats._call(_all(nc.publish(r.decode(), verb) for r in replies), 30)

    def _ack(self, offsets: list[int]) -> None:
        with self.held_lock:
            replies = [m for m in (self.held.pop(o, None) for o in offsets) if m is not None]
        if replies:
            self._tell(replies, ACK)

    def _finish(self, result: _Result) -> BaseException | None:
        error = super()._finish(result)
        task = result.task
        if task.done:
            offset_of = self.log.codec.offset
            offsets = [offset_of(f) for f in task.frames]
            if self.opts.dry_run:  # not acked: its events go back to the group when this process stops
                with self.held_lock:
                    self.shown += [r for r in (self.held.pop(o, None) for o in offsets) if r is not None]
            else:
                self._ack(offsets)
        return error

    def _checkpoint(self, st: Any, force: bool = False) -> None:
        while st.order and st.order[0].done:
            st.position = st.order.popleft().end
        if force:
            self._release()

    def _release(self) -> None:
        """Stopping: hand the events this process holds and did not finish back to the group at once, and
        make sure the server has read every acknowledgement before the connection closes."""
        self.fed.wait(2 * PULL_EXPIRES + 1)
        with self.held_lock:
            replies = list(self.held.values()) + self.shown
            self.held.clear()
            self.shown = []
        pulls = self.pulls
        try:
            if pulls is not None and self.fed.is_set():
                replies += pulls.settle(2 * PULL_EXPIRES + 1)  # what came after the feeder stopped
            if replies:
                self._tell(replies, NAK)
            if pulls is not None and self.fed.is_set():
                pulls.settle(5)
            self.nats._call(self.nats._nc.flush(5), 10)
        except Exception:  # noqa: BLE001, S110 - acks not sent are redeliveries, which at least once allows
            pass
        self._disconnect()

    def _more_after(self, position: int | None) -> bool:
        return self.follow or not self._drained()


async def _all(coros: Any) -> None:
    import asyncio

    await asyncio.gather(*coros)

