"""`replay` and `run`: deliver events to handler commands."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from evlog.cli import signals as stop
from evlog.cli.basics import log_of, parse_arg
from evlog.cli.diag import diag
from evlog.cli.options import (
    BatchOpt,
    CommandArg,
    FromOpt,
    KeyOpt,
    LastOpt,
    OnFailure,
    RetriesOpt,
    SinceOpt,
    SourceOpt,
    SubjectOpt,
    TimeoutOpt,
    ToOpt,
    TypeOpt,
    UntilOpt,
    WhereOpt,
    duration,
    env_pairs,
    handler_argv,
    make_filter,
    make_range,
    summary_out,
)
from evlog.errors import EvlogError, ExitCode

app = typer.Typer(add_completion=False)


@app.command()
def replay(
    ctx: typer.Context,
    command: CommandArg = None,
    from_: FromOpt = None,
    since: SinceOpt = None,
    last: LastOpt = None,
    to: ToOpt = None,
    until: UntilOpt = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    group: Annotated[
        str | None, typer.Option("--group", metavar="NAME", help="Keep a durable checkpoint under this name.")
    ] = None,
    retries: RetriesOpt = 3,
    backoff: Annotated[
        str, typer.Option("--backoff", metavar="DURATION", help="First retry delay (doubles, with jitter).")
    ] = "0.5s",
    max_backoff: Annotated[str, typer.Option("--max-backoff", metavar="DURATION", help="Longest retry delay.")] = "30s",
    timeout: TimeoutOpt = "30s",
    batch: BatchOpt = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", min=1, help="Handlers running at once.")
    ] = 1,
    on_failure: Annotated[
        OnFailure, typer.Option("--on-failure", help="After the last retry.")
    ] = OnFailure.dead_letter,
    clean_env: Annotated[
        bool, typer.Option("--clean-env", help="Pass only PATH, HOME, LANG, LC_*, TZ, EVLOG_*.")
    ] = False,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", metavar="NAME=VALUE", help="Add NAME=VALUE to the handler's environment."),
    ] = None,
    max_memory: Annotated[
        str | None, typer.Option("--max-memory", metavar="SIZE", help="Cap the handler's address space.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep consuming new events.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what each handler call would get on stdin (with --json, the summary alone); "
                          "run nothing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Run a handler command for each event (or batch), with retries and a dead-letter file.

    Example: evlog replay --group mailer --type 'order.*' --retries 5 -- ./send-mail.sh
    """
    from evlog.consumers import consumer as delivery
    from evlog.units import parse_size

    argv = handler_argv(command)
    if group is not None:
        from evlog.consumers.checkpoints import check_name

        check_name(group)
    options = delivery.Options(
        command=argv,
        retries=retries,
        backoff=duration("--backoff", backoff),
        max_backoff=duration("--max-backoff", max_backoff),
        timeout=duration("--timeout", timeout, positive=True),
        batch=batch,
        concurrency=concurrency,
        on_failure=on_failure.value,
        clean_env=clean_env,
        env=env_pairs(env),
        max_memory=parse_arg("--max-memory", parse_size, max_memory),
        dry_run=dry_run,
        list_dry_run=not json_,
    )
    rng = make_range(from_, since, last, to, until)
    flt = make_filter(type_, key, subject, source, where)
    log = log_of(ctx)
    from evlog.cli.progress import consumer_progress

    consumer = _consumer(log, options, flt, group=group, rng=rng, follow=follow, report=diag.emit)
    with consumer_progress("replay", consumer.planned) as progress:
        consumer.progress = progress
        try:
            summary = consumer.run()
        except (KeyboardInterrupt, stop.Terminated):  # the handlers finished and the checkpoint is saved
            diag.info(consumer.summary.text())
            raise
    summary_out(summary, json_)
    if summary.dead_lettered:
        raise typer.Exit(ExitCode.PARTIAL)


def _consumer(log: Any, *args: Any, **kwargs: Any) -> Any:
    """A replay's consumer: on a NATS log, a group is the stream's durable consumer (evlog.consumers.nats)."""
    if log.kind == "nats" and kwargs.get("group") is not None:
        from evlog.consumers.nats import NatsGroupConsumer

        return NatsGroupConsumer(log, *args, **kwargs)
    from evlog.consumers.consumer import Consumer

    return Consumer(log, *args, **kwargs)


@app.command("run")
def run_hooks(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(metavar="[NAME]...", help="Only these hooks.", show_default=False)
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain the backlog and exit (for cron).")] = False,
) -> None:
    """Deliver events to every active hook (or the named ones), each an independent consumer.

    Example: evlog run --once
    """
    from evlog.consumers import admin as consumers
    from evlog.consumers.state import HOOKS_ARE_LOCAL

    summaries, errors = consumers.run_hooks(log_of(ctx, HOOKS_ARE_LOCAL), list(names or []), follow=not once,
                                            report=diag.emit)
    if not summaries and not errors:
        diag.info("no active hooks to run")
    for hook, err in errors:
        diag.error(f"hook {hook}: {err}")
    if errors:  # the first hook's reason decides, as if it had run alone (a corrupt record: 5)
        raise typer.Exit(errors[0][1].exit_code if isinstance(errors[0][1], EvlogError) else ExitCode.ERROR)
    if any(s.dead_lettered for s in summaries):
        raise typer.Exit(ExitCode.PARTIAL)
