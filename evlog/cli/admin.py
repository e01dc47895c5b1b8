"""`init`, `info`, `verify`, `compact`: the log as a whole."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from evlog.cli.basics import parse_arg, state, write_out
from evlog.cli.diag import diag
from evlog.cli.options import FsyncMode, StoreFormat
from evlog.errors import ExitCode, UsageError

app = typer.Typer(add_completion=False)


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

    size = parse_arg("--segment-bytes", parse_size, segment_bytes)
    if size < MIN_SEGMENT_BYTES:
        raise UsageError(f"--segment-bytes: must be at least {MIN_SEGMENT_BYTES} bytes (1KiB)")
    st = state(ctx)
    settings = Settings(format=format.value, segment_bytes=size, fsync=fsync.value)
    log = Log.create(st.dir, settings, exist_ok=False)
    diag.info(f"created a {format.value} log at {log.dir}")


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

    age = parse_arg("--max-age", parse_duration_us, max_age)
    size = parse_arg("--max-bytes", parse_size, max_bytes)
    log = state(ctx).log()
    plan = compact_mod.plan_from(log, max_age_us=age, max_bytes=size, max_events=max_events, keys=keys)
    with step_progress("compacting") as progress:
        result = compact_mod.compact(log, plan, dry_run=dry_run, wait=wait, progress=progress)
    if json_:
        import msgspec

        write_out(msgspec.json.encode(result.as_dict()) + b"\n")
    diag.info(result.text())


@app.command()
def info(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print the facts as one JSON object.")] = False,
) -> None:
    """Describe the log: format, segments, offsets, events, bytes, times, consumers.

    Example: evlog info --json | jq .events
    """
    import msgspec

    from evlog.consumers.admin import consumer_facts
    from evlog.store.info import info as storage_facts

    log = state(ctx).log()
    facts = storage_facts(log)
    facts |= consumer_facts(log, None if facts["last_offset"] is None else facts["last_offset"] + 1)
    if json_:
        write_out(msgspec.json.encode(facts) + b"\n")
    else:
        sys.stdout.write(_info_text(facts))


def _info_text(facts: dict[str, Any]) -> str:
    rows = [
        ("directory", facts["dir"]),
        ("format", facts["format"]),
        ("segments", facts["segments"]),
        ("events", facts["events"]),
        ("offsets", "-" if facts["first_offset"] is None else f"{facts['first_offset']}..{facts['last_offset']}"),
        ("bytes", facts["bytes"]),
        ("oldest", facts["oldest_time"] or "-"),
        ("newest", facts["newest_time"] or "-"),
        ("groups", ", ".join(f"{g['name']} (lag {g['lag']})" for g in facts["groups"]) or "none"),
        ("hooks", facts["hooks"]),
        ("dead letters", facts["dead_letters"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k.ljust(width)}  {v}\n" for k, v in rows)


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

    log = state(ctx).log()
    report = verify_mod.verify(log, repair=repair)
    if json_:
        write_out(verify_mod.to_json(report) + b"\n")
    else:
        for line in verify_mod.to_text(report):
            sys.stdout.write(line + "\n")
    for w in report.warnings:
        diag.warning(w)
    if not report.ok:
        raise typer.Exit(ExitCode.CORRUPT)
