"""What the commands share: the global state, option declarations, argument checks and output helpers."""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Any

import typer

from evlog.cli.basics import parse_arg, write_out
from evlog.cli.diag import diag
from evlog.errors import UsageError


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


class OnFailure(enum.StrEnum):
    dead_letter = "dead-letter"
    stop = "stop"


# -- ranges, filters, formats ------------------------------------------------------------------

FromOpt = Annotated[int | None, typer.Option("--from", min=0, metavar="OFFSET", help="Start at this offset.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="TIME", help="Start at this time (inclusive): RFC 3339 (2026-12-03T06:55:00Z), a local "
        "time without a zone (2026-12-03 06:55), a date (midnight UTC), or a duration ago like 15m or 2h30m."
    ),
]
LastOpt = Annotated[
    int | None,
    typer.Option("--last", min=0, metavar="N", help="Start at the N-th last event (counted before filtering)."),
]
ToOpt = Annotated[int | None, typer.Option("--to", min=0, metavar="OFFSET", help="Stop after this offset (inclusive).")]
UntilOpt = Annotated[str | None, typer.Option(
    "--until", metavar="TIME", help="Stop before this time (exclusive); the same forms as --since.")]
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


def make_range(from_: int | None, since: str | None, last: int | None, to: int | None, until: str | None):  # noqa: ANN201 - evlog.store.reader.Range
    """The range of --from/--since/--last (at most one) and --to/--until."""
    from evlog.store.reader import Range
    from evlog.units import parse_time_us

    if sum(x is not None for x in (from_, since, last)) > 1:
        raise UsageError("give at most one of --from, --since, --last")
    if from_ is not None and to is not None and to < from_:
        raise UsageError(f"--to {to} is before --from {from_}: that range holds nothing (--to is inclusive)")
    since_us = parse_arg("--since", parse_time_us, since)
    until_us = parse_arg("--until", parse_time_us, until)
    if since_us is not None and until_us is not None and until_us <= since_us:
        raise UsageError("--until is before --since (or the same time): that range holds nothing "
                         "(--since is inclusive, --until exclusive)")
    return Range(start=from_, since_us=since_us, last=last, to=to, until_us=until_us)


def check_utf8(what: str, *values: str | None) -> None:
    """Arguments that are not event content must still be UTF-8 text: a usage error otherwise (exit 2)."""
    from evlog.ingest.event import utf8_problem

    for value in values:
        problem = None if value is None else utf8_problem(what, value)
        if problem:
            raise UsageError(problem)


def make_filter(types: list[str] | None, key: str | None, subject: str | None, source: str | None, where: str | None):  # noqa: ANN202 - evlog.query.filters.Filter
    from evlog.query.filters import Filter

    check_utf8("--type", *(types or []))
    check_utf8("--key", key)
    check_utf8("--subject", subject)
    check_utf8("--source", source)
    check_utf8("--where", where)
    if where is not None and not where.strip():
        where = None  # blanks mean no filter, as '' does
    f = Filter(list(types or []), key, subject, source, where)
    from evlog.store.framing import CODECS

    f.compile(CODECS["jsonl"])  # parse now: a bad pattern or expression is a usage error before any output
    return f


def out_format(fmt: OutFormat | None) -> str:
    if fmt is not None:
        return fmt.value
    return "pretty" if sys.stdout.isatty() else "json"


# -- handlers ------------------------------------------------------------------------------------

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


def duration(what: str, text: str, positive: bool = False) -> float:
    from evlog.units import parse_duration

    seconds = float(parse_arg(what, parse_duration, text))
    if positive and seconds <= 0:
        raise UsageError(f"{what}: must be longer than 0, not {text!r}")
    return seconds


def handler_argv(command: list[str] | None) -> list[str]:
    if not command:
        raise UsageError("give the handler command after --, e.g. `-- ./handle.sh` or `-- sh -c 'cat >> out'`")
    check_utf8("the handler command (kept in hooks.toml and dead-letter entries)", *command)
    return list(command)


def env_pairs(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        check_utf8("--env", pair)
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise UsageError(f"--env {pair!r}: use NAME=VALUE")
        env[name] = value
    return env


def summary_out(summary: Any, json_: bool) -> None:
    if json_:
        import msgspec

        write_out(msgspec.json.encode(summary.as_dict()) + b"\n")
    diag.info(summary.text())


HookOpt = Annotated[str | None, typer.Option("--hook", metavar="NAME", help="Only entries of this hook.")]
GroupOpt = Annotated[str | None, typer.Option("--group", metavar="NAME", help="Only entries of this group.")]
