"""`read` and `tail`: select records, render them, write them to stdout, follow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Annotated

import typer

from evlog.cli.basics import State, state
from evlog.cli.options import (
    FollowOpt,
    FormatOpt,
    FromOpt,
    KeyOpt,
    LastOpt,
    SinceOpt,
    SourceOpt,
    SubjectOpt,
    ToOpt,
    TypeOpt,
    UntilOpt,
    WhereOpt,
    make_filter,
    make_range,
    out_format,
)
from evlog.errors import UndecodableRecord
from evlog.query.filters import Filter
from evlog.store.backend import EventLog
from evlog.store.reader import EVERYTHING, Range

app = typer.Typer(add_completion=False)


@app.command()
def read(
    ctx: typer.Context,
    from_: FromOpt = None,
    since: SinceOpt = None,
    last: LastOpt = None,
    to: ToOpt = None,
    until: UntilOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, metavar="N", help="Stop after N matching events.")
    ] = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    format: FormatOpt = None,
    follow: FollowOpt = False,
) -> None:
    """Print events in offset order (the whole log unless a range is given; one of --from/--since/--last).

    Example: evlog read --since 2h --type 'order.>' --where 'data.total > 100'
    """
    rng = make_range(from_, since, last, to, until)
    flt = make_filter(type_, key, subject, source, where)
    _run(state(ctx), rng, flt, out_format(format), limit=limit, follow=follow)


@app.command()
def tail(
    ctx: typer.Context,
    n: Annotated[
        int, typer.Option("-n", "--lines", metavar="N", min=0, help="How many of the last matching events.")
    ] = 10,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    format: FormatOpt = None,
    follow: FollowOpt = False,
) -> None:
    """Print the last N matching events, oldest first; -f keeps following.

    Example: evlog tail -n 20 -f --type 'payment.*'
    """
    flt = make_filter(type_, key, subject, source, where)
    _run(state(ctx), EVERYTHING, flt, out_format(format), tail=n, follow=follow)


# -- selecting, rendering, following -------------------------------------------------------------

Select = Callable[[list[bytes]], list[bytes]]
RenderMany = Callable[[list[bytes]], bytes]


def _render(fmt: str, log: EventLog) -> RenderMany:
    if fmt == "pretty":
        from evlog.cli.pretty import PrettyRenderer

        one = PrettyRenderer(log.codec).render
        return lambda frames: b"".join(map(one, frames))
    from evlog.cli.render import renderer_many

    return renderer_many(fmt, log.codec)


def _run(st: State, rng: Range, flt: Filter, fmt: str, *, limit: int | None = None, tail: int | None = None,
         follow: bool = False) -> None:
    """Print the records of the range (or the last `tail`) that pass the filter, at most `limit`; follow."""
    log = st.event_log()
    try:
        _print(log, rng, flt, fmt, limit=limit, tail=tail, follow=follow)
    finally:
        log.close()


def _print(log: EventLog, rng: Range, flt: Filter, fmt: str, *, limit: int | None, tail: int | None,
           follow: bool) -> None:
    select = flt.compile_chunk(log.codec)
    render = _render(fmt, log)
    out = sys.stdout.buffer
    remaining = limit
    if remaining == 0:
        return
    reader = log.reader(flt.types)  # a NATS server filters the types itself
    try:
        if tail is not None:
            frames, next_offset = reader.tail(tail, flt.compile(log.codec))
            _emit([frames], None, render, out, None)
        else:
            remaining = _emit(reader.chunks(rng), select, render, out, remaining)
            if remaining == 0 or rng.bounded:
                return
            next_offset = reader.next_offset
            if rng.start is not None:
                next_offset = max(next_offset, rng.start)
    finally:
        out.flush()
    if follow:
        _follow(log, next_offset, flt.types, select, render, remaining)


def _emit(chunks: Iterable[list[bytes]], select: Select | None, render: RenderMany, out: object,
          remaining: int | None, flush: bool = False) -> int | None:
    write = out.write  # type: ignore[attr-defined]
    for chunk in chunks:
        try:
            remaining = _emit_chunk(chunk, select, render, write, remaining)
        except UndecodableRecord:
            # A record that cannot be decoded: the records before it are printed, then the error stops
            # the command (exit 5), unless the limit is reached first.
            for frame in chunk:
                remaining = _emit_chunk([frame], select, render, write, remaining)
                if remaining == 0:
                    break
            else:
                raise
        if flush:
            out.flush()  # type: ignore[attr-defined]
        if remaining == 0:
            break
    return remaining


def _emit_chunk(chunk: list[bytes], select: Select | None, render: RenderMany, write: Callable[[bytes], object],
                remaining: int | None) -> int | None:
    if select is not None:
        chunk = select(chunk)
    if remaining is not None:
        chunk = chunk[:remaining]
        remaining -= len(chunk)
    if chunk:
        write(render(chunk))
    return remaining


def _follow(log: EventLog, next_offset: int, types: list[str], select: Select | None, render: RenderMany,
            remaining: int | None) -> None:
    from evlog.cli.signals import interrupted

    out = sys.stdout.buffer
    for frames in log.follow(next_offset, types, None, interrupted):
        remaining = _emit([frames], select, render, out, remaining, flush=True)
        if remaining == 0:
            return
