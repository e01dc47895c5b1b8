"""The command line: parse arguments, make one call into the core, render the result.

`main()` is the one place that maps exceptions to exit codes (SPEC 5). The
root command is a LazyGroup: each command lives in a module of this package
(append, read, consume, groups, hooks, dlq, admin, net) that is imported only
when that command runs, or when help or completion lists it, so `evlog append`
starts fast. Heavy modules (rich, watchfiles, the filter language) are imported
inside the commands that use them.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from evlog import __version__
from evlog.cli import signals as stop
from evlog.cli.basics import INVOCATION, LogFormat, State
from evlog.cli.diag import diag
from evlog.errors import EvlogError, ExitCode

HELP = """evlog keeps an append-only event log in a local directory, or on a NATS JetStream cluster.

Example: evlog append order.created sku=A1 count:=3 --key cust-7

Example: evlog tail -f --type 'order.*'
"""

# Command name -> the module that defines it (a module's typer app holds its commands, or is the group).
COMMANDS = {
    "init": "admin", "append": "append", "read": "read", "tail": "read", "replay": "consume", "run": "consume",
    "compact": "admin", "serve": "net", "subscribe": "net", "info": "admin", "verify": "admin",
    "groups": "groups", "hooks": "hooks", "dlq": "dlq", "mirror": "mirror",
}
GROUPS = {"groups", "hooks", "dlq"}


def _reflow(command: Any) -> None:
    """Join the lines of each help paragraph, so that rich wraps it to the terminal's width.

    Docstrings keep lines under the source's line length; typer would print those line breaks as they
    stand. A paragraph that starts with \\b keeps its lines (click's convention)."""
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)
    for sub in getattr(command, "commands", {}).values():
        _reflow(sub)


class _Commands(MutableMapping[str, Any]):
    """Command name -> command, built (its module imported) when first asked for."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            module = COMMANDS[name]
            command = typer.main.get_command(importlib.import_module(f"evlog.cli.{module}").app)
            if name not in GROUPS and hasattr(command, "commands"):
                command = command.commands[name]  # a module that defines several commands
            command.name = name
            _reflow(command)
            self._built[name] = command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        raise TypeError("evlog's commands are listed in COMMANDS")

    def __delitem__(self, name: str) -> None:
        raise TypeError("evlog's commands are listed in COMMANDS")

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LazyGroup(TyperGroup):
    """The root command, whose commands are built only when asked for (see _Commands)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands()

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # typer would make it exit 1; a closed pipe is a quiet exit 0 here
            raise stop.PipeClosed() from None


app = typer.Typer(
    name="evlog",
    help=HELP,
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"evlog {__version__}\n")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir",
            "-d",
            envvar="EVLOG_DIR",
            show_envvar=True,
            metavar="PATH|URL",
            help="The log: a directory (default: $XDG_DATA_HOME/evlog, else ~/.local/share/evlog), "
            "or a NATS JetStream stream, nats://[USER:PASS@]HOST[:PORT][,HOST:PORT...]/STREAM.",
        ),
    ] = None,
    nats_creds: Annotated[
        str | None,
        typer.Option("--nats-creds", envvar="EVLOG_NATS_CREDS", show_envvar=True, metavar="FILE",
                     help="A NATS credentials file, for a nats:// or tls:// log."),
    ] = None,
    nats_timeout: Annotated[
        float,
        typer.Option("--nats-timeout", metavar="SECONDS", min=0.1,
                     help="How long commands on a NATS log keep retrying while the cluster has no leader."),
    ] = 30.0,
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
    ctx.obj = State(directory, debug, nats_creds=nats_creds, nats_timeout=nats_timeout)


# -- the entry point -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    stop.install()
    code = _run(args, debug)
    sys.exit(code)


def _invoke(args: list[str]) -> Any:
    """Run the command line. evlog's own options (-d, --nats-creds, -v, ...) may also follow the command
    (`evlog read -d DIR`): one that the command does not know is moved before it, and parsing starts again
    (nothing has run yet when an option is unknown). Arguments after `--` are a handler's and stay."""
    from typer._click.exceptions import NoSuchOption

    root = typer.main.get_command(app)
    for _ in range(8):
        try:
            return root.main(args, prog_name="evlog", standalone_mode=False)
        except NoSuchOption as e:
            moved = _global_first(root, args, e.option_name)
            if moved is None:
                raise
            args = moved
    return root.main(args, prog_name="evlog", standalone_mode=False)


def _global_first(root: Any, args: list[str], name: str) -> list[str] | None:
    """`args` with the last use of the global option `name` (before any `--`) moved to the front; None
    when `name` is no global option or is not found in a form that can be moved."""
    params = {opt: p for p in root.params for opt in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
    param = params.get(name)
    if param is None or not name.startswith("-"):
        return None
    takes_value = not getattr(param, "is_flag", False) and not getattr(param, "count", False)
    end = args.index("--") if "--" in args else len(args)
    for i in range(end - 1, 0, -1):
        token = args[i]
        if token == name:
            n = 2 if takes_value else 1
            if i + n > end:
                return None
            return args[i:i + n] + args[:i] + args[i + n:]
        if takes_value and (token.startswith(name + "=") if name.startswith("--") else
                            token.startswith(name) and len(token) > len(name)):
            return [token, *args[:i], *args[i + 1:]]
    return None


def _run(args: list[str], debug: bool) -> int:
    INVOCATION[:] = args
    try:
        try:
            rv = _invoke(args)
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


def _silence_stdout() -> None:
    """After a closed pipe, make the interpreter's final flush of stdout harmless."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
