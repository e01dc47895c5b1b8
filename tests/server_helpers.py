"""Helpers for the server tests: a running `evlog serve`, plain HTTP requests, WebSocket clients.

- `start_server(spawn, ...)` starts `python -m evlog serve --port 0 ...` in its own session (the
  `spawn` fixture kills it at teardown) and reads its address from the ready line on stderr.
- `Server.get(path)` makes one HTTP request; `Server.metrics()` parses the Prometheus text.
- `Clients` opens WebSocket clients (`websockets.sync.client`) and closes them all at teardown;
  `Clients.stalled()` opens one that stops reading from its socket after the first message.
- `Reader` receives messages on a thread until it has the count it waits for, the connection
  closes, or its deadline passes: a bounded loop that stops by itself.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import DEADLINE, Background, Spawner, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

HOST = "127.0.0.1"
TOKEN = "t0ken-for-tests-Zq8w"
READY_TEXT = re.compile(r"^evlog: serving (ws://127\.0\.0\.1:(\d+)/stream)$", re.M)
# A WebSocket handshake request, for raw HTTP requests to /stream that must not be upgraded.
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def ready_url(stderr: str) -> str | None:
    """The stream address from the ready line: `evlog: serving URL`, or a JSON object with `url`."""
    m = READY_TEXT.search(stderr)
    if m:
        return m.group(1)
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and str(obj.get("msg", "")).startswith("serving "):
                return str(obj["url"])
    return None


@dataclass
class HttpResult:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Server:
    proc: Background
    url: str
    port: int
    token: str | None

    def get(self, path: str, headers: dict[str, str] | None = None) -> HttpResult:
        """One GET request on a fresh connection."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=DEADLINE)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            return HttpResult(resp.status, resp.getheaders(), body)
        finally:
            conn.close()

    def metrics(self, token: str | None = None) -> dict[str, float]:
        """/metrics as {`name` or `name{labels}`: value}; fails unless it answers 200."""
        r = self.get("/metrics", {"Authorization": f"Bearer {token or self.token}"})
        assert r.status == 200, f"/metrics: HTTP {r.status}: {r.body!r}"
        return parse_prometheus(r.body)

    def wait_metric(self, name: str, value: float, timeout: float | None = None) -> None:
        wait_until(lambda: self.metrics().get(name) == value,
                   message=lambda: f"{name} is {self.metrics().get(name)}, expected {value}",
                   **({} if timeout is None else {"timeout": timeout}))

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident memory from /proc/PID/status: now (VmRSS), or the peak so far (VmHWM)."""
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/PID/status")

    def stream_url(self, query: str = "") -> str:
        return self.url + (f"?{query}" if query else "")


def start_server(spawn: Spawner, *args: object, token: str | None = TOKEN,
                 env: dict[str, str] | None = None, port: int = 0) -> Server:
    """`evlog [GLOBAL...] serve --port 0 [--token T] ARGS`, once it says it is serving.

    Global options (`--log-format json`) go in `args` before the literal "serve" when given;
    otherwise "serve" is added in front.
    """
    argv = [str(a) for a in args]
    if "serve" not in argv:
        argv.insert(0, "serve")
    at = argv.index("serve") + 1
    argv[at:at] = ["--port", str(port)] + (["--token", token] if token is not None else [])
    proc = spawn(*argv, env=env)
    wait_until(lambda: ready_url(proc.stderr()) or proc.poll() is not None,
               message=lambda: f"no ready line; stderr: {proc.stderr()!r}")
    url = ready_url(proc.stderr())
    assert url is not None, f"serve exited {proc.poll()} before it was ready: {proc.stderr()!r}"
    port_ = urllib.parse.urlsplit(url).port
    assert port_ is not None
    return Server(proc, url, port_, token)


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition: every sample line is `name{labels} value`, every name has a TYPE."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                         r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (-?[0-9.eE+-]+|NaN|[+-]Inf)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = m.group(1).split("{")[0]
        assert name in typed, f"{name} has no # TYPE line"
        samples[m.group(1)] = float(m.group(2))
    return samples


# -- WebSocket clients -------------------------------------------------------------------------

class Clients:
    """WebSocket clients of a test, all closed at teardown."""

    def __init__(self) -> None:
        self.open: list[ClientConnection] = []
        self.readers: list[Reader] = []

    def connect(self, server: Server, query: str = "", *, token: str | None = None, how: str = "header",
                headers: dict[str, str] | None = None, **kw: Any) -> ClientConnection:
        """A client of `server`'s /stream; the token goes in the Authorization header or the query."""
        secret = token if token is not None else server.token
        extra = dict(headers or {})
        if how == "header":
            extra["Authorization"] = f"Bearer {secret}"
        elif how == "query":
            query = "&".join(p for p in (query, "token=" + urllib.parse.quote(secret or "")) if p)
        kw.setdefault("max_size", None)
        kw.setdefault("open_timeout", DEADLINE)
        kw.setdefault("close_timeout", 2)
        ws = connect(server.stream_url(query), additional_headers=extra, proxy=None, legacy=True,
                     compression=None, **kw)
        self.open.append(ws)
        return ws

    def stalled(self, server: Server, query: str = "") -> ClientConnection:
        """A client that stops reading its socket after one buffered message, with a tiny receive buffer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((HOST, server.port))
        return self.connect(server, query, sock=sock, max_queue=1)

    def reader(self, ws: ClientConnection, expect: int, timeout: float = 60) -> Reader:
        r = Reader(ws, expect, timeout)
        self.readers.append(r)
        return r

    def close(self) -> None:
        for r in self.readers:
            r.stop.set()
        for ws in self.open:
            ws.close_timeout = 0.5  # a client the server is still writing to need not say goodbye politely
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - teardown: the server may already be gone
                pass
        for r in self.readers:
            r.thread.join(DEADLINE)


class Reader:
    """Receives JSON records on a thread: until `expect` messages, a close, or the deadline."""

    def __init__(self, ws: ClientConnection, expect: int, timeout: float) -> None:
        self.ws = ws
        self.expect = expect
        self.deadline = time.monotonic() + timeout
        self.offsets: list[int] = []
        self.closed: ConnectionClosed | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while len(self.offsets) < self.expect and not self.stop.is_set():
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    message = self.ws.recv(timeout=min(left, 0.5))
                except TimeoutError:
                    continue
                self.offsets.append(json.loads(message)["offset"])
        except ConnectionClosed as e:
            self.closed = e
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def wait(self, count: int) -> None:
        """Wait until this reader has `count` messages (fails at the deadline or if it stopped short)."""
        def done() -> bool:
            if len(self.offsets) >= count:
                return True
            if not self.thread.is_alive():
                pytest.fail(f"reader stopped at {len(self.offsets)} of {count} messages: "
                            f"closed={self.closed!r} error={self.error!r}")
            return False
        wait_until(done, timeout=max(1.0, self.deadline - time.monotonic()),
                   message=lambda: f"{len(self.offsets)} of {count} messages")


def receive(ws: ClientConnection, n: int, timeout: float = DEADLINE) -> list[str]:
    """Exactly the next n text messages (fails if one is binary or they do not come in time)."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"received {len(out)} of {n} messages within {timeout}s")
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        assert isinstance(message, str), f"a binary message: {message[:80]!r}"
        out.append(message)
    return out


def receive_until_closed(ws: ClientConnection, timeout: float = DEADLINE) -> tuple[list[str], ConnectionClosed]:
    """Every message until the connection closes, and how it closed."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the connection did not close within {timeout}s ({len(out)} messages)")
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        except ConnectionClosed as e:
            return out, e
        out.append(message if isinstance(message, str) else message.decode())


def offsets(messages: Sequence[str]) -> list[int]:
    return [json.loads(m)["offset"] for m in messages]


def batch_text(events: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)
