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
import bisect
import hmac
import json
import logging
import os
import re
import secrets
import signal
import stat
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from evlog.cli.diag import diag
from evlog.errors import CorruptionError, EvlogError, UsageError
from evlog.net.auth import MIN_TOKEN_LENGTH, check_token, read_stored_token, redact, weak_token_warning
from evlog.query.filters import Filter
from evlog.store.log import Log
from evlog.store.reader import Range, next_offset, read_frames
from evlog.units import parse_time_us

RING_EVENTS = 50_000       # newest events kept in memory for all clients together
RING_BYTES = 32 << 20      # ... and at most this many bytes of them (frames and their JSON)
RING_STEP = 1_000          # events taken at once, from the ring or from disk ...
STEP_BYTES = 1 << 20       # ... and at most this many bytes of them (frames and JSON), or one bigger event
STALL_SECONDS = 10.0       # a client that takes nothing for this long, with events waiting, gets 1013
CLOSE_GRACE = 10.0         # then the connection is dropped if the close cannot get through
MAX_MESSAGE = 4096         # inbound: clients have nothing to say but control frames
TRY_AGAIN_LATER = 1013
FOLLOW_RETRY = (0.5, 5.0)  # following that failed is tried again after this long, doubling up to the second
START_HEADER = "X-Evlog-Start-Offset"  # on the 101 response: the first offset the stream may send


def text_frames(messages: list[bytes]) -> bytes:
    """RFC 6455 frames, one unmasked final text frame per message (UTF-8 JSON), joined."""
    parts = []
    for m in messages:
        n = len(m)
        if n < 126:
            parts.append(_FRAME_SHORT[n])
        elif n < 65536:
            parts.append(_HEAD_16.pack(0x81, 126, n))
        else:
            parts.append(_HEAD_64.pack(0x81, 127, n))
        parts.append(m)
    return b"".join(parts)


_FRAME_SHORT = [bytes((0x81, n)) for n in range(126)]
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class Tokens:
    """Accepted tokens: given, from a file re-read when it changes, or generated into DIR/.serve-token.

    Every token has at least MIN_TOKEN_LENGTH characters: a shorter --token or EVLOG_TOKEN is a usage
    error, a shorter line of --token-file an error at start-up and, when the file is rewritten later, a
    line that is skipped with a warning (the other lines take effect, so revoking still works). A token
    shorter than GOOD_TOKEN_LENGTH is accepted with a warning.
    """

    def __init__(self, log_dir: Path, token: str | None, token_file: Path | None) -> None:
        self.file = token_file
        self.file_sig: tuple[int, int, int] | None = None
        self.tokens: list[bytes] = []
        self.where = ""
        if token_file is not None:
            self._reload()
            if not self.tokens:
                raise EvlogError(f"--token-file {token_file}: holds no token")
            self.where = f"tokens from {token_file} (re-read when it changes)"
        elif token:
            from_env = token == os.environ.get("EVLOG_TOKEN")
            source = "EVLOG_TOKEN" if from_env else "--token"
            self.tokens = [check_token(token, source).encode()]
            weak = weak_token_warning(token, source)
            if weak:
                diag.warning(weak)
            self.where = "EVLOG_TOKEN" if from_env else "the given token"
        else:
            path = log_dir / ".serve-token"
            self.tokens = [_stored_token(path).encode()]
            self.where = f"a token stored in {path} (mode 0600)"

    def _reload(self) -> None:
        assert self.file is not None
        first = self.file_sig is None
        try:
            st = os.stat(self.file)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            if sig == self.file_sig:
                return
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            if first:
                why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise EvlogError(f"--token-file {self.file}: {why}") from None
            return  # keep the tokens we had while the file is being replaced
        tokens = []
        for n, line in enumerate(text.splitlines(), 1):
            candidate = line.strip()
            if not candidate:
                continue
            if len(candidate) < MIN_TOKEN_LENGTH:
                problem = f"--token-file {self.file}: line {n}: a token must be at least {MIN_TOKEN_LENGTH} characters"
                if first:
                    raise EvlogError(problem)
                diag.warning(problem + "; that line is ignored")
                continue
            weak = weak_token_warning(candidate, f"--token-file {self.file}: line {n}") if first else None
            if weak:
                diag.warning(weak)
            tokens.append(candidate.encode())
        if first and st.st_mode & 0o077:
            diag.warning(f"--token-file {self.file} is open to group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}): consider `chmod 600 {self.file}`")
        self.tokens = tokens
        self.file_sig = sig

    def accepts(self, candidate: str | None) -> bool:
        if self.file is not None:
            self._reload()
        if not candidate:
            return False
        given = candidate.encode()
        ok = False
        for t in self.tokens:  # every token is compared: the time does not tell which one matched
            ok |= hmac.compare_digest(given, t)
        return ok


def _stored_token(path: Path) -> str:
    """The token in DIR/.serve-token, made (mode 0600, never through a symbolic link) when there is none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # also a symbolic link, dangling or not: read_stored_token says so
        stored = read_stored_token(path)
        if stored is None:
            raise EvlogError(f"{path} vanished while it was read: try again") from None
        return stored
    except OSError as e:
        raise EvlogError(f"cannot create {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


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

    def __init__(self, log: Log, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self.log, self.loop, self.metrics = log, loop, metrics
        self.clients: set[_Client] = set()
        self.next_offset = next_offset(log)
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
        from evlog.query.follow import Follower

        follower = Follower(self.log, self.next_offset)  # the loop has published everything before it
        try:
            frames = follower.poll()  # raises at once while the damage that stopped the last try is there
        except BaseException:
            follower.close()
            raise
        self.following = True
        if self.problem is not None:
            self.loop.call_soon_threadsafe(self._recovered)
        for batch in self._steps(frames):
            if not self._hand_over(batch):
                return
        for frames in follower.follow(lambda: KeyboardInterrupt(), stop=self.stop):
            for batch in self._steps(frames):
                if not self._hand_over(batch):
                    return

    def _failed(self, problem: str) -> None:
        if self.problem is None:  # logged once per outage, however often it is tried again
            diag.error(problem + " (trying again; /health reports it until following works)")
        self.problem = problem
        self.failures += 1

    def _recovered(self) -> None:
        if self.problem is not None:
            diag.info(f"following the log again from offset {self.next_offset}")
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


@dataclass
class _Admission:
    """A /stream request that passed every check: what it asked for and the offset its stream starts at."""

    query: StreamQuery
    start: int = 0


class StreamServer:
    def __init__(self, log: Log, tokens: Tokens, origins: list[str], max_clients: int | None) -> None:
        self.log, self.tokens, self.origins, self.max_clients = log, tokens, origins, max_clients
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
        diag.info(f"{peer} GET {redact(request.path)} {status}", client=peer, path=redact(request.path),
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
            diag.error(f"cannot start a stream: {e}")
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
            diag.error(f"stream to {ws.remote_address[0] if ws.remote_address else '?'} failed: {e}")
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
                    try:  # the close frame waits behind what the peer never read: don't wait forever
                        await asyncio.wait_for(client.ws.close(TRY_AGAIN_LATER, reason), CLOSE_GRACE)
                    except TimeoutError:
                        client.ws.transport.abort()
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
            first = next(iter(read_frames(self.log, Range(since_us=q.since_us, last=q.last))), None)
            return self.log.codec.offset(first) if first is not None else end
        return end

    def _read_chunk(self, start: int) -> list[Entry]:
        """Entries from disk from `start` on, a step at most (RING_STEP events, STEP_BYTES bytes, at least one);
        at a damaged record, those before it (the next read raises)."""
        codec = self.log.codec
        out = []
        size = 0
        try:
            for frame in read_frames(self.log, Range(start=start)):
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
            count = self._write(client, batch)
            batch = []  # what is written is the transport's now: hold no second copy while waiting
            if count:
                await ws.drain()
                self.metrics.events_sent += count
            client.progress_at = time.monotonic()

    def _write(self, client: _Client, batch: list[Entry]) -> int:
        """Write one text message per matching event of `batch`, framed together; returns how many.

        A batch is a step (STEP_BYTES, or one bigger event), and the stream waits for the transport's
        buffer to drain before the next: a client that does not read holds at most one step in it.
        """
        match, ws = client.match, client.ws
        as_json = client.q.format == "json"
        messages = []
        for offset, frame, json_text in batch:
            if offset < client.next_offset:
                continue
            client.next_offset = offset + 1  # all of these are written before any close frame
            if match is None or match(frame):
                messages.append(json_text if as_json else self._cloudevent(frame))
        if messages:
            if ws.protocol.state is not State.OPEN:
                raise ConnectionClosed(ws.protocol.close_rcvd, ws.protocol.close_sent)
            # One write of ready-made frames (the send context websockets documents for writing several
            # frames at once). Framing here is the plain RFC 6455 text frame a server sends (unmasked,
            # final, no extension: compression is off), which websockets would build one object at a time.
            ws.transport.write(text_frames(messages))
        return len(messages)

    def _cloudevent(self, frame: bytes) -> bytes:
        import msgspec

        from evlog.ingest.event import cloudevent

        return msgspec.json.encode(cloudevent(self.log.codec.record(frame)))


def run(log: Log, *, host: str, port: int, tokens: Tokens, origins: list[str], max_clients: int | None,
        tls_cert: Path | None, tls_key: Path | None) -> int:
    """Serve until SIGTERM/SIGINT; returns the signal number that stopped it."""
    return asyncio.run(_serve(log, host, port, tokens, origins, max_clients, tls_cert, tls_key))


async def _serve(log: Log, host: str, port: int, tokens: Tokens, origins: list[str], max_clients: int | None,
                 tls_cert: Path | None, tls_key: Path | None) -> int:
    loop = asyncio.get_running_loop()
    app = StreamServer(log, tokens, origins, max_clients)
    app.hub = Hub(log, loop, app.metrics)
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
    ws_logger.addHandler(_DiagHandler())
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
                             ssl=ssl_context, server_header="evlog", logger=ws_logger)
    except OSError as e:
        raise EvlogError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    app.hub.start()
    sock = next(iter(server.sockets))
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"{'wss' if ssl_context else 'ws'}://{shown}:{bound_port}/stream"
    diag.info(f"serving {url}", url=url)
    diag.info(f"clients authenticate with {tokens.where}")
    await stopped.wait()
    app.hub.stop.set()
    app.stopping = True
    server.close(close_connections=True)  # open connections are closed with 1001 (going away)
    await server.wait_closed()
    return received[0] if received else signal.SIGTERM


class _DiagHandler(logging.Handler):
    """websockets' own errors, as evlog diagnostics: one line, no traceback, no token."""

    def emit(self, record: logging.LogRecord) -> None:
        diag.error(redact(record.getMessage()))
