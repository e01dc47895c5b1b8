"""Appending as the CLI asks for it: one event, a batch (all or nothing), a live stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from evlog.errors import EvlogError, InvalidEvent, LogNotFound, UsageError, quoted
from evlog.ingest.event import MAX_DEPTH, Validator, json_problem, utf8_problem
from evlog.report import Report, quiet
from evlog.settings import Settings
from evlog.store.backend import EventLog, is_nats
from evlog.store.framing import codec_for
from evlog.store.local import LocalLog
from evlog.store.log import Log
from evlog.store.writer import AppendResult
from evlog.units import count

DEFAULT_SOURCE = "evlog"


class Target:
    """Where appends go: an existing log, or a location where `append` creates one (SPEC 3, with default
    settings) once the input has proved valid: invalid input creates no log either."""

    def __init__(self, location: str, *, creds: str | None = None, timeout: float = 30.0,
                 report: Report = quiet) -> None:
        self.location, self.creds, self.timeout, self.report = location, creds, timeout, report
        self._log: EventLog | None = None
        self._nats: Any = None
        if is_nats(location):
            from evlog.store.nats import NatsLog

            self._nats = NatsLog(location, creds=creds, timeout=timeout)
            try:
                self._nats.config()
                self._log = self._nats
            except LogNotFound:
                pass
        elif Log.settings_path(Path(location)).is_file():
            self._log = LocalLog(Log.open(Path(location)), report)

    @property
    def exists(self) -> bool:
        return self._log is not None

    def validator(self, source: str | None, keep_times: bool = True) -> Validator:
        settings = self._log.settings if self._log is not None else Settings()
        codec = codec_for("jsonl" if self._nats is not None else settings.format)
        return Validator(codec, settings.max_event_bytes, source or DEFAULT_SOURCE, keep_times,
                         subject_types=self._nats is not None)

    def log(self, validator: Validator) -> EventLog:
        """The log, created now when it is missing; items validated for the default format must still fit it
        (another process may have created it meanwhile)."""
        if self._log is None:
            if self._nats is not None:
                self._nats.create(exist_ok=True)
                self._log = self._nats
            else:
                local = Log.create(Path(self.location), Settings(), exist_ok=True)
                if local.codec is not validator.codec:
                    raise EvlogError(f"the log at {quoted(self.location)} was created meanwhile as "
                                     f"{local.codec.name}; run again")
                self._log = LocalLog(local, self.report)
        return self._log

    def close(self) -> None:
        if self._nats is not None:
            self._nats.close()


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
        typed = item[eq - 1] == ":" and eq > 1
        name = item[:eq - 1] if typed else item[:eq]
        if name in obj:  # conflicting items are an error (as in HTTPie), not "the last one wins"
            raise UsageError(f"FIELD {name!r} is given twice: give each name once")
        if typed:
            obj[name] = msgspec.json.decode(_json(f"FIELD {name}", item[eq + 1:].encode(), MAX_DEPTH - 1))
        else:
            obj[name] = item[eq + 1:]
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


def one(target: Target, type_: str, data: msgspec.Raw, *, key: str | None, subject: str | None,
        source: str | None, id_: str | None) -> tuple[EventLog, int]:
    """Append one event; returns the log and its offset (the earlier one for a known --id)."""
    for name, value in (("TYPE", type_), ("--key", key), ("--subject", subject), ("--source", source),
                        ("--id", id_)):
        _check_arg(name, value)
    validator = target.validator(source)
    item = validator.item(type_, data, key, subject, source, id_)  # before a log is created
    log = target.log(validator)
    result = log.append([item])
    assert result.first_item is not None
    return log, result.first_item


class BatchSummary(msgspec.Struct):
    count: int
    first: int | None
    last: int | None
    duplicates: int
    raised: int = 0

    def json_line(self) -> bytes:
        return msgspec.json.encode({"count": self.count, "first": self.first, "last": self.last}) + b"\n"

    def text(self) -> str:
        dup = f" ({self.duplicates} already in the log by id, skipped)" if self.duplicates else ""
        if self.raised:
            dup += (f"; {self.raised} time{'s' if self.raised != 1 else ''} earlier than the log's newest "
                    "raised to it")
        if not self.count:
            return "appended 0 events" + dup
        return f"appended {count(self.count, 'event')}, offsets {self.first}..{self.last}{dup}"


def batch(target: Target, fd: int, source: str | None, keep_times: bool = True) -> BatchSummary:
    """`append --batch`: validate all of stdin, then append it in one write, all or nothing."""
    from evlog.ingest.spool import Spool, read_batch

    validator = target.validator(source, keep_times)
    spill = Path(target.location) if target.exists and not is_nats(target.location) else None
    spool = read_batch(fd, validator, Spool(spill, validator.codec))
    try:
        log = target.log(validator)  # (invalid input raised above: no log is created for it)
        if not len(spool):
            return BatchSummary(0, None, None, 0)
        result = log.append(spool)
    finally:
        spool.close()
    return BatchSummary(result.count, result.first, result.last, result.duplicates, result.raised)


def stream(target: Target, fd: int, source: str | None, keep_times: bool = True) -> StreamSummary:
    """`append --stream`: commit the lines that arrived together as one group; invalid lines are reported
    (with their number) and skipped."""
    from evlog.ingest.spool import lines

    validator = target.validator(source, keep_times)
    log = target.log(validator)
    summary = StreamSummary()
    # fsync = batch: groups that arrive back to back share one sync, made before waiting for more input.
    deferred = log.settings.fsync == "batch"
    for group in lines(fd, log.sync if deferred else None):
        items = []
        for line in group:
            summary.lines += 1
            if not line.strip():
                continue
            try:
                items.append(validator.from_line(line))
            except InvalidEvent as e:
                summary.bad += 1
                target.report("warning", f"line {summary.lines}: {e}; skipped", line=summary.lines)
        if items:
            result = log.append(items, sync=not deferred)
            summary.add(result)
    log.sync()
    return summary


class Appended(msgspec.Struct):
    """What several appends added up to."""

    count: int = 0
    first: int | None = None
    last: int | None = None
    duplicates: int = 0
    raised: int = 0

    def add(self, result: AppendResult) -> None:
        self.count += result.count
        self.duplicates += result.duplicates
        self.raised += result.raised
        if result.first is not None and self.first is None:
            self.first = result.first
        if result.last is not None:
            self.last = result.last


class StreamSummary(Appended):
    lines: int = 0
    bad: int = 0

    def json_line(self) -> bytes:
        return msgspec.json.encode({"count": self.count, "first": self.first, "last": self.last,
                                    "skipped": self.bad}) + b"\n"

    def text(self) -> str:
        return BatchSummary(self.count, self.first, self.last, self.duplicates, self.raised).text()
