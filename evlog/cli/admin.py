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
    format: Annotated[StoreFormat | None, typer.Option("--format", help="Segment format [default: jsonl].")] = None,
    segment_bytes: Annotated[
        str | None,
        typer.Option(
            "--segment-bytes",
            metavar="SIZE",
            help="Segment size before a new one is started: 64MiB, 512KiB, 1KiB or bytes [default: 64MiB].",
        ),
    ] = None,
    fsync: Annotated[
        FsyncMode | None, typer.Option("--fsync", help="When appends are synced to disk [default: always].")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, max=5, metavar="N", help="NATS: copies of each event [1].")
    ] = None,
    max_age: Annotated[
        str | None, typer.Option("--max-age", metavar="DURATION", help="NATS: the stream drops older events.")
    ] = None,
    max_bytes: Annotated[
        str | None, typer.Option("--max-bytes", metavar="SIZE", help="NATS: the stream keeps at most this much.")
    ] = None,
    dedup_window: Annotated[
        str | None,
        typer.Option("--dedup-window", metavar="DURATION", help="How long an --id is remembered [default: 2m]."),
    ] = None,
) -> None:
    """Create a log with chosen settings; an existing log is an error (exit 1).

    On a NATS location it creates the stream STREAM (subjects STREAM.>) and its dead-letter stream
    STREAM_DLQ; --format, --segment-bytes and --fsync are local settings, and --replicas, --max-age and
    --max-bytes NATS ones (the server keeps those limits; locally, `compact` applies them).

    Example: evlog -d ./events init --format msgpack --segment-bytes 16MiB

    Example: evlog -d nats://127.0.0.1:4222/orders init --replicas 3 --max-age 30d
    """
    import msgspec

    from evlog.settings import MIN_SEGMENT_BYTES, Settings
    from evlog.store.log import Log
    from evlog.units import parse_duration_us, parse_size

    st = state(ctx)
    window = parse_arg("--dedup-window", parse_duration_us, dedup_window)
    if st.nats:
        for name, value in (("--format", format), ("--segment-bytes", segment_bytes), ("--fsync", fsync)):
            if value is not None:
                raise UsageError(f"{name} is a setting of a local log; a NATS stream is JSON, kept by the server")
        from evlog.store.nats import NatsLog

        age = parse_arg("--max-age", parse_duration_us, max_age)
        size = parse_arg("--max-bytes", parse_size, max_bytes)
        nats_log = NatsLog(st.location, creds=st.nats_creds, timeout=st.nats_timeout)
        try:
            nats_log.create(replicas=replicas or 1, max_age_us=age, max_bytes=size,
                            dedup_window_us=window if window is not None else Settings().dedup_window_us)
        finally:
            nats_log.close()
        diag.info(f"created the stream {nats_log.stream} at {nats_log.where} ({replicas or 1} "
                  f"replica{'s' if (replicas or 1) != 1 else ''})")
        return
    for flag, given in (("--replicas", replicas is not None), ("--max-age", max_age is not None),
                        ("--max-bytes", max_bytes is not None)):
        if given:
            raise UsageError(f"{flag} applies to a NATS log; a local log's retention is set in evlog.toml "
                             "and applied by `evlog compact`")
    size = parse_arg("--segment-bytes", parse_size, segment_bytes or "64MiB")
    if size < MIN_SEGMENT_BYTES:
        raise UsageError(f"--segment-bytes: must be at least {MIN_SEGMENT_BYTES} bytes (1KiB)")
    fmt = (format or StoreFormat.jsonl).value
    settings = Settings(format=fmt, segment_bytes=size, fsync=(fsync or FsyncMode.always).value)
    if window is not None:
        settings = msgspec.structs.replace(settings, dedup_window_us=window)
    log = Log.create(st.dir, settings, exist_ok=False)
    diag.info(f"created a {fmt} log at {log.dir}")


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

    Options override evlog.toml. On a NATS log the limits are applied once to the oldest events (the stream's own
    limits, set by `init`, apply by themselves), --keys is refused, and a dry run estimates bytes by the average
    event size.

    Example (crontab): 17 3 * * * evlog -d /var/lib/events compact --max-age 30d --keys
    """
    from evlog.cli.progress import step_progress
    from evlog.store import compact as compact_mod
    from evlog.units import parse_duration_us, parse_size

    age = parse_arg("--max-age", parse_duration_us, max_age)
    size = parse_arg("--max-bytes", parse_size, max_bytes)
    st = state(ctx)
    if st.nats:
        _compact_nats(st, age, size, max_events, keys=keys, dry_run=dry_run, json_=json_)
        return
    log = st.local_log("")
    plan = compact_mod.plan_from(log, max_age_us=age, max_bytes=size, max_events=max_events, keys=keys)
    with step_progress("compacting") as progress:
        result = compact_mod.compact(log, plan, dry_run=dry_run, wait=wait, progress=progress)
    if json_:
        import msgspec

        write_out(msgspec.json.encode(result.as_dict()) + b"\n")
    diag.info(result.text())


def _compact_nats(st: Any, age: int | None, size: int | None, max_events: int | None, *, keys: bool,
                  dry_run: bool, json_: bool) -> None:
    """Retention on a NATS log, applied once as on a local log (the stream's own limits, set by `init`, apply
    continuously). Key compaction has no sound mapping (keys are not subjects), so --keys is refused."""
    import msgspec

    from evlog.store.nats import NatsLog

    if keys:
        raise UsageError("--keys: a NATS log keeps keys in the payload, not in subjects, so the server cannot "
                         "keep the newest event per key; `evlog mirror` it into a local log and compact that")
    log = NatsLog(st.location, creds=st.nats_creds, timeout=st.nats_timeout)
    try:
        before, events_after, bytes_after = log.retain(max_age_us=age, max_bytes=size, max_events=max_events,
                                                       dry_run=dry_run)
    finally:
        log.close()
    removed = max(0, int(before.messages) - events_after)
    # SPEC 6's summary keys; a stream has no segments.
    result = {"segments_before": None, "segments_after": None, "events_before": int(before.messages),
              "events_after": events_after, "bytes_before": int(before.bytes), "bytes_after": bytes_after}
    if json_:
        write_out(msgspec.json.encode(result) + b"\n")
    if age is None and size is None and max_events is None:
        diag.info("nothing to do: no limit given (the stream's own limits, set by `evlog init`, apply by themselves)")
    else:
        diag.info(f"{'would remove' if dry_run else 'removed'} {removed} events; {events_after} remain"
                  + (" (bytes estimated by the average event size)" if dry_run else ""))


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

    st = state(ctx)
    log = st.event_log()
    try:
        facts = log.info()
        end = None if facts["last_offset"] is None else facts["last_offset"] + 1
        facts |= consumer_facts(log, end)
    finally:
        log.close()
    if json_:
        write_out(msgspec.json.encode(facts) + b"\n")
    else:
        sys.stdout.write(_info_text(facts))


def _info_text(facts: dict[str, Any]) -> str:
    rows = [
        ("directory" if facts["segments"] is not None else "stream", facts["dir"]),
        ("format", facts["format"]),
        ("segments", "-" if facts["segments"] is None else facts["segments"]),
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

    log = state(ctx).local_log("verify checks a local log's files; a NATS stream's storage is checked by its "
                               "server (`nats stream info`, and its RAFT replicas repair each other)")
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
