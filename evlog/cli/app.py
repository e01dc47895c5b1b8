"""The command line: parse arguments, make one call into the core, render the result.

`main()` is the one place that maps exceptions to exit codes (SPEC 5).
Heavy modules (rich, watchfiles, the filter language) are imported inside the
commands that use them, so `evlog append` starts fast.
"""

from __future__ import annotations

import enum
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from evlog import __version__
from evlog.cli import signals as stop
from evlog.cli.diag import diag
from evlog.errors import EvlogError, ExitCode, UsageError
from evlog.store.reader import read_frames

HELP = """evlog keeps an append-only event log in a local directory.

Example: evlog append order.created sku=A1 count:=3 --key cust-7

Example: evlog tail -f --type 'order.*'
"""

app = typer.Typer(
    name="evlog",
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    def __init__(self, directory: Path | None, debug: bool) -> None:
        self.explicit_dir = directory
        self.debug = debug

    @property
    def dir(self) -> Path:
        if self.explicit_dir is not None:
            return self.explicit_dir
        from evlog.store.log import default_dir

        return default_dir()

    def log(self):  # noqa: ANN201 - evlog.store.log.Log, imported lazily
        from evlog.store.log import Log

        return Log.open(self.dir)


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class OutFormat(enum.StrEnum):
    pretty = "pretty"
    json = "json"
    cloudevents = "cloudevents"
    data = "data"


class StoreFormat(enum.StrEnum):
    jsonl = "jsonl"
    msgpack = "msgpack"


class FsyncMode(enum.StrEnum):
    always = "always"
    batch = "batch"
    never = "never"


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"evlog {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            "-d",
            envvar="EVLOG_DIR",
            show_envvar=True,
            metavar="PATH",
            help="The log directory (default: $XDG_DATA_HOME/evlog, else ~/.local/share/evlog).",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", envvar="EVLOG_LOG_FORMAT", help="Format of evlog's own diagnostics on stderr."),
    ] = LogFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print more on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    diag.configure(log_format.value, quiet=quiet, verbose=verbose)
    ctx.obj = State(directory, debug)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def _parse(what: str, parse: Any, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


# -- init ----------------------------------------------------------------------------------


@app.command()
def init(
    ctx: typer.Context,
    format: Annotated[StoreFormat, typer.Option("--format", help="Segment format.")] = StoreFormat.jsonl,
    segment_bytes: Annotated[
        str,
        typer.Option(
            "--segment-bytes",
            metavar="SIZE",
            help="Segment size before a new one is started: 64MiB, 512KiB, 1KiB or bytes.",
        ),
    ] = "64MiB",
    fsync: Annotated[FsyncMode, typer.Option("--fsync", help="When appends are synced to disk.")] = FsyncMode.always,
) -> None:
    """Create a log with chosen settings; an existing log is an error (exit 1).

    Example: evlog -d ./events init --format msgpack --segment-bytes 16MiB
    """
    from evlog.settings import MIN_SEGMENT_BYTES, Settings
    from evlog.store.log import Log
    from evlog.units import parse_size

    size = _parse("--segment-bytes", parse_size, segment_bytes)
    if size < MIN_SEGMENT_BYTES:
        raise UsageError(f"--segment-bytes: must be at least {MIN_SEGMENT_BYTES} bytes (1KiB)")
    state = _state(ctx)
    settings = Settings(format=format.value, segment_bytes=size, fsync=fsync.value)
    log = Log.create(state.dir, settings, exist_ok=False)
    diag.info(f"created a {format.value} log at {log.dir}")


# -- append --------------------------------------------------------------------------------


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
    json_: Annotated[bool, typer.Option("--json", help="Print the record (or --batch summary) as JSON.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Append JSON Lines from stdin, all or nothing.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Append JSON Lines from stdin as they arrive.")] = False,
) -> None:
    """Append one event, or many with --batch / --stream; prints the offset.

    Text must be UTF-8, and data may nest arrays and objects at most 100 levels deep (invalid input: exit 4).

    Example: evlog append order.created sku=A1 count:=3 --key cust-7

    Example: jq -c '.[]' orders.json | evlog append --batch
    """
    from evlog.ingest import append as appending

    state = _state(ctx)
    if batch or stream:
        if batch and stream:
            raise UsageError("--batch and --stream cannot be combined")
        if type_ is not None or fields or data is not None or key or subject or id_:
            raise UsageError("--batch/--stream read events from stdin; give no TYPE, FIELD or event options")
        if batch:
            summary = appending.batch(state.dir, sys.stdin.fileno(), source)
            if json_:
                _write_out(summary.json_line())
            diag.info(summary.text())
            return
        bad = appending.stream(state.dir, sys.stdin.fileno(), source)
        if bad:
            raise typer.Exit(ExitCode.PARTIAL)
        return
    if type_ is None:
        raise UsageError("missing TYPE (or use --batch / --stream)")
    payload = appending.payload(fields or [], data)
    log, offset = appending.one(state.dir, type_, payload, key=key, subject=subject, source=source, id_=id_)
    if json_:
        frame = next(iter(read_frames(log, start=offset, to=offset)))
        _write_out(log.codec.json(frame) + b"\n")
    else:
        _write_out(b"%d\n" % offset)


def _rows_out(rows: list[dict[str, Any]], json_: bool, line: Any) -> None:
    """A JSON array with --json, else one text line per row."""
    if json_:
        import msgspec

        _write_out(msgspec.json.encode(rows) + b"\n")
    else:
        sys.stdout.write("".join(line(r) + "\n" for r in rows))


def _write_out(data: bytes | None) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


# -- read / tail ---------------------------------------------------------------------------

FromOpt = Annotated[int | None, typer.Option("--from", min=0, metavar="OFFSET", help="Start at this offset.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="TIME", help="Start at this time (inclusive): RFC 3339, a date, or a duration ago like 15m."
    ),
]
LastOpt = Annotated[
    int | None,
    typer.Option("--last", min=0, metavar="N", help="Start at the N-th last event (counted before filtering)."),
]
ToOpt = Annotated[int | None, typer.Option("--to", min=0, metavar="OFFSET", help="Stop after this offset (inclusive).")]
UntilOpt = Annotated[str | None, typer.Option("--until", metavar="TIME", help="Stop before this time (exclusive).")]
TypeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        metavar="PATTERN",
        help="Type pattern (repeatable; any may match): * is one token, a last > the rest.",
        show_default=False,
    ),
]
KeyOpt = Annotated[str | None, typer.Option("--key", metavar="KEY", help="Only events with this key.")]
SubjectOpt = Annotated[str | None, typer.Option("--subject", metavar="SUBJECT", help="Only events with this subject.")]
SourceOpt = Annotated[str | None, typer.Option("--source", metavar="SOURCE", help="Only events from this source.")]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        metavar="EXPR",
        help="Expression over the record, e.g. 'data.n > 4 and type matches \"^order\\.\"'"
        " (matches takes RE2 syntax: linear time, no backreferences or look-around).",
    ),
]
FormatOpt = Annotated[
    OutFormat | None,
    typer.Option("--format", help="Output format (default: pretty on a terminal, else json).", show_default=False),
]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they arrive.")]


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
    from evlog.cli import read as reading
    from evlog.units import parse_time_us

    if sum(x is not None for x in (from_, since, last)) > 1:
        raise UsageError("give at most one of --from, --since, --last")
    query = reading.Query(
        start=from_,
        since_us=_parse("--since", parse_time_us, since),
        last=last,
        to=to,
        until_us=_parse("--until", parse_time_us, until),
        limit=limit,
        filter=_filter(type_, key, subject, source, where),
        follow=follow,
    )
    reading.run(_state(ctx).log(), query, _format(format))


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
    from evlog.cli import read as reading

    query = reading.Query(tail=n, filter=_filter(type_, key, subject, source, where), follow=follow)
    reading.run(_state(ctx).log(), query, _format(format))


def _utf8(what: str, *values: str | None) -> None:
    """Arguments that are not event content must still be UTF-8 text: a usage error otherwise (exit 2)."""
    from evlog.ingest.event import utf8_problem

    for value in values:
        problem = None if value is None else utf8_problem(what, value)
        if problem:
            raise UsageError(problem)


def _filter(types: list[str] | None, key: str | None, subject: str | None, source: str | None, where: str | None):  # noqa: ANN202 - evlog.query.filters.Filter
    from evlog.query.filters import Filter

    _utf8("--type", *(types or []))
    _utf8("--key", key)
    _utf8("--subject", subject)
    _utf8("--source", source)
    _utf8("--where", where)
    f = Filter(list(types or []), key, subject, source, where)
    from evlog.store.framing import CODECS

    f.compile(CODECS["jsonl"])  # parse now: a bad pattern or expression is a usage error before any output
    return f


def _format(fmt: OutFormat | None) -> str:
    if fmt is not None:
        return fmt.value
    return "pretty" if sys.stdout.isatty() else "json"


# -- replay, groups, hooks, run, dlq ---------------------------------------------------------

CommandArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="-- COMMAND [ARG]...",
        help="The handler: an argument vector, never run through a shell.",
        show_default=False,
    ),
]


TimeoutOpt = Annotated[
    str, typer.Option("--timeout", metavar="DURATION", help="Kill the handler's process group after this.")
]
RetriesOpt = Annotated[int, typer.Option("--retries", metavar="N", min=0, help="Retries after a failure.")]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, metavar="N", help="Up to N records per handler call.")]


def _duration(what: str, text: str, positive: bool = False) -> float:
    from evlog.units import parse_duration

    seconds = float(_parse(what, parse_duration, text))
    if positive and seconds <= 0:
        raise UsageError(f"{what}: must be longer than 0, not {text!r}")
    return seconds


def _handler(command: list[str] | None) -> list[str]:
    if not command:
        raise UsageError("give the handler command after --, e.g. `-- ./handle.sh` or `-- sh -c 'cat >> out'`")
    _utf8("the handler command (kept in hooks.toml and dead-letter entries)", *command)
    return list(command)


def _env_pairs(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        _utf8("--env", pair)
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise UsageError(f"--env {pair!r}: use NAME=VALUE")
        env[name] = value
    return env


def _summary_out(summary: Any, json_: bool) -> None:
    if json_:
        import msgspec

        _write_out(msgspec.json.encode(summary.as_dict()) + b"\n")
    diag.info(summary.text())


class OnFailure(enum.StrEnum):
    dead_letter = "dead-letter"
    stop = "stop"


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be delivered; run nothing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Run a handler command for each event (or batch), with retries and a dead-letter file.

    Example: evlog replay --group mailer --type 'order.*' --retries 5 -- ./send-mail.sh
    """
    from evlog.consumers import consumer as delivery
    from evlog.units import parse_size, parse_time_us

    argv = _handler(command)
    if sum(x is not None for x in (from_, since, last)) > 1:
        raise UsageError("give at most one of --from, --since, --last")
    if group is not None:
        from evlog.consumers.checkpoints import check_name

        check_name(group)
    options = delivery.Options(
        command=argv,
        retries=retries,
        backoff=_duration("--backoff", backoff),
        max_backoff=_duration("--max-backoff", max_backoff),
        timeout=_duration("--timeout", timeout, positive=True),
        batch=batch,
        concurrency=concurrency,
        on_failure=on_failure.value,
        clean_env=clean_env,
        env=_env_pairs(env),
        max_memory=_parse("--max-memory", parse_size, max_memory),
        dry_run=dry_run,
    )
    rng = delivery.Range(
        start=from_,
        since_us=_parse("--since", parse_time_us, since),
        last=last,
        to=to,
        until_us=_parse("--until", parse_time_us, until),
    )
    flt = _filter(type_, key, subject, source, where)
    log = _state(ctx).log()
    from evlog.cli.progress import consumer_progress

    with consumer_progress(log, "replay") as progress:
        consumer = delivery.Consumer(log, options, flt, group=group, rng=rng, follow=follow, progress=progress)
        summary = consumer.run()
    if dry_run:
        diag.info(f"dry run: {summary.events} events would be delivered; nothing was run")
    _summary_out(summary, json_)
    if summary.dead_lettered:
        raise typer.Exit(ExitCode.PARTIAL)


groups_app = typer.Typer(
    help="Consumer groups: durable checkpoints of replays and hooks.\n\nExample: evlog groups list --json",
    no_args_is_help=True,
)
app.add_typer(groups_app, name="groups")


@groups_app.command("list")
def groups_list(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON array of {name, position, lag}.")] = False,
) -> None:
    """Show each group's position (the next offset it will be given) and lag.

    Example: evlog groups list --json
    """

    from evlog.store.info import group_rows

    _rows_out(group_rows(_state(ctx).log()), json_,
              lambda r: f"{r['name']}\tposition {r['position']}\tlag {r['lag']}")


@groups_app.command("reset")
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
        _state(ctx).log(),
        name,
        to=to,
        to_time_us=_parse("--to-time", parse_time_us, to_time),
        to_end=to_end,
        to_start=to_start,
    )
    diag.info(f"group {name} now at {position}")


@groups_app.command("delete")
def groups_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The group.")]) -> None:
    """Remove a group's checkpoint (a later replay with it starts afresh).

    Example: evlog groups delete mailer
    """
    from evlog.consumers import admin as consumers

    consumers.delete_group(_state(ctx).log(), name)


hooks_app = typer.Typer(
    help="The hook registry (hooks.toml): handlers that evlog run feeds.\n\n"
    "Example: evlog hooks add audit --type 'user.>' -- ./audit.sh",
    no_args_is_help=True,
)
app.add_typer(hooks_app, name="hooks")


@hooks_app.command("add")
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
    argv = _handler(command)
    _duration("--timeout", timeout, positive=True)
    _filter(type_, key, subject, source, where)
    consumers.add_hook(
        _state(ctx).log(),
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


@hooks_app.command("list")
def hooks_list(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON array of hooks.")] = False,
) -> None:
    """List hooks: name, filters, command, position, lag, dead letters, paused.

    Example: evlog hooks list --json
    """
    from evlog.consumers import admin as consumers

    _rows_out(consumers.hook_rows(_state(ctx).log()), json_, _hook_line)


def _hook_line(r: dict[str, Any]) -> str:
    state = "paused" if r["paused"] else "active"
    filters = " ".join(f"--{k.rstrip('s')} {shlex.quote(v)}" if isinstance(v, str) else
                       " ".join(f"--type {shlex.quote(t)}" for t in v) for k, v in r["filters"].items())
    return (f"{r['name']}\t{state}\t{filters or 'all events'}\tposition {r['position']}\tlag {r['lag']}\t"
            f"dead letters {r['dead_letters']}\t{shlex.join(r['command'])}")


@hooks_app.command("show")
def hooks_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Print one hook as JSON.

    Example: evlog hooks show audit
    """
    import msgspec

    from evlog.consumers import admin as consumers

    _write_out(msgspec.json.encode(consumers.hook_row(_state(ctx).log(), name)) + b"\n")


@hooks_app.command("remove")
def hooks_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Remove a hook and its checkpoint.

    Example: evlog hooks remove audit
    """
    from evlog.consumers import admin as consumers

    consumers.remove_hook(_state(ctx).log(), name)


@hooks_app.command("pause")
def hooks_pause(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Pause a hook: `evlog run` skips it; its checkpoint stays.

    Example: evlog hooks pause audit
    """
    from evlog.consumers import admin as consumers

    consumers.set_paused(_state(ctx).log(), name, True)


@hooks_app.command("resume")
def hooks_resume(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The hook.")]) -> None:
    """Resume a paused hook.

    Example: evlog hooks resume audit
    """
    from evlog.consumers import admin as consumers

    consumers.set_paused(_state(ctx).log(), name, False)


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

    summaries, errors = consumers.run_hooks(_state(ctx).log(), list(names or []), follow=not once)
    for hook, err in errors:
        diag.error(f"hook {hook}: {err}")
    if errors:  # the first hook's reason decides, as if it had run alone (a corrupt record: 5)
        raise typer.Exit(errors[0][1].exit_code if isinstance(errors[0][1], EvlogError) else ExitCode.ERROR)
    if any(s.dead_lettered for s in summaries):
        raise typer.Exit(ExitCode.PARTIAL)


dlq_app = typer.Typer(
    help="The dead-letter file: inspect, retry, purge.\n\n"
    "dead-letter.jsonl is as trusted as hooks.toml: each entry names the command that `dlq retry` runs and how,"
    " so whoever can write the file chooses what runs.\n\nExample: evlog dlq list --type 'order.*'",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
HookOpt = Annotated[str | None, typer.Option("--hook", metavar="NAME", help="Only entries of this hook.")]
GroupOpt = Annotated[str | None, typer.Option("--group", metavar="NAME", help="Only entries of this group.")]


@dlq_app.command("list")
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
        _state(ctx).log(), _filter(type_, key, subject, source, where), hook=hook, group=group
    )
    if json_ or not sys.stdout.isatty():
        import msgspec

        _write_out(b"".join(msgspec.json.encode(e) + b"\n" for e in entries))
        return
    from evlog.cli.pretty import dead_letter_table

    dead_letter_table(entries)


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, dlq_id: Annotated[int, typer.Argument(help="The entry's dlq_id.")]) -> None:
    """Print one dead-letter entry (JSON when not a terminal).

    Example: evlog dlq show 12
    """
    import msgspec

    from evlog.consumers import admin as consumers

    entry = consumers.dead_letter(_state(ctx).log(), dlq_id)
    if sys.stdout.isatty():
        _write_out(msgspec.json.format(msgspec.json.encode(entry), indent=2) + b"\n")
    else:
        _write_out(msgspec.json.encode(entry) + b"\n")


@dlq_app.command("count")
def dlq_count(ctx: typer.Context) -> None:
    """Print the number of dead-letter entries.

    Example: evlog dlq count
    """
    from evlog.consumers import admin as consumers

    _write_out(b"%d\n" % len(consumers.dead_letter_entries(_state(ctx).log(), None)))


@dlq_app.command("retry")
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
    seconds = None if timeout is None else _duration("--timeout", timeout, positive=True)
    report = consumers.retry(_state(ctx).log(), ids, hook=hook, group=group, command=command, timeout=seconds)
    diag.info(
        f"retried {len(report.succeeded) + len(report.failed)}: {len(report.succeeded)} succeeded, "
        f"{len(report.failed)} still failing"
    )
    if report.failed:
        raise typer.Exit(ExitCode.PARTIAL)


def _ids_and_command(args: list[str] | None) -> tuple[list[int], list[str] | None]:
    """DLQ_IDs before `--`, the COMMAND after it (click keeps `--` out of args, so read argv)."""
    raw = list(args or [])
    argv = _invocation
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


@dlq_app.command("purge")
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
        _state(ctx).log(), list(ids or []), all_=all_, before_us=_parse("--before", parse_time_us, before)
    )
    diag.info(f"removed {removed} entries")


# -- compact -----------------------------------------------------------------------------------


@app.command()
def compact(
    ctx: typer.Context,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age", metavar="DURATION", help="Delete sealed segments whose newest event is older than this."
        ),
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes", metavar="SIZE", help="Delete the oldest sealed segments until the log is at most this big."
        ),
    ] = None,
    max_events: Annotated[
        int | None,
        typer.Option(
            "--max-events", metavar="N", min=0, help="Delete the oldest sealed segments until at most N events remain."
        ),
    ] = None,
    keys: Annotated[bool, typer.Option("--keys", help="Keep only the newest event of each key.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would happen; change nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a running compaction instead of exit 75.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Apply retention and key compaction to sealed segments, while everything else keeps running.

    Options override evlog.toml. Example (crontab): 17 3 * * * evlog -d /var/lib/events compact --max-age 30d --keys
    """
    from evlog.cli.progress import step_progress
    from evlog.store import compact as compact_mod
    from evlog.units import parse_duration_us, parse_size

    age = _parse("--max-age", parse_duration_us, max_age)
    size = _parse("--max-bytes", parse_size, max_bytes)
    log = _state(ctx).log()
    plan = compact_mod.plan_from(log, max_age_us=age, max_bytes=size, max_events=max_events, keys=keys)
    with step_progress("compacting") as progress:
        result = compact_mod.compact(log, plan, dry_run=dry_run, wait=wait, progress=progress)
    if json_:
        import msgspec

        _write_out(msgspec.json.encode(result.as_dict()) + b"\n")
    diag.info(result.text())


# -- serve / subscribe -------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to bind (loopback unless told otherwise).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port; 0 picks a free one.")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="EVLOG_TOKEN",
            show_envvar=True,
            help="The token clients must present (at least 7 characters; 16 or more advised).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="Tokens, one per line, each at least 7 characters; re-read when the file changes.",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", metavar="ORIGIN", help="Allowed browser Origin (repeatable; exact match)."),
    ] = None,
    max_clients: Annotated[
        int | None, typer.Option("--max-clients", metavar="N", min=1, help="Refuse clients beyond N.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="TLS certificate (PEM) for wss://.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE", help="TLS private key (PEM).")] = None,
) -> None:
    """Stream the log to authenticated WebSocket clients at /stream.

    Tokens have at least 7 characters (a shorter --token or EVLOG_TOKEN: exit 2); serve warns below 16.
    Without --token/--token-file/EVLOG_TOKEN a token is generated into
    DIR/.serve-token (mode 0600). An existing one must be a regular file of yours,
    not a symbolic link, closed to group and others (else exit 1: chmod 600 it,
    or remove it to have a new one generated).
    Example: evlog serve --port 8765 --token-file /etc/evlog/tokens
    """
    from evlog.cli.signals import Terminated
    from evlog.net import server

    _utf8("--host", host)
    _utf8("--token", token)
    _utf8("--allow-origin", *(allow_origin or []))
    if token and token_file:
        raise UsageError("give --token or --token-file, not both")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    log = _state(ctx).log()
    tokens = server.Tokens(log.dir, token, token_file)
    signum = server.run(
        log,
        host=host,
        port=port,
        tokens=tokens,
        origins=list(allow_origin or []),
        max_clients=max_clients,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@app.command()
def subscribe(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The server's stream, e.g. ws://127.0.0.1:8765/stream.")],
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="The token (default: EVLOG_TOKEN, else DIR/.serve-token)."),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", metavar="OFFSET|beginning|end", help="Where to start (default: end).")
    ] = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    format: FormatOpt = None,
    no_reconnect: Annotated[bool, typer.Option("--no-reconnect", help="Exit when the connection ends.")] = False,
) -> None:
    """Print events from an `evlog serve` endpoint like `read`; reconnects and resumes.

    Example: evlog subscribe ws://127.0.0.1:8765/stream --from beginning --type 'order.*'
    """
    from evlog.net import subscribe as sub

    _utf8("URL", url)
    _utf8("--token", token)
    if from_ is not None and from_ not in ("beginning", "end") and not (from_.isascii() and from_.isdigit()):
        raise UsageError(f"--from {from_!r}: use an offset, beginning or end")
    secret = sub.find_token(token, os.environ.get("EVLOG_TOKEN"), _state(ctx).dir)
    code = sub.subscribe(
        url, secret, from_, _filter(type_, key, subject, source, where), _format(format), reconnect=not no_reconnect
    )
    if code:
        raise typer.Exit(code)


# -- info / verify -------------------------------------------------------------------------


@app.command()
def info(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print the facts as one JSON object.")] = False,
) -> None:
    """Describe the log: format, segments, offsets, events, bytes, times, consumers.

    Example: evlog info --json | jq .events
    """
    from evlog.store import info as stats

    facts = stats.info(_state(ctx).log())
    if json_:
        _write_out(stats.to_json(facts) + b"\n")
    else:
        sys.stdout.write(stats.to_text(facts))


@app.command()
def verify(
    ctx: typer.Context,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Rebuild indexes, cut an incomplete last record, quarantine damaged records."),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every record's checksum, offset and time order, and the index files (exit 0 clean, 5 corrupt).

    Example: evlog verify --repair
    """
    from evlog.store import verify as verify_mod

    log = _state(ctx).log()
    report = verify_mod.verify(log, repair=repair)
    if json_:
        _write_out(verify_mod.to_json(report) + b"\n")
    else:
        for line in verify_mod.to_text(report):
            sys.stdout.write(line + "\n")
    for w in report.warnings:
        diag.warning(w)
    if not report.ok:
        raise typer.Exit(ExitCode.CORRUPT)


# -- the entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    stop.install()
    code = _run(args, debug)
    sys.exit(code)


_invocation: list[str] = []  # the raw arguments, for commands that must see where `--` was


def _run(args: list[str], debug: bool) -> int:
    _invocation[:] = args
    try:
        try:
            command = typer.main.get_command(_only_invoked(app, args))
            command.invoke = _quiet_on_closed_pipe(command.invoke)  # type: ignore[method-assign]
            rv = command.main(args, prog_name="evlog", standalone_mode=False)
            return rv if isinstance(rv, int) else 0
        finally:
            sys.stdout.flush()
    except typer.Exit as e:
        return int(e.exit_code)
    except EvlogError as e:
        if debug:
            import traceback

            traceback.print_exc()
        diag.error(str(e))
        return int(e.exit_code)
    except typer.TyperException as e:
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        diag.error(" ".join(message.split()))
        return int(getattr(e, "exit_code", ExitCode.USAGE))
    except (BrokenPipeError, stop.PipeClosed):
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        _silence_stdout()
        return ExitCode.SIGINT
    except stop.Terminated:
        _silence_stdout()
        return ExitCode.SIGTERM
    except OSError as e:
        if debug:
            import traceback

            traceback.print_exc()
        from evlog.errors import quoted

        diag.error(f"{e.strerror or e}" + (f": {quoted(e.filename)}" if e.filename else ""))
        return ExitCode.ERROR
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if debug:
            import traceback

            traceback.print_exc()
        diag.error(f"internal error: {e!r} (run with --debug for a traceback)")
        return ExitCode.ERROR


GLOBAL_OPTIONS_WITH_VALUE = {"--dir", "-d", "--log-format"}


def _only_invoked(full: typer.Typer, args: list[str]) -> typer.Typer:
    """The app with only the subcommand named in `args`, so start-up builds one command, not all.

    Help without a subcommand, completion and unknown names get the full app.
    """
    name = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("-"):
            i += 2 if arg in GLOBAL_OPTIONS_WITH_VALUE else 1
            continue
        name = arg
        break
    if name is None or os.environ.get("_EVLOG_COMPLETE"):
        return full
    commands = [c for c in full.registered_commands if _command_name(c) == name]
    groups = [g for g in full.registered_groups if g.name == name]
    if not commands and not groups:
        return full
    narrow = typer.Typer()
    narrow.__dict__.update(full.__dict__)
    narrow.registered_commands, narrow.registered_groups = commands, groups
    return narrow


def _command_name(info: Any) -> str:
    if info.name:
        return str(info.name)
    return str(info.callback.__name__).strip("_").replace("_", "-")


def _quiet_on_closed_pipe(invoke: Any) -> Any:
    """typer turns EPIPE into exit 1 on its way out; a closed pipe is a quiet exit 0 here."""

    def wrapped(ctx: Any) -> Any:
        try:
            return invoke(ctx)
        except BrokenPipeError:
            raise stop.PipeClosed() from None

    return wrapped


def _silence_stdout() -> None:
    """After a closed pipe, make the interpreter's final flush of stdout harmless."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
