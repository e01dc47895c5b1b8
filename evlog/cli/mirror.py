"""`mirror`: copy events between two logs, either backend, keeping ids, times and order."""

from __future__ import annotations

from typing import Annotated

import typer

from evlog.cli.basics import state
from evlog.cli.diag import diag
from evlog.cli.options import KeyOpt, SourceOpt, SubjectOpt, TypeOpt, WhereOpt, make_filter, summary_out

app = typer.Typer(add_completion=False)


@app.command()
def mirror(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(metavar="SRC", help="The log to copy from: a directory or nats://.../STREAM.")],
    dst: Annotated[
        str, typer.Argument(metavar="DST", help="The log to copy into (created when missing): a directory or URL.")
    ],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep copying new events as they arrive.")] = False,
    group: Annotated[
        str | None,
        typer.Option("--group", metavar="NAME",
                     help="Keep the position as the source's group NAME (else resume after DST's newest event)."),
    ] = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Copy events from SRC to DST, keeping their ids, times and order; a rerun resumes where the last stopped.

    Without --group, a run starts after DST's newest event (found in SRC by its id), so a DST that only this
    mirror writes to is its own checkpoint. With --group NAME the position is kept as SRC's group NAME, for a
    DST that others append to as well (an edge forwarder into a shared log). Times follow the rule for times
    on import: kept, unless earlier than DST's newest (then raised to it, and counted).

    Example: evlog mirror ./events nats://10.0.0.5:4222,10.0.0.6:4222/events

    Example: evlog mirror --follow --group edge ~/.local/share/evlog nats://hub:4222/events
    """
    from evlog.cli.progress import mirror_progress
    from evlog.consumers.mirror import Mirror
    from evlog.store.backend import open_log

    st = state(ctx)
    flt = make_filter(type_, key, subject, source, where)
    if _same(src, dst):
        from evlog.errors import UsageError

        raise UsageError("SRC and DST are the same log")
    log = open_log(src, creds=st.nats_creds, timeout=st.nats_timeout)
    ctx.call_on_close(log.close)
    target = st.target(diag.emit, location=dst)
    ctx.call_on_close(target.close)
    with mirror_progress(log) as progress:
        m = Mirror(log, target, flt, group=group, progress=progress)
        summary = None
        try:
            summary = m.run(follow=follow)
        finally:
            if summary is None and m.summary.count:  # interrupted: say what was done
                diag.info(m.summary.text())
    summary_out(summary, json_)


def _same(a: str, b: str) -> bool:
    import os

    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)
