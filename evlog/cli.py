"""The command line: parse arguments, make one call into the core, render the result.

`main()` is the one place that maps exceptions to exit codes (SPEC 5).
Heavy modules (rich, watchfiles, the filter language) are imported inside the
commands that use them, so `evlog append` starts fast.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from evlog import __version__, stop
from evlog.diag import diag
from evlog.errors import EvlogError, ExitCode, UsageError

HELP = """evlog keeps an append-only event log in a local directory.

Example: evlog append order.created sku=A1 count:=3 --key cust-7 ; evlog tail -f
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
        from evlog.log import default_dir

        return default_dir()

    def log(self):  # noqa: ANN201 - evlog.log.Log, imported lazily
        from evlog.log import Log

        return Log.open(self.dir)


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


class OutFormat(str, enum.Enum):
    pretty = "pretty"
    json = "json"
    cloudevents = "cloudevents"
    data = "data"


class StoreFormat(str, enum.Enum):
    jsonl = "jsonl"
    msgpack = "msgpack"


class FsyncMode(str, enum.Enum):
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
    directory: Annotated[Path | None, typer.Option(
        "--dir", "-d", envvar="EVLOG_DIR", show_envvar=True,
        help="The log directory [default: $XDG_DATA_HOME/evlog, else ~/.local/share/evlog].")] = None,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="EVLOG_LOG_FORMAT", help="Format of evlog's own diagnostics on stderr.")]
        = LogFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print more on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
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
    segment_bytes: Annotated[str, typer.Option(
        "--segment-bytes", help="Segment size before a new one is started: 64MiB, 512KiB, 1KiB or bytes.")]
        = "64MiB",
    fsync: Annotated[FsyncMode, typer.Option("--fsync", help="When appends are synced to disk.")]
        = FsyncMode.always,
) -> None:
    """Create a log with chosen settings; an existing log is an error (exit 1).

    Example: evlog -d ./events init --format msgpack --segment-bytes 16MiB
    """
    from evlog.log import Log
    from evlog.settings import MIN_SEGMENT_BYTES, Settings
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
    type_: Annotated[str | None, typer.Argument(metavar="TYPE", help="The event type, e.g. order.created.",
                                                show_default=False)] = None,
    fields: Annotated[list[str] | None, typer.Argument(
        metavar="[FIELD]...", help="Data items: name=string or name:=json.", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="The whole payload as JSON; @FILE reads a file, - reads stdin.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Key: the unit of ordering and compaction.")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Subject of the event.")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", envvar="EVLOG_SOURCE", show_envvar=True, help="Producer [default: evlog].")] = None,
    id_: Annotated[str | None, typer.Option(
        "--id", help="Event id; the same id within dedup_window is appended once.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the record (or --batch summary) as JSON.")]
        = False,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Append JSON Lines from stdin, all or nothing.")] = False,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Append JSON Lines from stdin as they arrive.")] = False,
) -> None:
    """Append one event, or many with --batch / --stream; prints the offset.

    Example: evlog append order.created sku=A1 count:=3 --key cust-7

    Example: jq -c '.[]' orders.json | evlog append --batch
    """
    from evlog import appending

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
        frame = next(iter(log.read(start=offset, to=offset)))
        _write_out(log.codec.json(frame) + b"\n")
    else:
        _write_out(b"%d\n" % offset)


def _write_out(data: bytes | None) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


# -- read / tail ---------------------------------------------------------------------------

TypeOpt = Annotated[list[str] | None, typer.Option(
    "--type", help="Type pattern (repeatable; any may match): `*` one token, `>` the rest.",
    show_default=False)]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Only events with this key.")]
SubjectOpt = Annotated[str | None, typer.Option("--subject", help="Only events with this subject.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="Only events from this source.")]
WhereOpt = Annotated[str | None, typer.Option(
    "--where", help='Expression over the record, e.g. \'data.n > 4 and type matches "^order\\."\'.')]
FormatOpt = Annotated[OutFormat | None, typer.Option(
    "--format", help="Output format [default: pretty on a terminal, else json].", show_default=False)]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they arrive.")]


@app.command()
def read(
    ctx: typer.Context,
    from_: Annotated[int | None, typer.Option("--from", min=0, help="Start at this offset.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Start at this time (inclusive): RFC 3339, a date, or a duration ago like 15m.")]
        = None,
    last: Annotated[int | None, typer.Option("--last", min=0, help="Start at the N-th last event.")] = None,
    to: Annotated[int | None, typer.Option("--to", min=0, help="Stop after this offset (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Stop before this time (exclusive).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Stop after N matching events.")]
        = None,
    type_: TypeOpt = None,
    key: KeyOpt = None,
    subject: SubjectOpt = None,
    source: SourceOpt = None,
    where: WhereOpt = None,
    format: FormatOpt = None,
    follow: FollowOpt = False,
) -> None:
    """Print events in offset order (the whole log unless a range is given).

    Example: evlog read --since 2h --type 'order.>' --where 'data.total > 100'
    """
    from evlog import reading
    from evlog.units import parse_time_us

    if sum(x is not None for x in (from_, since, last)) > 1:
        raise UsageError("give at most one of --from, --since, --last")
    query = reading.Query(
        start=from_, since_us=_parse("--since", parse_time_us, since), last=last, to=to,
        until_us=_parse("--until", parse_time_us, until), limit=limit,
        filter=_filter(type_, key, subject, source, where), follow=follow,
    )
    reading.run(_state(ctx).log(), query, _format(format))


@app.command()
def tail(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many of the last matching events.")] = 10,
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
    from evlog import reading

    query = reading.Query(tail=n, filter=_filter(type_, key, subject, source, where), follow=follow)
    reading.run(_state(ctx).log(), query, _format(format))


def _filter(types: list[str] | None, key: str | None, subject: str | None, source: str | None,
            where: str | None):  # noqa: ANN202 - evlog.filters.Filter
    from evlog.filters import Filter

    f = Filter(list(types or []), key, subject, source, where)
    from evlog.framing import CODECS

    f.compile(CODECS["jsonl"])  # parse now: a bad pattern or expression is a usage error before any output
    return f


def _format(fmt: OutFormat | None) -> str:
    if fmt is not None:
        return fmt.value
    return "pretty" if sys.stdout.isatty() else "json"


# -- info / verify -------------------------------------------------------------------------

@app.command()
def info(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print the facts as one JSON object.")] = False,
) -> None:
    """Describe the log: format, segments, offsets, events, bytes, times, consumers.

    Example: evlog info --json | jq .events
    """
    from evlog import stats

    facts = stats.info(_state(ctx).log())
    if json_:
        _write_out(stats.to_json(facts) + b"\n")
    else:
        sys.stdout.write(stats.to_text(facts))


@app.command()
def verify(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild indexes, cut an incomplete last record, quarantine damaged records.")]
        = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every record's checksum, offset and time order, and the index files.

    Exit 0 when clean, 5 when corrupt. Example: evlog verify --repair
    """
    from evlog import verify as verify_mod

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


def _run(args: list[str], debug: bool) -> int:
    try:
        try:
            command = typer.main.get_command(_only_invoked(app, args))
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
    except BrokenPipeError:
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
        diag.error(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
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


def _silence_stdout() -> None:
    """After a closed pipe, make the interpreter's final flush of stdout harmless."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
