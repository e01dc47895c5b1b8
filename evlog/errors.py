"""The exception tree and the exit codes (SPEC 5).

Every error evlog reports on purpose is an ``EvlogError``; ``evlog.cli.app.main``
is the one place that turns them into exit codes and one stderr line.

    EvlogError                      exit 1  runtime error
    ├── LogNotFound                 exit 1  no log at the directory
    ├── SettingsError               exit 1  evlog.toml unusable (names file and key)
    ├── DeadLetterFull              exit 1  a consumer stopped: the dead-letter file holds max_entries
    ├── HandlerStopped              exit 1  --on-failure stop: a handler failed for good
    ├── HandlerCannotStart          exit 1 or 3  the handler cannot be started (1 when events remain)
    ├── UsageError                  exit 2  bad flag value, bad filter expression
    │   └── WhereError              exit 2  ... a malformed --where expression (names the column)
    ├── InvalidEvent                exit 4  an event was rejected; nothing written
    │   └── InvalidLine             exit 4  ... naming the input line
    ├── CorruptionError             exit 5  a bad record (segment, position, offset)
    │   └── UndecodableRecord       exit 5  ... whose checksum holds but whose fields cannot be decoded
    └── Busy                        exit 75 a lock is held by someone else
"""

from __future__ import annotations

import enum
import os


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    INVALID_INPUT = 4
    CORRUPT = 5
    BUSY = 75
    SIGINT = 130
    SIGTERM = 143


def quoted(path: object) -> str:
    """A path as a one-line message shows it: as it is when plain, else quoted like repr(), so that a
    newline, a quote or a byte that is not UTF-8 shows as an escape and cannot break or fake the line."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if isinstance(text, str) and text.isprintable() and not any(c in text for c in "'\"\\"):
        return text
    return repr(text)


class EvlogError(Exception):
    """Base of every error evlog reports on purpose."""

    exit_code = ExitCode.ERROR


class LogNotFound(EvlogError):
    def __init__(self, path: object) -> None:
        super().__init__(f"no log at {quoted(path)} (create one with `evlog init` or `evlog append`)")


class SettingsError(EvlogError):
    def __init__(self, path: object, key: str, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{quoted(path)}: {key}: {problem}")


class UsageError(EvlogError):
    exit_code = ExitCode.USAGE


class InvalidEvent(EvlogError):
    exit_code = ExitCode.INVALID_INPUT


class InvalidLine(InvalidEvent):
    def __init__(self, line: int, reason: str, others: int = 0) -> None:
        self.line, self.reason, self.others = line, reason, others
        more = f" (and {others} more invalid line{'s' if others != 1 else ''})" if others else ""
        super().__init__(f"line {line}: {reason}{more}; nothing was appended")


class CorruptionError(EvlogError):
    exit_code = ExitCode.CORRUPT

    def __init__(self, segment: str, position: int, offset: int | None, problem: str) -> None:
        self.segment, self.position, self.offset, self.problem = segment, position, offset, problem
        at = f"offset {offset}" if offset is not None else "an unknown offset"
        super().__init__(f"corrupt record at {at} (segment {segment}, byte {position}): {problem}")


class UndecodableRecord(CorruptionError):
    """A record that passed its checksum but cannot be decoded (written by an older version, or forged)."""

    def __init__(self, offset: int | None, problem: str) -> None:
        self.segment, self.position, self.offset, self.problem = "", -1, offset, problem
        at = f"offset {offset}" if offset is not None else "an unknown offset"
        EvlogError.__init__(self, f"corrupt record at {at}: {problem} (run `evlog verify`)")


class Busy(EvlogError):
    exit_code = ExitCode.BUSY


class DeadLetterFull(EvlogError):
    def __init__(self, path: object, limit: int) -> None:
        super().__init__(f"the dead-letter file {quoted(path)} is full ({limit} entries, [dead_letter] max_entries); "
                         "stopped before the failing event: inspect with `evlog dlq list`, then retry or purge")


class HandlerStopped(EvlogError):
    """--on-failure stop: a handler failed for good; the checkpoint stays before its event."""


class HandlerCannotStart(EvlogError):
    """The handler could not be started at all. Its first event fails as any other (SPEC 6: retried, then
    dead-lettered); then the consumer stops rather than dead-letter the whole backlog for what is a
    configuration error. Exit 1 when events remain to deliver, else the usual 3 (one was dead-lettered)."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, reason: str, what: str) -> None:
        super().__init__(f"{reason}; {what} dead-lettered and nothing more run: fix the command, then run again")


class WhereError(UsageError):
    """A malformed ``--where`` expression; ``position`` is the 0-based index where it failed."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        self.text, self.position, self.problem = text, position, problem
        at = f"column {position + 1}" if position < len(text) else f"its end (column {position + 1})"
        message = f"bad --where expression at {at}: {problem} in: {text}"
        # One line whatever the text holds; other characters keep their columns.
        super().__init__("".join(c if c.isprintable() else " " for c in message))
