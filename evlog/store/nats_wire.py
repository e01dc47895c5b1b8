"""The NATS protocol spoken directly, for moving many JetStream messages at once.

nats-py hands every message to Python as an object through asyncio futures and
queues: tens of microseconds each, so reading a stream through it stays near
15,000 events/s whatever the server can send. Readers, followers and groups
pull through this instead: one blocking socket, pull requests kept in flight
ahead of the reader, and every received buffer turned into evlog frames in one
pass, a compiled pattern matching each message's protocol line.

Only what pulling needs is here: the handshake (user and password or token
from the URL, a credentials file, TLS when the URL says tls:// or the server
requires it), PING/PONG, one wildcard subscription on a private inbox, PUB,
and the deliveries (`HMSG`/`MSG`). The stream's management (creating streams,
publishing with acknowledgements) stays with nats-py.

A JetStream delivery, as the server sends it:

    HMSG <subject> <sid> $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending> <hlen> <len>\\r\\n
    NATS/1.0\\r\\nNats-Msg-Id: <id>\\r\\n[Evlog-Time: <time>\\r\\n]\\r\\n<payload>\\r\\n

A pull request is answered by up to `batch` deliveries and ends there, or early
with a status message (`NATS/1.0 404` nothing now, `408` expired, `409`
anything else: the consumer was deleted, its leader changed). Requests are
served in the order they were made.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from evlog.units import format_time

_json = msgspec.json.Encoder().encode
_crc32 = zlib.crc32

# A delivery from a JetStream consumer (version 1 acknowledgement subjects, as the server sends them to
# clients of its own account; stream and consumer names hold no dots): subject, sid, reply, stream sequence,
# stored time (ns), pending, header length, total length.
_DELIVERY = re.compile(
    rb"HMSG ([^ ]+) (\d+) (\$JS\.ACK\.[^. ]+\.[^. ]+\.\d+\.(\d+)\.\d+\.(\d+)\.(\d+)) (\d+) (\d+)\r\n"
    # ... and its headers as evlog writes them (anything else takes the general path): the time an import
    # gave, the id (one that is a JSON string as it is)
    rb"(NATS/1\.0\r\n(?:Evlog-Time: ([0-9T:.Z-]{27})\r\n)?Nats-Msg-Id: ([ !#-\[\]-~]*)\r\n"
    rb"(?:Nats-[A-Za-z-]+: [^\r]*\r\n)*\r\n)")  # and the batch's headers of an atomic batch
# Any message: subject, sid, reply (or None), header length (HMSG), total length.
_HMSG = re.compile(rb"HMSG ([^ ]+) (\d+) (?:([^ ]+) )?(\d+) (\d+)\r\n")
_MSG = re.compile(rb"MSG ([^ ]+) (\d+) (?:([^ ]+) )?(\d+)\r\n")
_MSG_ID = re.compile(rb"\r\nNats-Msg-Id:[ \t]*([^\r]*?)[ \t]*\r\n", re.IGNORECASE)
_TIME = re.compile(rb"\r\nEvlog-Time:[ \t]*([^\r]*?)[ \t]*\r\n", re.IGNORECASE)
_PLAIN = re.compile(rb'[ !#-\[\]-~]*')  # printable ASCII without " and \: a JSON string as it is
_STATUS = re.compile(rb"NATS/1\.0 (\d{3})([^\r]*)\r\n")
_CREDS = re.compile(r"-{3,}[^\n]*-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}[^\n]*END")
CONNECT_TIMEOUT = 2.0
RECV = 1 << 20


class WireError(Exception):
    """The connection failed or the server refused something (a one-line reason)."""


class Status(Exception):
    """A status message ending a pull request."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}".strip())
        self.code, self.text = code, text


class Wire:
    """One blocking connection to the first server of `servers` that answers."""

    def __init__(self, servers: Sequence[str], *, creds: str | None, timeout: float) -> None:
        self.timeout = timeout
        self.buf = b""
        self._sending = threading.Lock()  # one thread reads; any may send (acknowledgements)
        reasons = []
        for url in servers:
            try:
                self.sock = self._open(url, creds)
                break
            except (OSError, WireError, ValueError) as e:
                reasons.append(f"{urlsplit(url).hostname}: {_reason(e)}")
        else:
            raise WireError("; ".join(reasons) or "no server")
        self.inbox = b"_INBOX." + secrets.token_hex(11).encode()
        self.send(b"SUB " + self.inbox + b".r.* 1\r\n")  # replies to requests (sid 1)
        self._requests = 0

    def _open(self, url: str, creds: str | None) -> socket.socket:
        u = urlsplit(url)
        host = u.hostname or "127.0.0.1"
        sock = socket.create_connection((host, u.port or 4222), CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            line = self._line()
            if not line.startswith(b"INFO "):
                raise WireError(f"not a NATS server (it said {line[:40]!r})")
            info = json.loads(line[5:])
            if u.scheme == "tls" or info.get("tls_required"):
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
                self.sock = sock
            connect: dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                                       "protocol": 1, "name": "evlog", "lang": "python"}
            if u.username is not None and u.password is not None:
                connect["user"], connect["pass"] = unquote(u.username), unquote(u.password)
            elif u.username:
                connect["auth_token"] = unquote(u.username)
            if creds:
                connect.update(_signed(creds, info.get("nonce", "")))
            self.send(b"CONNECT " + _json(connect) + b"\r\nPING\r\n")
            while True:
                line = self._line()
                if line.startswith(b"-ERR"):
                    raise WireError(line[5:].decode(errors="replace").strip(" '"))
                if line == b"PONG":
                    break
            sock.settimeout(self.timeout)
            return sock
        except BaseException:
            sock.close()
            raise

    def _line(self) -> bytes:
        """The next protocol line (while connecting)."""
        while (end := self.buf.find(b"\r\n")) < 0:
            self._recv()
        line, self.buf = self.buf[:end], self.buf[end + 2:]
        return line

    def _recv(self) -> None:
        data = self.sock.recv(RECV)
        if not data:
            raise WireError("the server closed the connection")
        self.buf = self.buf + data if self.buf else data

    def send(self, data: bytes) -> None:
        with self._sending:
            self.sock.sendall(data)

    def publish(self, subject: str | bytes, payload: bytes, reply: bytes = b"") -> bytes:
        """The PUB command (to send later, or at once with send())."""
        if isinstance(subject, str):
            subject = subject.encode()
        return b"PUB %b %b%d\r\n%b\r\n" % (subject, reply + b" " if reply else b"", len(payload), payload)

    @staticmethod
    def hpublish(subject: str, payload: bytes, headers: dict[str, str], reply: bytes = b"") -> bytes:
        """The HPUB command: a message with headers (values hold no line breaks: see evlog.ingest.event)."""
        block = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        return b"HPUB %b %b%d %d\r\n%b%b\r\n" % (subject.encode(), reply + b" " if reply else b"", len(block),
                                                len(block) + len(payload), block, payload)

    def request(self, subject: str, payload: bytes) -> bytes:
        """Send a request and wait for its reply (nothing else may be in flight); WireError when no
        server answers it."""
        reply = self.reply_subject()
        return self.call(self.publish(subject, payload, reply), reply)

    def reply_subject(self) -> bytes:
        self._requests += 1
        return self.inbox + b".r.%d" % self._requests

    def call(self, data: bytes, reply: bytes) -> bytes:
        """Send `data` (commands, one of which asks for an answer on `reply`) and wait for that answer."""
        self.send(data)
        while True:
            got = _message(self.buf, 0)
            if got is None:
                self._more_or_ping()
                continue
            name, _, _, hdr, start, end = got
            if len(self.buf) < end + 2:
                self._recv()
                continue
            body = self.buf[start + hdr:end]
            headers = self.buf[start:start + hdr]
            self.buf = self.buf[end + 2:]
            if name != reply:
                continue
            if hdr and (s := _STATUS.match(headers)) and not body:
                raise WireError("no responders" if s.group(1) == b"503" else s.group(0).decode().strip())
            return body

    def _more_or_ping(self) -> None:
        """Handle a complete non-message line at the start of the buffer, or read more."""
        end = self.buf.find(b"\r\n")
        if end < 0:
            self._recv()
            return
        line, self.buf = self.buf[:end], self.buf[end + 2:]
        if line == b"PING":
            self.send(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            raise WireError(line[5:].decode(errors="replace").strip(" '"))
        elif line.startswith((b"MSG ", b"HMSG ")):  # a message line the patterns did not take: malformed
            raise WireError(f"cannot read the server's message line {line[:80]!r}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Deliveries:
    """Pull requests for one consumer, kept `depth` deep, and their deliveries turned into evlog frames."""

    def __init__(self, wire: Wire, stream: str, consumer: str, prefix: str, *, batch: int, depth: int,
                 expires_ns: int | None, acks: bool = False) -> None:
        self.wire = wire
        ask = _json({"batch": batch, "expires": expires_ns} if expires_ns else {"batch": batch, "no_wait": True})
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        # Each request in flight has a slot: its own reply subject, subscribed with its own sid (2, 3, ...),
        # since a request's deliveries and its ending status do not always come in the order of the requests.
        self._asks = [wire.publish(subject, ask, wire.inbox + b".p%d" % i) for i in range(depth)]
        wire.send(b"".join(b"SUB %b.p%d %d\r\n" % (wire.inbox, i, i + 2) for i in range(depth)))
        self.batch = batch
        self.due: list[int] = [0] * depth  # deliveries a slot's request still has to bring (0: no request)
        self.skip = len(prefix)
        self.acks = acks           # keep each frame's reply subject (to acknowledge it)
        self.replies: list[bytes] = []
        self.last_seq = 0          # the stream sequence of the last delivery
        self._pending: bytes | int | None = None
        self.ended = 0             # requests that ended early in the last take() (404, 408)
        self.ponged = False        # a PONG came (see settle())
        self._types: dict[bytes, bytes] = {}
        self._second = b""
        self._stamp = b""

    @property
    def pending(self) -> int | None:
        """What the consumer still had to deliver after the last delivery."""
        return None if self._pending is None else int(self._pending)

    def ask(self) -> None:
        """A request in every slot that has none."""
        due = self.due
        if not all(due):
            self.wire.send(b"".join(self._asks[i] for i, d in enumerate(due) if not d))
            self.due = [d or self.batch for d in due]

    def settle(self, seconds: float) -> list[bytes]:
        """Wait (at most `seconds`) until no request is in flight and the server has read everything sent
        before; the reply subjects of the deliveries that came meanwhile (to hand back)."""
        deadline = time.monotonic() + seconds
        self.ponged = False
        self.wire.send(b"PING\r\n")
        while (not self.ponged or not self.idle) and time.monotonic() < deadline:
            self.take()
        came, self.replies = self.replies, []
        return came

    @property
    def idle(self) -> bool:
        """Whether no request is in flight."""
        return not any(self.due)

    def take(self) -> list[bytes]:
        """The frames of the deliveries that arrived next (after one read of the socket). Status messages
        end requests (counted in `ended`); a 409 raises Status. Socket timeouts and errors propagate."""
        wire = self.wire
        wire._recv()
        buf = wire.buf
        frames: list[bytes] = []
        replies = self.replies
        out = frames.append
        match = _DELIVERY.match
        types, skip, crc, acks, due = self._types, self.skip, _crc32, self.acks, self.due
        pos, size = 0, len(buf)
        self.ended = 0
        while pos < size:
            m = match(buf, pos)
            if m is None:
                step = self._other(buf, pos, out)
                if step < 0:
                    break
                pos = step
                continue
            subject, sid, reply, seq, ns, pending, hlen, total, headers, stamp, id_ = m.groups()
            start = m.start(9)
            end = start + int(total)
            if end + 2 > size or len(headers) != int(hlen):
                step = self._other(buf, pos, out)  # not complete yet, or headers this pattern did not see whole
                if step < 0:
                    break
                pos = step
                continue
            if stamp is None:  # the time the server stored it, in ns: 10 digits of seconds, 9 after them
                if ns[:-9] != self._second:  # the date and clock time, formatted once a second
                    self._second = ns[:-9]
                    self._stamp = format_time(int(self._second) * 1_000_000)[:20].encode()
                stamp = self._stamp + ns[-9:-3] + b"Z" if len(ns) == 19 else format_time(int(ns) // 1000).encode()
            type_ = types.get(subject)
            if type_ is None:
                type_ = types[subject] = _json(subject[skip:].decode(errors="replace"))
            sequence = int(seq)
            # the payload object without its braces
            body = b'{"offset":%d,"id":"%b","time":"%b","type":%b,%b' % (sequence - 1, id_, stamp, type_,
                                                                            buf[m.end() + 1:end - 1])
            out(b'%b,"crc32":"%08x"}' % (body, crc(body)))
            pos = end + 2
            # what _delivered() does, inline: this loop runs once per event
            self.last_seq, self._pending = sequence, pending
            if acks:
                replies.append(reply)
            due[int(sid) - 2] -= 1
        wire.buf = buf[pos:]
        return frames

    def _delivered(self, sid: int, reply: bytes, seq: int, pending: int) -> None:
        if self.acks:
            self.replies.append(reply)
        self.last_seq, self._pending = seq, pending
        self._slot_took(sid)

    def _slot_took(self, sid: int, end: bool = False) -> None:
        """A delivery (or, with end, the status that ends its request) for the request of sid's slot."""
        slot = sid - 2
        if 0 <= slot < len(self.due):
            self.due[slot] = 0 if end else max(self.due[slot] - 1, 0)

    def _frame(self, buf: bytes, subject: bytes, seq: int, ns: bytes, start: int, head: int, end: int) -> bytes:
        headers = buf[start - 2:head]  # from the \r\n that ends the protocol line, so each header follows \r\n
        got = _MSG_ID.search(headers)
        id_ = got.group(1) if got else b""
        if not _PLAIN.fullmatch(id_):
            id_ = _json(id_.decode(errors="replace"))[1:-1]
        got = _TIME.search(headers)
        if got:
            stamp = got.group(1)
        else:
            stamp = format_time(int(ns) // 1000).encode()
        type_ = self._types.get(subject)
        if type_ is None:
            type_ = self._types[subject] = _json(subject[self.skip:].decode(errors="replace"))
        payload = buf[head + 1:end - 1]  # the payload object without its braces
        body = b'{"offset":%d,"id":"%b","time":"%b","type":%b,%b' % (seq - 1, id_, stamp, type_, payload)
        return b'%b,"crc32":"%08x"}' % (body, _crc32(body))

    def _other(self, buf: bytes, pos: int, out: Any) -> int:
        """Handle what is at `pos` when the fast pattern did not take it: a status message, a PING, a
        delivery in another form (no headers, a longer acknowledgement subject). The position after it, or
        -1 when it is not complete yet."""
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return -1
        got = _message(buf, pos)
        if got is None:
            line = buf[pos:end]
            if line == b"PING":
                self.wire.send(b"PONG\r\n")
            elif line == b"PONG":
                self.ponged = True
            elif line.startswith(b"-ERR"):
                raise WireError(line[5:].decode(errors="replace").strip(" '"))
            elif line.startswith((b"MSG ", b"HMSG ")):
                raise WireError(f"cannot read the server's message line {line[:80]!r}")
            return end + 2
        subject, sid, reply, hlen, start, stop = got
        if stop + 2 > len(buf):
            return -1
        status = _STATUS.match(buf, start, start + hlen) if hlen else None
        if status is not None and reply is None:
            code = int(status.group(1))
            if code in (404, 408):
                self._slot_took(sid, end=True)
                self.ended += 1
            elif code != 100:  # 100: a heartbeat
                raise Status(code, status.group(2).decode(errors="replace").strip())
        elif reply is not None and reply.startswith(b"$JS.ACK."):
            tokens = reply.split(b".")
            # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>, or with <domain>.<account>
            # after $JS.ACK and a token at the end
            seq, ns, pending = (tokens[5], tokens[7], tokens[8]) if len(tokens) == 9 else (
                tokens[7], tokens[9], tokens[10])
            out(self._frame(buf, subject, int(seq), ns, start, start + hlen, stop))
            self._delivered(sid, reply, int(seq), int(pending))
        return stop + 2


def _message(buf: bytes, pos: int) -> tuple[bytes, int, bytes | None, int, int, int] | None:
    """The message whose protocol line starts at `pos`: (subject, sid, reply or None, header length, where
    its headers start, where its payload ends); None when there is no whole message line there."""
    m = _HMSG.match(buf, pos)
    if m is not None:
        return m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.end(), m.end() + int(m.group(5))
    m = _MSG.match(buf, pos)
    if m is not None:
        return m.group(1), int(m.group(2)), m.group(3), 0, m.end(), m.end() + int(m.group(4))
    return None


def _signed(path: str, nonce: str) -> dict[str, str]:
    """The CONNECT fields of a credentials file: its JWT and the nonce signed with its seed."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise WireError(f"cannot read the credentials file {path}: {e.strerror}") from None
    blocks = _CREDS.findall(text)
    if len(blocks) < 2:
        raise WireError(f"{path} is not a NATS credentials file (a user JWT and an nkey seed)")
    try:
        import nkeys
    except ImportError:
        raise WireError("credentials files need the nkeys package: pip install nkeys") from None
    key = nkeys.from_seed(bytearray(blocks[1].encode()))
    try:
        sig = base64.b64encode(key.sign(nonce.encode())).decode()
    finally:
        key.wipe()
    return {"jwt": blocks[0], "sig": sig}


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(text.split())
