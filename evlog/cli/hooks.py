"""`hooks`: the hook registry."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from evlog.cli.basics import log_of, rows_out, write_out
from evlog.cli.diag import diag
from evlog.cli.options import (
    BatchOpt,
    CommandArg,
    KeyOpt,
    RetriesOpt,
    SourceOpt,
    SubjectOpt,
    TimeoutOpt,
    TypeOpt,
    WhereOpt,
    duration,
    handler_argv,
    make_filter,
)
from evlog.consumers.state import HOOKS_ARE_LOCAL

app = typer.Typer(
    add_completion=False,
    help="The hook registry (hooks.toml): handlers that evlog run feeds.\n\n"
    "Example: evlog hooks add audit --type 'user.>' -- ./audit.sh",
    no_args_is_help=True,
)


@app.command("add")
def hooks_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-64 of A-Z a-z 0-9 _ -.")],
    command: CommandArg = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = "30s",
    batch: BatchOpt = 1,
    from_start: Annotated[bool, typer.Option("--from-start", help="Deliver the existing events too.")] = False,
) -> None:
    """Register a handler in hooks.toml; it gets new events only unless --from-start.

    Example: evlog hooks add audit --type 'user.>' -- ./audit.sh
    """
    from evlog.consumers import admin as consumers
    from evlog.consumers.checkpoints import check_name

    check_name(name, "hook")
    argv = handler_argv(command)
    duration("--timeout", timeout, positive=True)
    make_filter(type_, key, subject, source, where)
    warnings = consumers.add_hook(
        log_of(ctx, HOOKS_ARE_LOCAL),
        name,
        argv,
        types=list(type_ or []),
        key=key,
        subject=subject,
        source=source,
        where=where,
        retries=retries,
        timeout=timeout,
        batch=batch,
        from_start=from_start,
    )
    for warning in warnings:
        diag.warning(warning, hook=name)


@app.command("list")
def hooks_list(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON array of hooks.")] = False,
) -> None:
    """List hooks: name, filters, command, position, lag, dead letters, paused (a table on a terminal, JSON
    Lines in a pipe).

    Example: evlog hooks list --json
    """
    from evlog.cli.pretty import rows_table
    from evlog.consumers import admin as consumers

    def table(rows: list[dict[str, Any]]) -> None:
        rows_table([_hook_cells(r) for r in rows],
                   ("name", "state", "filters", "position", "lag", "dead letters", "command"))

    rows_out(consumers.hook_rows(log_of(ctx, HOOKS_ARE_LOCAL)), json_, table, "hooks")


def _hook_cells(r: dict[str, Any]) -> dict[str, Any]:
    filters = " ".join(f"--{k.rstrip('s')} {shlex.quote(v)}" if isinstance(v, str) else
                       " ".join(f"--type {shlex.quote(t)}" for t in v) for k, v in r["filters"].items())
    return {"name": r["name"], "state": "paused" if r["paused"] else "active", "filters": filters or "all events",
            "position": r["position"], "lag": r["lag"], "dead letters": r["dead_letters"],
            "command": shlex.join(r["command"])}


@app.command("show")
def hooks_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Print one hook as JSON.

    Example: evlog hooks show audit
    """
    import msgspec

    from evlog.consumers import admin as consumers

    write_out(msgspec.json.encode(consumers.hook_row(log_of(ctx, HOOKS_ARE_LOCAL), name)) + b"\n")


@app.command("remove")
def hooks_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Remove a hook and its checkpoint.

    Example: evlog hooks remove audit
    """
    from evlog.consumers import admin as consumers

    consumers.remove_hook(log_of(ctx, HOOKS_ARE_LOCAL), name)


@app.command("pause")
def hooks_pause(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Pause a hook: `evlog run` skips it; its checkpoint stays.

    Example: evlog hooks pause audit
    """
    from evlog.consumers import admin as consumers

    consumers.set_paused(log_of(ctx, HOOKS_ARE_LOCAL), name, True)


@app.command("resume")
def hooks_resume(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Resume a paused hook.

    Example: evlog hooks resume audit
    """
    from evlog.consumers import admin as consumers

    consumers.set_paused(log_of(ctx, HOOKS_ARE_LOCAL), name, False)
