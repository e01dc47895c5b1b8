"""`read` and `tail`: select frames, render them, write them to stdout, follow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from evlog.query.filters import Filter
from evlog.store.log import Log
from evlog.store.reader import Reader, last_frames

FLUSH_BYTES = 1 << 16

Select = Callable[[list[bytes]], list[bytes]]
RenderMany = Callable[[list[bytes]], bytes]


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


def _render(fmt: str, log: Log) -> RenderMany:
    if fmt == "pretty":
        from evlog.cli.pretty import PrettyRenderer

        one = PrettyRenderer(log.codec).render
        return lambda frames: b"".join(map(one, frames))
    from evlog.cli.render import renderer_many

    return renderer_many(fmt, log.codec)


def run(log: Log, q: Query, fmt: str) -> None:
    select = q.filter.compile_chunk(log.codec)
    render = _render(fmt, log)
    out = sys.stdout.buffer
    remaining = q.limit
    if remaining == 0:
        return
    try:
        if q.tail is not None:
            match = q.filter.compile(log.codec)
            frames, next_offset = last_frames(log, q.tail, match)
            out.write(render(frames))
        else:
            reader = Reader(log)
            chunks = reader.chunks(start=q.start, since_us=q.since_us, last=q.last, to=q.to, until_us=q.until_us)
            remaining = _emit(chunks, select, render, out, remaining)
            if remaining == 0 or q.to is not None or q.until_us is not None:
                return
            next_offset = reader.next_offset
            if q.start is not None:
                next_offset = max(next_offset, q.start)
    finally:
        out.flush()
    if q.follow:
        _follow(log, next_offset, select, render, remaining)


def _emit(chunks: Iterable[list[bytes]], select: Select | None, render: RenderMany, out: object,
          remaining: int | None, flush: bool = False) -> int | None:
    write = out.write  # type: ignore[attr-defined]
    for chunk in chunks:
        if select is not None:
            chunk = select(chunk)
        if remaining is not None:
            chunk = chunk[:remaining]
            remaining -= len(chunk)
        if chunk:
            write(render(chunk))
            if flush:
                out.flush()  # type: ignore[attr-defined]
        if remaining == 0:
            break
    return remaining


def _follow(log: Log, next_offset: int, select: Select | None, render: RenderMany, remaining: int | None) -> None:
    from evlog.cli.signals import interrupted
    from evlog.query.follow import Follower

    follower = Follower(log, next_offset)
    out = sys.stdout.buffer
    for frames in follower.follow(interrupted):
        remaining = _emit([frames], select, render, out, remaining, flush=True)
        if remaining == 0:
            return
