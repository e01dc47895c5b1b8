"""`dlq`: the dead-letter file."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from evlog.cli.basics import INVOCATION, log_of, parse_arg, write_out
from evlog.cli.diag import diag
from evlog.cli.options import GroupOpt, HookOpt, KeyOpt, SourceOpt, SubjectOpt, TypeOpt, WhereOpt, duration, make_filter
from evlog.errors import ExitCode, UsageError

app = typer.Typer(
    add_completion=False,
    help="The dead-letter file: inspect, retry, purge.\n\n"
    "dead-letter.jsonl is as trusted as hooks.toml: each entry names the command that `dlq retry` runs and how,"
    " so whoever can write the file chooses what runs.\n\nExample: evlog dlq list --type 'order.*'",
    no_args_is_help=True,
)


@app.command("list")
def dlq_list(
    ctx: typer.Context,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    hook: HookOpt = None,
    group: GroupOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="JSON Lines, one entry per line.")] = False,
) -> None:
    """List dead-letter entries: a table on a terminal, JSON Lines otherwise.

    Example: evlog dlq list --type 'order.*' --json
    """
    from evlog.consumers import admin as consumers

    entries = consumers.dead_letter_entries(
        log_of(ctx), make_filter(type_, key, subject, source, where), hook=hook, group=group
    )
    if json_ or not sys.stdout.isatty():
        import msgspec

        write_out(b"".join(msgspec.json.encode(e) + b"\n" for e in entries))
        return
    from evlog.cli.pretty import dead_letter_table

    dead_letter_table(entries)


@app.command("show")
def dlq_show(ctx: typer.Context, dlq_id: Annotated[int, typer.Argument(help="The entry's dlq_id.")]) -> None:
    """Print one dead-letter entry (JSON when not a terminal).

    Example: evlog dlq show 12
    """
    import msgspec

    from evlog.consumers import admin as consumers

    entry = consumers.dead_letter(log_of(ctx), dlq_id)
    if sys.stdout.isatty():
        write_out(msgspec.json.format(msgspec.json.encode(entry), indent=2) + b"\n")
    else:
        write_out(msgspec.json.encode(entry) + b"\n")


@app.command("count")
def dlq_count(ctx: typer.Context) -> None:
    """Print the number of dead-letter entries.

    Example: evlog dlq count
    """
    from evlog.consumers import admin as consumers

    write_out(b"%d\n" % len(consumers.dead_letter_entries(log_of(ctx), None)))


@app.command("retry")
def dlq_retry(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[DLQ_ID]... [-- COMMAND [ARG]...]",
            help="Entries to retry, then optionally another handler.",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every entry (that matches --hook/--group).")] = False,
    hook: HookOpt = None,
    group: GroupOpt = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Kill the handler's process group after this (default: the failed run's, else 30s).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run entries' handlers again; entries that now succeed are removed, the others stay.

    Each runs as its failed run did: its command (or the one after --), with the run's --clean-env, --env,
    --max-memory and --timeout.

    Example: evlog dlq retry --all --hook mailer
    """
    from evlog.consumers import admin as consumers

    ids, command = _ids_and_command(args)
    if not ids and not all_ and hook is None and group is None:
        raise UsageError("give DLQ_IDs, --all, --hook or --group")
    seconds = None if timeout is None else duration("--timeout", timeout, positive=True)
    report = consumers.retry(log_of(ctx), ids, hook=hook, group=group, command=command, timeout=seconds)
    diag.info(
        f"retried {len(report.succeeded) + len(report.failed)}: {len(report.succeeded)} succeeded, "
        f"{len(report.failed)} still failing"
    )
    if report.failed:
        raise typer.Exit(ExitCode.PARTIAL)


def _ids_and_command(args: list[str] | None) -> tuple[list[int], list[str] | None]:
    """DLQ_IDs before `--`, the COMMAND after it (click keeps `--` out of args, so read argv)."""
    raw = list(args or [])
    argv = INVOCATION
    command: list[str] | None = None
    if "--" in argv:
        after = argv[argv.index("--") + 1 :]
        if after and raw[-len(after) :] == after:
            command = after
            raw = raw[: -len(after)]
    ids = []
    for a in raw:
        if not (a.isascii() and a.isdigit()):
            raise UsageError(f"not a DLQ_ID: {a!r}")
        ids.append(int(a))
    return ids, command


@app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="[DLQ_ID]...", help="Entries to remove.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    before: Annotated[
        str | None, typer.Option("--before", metavar="TIME", help="Remove entries that failed before TIME.")
    ] = None,
) -> None:
    """Remove dead-letter entries.

    Example: evlog dlq purge --before 7d
    """
    from evlog.consumers import admin as consumers
    from evlog.units import parse_time_us

    if not ids and not all_ and before is None:
        raise UsageError("give DLQ_IDs, --all or --before TIME")
    removed = consumers.purge(
        log_of(ctx), list(ids or []), all_=all_, before_us=parse_arg("--before", parse_time_us, before)
    )
    diag.info(f"removed {removed} entries")
