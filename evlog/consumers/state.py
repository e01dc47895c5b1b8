"""Where consumers keep their state, on either backend: group positions and dead letters.

On a local log they are files in the log's directory (evlog.consumers.checkpoints,
evlog.consumers.deadletter); on a NATS log, the stream's durable consumers and its
dead-letter stream (evlog.consumers.nats). Both sides offer the same methods, so
`groups`, `dlq` and `info` work alike on both.
"""

from __future__ import annotations

from typing import Any

from evlog.errors import UsageError
from evlog.store.backend import EventLog

HOOKS_ARE_LOCAL = ("hooks are kept in a local log's directory; on a NATS log run each handler with "
                   "`evlog replay --group NAME -f`, which any number of machines can share")


def local_dir(log: EventLog) -> Any:
    """The directory of a local log (its Log's); None for a NATS log."""
    inner = getattr(log, "log", None)
    return None if inner is None else inner.dir


def groups_of(log: EventLog) -> Any:
    """The group positions: Groups (checkpoint files) or NatsGroups (durable consumers)."""
    if log.kind == "nats":
        from evlog.consumers.nats import NatsGroups

        return NatsGroups(log)  # type: ignore[arg-type]
    from evlog.consumers.checkpoints import Groups

    return Groups(local_dir(log), log.settings.fsync != "never")


def dead_letters_of(log: EventLog) -> Any:
    """The dead letters: DeadLetters (a file) or NatsDeadLetters (the STREAM_DLQ stream)."""
    if log.kind == "nats":
        from evlog.consumers.nats import NatsDeadLetters

        return NatsDeadLetters(log)  # type: ignore[arg-type]
    from evlog.consumers.deadletter import DeadLetters

    s = log.settings
    return DeadLetters(local_dir(log), s.dead_letter_max_entries, s.fsync != "never")


def registry_of(log: EventLog) -> Any:
    if log.kind == "nats":
        raise UsageError(HOOKS_ARE_LOCAL)
    from evlog.consumers.hooks import Registry

    return Registry(local_dir(log), log.settings.fsync != "never")
