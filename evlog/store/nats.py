"""A log on a NATS JetStream stream (SPEC 3): the same contract, on a replicated, clustered store.

How an evlog log maps onto a stream named STREAM:

| evlog                         | JetStream                                                              |
|-------------------------------|------------------------------------------------------------------------|
| offset                        | stream sequence - 1 (offsets start at 0, as locally)                   |
| id                            | the `Nats-Msg-Id` header: the server drops a repeat within the         |
|                               | stream's duplicate window (= dedup_window), so `--id` and re-imports   |
|                               | are deduplicated by the server                                         |
| type                          | the subject suffix: subjects are `STREAM.<type>`, so `--type` patterns |
|                               | (`*`, `>`) become consumer filter subjects, evaluated by the server    |
| time                          | the `Evlog-Time` header when the event carried its own time (an        |
|                               | import), else the time the server stored it (its leader's clock)       |
| source, subject, key, data    | the payload: one JSON object {"source","subject","key","data"}         |
| dedup_window                  | the stream's duplicate_window                                          |
| retention max_age/bytes/events| the stream's max_age / max_bytes / max_msgs                            |
| group NAME                    | the durable pull consumer `evlog_NAME` (see evlog.consumers.nats)      |
| the dead-letter file          | the stream `STREAM_DLQ` (subject `STREAM_DLQ.entry`)                   |

Why the payload and not headers: a payload that is a plain JSON object keeps
each message self-describing for any other NATS client, and readers build
evlog's JSON record from it by slicing, without decoding it. Why keys are not
subjects: subjects carry the type so that type filters run on the server;
keys there too would multiply the stream's subjects (one per key), which the
server keeps state for. So `--key` is filtered by the client.

Batches (`append --batch`, a `--stream` group) use JetStream's atomic batch
publish: a batch of at most ATOMIC_BATCH messages is stored all or nothing,
with contiguous sequences. A larger one is published as consecutive atomic
chunks; every message carries its id, so a failed run can simply be run again
and adds only what is missing (within the duplicate window). Readers may see
the chunks of a large batch one by one. A chunk whose ids the server has seen
already is refused whole by the atomic path (error 10201); it is then
published message by message, so that the server drops exactly the repeats.

nats-py is asynchronous: a NatsLog runs its own event loop in a thread and
its methods wait for the coroutines they hand it. Only this module and
evlog.consumers.nats (groups and dead letters) import nats, and only when a
NATS log is used. Events are read (by readers, followers and groups) through
a connection of their own that speaks the protocol directly, many messages
per read of the socket (evlog.store.nats_wire): the client library builds an
object per message, which held reading near 15,000 events/s.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import re
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import msgspec

from evlog.errors import EvlogError, InvalidEvent, LogNotFound, UsageError
from evlog.settings import Settings
from evlog.store.framing import CODECS, Codec
from evlog.store.reader import EVERYTHING, Range
from evlog.store.writer import _ID_MARK, AppendResult, split_time
from evlog.units import format_time, now_us, time_to_us

T = TypeVar("T")
STREAM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DLQ_SUFFIX = "_DLQ"          # STREAM_DLQ is STREAM's dead-letter stream, so no log has a name ending in it
ATOMIC_BATCH = 1000          # the server's default limit of messages in one atomic batch
FETCH = 1000                 # messages a follower asks for at once (two requests in flight)
PULL_BATCH = 5000            # messages a reader asks for at once ...
PULL_DEPTH = 4               # ... with this many requests in flight
DEFAULT_TIMEOUT = 30.0       # how long commands keep trying while a cluster elects a leader
TIME_HEADER = "Evlog-Time"
MSG_ID = "Nats-Msg-Id"
DUPLICATE_IDS = 10201        # atomic publish batch contains duplicate message id
WRONG_LAST_SEQUENCE = 10071  # Nats-Expected-Last-Sequence did not hold
EXPECTED_LAST = "Nats-Expected-Last-Sequence"
EXPECT_TRIES = 20
STREAM_NOT_FOUND = 10059
CURSOR_TIMEOUT = 10.0        # seconds one request of a reader or follower may take before it asks again
LOST_BACKOFF = 0.25          # seconds before a reader or follower asks again after losing its server
SEEK_SLACK_US = 120_000_000  # a seek by time starts this much earlier (times on import run ahead by <= 1 min)
_json = msgspec.json.Encoder().encode
_CRC = b',"crc32":"%08x"}'


@dataclass(frozen=True)
class Location:
    """`nats://[user:pass@]host[:port][,host2:port...]/STREAM` (or tls://), parsed."""

    servers: list[str]
    stream: str
    shown: str   # the location without credentials, for messages

    @classmethod
    def parse(cls, text: str) -> Location:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("nats", "tls"):
            raise UsageError(f"not a NATS location: {text!r} (use nats://HOST[:PORT][,HOST:PORT...]/STREAM)")
        hosts, slash, stream = rest.partition("/")
        if not slash or not STREAM_RE.fullmatch(stream):
            raise UsageError(f"{scheme}://.../{stream}: the stream name must be 1 to 64 of A-Z a-z 0-9 _ -")
        if stream.endswith(DLQ_SUFFIX):
            raise UsageError(f"{scheme}://.../{stream}: names ending in {DLQ_SUFFIX} are kept for the dead-letter "
                             f"streams of logs (STREAM{DLQ_SUFFIX} holds those of STREAM)")
        userinfo, at, hostlist = hosts.rpartition("@")
        servers, shown = [], []
        for host in hostlist.split(","):
            if not host or any(c in host for c in " /?#"):
                raise UsageError(f"bad NATS host {host!r} in {cls._hide(text)}")
            if ":" not in host.rsplit("]", 1)[-1]:
                host += ":4222"
            servers.append(f"{scheme}://{userinfo + '@' if at else ''}{host}")
            shown.append(host)
        return cls(servers, stream, f"{scheme}://{','.join(shown)}/{stream}")

    @staticmethod
    def _hide(text: str) -> str:
        return re.sub(r"//[^@/]*@", "//***@", text)


class _Item(msgspec.Struct, gc=False):
    type: str
    source: str
    subject: str | None
    key: str | None
    data: msgspec.Raw


_decode_item = msgspec.json.Decoder(_Item).decode


class NatsLog:
    """A log on a JetStream stream; the same operations as a local log (see evlog.store.local)."""

    kind = "nats"

    def __init__(self, location: str, *, creds: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.location = Location.parse(location)
        self.where = self.location.shown
        self.stream = self.location.stream
        self.dlq_stream = self.stream + DLQ_SUFFIX
        self.creds, self.timeout = creds, timeout
        self.codec: Codec = CODECS["jsonl"]  # what readers hand out: JSON Lines frames, as a local log's
        self.prefix = self.stream + "."
        self._loop = asyncio.new_event_loop()
        # The client's own tasks report through the loop's handler (a connection lost, a task cut short at
        # exit): evlog reports what matters itself, in one line, so they stay quiet.
        self._loop.set_exception_handler(lambda loop, context: None)
        self._thread = threading.Thread(target=self._loop.run_forever, name="evlog-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._config: Any = None
        self._publisher: Any = None  # the protocol connection atomic batches are published on
        try:
            self._call(self._connect())
        except BaseException:
            self.close()
            raise

    # -- the loop and the connection ------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on this log's loop and wait for it."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    async def _connect(self) -> None:
        import nats
        from nats.errors import NoServersError

        async def quiet(e: Exception) -> None:  # nats-py prints tracebacks by default
            pass

        options: dict[str, Any] = {"servers": self.location.servers, "error_cb": quiet, "name": "evlog",
                                   "connect_timeout": 2, "reconnect_time_wait": 0.5,
                                   "max_reconnect_attempts": max(1, int(self.timeout / 0.5))}
        if self.creds:
            options["user_credentials"] = self.creds
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                left = max(deadline - time.monotonic(), 0.1)
                self._nc = await asyncio.wait_for(nats.connect(**options, allow_reconnect=True), left)
                break
            except (TimeoutError, OSError, NoServersError) as e:
                if time.monotonic() >= deadline:
                    raise EvlogError(f"cannot reach NATS at {self.where}: {_reason(e)}") from None
                await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
            except Exception as e:  # noqa: BLE001 - authorization and the like: one line
                raise EvlogError(f"cannot connect to NATS at {self.where}: {_reason(e)}") from None
        self._js = self._nc.jetstream(timeout=5)

    def sync(self) -> None:
        """Nothing to do: the server acknowledges only what it stored."""

    def close(self) -> None:
        self._close_publisher()
        if self._loop.is_closed():
            return
        if self._nc is not None:
            try:
                self._call(self._nc.close(), 5)
            except Exception:  # noqa: BLE001, S110 - closing a connection that is gone already
                pass
        try:
            self._call(_cancel_the_rest(), 3)
        except Exception:  # noqa: BLE001, S110 - what is left is dropped with the loop
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _retrying(self, make: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """Run make() on the loop, again while the cluster has no leader (no responders, timeouts),
        for up to `timeout` seconds; then one clear error."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import ServiceUnavailableError

        deadline = time.monotonic() + self.timeout
        while True:
            try:  # a try is cut short where the budget ends
                return self._call(make(), max(deadline - time.monotonic(), 0.1))
            except (TimeoutError, NoRespondersError, NatsTimeout, ServiceUnavailableError) as e:
                if time.monotonic() >= deadline:
                    raise EvlogError(f"NATS at {self.where} did not answer ({what}): {_reason(e)}") from None
                time.sleep(0.25)
            except EvlogError:
                raise
            except Exception as e:  # noqa: BLE001 - one line for whatever the client raises
                from nats.js.errors import NotFoundError

                if isinstance(e, NotFoundError):
                    raise LogNotFound(self.where) from None
                raise EvlogError(f"NATS at {self.where}: {what} failed: {_reason(e)}") from None

    # -- the stream ------------------------------------------------------------------------------

    def create(self, *, replicas: int = 1, max_age_us: int | None = None, max_bytes: int | None = None,
               max_events: int | None = None, dedup_window_us: int = 120_000_000, exist_ok: bool = False,
               dead_letter_max_entries: int = 10_000) -> None:
        """Create the stream (and its dead-letter stream); an existing one is an error unless exist_ok."""
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        config = StreamConfig(
            name=self.stream, subjects=[self.prefix + ">"], storage=StorageType.FILE, num_replicas=replicas,
            duplicate_window=dedup_window_us / 1e6, max_age=(max_age_us or 0) / 1e6, max_bytes=max_bytes or -1,
            max_msgs=max_events if max_events is not None else -1, discard=DiscardPolicy.OLD, allow_atomic=True,
            allow_direct=True, description="an evlog log")
        dlq = StreamConfig(name=self.dlq_stream, subjects=[self.dlq_stream + ".>"], storage=StorageType.FILE,
                           num_replicas=replicas, allow_direct=True, description="evlog dead letters",
                           max_msgs=dead_letter_max_entries, discard=DiscardPolicy.NEW)

        async def make() -> bool:
            from nats.js.errors import NotFoundError

            created = False
            try:
                for cfg in (config, dlq):
                    try:
                        await self._js.stream_info(cfg.name)
                    except NotFoundError:
                        await self._js.add_stream(cfg)
                        created = created or cfg is config
            except BadRequestError as e:
                raise EvlogError(f"cannot create the stream {self.stream}: {_reason(e)}") from None
            return created

        created = self._retrying(make, "creating the stream")
        if not created and not exist_ok:
            raise EvlogError(f"a log already exists at {self.where}")

    def config(self) -> Any:
        """The stream's configuration (read once); LogNotFound when there is no such stream."""
        if self._config is None:
            self._config = self._retrying(lambda: self._js.stream_info(self.stream), "reading the stream").config
        return self._config

    def state(self) -> Any:
        return self._retrying(lambda: self._js.stream_info(self.stream), "reading the stream").state

    @property
    def settings(self) -> Settings:
        c = self.config()
        max_size = c.max_msg_size if c.max_msg_size and c.max_msg_size > 0 else 1024 * 1024
        return Settings(format="jsonl", max_event_bytes=max_size, dedup_window_us=int((c.duplicate_window or 0) * 1e6))

    def retain(self, *, max_age_us: int | None, max_bytes: int | None, max_events: int | None,
               dry_run: bool = False) -> tuple[Any, int, int]:
        """Retention once, as `compact` applies it to a local log: remove the oldest events, those older
        than max_age (by their own times) and as many more as needed for at most max_events events and
        max_bytes bytes. The stream's own limits (set by `init`) stay as they are, and events appended
        meanwhile are never removed (only sequences up to the last one seen at the start are purged).
        Returns (state before, events after, bytes after); a dry run removes nothing and estimates the
        bytes after by the average event size."""
        before = self.state()
        messages, size = int(before.messages), int(before.bytes)
        first, last = int(before.first_seq), int(before.last_seq)
        if not messages:
            return before, 0, size
        cut = first  # the events from this sequence on stay
        if max_age_us is not None:
            young = next(iter(self.reader().chunks(Range(since_us=now_us() - max_age_us))), [])
            cut = max(cut, self.codec.offset(young[0]) + 1 if young else last + 1)
        if max_events is not None:
            cut = max(cut, last - max_events + 1)
        if max_bytes is not None:
            cut = max(cut, last - max_bytes * messages // max(size, 1) + 1)
        if dry_run:
            kept = max(0, last - cut + 1)
            return before, kept, size * kept // messages
        if cut > first:
            self._purge(cut)
        after = self.state()
        while max_bytes is not None and after.bytes > max_bytes and after.first_seq <= last:
            # the estimate by average size kept too much: fewer again, by the sizes now
            left = last - int(after.first_seq) + 1
            self._purge(last - min(left - 1, left * max_bytes // max(int(after.bytes), 1)) + 1)
            after = self.state()
        return before, int(after.messages), int(after.bytes)

    def _purge(self, seq: int) -> None:
        """Remove every event before sequence `seq`."""
        self._retrying(lambda: self._js.purge_stream(self.stream, seq=seq), "removing old events")

    # -- appending -------------------------------------------------------------------------------

    def subject_of(self, type_: str) -> str:
        """The subject of an event type; a type that is no valid subject suffix is invalid input."""
        if not type_ or type_.startswith(".") or type_.endswith(".") or ".." in type_:
            raise InvalidEvent(f"type {type_!r} is not valid on a NATS log: a subject has no empty tokens")
        return self.prefix + type_

    def message(self, item: bytes, default_time: str | None = None) -> tuple[str, bytes, dict[str, str]]:
        """(subject, payload, headers) of an item (see Codec.item): its id, its time if it has one."""
        headers: dict[str, str] = {}
        t, item = split_time(item)
        if t is not None:
            headers[TIME_HEADER] = t
        if item[0] == _ID_MARK:
            id_, rest = self.codec.split_item(item)
        else:
            id_, rest = _generated_id(), item
        headers[MSG_ID] = id_
        fields = _decode_item(b"{" + rest + b"}")
        payload = b'{"source":%b,"subject":%b,"key":%b,"data":%b}' % (
            _json(fields.source), _json(fields.subject), _json(fields.key), bytes(fields.data))
        return self.subject_of(fields.type), payload, headers

    def append(self, items: Iterable[bytes], sync: bool = True) -> AppendResult:
        """Publish the items in order: atomically in chunks of at most ATOMIC_BATCH (see the module
        docstring); known ids are dropped by the server. `sync` does not apply: the server acknowledges
        what it stored (on a majority of replicas).

        Items that carry their own time (imports) follow SPEC 4's rule: a time earlier than the log's
        newest is raised to it. Then every message of the chunk carries an explicit time, computed as a
        local writer would, and the chunk is published only if the stream's last sequence is still the
        one those times were computed against (Nats-Expected-Last-Sequence); when another producer got
        in between, the times are computed again and the chunk published again."""
        first = last = first_item = None
        count = duplicates = raised = 0
        pending = iter(items)
        ahead: bool | None = None  # whether the log's newest time is ahead of the clock (asked once)
        while chunk := [self.message(i) for i in itertools.islice(pending, ATOMIC_BATCH)]:
            timed = any(TIME_HEADER in h for _, _, h in chunk)
            if not timed and ahead is None:
                # After an import whose times ran ahead of the clock, the server's time would go back:
                # then these events carry explicit times too, raised to the newest.
                ahead = self._newest()[1] > format_time(now_us())
            timed = timed or bool(ahead)
            for _ in range(EXPECT_TRIES):
                expect = None
                if timed:
                    expect, newest = self._newest()
                    chunk, up = _times_raised(chunk, newest)
                try:
                    acks = self._publish(chunk, expect)
                    break
                except _WrongLastSequence:
                    continue
            else:
                raise EvlogError(f"NATS at {self.where}: other producers kept appending while times of this import "
                                 "were set; run it again (ids make a rerun add only what is missing)")
            raised += up if timed else 0
            for seq, duplicate in acks:
                if first_item is None:
                    first_item = seq - 1
                if duplicate:
                    duplicates += 1
                    continue
                count += 1
                first = seq - 1 if first is None else first
                last = seq - 1
        return AppendResult(first, last, count, first_item, duplicates, raised)

    def _newest(self) -> tuple[int, str]:
        """(the stream's last sequence, the newest time, "" for an empty stream)."""
        st = self.state()
        if not st.messages:
            return int(st.last_seq), ""
        frame = self._frame_at(st.last_seq)
        return int(st.last_seq), _time_of(frame) if frame is not None else ""

    def _publish(self, chunk: list[tuple[str, bytes, dict[str, str]]],
                 expect: int | None = None) -> list[tuple[int, bool]]:
        """Store one chunk; (sequence, was a duplicate) per message, in order. With `expect`, only if the
        stream's last sequence is still `expect` (else _WrongLastSequence)."""
        if expect is not None:
            subject, payload, headers = chunk[0]
            chunk = [(subject, payload, dict(headers, **{EXPECTED_LAST: str(expect)})), *chunk[1:]]
        if len(chunk) == 1:
            subject, payload, headers = chunk[0]

            async def one() -> Any:
                from nats.js.errors import APIError

                try:
                    return await self._js.publish(subject, payload, headers=headers)
                except APIError as e:
                    if e.err_code == WRONG_LAST_SEQUENCE:
                        raise _WrongLastSequence() from None
                    raise

            ack = self._retrying(one, "appending")
            return [(ack.seq, bool(ack.duplicate))]
        got = self._atomic(chunk, _generated_id())
        if got == DUPLICATE_IDS:  # some ids were stored before: one by one, so the server drops just those
            out = []
            for i, message in enumerate(chunk):
                out += self._publish([message], expect if i == 0 else None)
            return out
        assert isinstance(got, tuple)
        last_seq, n = got
        return [(last_seq - n + 1 + i, False) for i in range(n)]

    def _atomic(self, chunk: list[tuple[str, bytes, dict[str, str]]], batch_id: str) -> tuple[int, int] | int:
        """Publish a chunk as one atomic batch through the protocol connection (the client library costs
        tens of microseconds a message); (last sequence, count), or DUPLICATE_IDS. Tried again while the
        server does not answer, for up to `timeout` seconds: a batch that was stored although its answer
        was lost comes back as DUPLICATE_IDS, and its ids make the one-by-one path drop every repeat."""
        from evlog.store.nats_wire import Wire, WireError

        n = len(chunk)
        last = n - 1
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                wire = self._publisher
                if wire is None:
                    wire = self._publisher = Wire(self.location.servers, creds=self.creds, timeout=CURSOR_TIMEOUT)
                reply = wire.reply_subject()
                hpub = wire.hpublish
                data = b"".join([hpub(subject, payload, dict(
                    headers, **{"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i + 1)}))
                    for i, (subject, payload, headers) in enumerate(chunk[:last])])
                subject, payload, headers = chunk[last]
                data += hpub(subject, payload, dict(headers, **{
                    "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n), "Nats-Batch-Commit": "1"}), reply)
                doc = msgspec.json.decode(wire.call(data, reply))
                break
            except (OSError, WireError, msgspec.DecodeError) as e:
                self._close_publisher()
                if time.monotonic() >= deadline:
                    raise EvlogError(f"NATS at {self.where} did not answer (appending a batch): {_reason(e)}") from None
                time.sleep(0.25)
        error = doc.get("error")
        if error:
            code = error.get("err_code")
            if code == DUPLICATE_IDS:
                return DUPLICATE_IDS
            if code == WRONG_LAST_SEQUENCE:
                raise _WrongLastSequence()
            if code == STREAM_NOT_FOUND:
                raise LogNotFound(self.where)
            raise EvlogError(f"NATS at {self.where} refused the batch: {error.get('description')}")
        return int(doc["seq"]), int(doc.get("count", n))

    def _close_publisher(self) -> None:
        wire, self._publisher = self._publisher, None
        if wire is not None:
            wire.close()

    # -- reading -----------------------------------------------------------------------------------

    def next_offset(self) -> int:
        return int(self.state().last_seq)

    def reader(self, types: Sequence[str] = ()) -> NatsReader:
        return NatsReader(self, list(types))

    def frame(self, msg: Any) -> bytes:
        """A JSON Lines frame of a stored message (what the rest of evlog reads)."""
        seq, ts = _seq_and_time(msg.reply)
        headers = msg.headers or {}
        t = headers.get(TIME_HEADER) or format_time(ts // 1000)
        body = b'{"offset":%d,"id":%b,"time":"%b","type":%b,%b' % (
            seq - 1, _json(headers.get(MSG_ID, "")), t.encode(), _json(msg.subject[len(self.prefix):]),
            msg.data[1:-1])
        return body + _CRC % zlib.crc32(body)

    def filter_subjects(self, types: Sequence[str]) -> list[str]:
        return [self.prefix + t for t in types] or [self.prefix + ">"]

    async def consume(self, first_seq: int, types: Sequence[str], *, start_time: Any = None) -> Any:
        """An ephemeral ordered pull consumer from `first_seq` (or the first message at `start_time`)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        subjects = self.filter_subjects(types)
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60.0, mem_storage=True,
                                filter_subjects=subjects if len(subjects) > 1 else None,
                                filter_subject=subjects[0] if len(subjects) == 1 else None,
                                num_replicas=1)
        if start_time is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = start_time
        else:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(1, first_seq)
        # (pull_subscribe sets the filter subject to its first argument unless filter_subjects is given)
        return await self._js.pull_subscribe(subjects[0] if len(subjects) == 1 else "", stream=self.stream,
                                             config=config)

    def follow(self, next_offset: int, types: Sequence[str], stop: threading.Event | None,
               interrupted: Callable[[], BaseException]) -> Iterator[list[bytes]]:
        """New frames from `next_offset` on, as they are stored, until `stop` is set. A follower outlives
        its server: when the connection or the consumer is lost (a restart, a leader change), it waits and
        goes on from the next offset, for as long as it takes."""
        cursor = _Cursor(self, next_offset + 1, types, expires=0.5)
        backoff = LOST_BACKOFF
        try:
            while stop is None or not stop.is_set():
                try:
                    frames = cursor.take()
                except _Lost:
                    if stop is not None:
                        stop.wait(backoff)
                    else:
                        time.sleep(backoff)
                    backoff = min(2 * backoff, 5.0)
                    continue
                backoff = LOST_BACKOFF
                if frames:
                    yield frames
        except KeyboardInterrupt:
            raise interrupted() from None
        finally:
            cursor.close()

    # -- facts -------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        st = self.state()
        empty = not st.messages
        first = last = None
        if not empty:
            first = self._frame_at(st.first_seq)
            last = self._frame_at(st.last_seq)
        return {
            "format": "jsonl", "dir": self.where, "segments": None,
            "first_offset": None if empty else st.first_seq - 1,
            "last_offset": None if empty else st.last_seq - 1,
            "events": st.messages, "bytes": st.bytes,
            "oldest_time": None if first is None else _time_of(first),
            "newest_time": None if last is None else _time_of(last),
        }

    def _frame_at(self, seq: int) -> bytes | None:
        """The frame of the first message at or after `seq`."""
        async def get() -> list[Any]:
            sub = await self.consume(seq, ())
            try:
                return await _fetch(sub, 1, 2.0)
            finally:
                await sub.unsubscribe()

        msgs = self._retrying(get, "reading")
        return self.frame(msgs[0]) if msgs else None

    def last_time_us(self) -> int:
        """The time of the newest event (0 for an empty stream)."""
        st = self.state()
        frame = self._frame_at(st.last_seq) if st.messages else None
        return time_to_us(_time_of(frame)) if frame is not None else 0


class NatsReader:
    """The frames of a range, like evlog.store.reader.Reader; types are filtered by the server."""

    def __init__(self, log: NatsLog, types: list[str]) -> None:
        self.log, self.types = log, types
        self.next_offset = 0

    def chunks(self, rng: Range = EVERYTHING) -> Iterator[list[bytes]]:
        log = self.log
        st = log.state()
        end_seq = st.last_seq  # a snapshot: what is appended while reading is for `-f`
        self.next_offset = end_seq
        if not st.messages:
            return
        first_seq = st.first_seq
        start_us = None
        if rng.last is not None:
            first_seq = max(first_seq, end_seq - rng.last + 1)
        if rng.start is not None:
            first_seq = max(first_seq, rng.start + 1)
        if rng.since_us is not None:
            # The server seeks by the time it stored a message; an event's own time may run ahead of that by
            # as much as an import may run ahead of the clock, so the seek starts that much earlier.
            start_us = max(rng.since_us - SEEK_SLACK_US, 0)
        if rng.to is not None:
            end_seq = min(end_seq, rng.to + 1)
        if first_seq > end_seq:
            return
        since = format_time(rng.since_us) if rng.since_us is not None else None
        until = format_time(rng.until_us) if rng.until_us is not None else None
        offset_of = log.codec.offset
        end_offset = end_seq - 1
        cursor = _Cursor(log, first_seq, self.types, start_us)
        lost_since: float | None = None
        try:
            while True:
                try:
                    if not cursor.open():  # nothing matches (a filter the server applies)
                        return
                    frames = cursor.take()
                    if not frames and cursor.exhausted():  # nothing more that matches, up to the end
                        return
                except _Lost as e:
                    # a server restart or a leader change: go on from the next offset, within the budget
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > log.timeout:
                        raise EvlogError(f"NATS at {log.where} did not answer (reading): {e}") from None
                    time.sleep(LOST_BACKOFF)
                    continue
                lost_since = None
                if not frames:
                    continue
                past = offset_of(frames[-1]) > end_offset
                if past:  # frames past end_seq are for a later read
                    frames = frames[:bisect.bisect_right(frames, end_offset, key=offset_of)]
                if since is not None:
                    i = bisect.bisect_left(frames, since, key=_time_of)  # times never decrease
                    if i == len(frames):
                        continue
                    frames, since = frames[i:], None
                if until is not None and frames and _time_of(frames[-1]) >= until:
                    k = bisect.bisect_left(frames, until, key=_time_of)
                    self.next_offset = offset_of(frames[k])
                    if k:
                        yield frames[:k]
                    return
                if frames:
                    yield frames
                if past or cursor.next_seq > end_seq or cursor.pending == 0:
                    if rng.to is not None:
                        self.next_offset = min(self.next_offset, rng.to + 1)
                    return
        finally:
            cursor.close()

    def tail(self, n: int, match: Callable[[bytes], bool] | None) -> tuple[list[bytes], int]:
        """The last n frames (that match), oldest first, and the offset after the last record."""
        st = self.log.state()
        end = st.last_seq
        if n <= 0 or not st.messages:
            return [], end
        window = max(n, 100)
        while True:
            start = max(st.first_seq, end - window + 1)
            got = [f for chunk in self.chunks(Range(start=start - 1, to=end - 1)) for f in chunk
                   if match is None or match(f)]
            if len(got) >= n or start <= st.first_seq:
                return got[-n:], end
            window *= 4


class _WrongLastSequence(Exception):
    """Another producer appended after the sequence a chunk's times were computed against."""


def _times_raised(chunk: list[tuple[str, bytes, dict[str, str]]],
                  newest: str) -> tuple[list[tuple[str, bytes, dict[str, str]]], int]:
    """The chunk with an explicit time on every message, as a local writer gives them: an event's own time
    unless earlier than the newest (then raised: counted), else now (never earlier than the newest)."""
    out = []
    raised = 0
    for subject, payload, headers in chunk:
        t = headers.get(TIME_HEADER)
        if t is None:
            t = max(format_time(now_us()), newest)
        elif t < newest:
            t, raised = newest, raised + 1
        newest = t
        out.append((subject, payload, dict(headers, **{TIME_HEADER: t})))
    return out, raised


async def _cancel_the_rest() -> None:
    """Cancel the client's tasks still pending (a connection to a server that is gone leaves some), and let
    them end, so that none is destroyed with the loop."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2)


async def _fetch(sub: Any, n: int, timeout: float) -> list[Any]:
    """Up to n messages, waiting at most `timeout` for the first; [] when none came."""
    import nats.errors

    try:
        return await sub.fetch(n, timeout=timeout)
    except (TimeoutError, nats.errors.TimeoutError):
        return []


def _seq_and_time(reply: str) -> tuple[int, int]:
    """(stream sequence, stored time in ns) from a JetStream message's reply subject."""
    seq, ts, _ = _ack_fields(reply)
    return seq, ts


def _ack_fields(reply: str) -> tuple[int, int, int]:
    """(stream sequence, stored time in ns, messages still pending for the consumer) from a JetStream
    message's reply subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    return int(tokens[7]), int(tokens[9]), int(tokens[10])  # ... with <domain>.<account hash> after $JS.ACK


class _Lost(Exception):
    """The connection or the consumer is gone for now (a server restart, a leader change)."""


class _Cursor:
    """The frames of the stream from a sequence on, pulled through an ephemeral consumer on a connection of
    its own (see evlog.store.nats_wire), made again from the next sequence when lost.

    A reader's requests ask for what is there now (no_wait); a follower's wait `expires` seconds each for
    new events, so a follower that hears nothing (not even that its requests expired) for CURSOR_TIMEOUT
    seconds has lost its server or its consumer."""

    def __init__(self, log: NatsLog, next_seq: int, types: Sequence[str], start_us: int | None = None, *,
                 expires: float | None = None) -> None:
        self.log, self.next_seq, self.types, self.start_us = log, next_seq, types, start_us
        self.expires = expires
        self.wire: Any = None
        self.pulls: Any = None
        self.pending: int | None = None  # what the consumer still had to deliver after the last frame taken

    def open(self) -> int:
        """Make the consumer (if it is not there yet); what it has to deliver. _Lost when it cannot be made."""
        from evlog.store.nats_wire import Deliveries, Status, Wire, WireError

        if self.pulls is not None:
            return self.pending or 0
        log = self.log
        config: dict[str, Any] = {"ack_policy": "none", "inactive_threshold": int(60e9), "mem_storage": True,
                                  "num_replicas": 1}
        subjects = log.filter_subjects(self.types)
        if len(subjects) == 1:
            config["filter_subject"] = subjects[0]
        else:
            config["filter_subjects"] = subjects
        if self.start_us is not None:
            config["deliver_policy"], config["opt_start_time"] = "by_start_time", format_time(self.start_us)
        else:
            config["deliver_policy"], config["opt_start_seq"] = "by_start_sequence", max(1, self.next_seq)
        try:
            self.wire = Wire(log.location.servers, creds=log.creds, timeout=CURSOR_TIMEOUT)
            reply = msgspec.json.decode(self.wire.request(
                f"$JS.API.CONSUMER.CREATE.{log.stream}", _json({"stream_name": log.stream, "config": config})))
        except (OSError, WireError, Status, msgspec.DecodeError) as e:
            self._lost(e)
        error = reply.get("error")
        if error:
            if error.get("err_code") == STREAM_NOT_FOUND:
                self.close()
                raise LogNotFound(log.where)
            self._lost(EvlogError(error.get("description") or str(error)))
        self.pending = int(reply.get("num_pending", 0))
        expires_ns = int(self.expires * 1e9) if self.expires else None
        self.pulls = Deliveries(self.wire, log.stream, reply["name"], log.prefix,
                                batch=FETCH if expires_ns else PULL_BATCH, depth=2 if expires_ns else PULL_DEPTH,
                                expires_ns=expires_ns)
        self._consumer = reply["name"]
        return self.pending

    def take(self) -> list[bytes]:
        """The frames that arrived next ([] when requests ended without any: see `ended`); _Lost when the
        server cannot be asked."""
        from evlog.store.nats_wire import Status, WireError

        self.open()
        pulls = self.pulls
        try:
            pulls.ask()
            frames: list[bytes] = pulls.take()
        except (OSError, WireError, Status) as e:
            self._lost(e)
        if frames:
            self.next_seq = pulls.last_seq + 1
            self.pending = pulls.pending
            self.start_us = None
        return frames

    def exhausted(self) -> bool:
        """Whether the consumer has nothing more to deliver, asked when its requests all ended without
        bringing anything (a request may be told "nothing" while another one has the messages)."""
        from evlog.store.nats_wire import Status, WireError

        pulls = self.pulls
        if pulls is None or not pulls.idle:
            return False
        try:
            reply = msgspec.json.decode(self.wire.request(
                f"$JS.API.CONSUMER.INFO.{self.log.stream}.{self._consumer}", b""))
        except (OSError, WireError, Status, msgspec.DecodeError) as e:
            self._lost(e)
        if "error" in reply:
            self._lost(EvlogError(reply["error"].get("description") or str(reply["error"])))
        self.pending = int(reply.get("num_pending", 0))
        return self.pending == 0

    def _lost(self, e: BaseException) -> NoReturn:
        self.close()
        raise _Lost(_reason(e)) from None

    def close(self) -> None:
        if self.wire is not None:
            wire, self.wire = self.wire, None
            if self.pulls is not None:
                try:  # gone at once rather than when inactive (no answer awaited)
                    wire.send(wire.publish(f"$JS.API.CONSUMER.DELETE.{self.log.stream}.{self._consumer}", b""))
                except OSError:
                    pass
            wire.close()
        self.pulls = None


def _time_of(frame: bytes) -> str:
    i = frame.index(b',"time":"') + 9
    return frame[i:i + 27].decode()


def _generated_id() -> str:
    from evlog.ids import uuid7_prefix

    prefix, start = uuid7_prefix(now_us() // 1000)
    return f"{prefix}{start & 0xFFFF_FFFF_FFFF:012x}"


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())


