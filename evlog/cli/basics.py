"""What every command needs, and nothing heavier: the global state, argument parsing, writing to stdout."""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from evlog.errors import UsageError

INVOCATION: list[str] = []  # the raw arguments, for commands that must see where `--` was


class State:
    """The global options: where the log is (a directory or a NATS location), and how to reach it."""

    def __init__(self, location: str | None, debug: bool, *, nats_creds: str | None = None,
                 nats_timeout: float = 30.0) -> None:
        self.explicit = location
        self.debug = debug
        self.nats_creds, self.nats_timeout = nats_creds, nats_timeout

    @property
    def location(self) -> str:
        if self.explicit is not None:
            return self.explicit
        from evlog.store.log import default_dir

        return str(default_dir())

    @property
    def nats(self) -> bool:
        from evlog.store.backend import is_nats

        return is_nats(self.location)

    @property
    def dir(self) -> Path:
        """The log directory of a command that only works on a local log (see local_log)."""
        return Path(self.location)

    def local_log(self, why: str):  # noqa: ANN201 - evlog.store.log.Log, imported lazily
        """The local log; on a NATS log, exit 2 saying `why` the command has no meaning there."""
        self.local_only(why)
        from evlog.store.log import Log

        return Log.open(self.dir)

    def local_only(self, why: str) -> None:
        if self.nats:
            raise UsageError(why)

    def event_log(self):  # noqa: ANN201 - evlog.store.backend.EventLog, imported lazily
        """The log, on either backend (LogNotFound when there is none)."""
        from evlog.store.backend import open_log

        return open_log(self.location, creds=self.nats_creds, timeout=self.nats_timeout)

    @contextmanager
    def opened(self) -> Iterator[Any]:
        """The log (event_log), closed (its NATS connection) when done."""
        log = self.event_log()
        try:
            yield log
        finally:
            log.close()

    def target(self, report: Any, location: str | None = None):  # noqa: ANN201 - evlog.ingest.append.Target
        """Where appends go: this log (or `location`), created by the first append when missing."""
        from evlog.ingest.append import Target

        return Target(location or self.location, creds=self.nats_creds, timeout=self.nats_timeout, report=report)


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def log_of(ctx: typer.Context, local_only: str | None = None) -> Any:
    """The log of this command (an EventLog), closed when the command ends; with `local_only`, a NATS
    location is a usage error saying why (before connecting)."""
    st = state(ctx)
    if local_only is not None:
        st.local_only(local_only)
    log = st.event_log()
    ctx.call_on_close(log.close)
    return log


def parse_arg(what: str, parse: Any, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def rows_out(rows: list[dict[str, Any]], json_: bool, table: Any, what: str) -> None:
    """A JSON array with --json; else on a terminal a table (`table(rows)`), or a line saying there are no
    `what` on stderr; in a pipe one JSON object per line."""
    import msgspec

    if json_:
        write_out(msgspec.json.encode(rows) + b"\n")
    elif sys.stdout.isatty():
        if rows:
            table(rows)
        else:
            from evlog.cli.diag import diag

            diag.info(f"no {what}")
    else:
        write_out(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))


def write_out(data: bytes | None) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
