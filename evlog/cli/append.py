"""`append`: one event, a batch, a stream."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from evlog.cli.basics import state, write_out
from evlog.cli.diag import diag
from evlog.errors import ExitCode, UsageError
from evlog.store.reader import Range
from evlog.units import count

app = typer.Typer(add_completion=False)


@app.command()
def append(
    ctx: typer.Context,
    type_: Annotated[
        str | None,
        typer.Argument(
            metavar="TYPE",
            help="The event type, e.g. order.created (required unless --batch or --stream).",
            show_default=False,
        ),
    ] = None,
    fields: Annotated[
        list[str] | None,
        typer.Argument(metavar="[FIELD]...", help="Data items: name=string or name:=json.", show_default=False),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", metavar="JSON|@FILE|-", help="The whole payload as JSON; @FILE reads a file, - reads stdin."
        ),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", metavar="KEY", help="Key: the unit of ordering and compaction.")
    ] = None,
    subject: Annotated[str | None, typer.Option("--subject", metavar="SUBJECT", help="Subject of the event.")] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            envvar="EVLOG_SOURCE",
            show_envvar=True,
            metavar="SOURCE",
            help="Producer, also for --batch/--stream lines that name none (default: evlog).",
        ),
    ] = None,
    id_: Annotated[
        str | None,
        typer.Option("--id", metavar="ID", help="Event id; the same id within dedup_window is appended once."),
    ] = None,
    json_: Annotated[bool, typer.Option(
        "--json", help="Print the record (or the --batch/--stream summary) as JSON.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Append JSON Lines from stdin, all or nothing.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Append JSON Lines from stdin as they arrive.")] = False,
    log_time: Annotated[
        bool,
        typer.Option("--log-time", help="With --batch/--stream: give every event the time it is appended, "
                     "ignoring input times."),
    ] = False,
) -> None:
    """Append one event, or many with --batch / --stream; prints the offset.

    Text must be UTF-8, and data may nest arrays and objects at most 100 levels deep (invalid input: exit 4).
    Input lines of --batch/--stream keep their `time` unless it is earlier than the log's newest time (then
    it is raised to it, and counted) or --log-time is given; a time more than a minute ahead is invalid.

    Example: evlog append order.created sku=A1 count:=3 --key cust-7

    Example: jq -c '.[]' orders.json | evlog append --batch
    """
    from evlog.ingest import append as appending

    st = state(ctx)
    if log_time and not (batch or stream):
        raise UsageError("--log-time applies to --batch and --stream")
    target = st.target(diag.emit)
    try:
        if batch or stream:
            if batch and stream:
                raise UsageError("--batch and --stream cannot be combined")
            if type_ is not None or fields or data is not None or key or subject or id_:
                raise UsageError("--batch/--stream read events from stdin; give no TYPE, FIELD or event options")
            if sys.stdin.isatty():  # else it would wait for input with no word of what it waits for
                diag.info("reading events from the terminal, one JSON object per line; Ctrl-D to end")
            if batch:
                summary = appending.batch(target, sys.stdin.fileno(), source, keep_times=not log_time)
                if json_:
                    write_out(summary.json_line())
                diag.info(summary.text())
                return
            streamed = appending.stream(target, sys.stdin.fileno(), source, keep_times=not log_time)
            if json_:
                write_out(streamed.json_line())
            diag.info(streamed.text())
            if streamed.bad:
                diag.warning(f"{count(streamed.bad, 'invalid line')} skipped")
                raise typer.Exit(ExitCode.PARTIAL)
            return
        if type_ is None:
            raise UsageError("missing TYPE (or use --batch / --stream)")
        payload = appending.payload(fields or [], data)
        log, offset = appending.one(target, type_, payload, key=key, subject=subject, source=source, id_=id_)
        if json_:
            frame = next(iter(log.reader().chunks(Range(start=offset, to=offset))))[0]
            write_out(log.codec.json(frame) + b"\n")
        else:
            write_out(b"%d\n" % offset)
    finally:
        target.close()
