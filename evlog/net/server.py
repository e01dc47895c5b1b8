"""`evlog serve`: the log as a WebSocket stream, authenticated (SPEC 6 serve).

    GET /health   200 {"status": "ok"}, no credentials; 503 {"status": "unhealthy",
                  "problem": ...} while following the log fails
    GET /metrics  Prometheus text, credentials required
    GET /stream   WebSocket upgrade, credentials required: Authorization: Bearer
                  TOKEN, or ?token=TOKEN (browsers cannot set headers). The 101
                  response says where the stream starts: X-Evlog-Start-Offset.

One hub follows the log for everyone: a single follower thread (one
filesystem watcher) reads each new frame once into a ring of the newest
events, bounded in count and bytes. Every client has a cursor (the next
offset it should see) and reads the ring at its own pace; a client whose
cursor is older than the ring (its backlog, or a burst larger than the ring)
reads from disk instead. Offsets make every hand-over gap-free and
duplicate-free. Memory is bounded in bytes whatever clients do and whatever
the event size: the ring's, plus for each client one step (RING_STEP events,
STEP_BYTES bytes, or one bigger event) read from the ring or disk and one
written to its connection, whose buffer must drain before the next. A client that
takes nothing for STALL_SECONDS while events wait is closed with 1013 and a
reason naming the offset to resume from. Tokens are compared in constant time and never logged:
query strings in access logs have their token redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from evlog.errors import CorruptionError, EvlogError, UsageError
from evlog.net.auth import Tokens, redact
from evlog.net.hub import RING_STEP, STEP_BYTES, Entry, Hub
from evlog.query.filters import Filter
from evlog.report import Report, quiet
from evlog.store.backend import EventLog as Log
from evlog.store.reader import Range
from evlog.units import parse_time_us

STALL_SECONDS = 10.0       # a client that takes nothing for this long, with events waiting, gets 1013
CLOSE_GRACE = 10.0         # then the connection is dropped if the close cannot get through
MAX_MESSAGE = 4096         # inbound: clients have nothing to say but control frames
TRY_AGAIN_LATER = 1013
START_HEADER = "X-Evlog-Start-Offset"  # on the 101 response: the first offset the stream may send


@dataclass
class StreamQuery:
    start: int | str = "end"    # "end", "beginning" or an offset
    since_us: int | None = None
    last: int | None = None
    filter: Filter = field(default_factory=Filter)
    format: str = "json"


MAX_NUMBER = (1 << 63) - 1     # offsets and counts: what a signed 64-bit integer holds
_NUMBER_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²" and "١٢"
MAX_TIME_TEXT = 64             # longer than any time or duration a person writes
_FIRST_US = -62_135_596_800 * 1_000_000       # 0001-01-01T00:00:00Z: RFC 3339 writes years 1 to 9999
_END_US = 253_402_300_800 * 1_000_000         # 10000-01-01T00:00:00Z


def _shown(text: str) -> str:
    """A parameter's value for an error message: quoted, and cut short when it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text)} characters)"


def _number(name: str, text: str, what: str) -> int:
    if _NUMBER_RE.fullmatch(text) is None or int(text) > MAX_NUMBER:
        raise UsageError(f"{name}={_shown(text)}: use {what} (ASCII digits, at most {MAX_NUMBER})")
    return int(text)


def _since_us(text: str) -> int:
    """A `since` value in microseconds; before the epoch is the epoch (no event is older)."""
    if len(text) > MAX_TIME_TEXT:
        raise UsageError(f"since={_shown(text)}: too long for a time or a duration")
    try:
        us = parse_time_us(text)
    except (ValueError, OverflowError) as e:  # units.parse_time_us may raise either for huge durations
        raise UsageError(f"since: {e}" if isinstance(e, ValueError) else f"since={_shown(text)}: out of range") \
            from None
    if not _FIRST_US <= us < _END_US:
        raise UsageError(f"since={_shown(text)}: out of range (years 1 to 9999)")
    return max(0, us)


def parse_query(query: str) -> StreamQuery:
    """The /stream query parameters; UsageError with the reason for a bad one."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    known = {"from", "since", "last", "type", "key", "subject", "source", "where", "format", "token"}
    for name in params:
        if name not in known:
            raise UsageError(f"unknown query parameter {name!r}")

    def one(name: str) -> str | None:
        values = params.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise UsageError(f"{name} given more than once")
        return values[0]

    q = StreamQuery()
    start = one("from")
    if start is not None:
        q.start = start if start in ("beginning", "end") else _number("from", start, "an offset, `beginning` or `end`")
    since = one("since")
    if since is not None:
        q.since_us = _since_us(since)
    last = one("last")
    if last is not None:
        q.last = _number("last", last, "a number of events")
    if sum(x is not None for x in (start, since, last)) > 1:
        raise UsageError("give at most one of from, since, last")
    fmt = one("format") or "json"
    if fmt not in ("json", "cloudevents"):
        raise UsageError(f"format={fmt!r}: use json or cloudevents")
    q.format = fmt
    q.filter = Filter(params.get("type", []), one("key"), one("subject"), one("source"), one("where"))
    from evlog.store.framing import CODECS

    q.filter.compile(CODECS["jsonl"])  # a bad pattern or expression is a 400 now, not later
    return q


class Metrics:
    def __init__(self) -> None:
        self.events_sent = 0
        self.disconnects: Counter[str] = Counter()
        self.started = time.time()

    def render(self, clients: int, last_offset: int | None, follower_up: bool = True,
               follower_failures: int = 0) -> str:
        lines = [
            "# HELP evlog_clients_connected WebSocket clients connected now.",
            "# TYPE evlog_clients_connected gauge",
            f"evlog_clients_connected {clients}",
            "# HELP evlog_events_sent_total Events sent to clients.",
            "# TYPE evlog_events_sent_total counter",
            f"evlog_events_sent_total {self.events_sent}",
            "# HELP evlog_disconnects_total Client disconnections by reason.",
            "# TYPE evlog_disconnects_total counter",
        ]
        for reason in ("closed", "lagging", "error", "shutdown") + tuple(
                r for r in sorted(self.disconnects) if r not in ("closed", "lagging", "error", "shutdown")):
            lines.append(f'evlog_disconnects_total{{reason="{reason}"}} {self.disconnects[reason]}')
        lines += [
            "# HELP evlog_last_offset Offset of the newest event the server has seen.",
            "# TYPE evlog_last_offset gauge",
            f"evlog_last_offset {-1 if last_offset is None else last_offset}",
            "# HELP evlog_follower_up Whether following the log works (0 while it fails and is retried).",
            "# TYPE evlog_follower_up gauge",
            f"evlog_follower_up {int(follower_up)}",
            "# HELP evlog_follower_failures_total Times following the log failed.",
            "# TYPE evlog_follower_failures_total counter",
            f"evlog_follower_failures_total {follower_failures}",
        ]
        return "\n".join(lines) + "\n"


class _Client:
    def __init__(self, ws: ServerConnection, q: StreamQuery, log: Log) -> None:
        self.ws, self.q = ws, q
        self.match = q.filter.compile(log.codec)
        self.next_offset = 0          # the next offset it should see (set before each send)
        self.wake = asyncio.Event()   # set when the hub has news, or the connection closed
        self.progress_at = time.monotonic()
        self.lagging = False


@dataclass
class _Admission:
    """A /stream request that passed every check: what it asked for and the offset its stream starts at."""

    query: StreamQuery
    start: int = 0


class StreamServer:
    def __init__(self, log: Log, tokens: Tokens, origins: list[str], max_clients: int | None,
                 report: Report = quiet) -> None:
        self.log, self.tokens, self.origins, self.max_clients = log, tokens, origins, max_clients
        self.report = report
        self.metrics = Metrics()
        self.hub: Hub | None = None
        self.stopping = False
        # Connections admitted to /stream, from their request until they close: --max-clients counts these,
        # so that handshakes in flight together cannot all pass the check.
        self.admitted: dict[ServerConnection, _Admission] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- HTTP, before any upgrade ------------------------------------------------------------

    def _respond(self, conn: ServerConnection, status: int, body: str, content_type: str = "text/plain") -> Response:
        response = conn.respond(status, body)
        del response.headers["Content-Type"]  # Headers keeps every value set: replace, don't add
        response.headers["Content-Type"] = f"{content_type}; charset=utf-8"
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Bearer realm="evlog"'
        return response

    def _credentials(self, headers: Headers, query: str) -> str | None:
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        values = urllib.parse.parse_qs(query).get("token")
        return values[0] if values else None

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        response = self._route(conn, request, path, query)
        if response is None:
            response = await self._admit(conn)
        status = response.status_code if response is not None else 101
        peer = conn.remote_address[0] if conn.remote_address else "?"
        self.report("info", f"{peer} GET {redact(request.path)} {status}", client=peer, path=redact(request.path),
                    status=status)
        return response

    def _route(self, conn: ServerConnection, request: Request, path: str, query: str) -> Response | None:
        if path == "/health":
            problem = self.hub.problem if self.hub is not None else None
            if problem is not None:
                body = json.dumps({"status": "unhealthy", "problem": problem})
                return self._respond(conn, 503, body, "application/json")
            return self._respond(conn, 200, '{"status": "ok"}', "application/json")
        if path not in ("/metrics", "/stream"):
            return self._respond(conn, 404, "not found: use /stream, /health or /metrics\n")
        if not self.tokens.accepts(self._credentials(request.headers, query)):
            return self._respond(conn, 401, "missing or wrong credentials\n")
        if path == "/metrics":
            hub = self.hub
            clients = len(hub.clients) if hub else 0
            last = hub.next_offset - 1 if hub and hub.next_offset else None
            up = hub is None or hub.problem is None
            failures = hub.failures if hub else 0
            return self._respond(conn, 200, self.metrics.render(clients, last, up, failures),
                                 "text/plain; version=0.0.4")
        origin = request.headers.get("Origin")
        if self.origins and origin is not None and origin not in self.origins:
            return self._respond(conn, 403, f"origin {origin} is not allowed\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._respond(conn, 426, "/stream is a WebSocket endpoint\n")
        try:
            stream_query = parse_query(query)
        except UsageError as e:
            return self._respond(conn, 400, f"{e}\n")
        if self.max_clients is not None and len(self.admitted) >= self.max_clients:
            return self._respond(conn, 503, f"too many clients (--max-clients {self.max_clients})\n")
        self.admitted[conn] = _Admission(stream_query)  # before any await: the count holds for the next one
        task = asyncio.get_running_loop().create_task(self._forget_when_closed(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return None

    def process_response(self, conn: ServerConnection, request: Request, response: Response) -> None:
        """Tell an upgraded client the offset its stream starts at, so that it can resume from there
        (X-Evlog-Start-Offset) even when it has received nothing yet."""
        admission = self.admitted.get(conn)
        if admission is not None and response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            response.headers[START_HEADER] = str(admission.start)

    async def _admit(self, conn: ServerConnection) -> Response | None:
        """Find the offset the stream starts at, before the upgrade: a value that cannot be served is a 400."""
        admission = self.admitted[conn]
        try:
            admission.start = await asyncio.to_thread(self._start_offset, admission.query)
        except (ValueError, OverflowError) as e:
            self.admitted.pop(conn, None)
            return self._respond(conn, 400, f"cannot start the stream there: {e}\n")
        except EvlogError as e:
            self.admitted.pop(conn, None)
            self.report("error", f"cannot start a stream: {e}")
            return self._respond(conn, 500, f"cannot read the log: {e}\n")
        return None

    async def _forget_when_closed(self, conn: ServerConnection) -> None:
        try:
            await conn.wait_closed()
        finally:
            self.admitted.pop(conn, None)

    # -- the stream --------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        assert self.hub is not None
        admission = self.admitted.get(ws)
        if admission is None:  # closed since its handshake
            return
        client = _Client(ws, admission.query, self.log)
        client.next_offset = admission.start
        self.hub.clients.add(client)
        reason = "closed"
        watchdog = asyncio.ensure_future(self._watch(client))
        try:
            await self._stream(client)
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - one client's failure is logged, never a traceback
            reason = "error"
            self.report("error", f"stream to {ws.remote_address[0] if ws.remote_address else '?'} failed: {e}")
            await ws.close(1011, "server error")
        finally:
            watchdog.cancel()
            self.hub.clients.discard(client)
            if self.stopping and not client.lagging:
                reason = "shutdown"
            if not client.lagging:  # a lagging client was counted when it was closed
                self.metrics.disconnects[reason] += 1

    async def _watch(self, client: _Client) -> None:
        """Wake the stream when the connection closes; close it with 1013 when it stalls."""
        assert self.hub is not None
        closed = asyncio.ensure_future(client.ws.wait_closed())
        try:
            while True:
                done, _ = await asyncio.wait({closed}, timeout=1.0)
                if done:
                    client.wake.set()
                    return
                behind = client.next_offset < self.hub.next_offset
                if behind and time.monotonic() - client.progress_at > STALL_SECONDS:
                    client.lagging = True
                    self.metrics.disconnects["lagging"] += 1  # now: the close may wait for a stalled peer
                    reason = f"client too slow; resume from offset {client.next_offset}"
                    # The close frame waits behind what the peer never read: the connection's close_timeout
                    # (CLOSE_GRACE) makes websockets drop the TCP connection when it cannot get through.
                    await client.ws.close(TRY_AGAIN_LATER, reason)
                    client.wake.set()
                    return
        finally:
            closed.cancel()

    def _start_offset(self, q: StreamQuery) -> int:
        """The offset a stream starts at (the first it may send), read from the index where it must be."""
        assert self.hub is not None
        end = self.hub.next_offset
        if q.start == "beginning" or (q.last is not None and q.last >= end):  # more than the log holds
            return 0
        if isinstance(q.start, int):
            return q.start
        if q.since_us is not None or q.last is not None:
            first = next(_frames(self.log, Range(since_us=q.since_us, last=q.last)), None)
            return self.log.codec.offset(first) if first is not None else end
        return end

    def _read_chunk(self, start: int) -> list[Entry]:
        """Entries from disk from `start` on, a step at most (RING_STEP events, STEP_BYTES bytes, at least one);
        at a damaged record, those before it (the next read raises)."""
        codec = self.log.codec
        out = []
        size = 0
        try:
            for frame in _frames(self.log, Range(start=start)):
                json_text = codec.json(frame)
                out.append((codec.offset(frame), frame, json_text))
                size += len(frame) + len(json_text)
                if len(out) >= RING_STEP or size >= STEP_BYTES:
                    break
        except CorruptionError:
            if not out:
                raise
        return out

    async def _stream(self, client: _Client) -> None:
        """Send events from the client's cursor on: from the ring when it holds them, else from disk."""
        hub = self.hub
        assert hub is not None
        ws = client.ws
        while True:
            if ws.state is not State.OPEN:
                return
            if client.next_offset >= hub.next_offset:
                client.wake.clear()
                if client.next_offset >= hub.next_offset:
                    await client.wake.wait()
                continue
            batch = hub.from_ring(client.next_offset)
            if not batch:
                batch = await asyncio.to_thread(self._read_chunk, client.next_offset)
                if not batch:  # the hub has seen offsets the disk no longer holds (compacted): catch up
                    client.next_offset = max(client.next_offset, hub.ring[0][0] if hub.ring else hub.next_offset)
                    continue
            messages = self._messages(client, batch)
            batch = []  # hold no second copy while waiting
            if messages:
                await self._send(ws, messages)
                self.metrics.events_sent += len(messages)
            client.progress_at = time.monotonic()

    def _messages(self, client: _Client, batch: list[Entry]) -> list[bytes]:
        """The text messages of the events of `batch` that the client should see (and has not seen)."""
        match = client.match
        as_json = client.q.format == "json"
        messages = []
        for offset, frame, json_text in batch:
            if offset < client.next_offset:
                continue
            client.next_offset = offset + 1  # all of these are written before any close frame
            if match is None or match(frame):
                messages.append(json_text if as_json else self._cloudevent(frame))
        return messages

    @staticmethod
    async def _send(ws: ServerConnection, messages: list[bytes]) -> None:
        """One text message each, written at once; the last waits for room in the connection's buffer.

        A batch is a step (STEP_BYTES, or one bigger event): with the wait at its end, a client that
        does not read holds at most one step in its buffer. `broadcast` writes without waiting (and
        skips a closed connection); `send` of the last raises ConnectionClosed if it closed meanwhile.
        """
        for message in messages[:-1]:
            broadcast((ws,), message, text=True)
        await ws.send(messages[-1], text=True)

    def _cloudevent(self, frame: bytes) -> bytes:
        import msgspec

        from evlog.ingest.event import cloudevent

        return msgspec.json.encode(cloudevent(self.log.codec.record(frame)))


def run(log: Log, *, host: str, port: int, tokens: Tokens, origins: list[str], max_clients: int | None,
        tls_cert: Path | None, tls_key: Path | None, report: Report = quiet) -> int:
    """Serve until SIGTERM/SIGINT; returns the signal number that stopped it."""
    return asyncio.run(_serve(log, host, port, tokens, origins, max_clients, tls_cert, tls_key, report))


async def _serve(log: Log, host: str, port: int, tokens: Tokens, origins: list[str], max_clients: int | None,
                 tls_cert: Path | None, tls_key: Path | None, report: Report) -> int:
    loop = asyncio.get_running_loop()
    app = StreamServer(log, tokens, origins, max_clients, report)
    app.hub = Hub(log, loop, report)
    ssl_context = None
    if tls_cert is not None:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as e:
            raise EvlogError(f"cannot load --tls-cert/--tls-key: {e}") from None
    ws_logger = logging.getLogger("evlog.net.server.websockets")
    ws_logger.propagate = False
    ws_logger.addHandler(_Reported(report))
    ws_logger.setLevel(logging.ERROR)
    stopped = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stopped.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        server = await serve(app.handler, host, port, process_request=app.process_request,
                             process_response=app.process_response, compression=None,
                             max_size=MAX_MESSAGE, open_timeout=10, ping_interval=20, ping_timeout=20,
                             close_timeout=CLOSE_GRACE,
                             ssl=ssl_context, server_header="evlog", logger=ws_logger)
    except OSError as e:
        raise EvlogError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    app.hub.start()
    sock = next(iter(server.sockets))
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"{'wss' if ssl_context else 'ws'}://{shown}:{bound_port}/stream"
    report("info", f"serving {url}", url=url)
    report("info", f"clients authenticate with {tokens.where}")
    await stopped.wait()
    app.hub.stop.set()
    app.stopping = True
    server.close(close_connections=True)  # open connections are closed with 1001 (going away)
    await server.wait_closed()
    return received[0] if received else signal.SIGTERM


def _frames(log: Log, rng: Range) -> Iterator[bytes]:
    for chunk in log.reader().chunks(rng):
        yield from chunk


class _Reported(logging.Handler):
    """websockets' own errors, reported: one line, no traceback, no token."""

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        self.report("error", redact(record.getMessage()))
