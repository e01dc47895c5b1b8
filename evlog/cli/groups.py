"""`groups`: consumer checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from evlog.cli.basics import log_of, parse_arg, rows_out
from evlog.cli.diag import diag
from evlog.errors import UsageError

app = typer.Typer(
    add_completion=False,
    help="Consumer groups: durable checkpoints of replays and hooks.\n\nExample: evlog groups list --json",
    no_args_is_help=True,
)


@app.command("list")
def groups_list(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON array of {name, position, lag}.")] = False,
) -> None:
    """Show each group's position (the next offset it will be given) and lag: a table on a terminal, JSON
    Lines in a pipe.

    Example: evlog groups list --json
    """

    from evlog.cli.pretty import rows_table
    from evlog.consumers.admin import group_rows

    rows_out(group_rows(log_of(ctx)), json_, lambda rows: rows_table(rows, ("name", "position", "lag")), "groups")


@app.command("reset")
def groups_reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group.")],
    to: Annotated[int | None, typer.Option("--to", min=0, metavar="OFFSET", help="Move to this offset.")] = None,
    to_time: Annotated[
        str | None, typer.Option("--to-time", metavar="TIME", help="Move to the first event at or after TIME.")
    ] = None,
    to_end: Annotated[bool, typer.Option("--to-end", help="Move past the last event.")] = False,
    to_start: Annotated[bool, typer.Option("--to-start", help="Move to the first event.")] = False,
) -> None:
    """Move a group's checkpoint.

    Example: evlog groups reset mailer --to-time 2026-11-27T08:00:00Z
    """
    from evlog.consumers import admin as consumers
    from evlog.units import parse_time_us

    if sum((to is not None, to_time is not None, to_end, to_start)) != 1:
        raise UsageError("give exactly one of --to, --to-time, --to-end, --to-start")
    position = consumers.reset_group(
        log_of(ctx),
        name,
        to=to,
        to_time_us=parse_arg("--to-time", parse_time_us, to_time),
        to_end=to_end,
        to_start=to_start,
    )
    diag.info(f"group {name} now at {position}")


@app.command("delete")
def groups_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The group.")]) -> None:
    """Remove a group's checkpoint (a later replay with it starts afresh).

    Example: evlog groups delete mailer
    """
    from evlog.consumers import admin as consumers

    consumers.delete_group(log_of(ctx), name)
