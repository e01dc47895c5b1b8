"""`read` and `tail`: select frames, render them, write them to stdout, follow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from evlog.filters import Filter
from evlog.log import Log

FLUSH_BYTES = 1 << 16


@dataclass
class Query:
    start: int | None = None
    since_us: int | None = None
    last: int | None = None
    to: int | None = None
    until_us: int | None = None
    limit: int | None = None
    tail: int | None = None
    filter: Filter = field(default_factory=Filter)
    follow: bool = False


def _render(fmt: str, log: Log) -> Callable[[bytes], bytes]:
    if fmt == "pretty":
        from evlog.pretty import PrettyRenderer

        return PrettyRenderer(log.codec).render
    from evlog.output import renderer

    return renderer(fmt, log.codec)


class _Out:
    """Buffered binary stdout; flushes on demand and when the buffer fills."""

    def __init__(self) -> None:
        self.stream = sys.stdout.buffer
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.stream.write(b"".join(self.parts))
            self.parts, self.size = [], 0
        self.stream.flush()


def run(log: Log, q: Query, fmt: str) -> None:
    match = q.filter.compile(log.codec)
    render = _render(fmt, log)
    out = _Out()
    remaining = q.limit
    if remaining == 0:
        return
    try:
        if q.tail is not None:
            frames, next_offset = log.tail_with_end(q.tail, match)
            _emit(frames, None, render, out, None)
        else:
            reader = log.reader()
            selected = reader.frames(start=q.start, since_us=q.since_us, last=q.last, to=q.to,
                                     until_us=q.until_us)
            remaining = _emit(selected, match, render, out, remaining)
            if remaining == 0 or q.to is not None or q.until_us is not None:
                return
            next_offset = reader.next_offset
            if q.start is not None:
                next_offset = max(next_offset, q.start)
    finally:
        out.flush()
    if q.follow:
        _follow(log, next_offset, match, render, out, remaining)


def _emit(frames: Iterable[bytes], match: Callable[[bytes], bool] | None, render: Callable[[bytes], bytes],
          out: _Out, remaining: int | None) -> int | None:
    write = out.write
    for frame in frames:
        if match is not None and not match(frame):
            continue
        write(render(frame))
        if remaining is not None:
            remaining -= 1
            if remaining == 0:
                break
    return remaining


def _follow(log: Log, next_offset: int, match: Callable[[bytes], bool] | None,
            render: Callable[[bytes], bytes], out: _Out, remaining: int | None) -> None:
    from evlog.follow import Follower
    from evlog.stop import interrupted

    follower = Follower(log, next_offset)
    for frames in follower.follow(interrupted):
        remaining = _emit(frames, match, render, out, remaining)
        out.flush()
        if remaining == 0:
            return
