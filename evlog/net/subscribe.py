"""`evlog subscribe URL`: a client of `evlog serve`; the command line prints what it receives like `read`.

It asks the server for JSON records (the command line renders them in any format).
On a lost connection (or a 1013 "too slow" close) it reconnects with
exponential backoff and resumes after the last offset it printed, or, when
it has printed nothing yet, where its first stream began (the server says
where in the X-Evlog-Start-Offset header of its 101 response), so nothing
appended in between is lost. The backoff starts again only after a
connection that was healthy (it delivered an event or stayed up for
HEALTHY_SECONDS): a server that accepts and then fails at once is retried
ever more slowly. Messages show the URL with any token redacted.
"""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import msgspec

from evlog.errors import EvlogError, UsageError
from evlog.net.auth import read_stored_token, redact
from evlog.query.filters import Filter
from evlog.report import Report, quiet
from evlog.store.framing import Record

_decode_record = msgspec.json.Decoder(Record).decode
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
HEALTHY_SECONDS = 5.0  # a connection that stayed up this long (or delivered an event) resets the backoff
START_HEADER = "X-Evlog-Start-Offset"


def find_token(token: str | None, env_token: str | None, log_dir: Path | None) -> str:
    """--token, else EVLOG_TOKEN, else the local log's .serve-token (read under the rules serve keeps)."""
    if token:
        return token
    if env_token:
        return env_token
    if log_dir is None:
        raise UsageError("no token: give --token or set EVLOG_TOKEN")
    stored = read_stored_token(log_dir / ".serve-token")
    if stored:
        return stored
    raise UsageError(f"no token: give --token, set EVLOG_TOKEN, or run next to a log with {log_dir}/.serve-token")


def stream_url(url: str, start: str | None, flt: Filter) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise UsageError(f"not a WebSocket URL: {url!r} (use ws://HOST:PORT/stream)")
    params: list[tuple[str, str]] = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query)
                                     if k not in ("from", "format")]
    if start is not None:
        params.append(("from", start))
    params += [("type", t) for t in flt.types]
    for name in ("key", "subject", "source", "where"):
        value = getattr(flt, name)
        if value is not None:
            params.append((name, value))
    params.append(("format", "json"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(params)))


def subscribe(url: str, token: str, start: str | None, flt: Filter, reconnect: bool,
              emit: Callable[[str, Record], None], report: Report = quiet) -> int:
    """Hand each event the server sends to `emit` (its JSON text and the record), until stopped; returns an
    exit code for a connection that ended."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
    from websockets.sync.client import connect

    if start is not None and start not in ("beginning", "end") and _start_offset(start) is None:
        raise UsageError(f"--from {start!r}: use an offset (ASCII digits, at most 2^63-1), beginning or end")
    shown = redact(url)
    next_offset: int | None = None  # where to resume: after the last event printed, or where the stream began
    delay = BACKOFF_START
    while True:
        target = stream_url(url, str(next_offset) if next_offset is not None else start, flt)
        connected_at: float | None = None
        delivered = False
        try:
            with connect(target, additional_headers={"Authorization": f"Bearer {token}"},
                         open_timeout=10, max_size=None, compression=None, proxy=None) as ws:
                connected_at = time.monotonic()
                report("debug", f"connected to {shown}")
                if next_offset is None and ws.response is not None:
                    next_offset = _start_offset(ws.response.headers.get(START_HEADER))
                while True:
                    try:
                        message = ws.recv(timeout=1.0)
                    except TimeoutError:
                        continue
                    text = message if isinstance(message, str) else message.decode()
                    try:
                        rec = _decode_record(text)
                    except msgspec.MsgspecError as e:
                        raise EvlogError(f"{shown}: the server sent something that is not a record: {e}") from None
                    emit(text, rec)
                    delivered = True
                    next_offset = rec.offset + 1
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
            if status in (401, 403, 400, 404):
                raise EvlogError(f"{shown}: HTTP {status}: {_hide(body, url, target) or 'refused'}") from None
            reason = f"HTTP {status}"
        except InvalidURI as e:
            raise UsageError(f"bad URL: {_hide(str(e), url, target)}") from None
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            reason = f"connection closed ({code}{': ' + e.rcvd.reason if e.rcvd and e.rcvd.reason else ''})"
            if not reconnect:
                report("info", reason)
                return 0 if code in (1000, 1001) else 1
        except (OSError, TimeoutError) as e:
            reason = f"cannot connect: {_hide(str(e), url, target)}"
        if not reconnect:
            raise EvlogError(f"{shown}: {reason}")
        if delivered or (connected_at is not None and time.monotonic() - connected_at >= HEALTHY_SECONDS):
            delay = BACKOFF_START  # that connection worked: this is a new failure, not the same one again
        report("warning", f"{reason}; reconnecting in {delay:.1f}s" +
               (f", resuming at offset {next_offset}" if next_offset is not None else ""))
        time.sleep(delay * (0.5 + random.random() / 2))
        delay = min(BACKOFF_MAX, delay * 2)


def _start_offset(value: str | None) -> int | None:
    """An offset written in ASCII digits that fits 63 bits (--from, or the server's X-Evlog-Start-Offset)."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) >= 1 << 63:
        return None
    return int(value)


def _hide(text: str, *urls: str) -> str:
    """`text` with every URL given in it redacted (error messages may quote the URL, token and all)."""
    for u in urls:
        text = text.replace(u, redact(u))
    return text
