"""What every command needs, and nothing heavier: the global state, argument parsing, writing to stdout."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Any

import typer

from evlog.errors import UsageError

INVOCATION: list[str] = []  # the raw arguments, for commands that must see where `--` was


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


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def parse_arg(what: str, parse: Any, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def rows_out(rows: list[dict[str, Any]], json_: bool, line: Any) -> None:
    """A JSON array with --json, else one text line per row."""
    if json_:
        import msgspec

        write_out(msgspec.json.encode(rows) + b"\n")
    else:
        sys.stdout.write("".join(line(r) + "\n" for r in rows))


def write_out(data: bytes | None) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
