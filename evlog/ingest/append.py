"""Appending as the CLI asks for it: one event, a batch (all or nothing), a live stream."""

from __future__ import annotations

from pathlib import Path

import msgspec

from evlog.errors import EvlogError, InvalidEvent, UsageError, quoted
from evlog.ingest.event import MAX_DEPTH, Validator, json_problem, utf8_problem
from evlog.report import Report, quiet
from evlog.settings import Settings
from evlog.store.framing import codec_for
from evlog.store.log import Log
from evlog.store.writer import open_writer, sync_segments

DEFAULT_SOURCE = "evlog"


def _validator_for(directory: Path, source: str | None) -> tuple[Validator, Log | None]:
    """A validator for the log at `directory` (and the log), or for a new log with default settings."""
    log = Log.open(directory) if Log.settings_path(directory).is_file() else None
    settings = log.settings if log is not None else Settings()
    return Validator(codec_for(settings.format), settings.max_event_bytes, source or DEFAULT_SOURCE), log


def _created_like(directory: Path, validator: Validator) -> Log:
    """SPEC 3: `append` creates a missing log with default settings; items validated for the
    default format must still fit it (another process may have created it meanwhile)."""
    log = Log.create(directory, Settings(), exist_ok=True)
    if log.codec is not validator.codec:
        raise EvlogError(f"the log at {directory} was created meanwhile as {log.codec.name}; run again")
    return log


def payload(fields: list[str], data: str | None) -> msgspec.Raw:
    """The data of one event as compact JSON, from FIELD items or --data (checked as SPEC 7 asks)."""
    if data is not None and fields:
        raise UsageError("give either FIELD items or --data, not both")
    if data is not None:
        if data == "-":
            import sys

            text = sys.stdin.buffer.read()
        elif data.startswith("@"):
            try:
                with open(data[1:], "rb") as f:
                    text = f.read()
            except OSError as e:
                raise UsageError(f"--data @{quoted(data[1:])}: {e.strerror}") from None
        else:
            _check_arg("--data", data)
            text = data.encode()
        return msgspec.Raw(_json("--data", text, MAX_DEPTH))
    if not fields:
        return msgspec.Raw(b"null")
    obj: dict[str, object] = {}
    for item in fields:
        eq = item.find("=")
        if eq <= 0:
            raise UsageError(f"bad FIELD {item!r}: use name=value or name:=json")
        _check_arg(f"FIELD {item[:eq].rstrip(':')!r}", item)
        if item[eq - 1] == ":" and eq > 1:
            name = item[:eq - 1]
            obj[name] = msgspec.json.decode(_json(f"FIELD {name}", item[eq + 1:].encode(), MAX_DEPTH - 1))
        else:
            obj[item[:eq]] = item[eq + 1:]
    return msgspec.Raw(msgspec.json.encode(obj))


def _check_arg(name: str, value: str | None) -> None:
    """Event content from the command line must be UTF-8 (invalid input otherwise, exit 4)."""
    problem = None if value is None else utf8_problem(name, value)
    if problem:
        raise InvalidEvent(problem)


def _json(name: str, text: bytes, max_depth: int) -> bytes:
    """`text` as compact JSON, after the checks that keep it decodable (raises InvalidEvent)."""
    problem = json_problem(text, max_depth)
    if problem:
        raise InvalidEvent(f"{name}: {problem}")
    try:
        return msgspec.json.encode(msgspec.json.decode(text))
    except msgspec.DecodeError as e:
        raise InvalidEvent(f"{name} is not valid JSON: {e}") from None


def one(directory: Path, type_: str, data: msgspec.Raw, *, key: str | None, subject: str | None,
        source: str | None, id_: str | None, report: Report = quiet) -> tuple[Log, int]:
    """Append one event; returns the log and its offset (the earlier one for a known --id)."""
    for name, value in (("TYPE", type_), ("--key", key), ("--subject", subject), ("--source", source),
                        ("--id", id_)):
        _check_arg(name, value)
    validator, log = _validator_for(directory, source)
    item = validator.item(type_, data, key, subject, source, id_)  # before a log is created
    log = log or _created_like(directory, validator)
    with open_writer(log) as w:
        _tell(w.notes, report)
        result = w.append([item])
    assert result.first_item is not None
    return log, result.first_item


class BatchSummary(msgspec.Struct):
    count: int
    first: int | None
    last: int | None
    duplicates: int

    def json_line(self) -> bytes:
        return msgspec.json.encode({"count": self.count, "first": self.first, "last": self.last}) + b"\n"

    def text(self) -> str:
        dup = f" ({self.duplicates} already in the log by id, skipped)" if self.duplicates else ""
        if not self.count:
            return "appended 0 events" + dup
        return f"appended {self.count} events, offsets {self.first}..{self.last}{dup}"


def batch(directory: Path, fd: int, source: str | None, report: Report = quiet) -> BatchSummary:
    """`append --batch`: validate all of stdin, then append it in one locked write."""
    from evlog.ingest.spool import Spool, read_batch

    validator, log = _validator_for(directory, source)
    # Invalid input writes nothing, not even a new log: validate before creating one.
    spool = read_batch(fd, validator, Spool(directory if log is not None else None, validator.codec))
    try:
        log = log or _created_like(directory, validator)
        if not len(spool):
            return BatchSummary(0, None, None, 0)
        with open_writer(log) as w:
            _tell(w.notes, report)
            result = w.append(spool)
    finally:
        spool.close()
    return BatchSummary(result.count, result.first, result.last, result.duplicates)


def stream(directory: Path, fd: int, source: str | None, report: Report = quiet) -> int:
    """`append --stream`: commit the lines that arrived together as one group; returns bad lines (each
    reported as it is skipped)."""
    from evlog.ingest.spool import lines

    validator, log = _validator_for(directory, source)
    log = log or _created_like(directory, validator)
    number = bad = 0
    # fsync = batch: groups that arrive back to back share one sync, made before waiting for more input.
    deferred = log.settings.fsync == "batch"
    unsynced: int | None = None  # the segment the first group not yet synced began in

    def sync() -> None:
        nonlocal unsynced
        if unsynced is not None:
            sync_segments(log, unsynced)
            unsynced = None

    for group in lines(fd, sync if deferred else None):
        items = []
        for line in group:
            number += 1
            if not line.strip():
                continue
            try:
                items.append(validator.from_line(line))
            except InvalidEvent as e:
                bad += 1
                report("warning", f"line {number}: {e}; skipped", line=number)
        if items:
            with open_writer(log) as w:
                _tell(w.notes, report)
                if deferred and unsynced is None and w.segment is not None:
                    unsynced = w.segment.base
                w.append(items, sync=not deferred)
    sync()
    return bad


def _tell(notes: list[str], report: Report) -> None:
    """What a writer did before appending (a torn tail cut, a dead writer's batch set aside)."""
    for note in notes:
        report("warning", note)

