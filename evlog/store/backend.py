"""One interface for a log, wherever it lives: a directory (evlog.store.local) or a NATS JetStream stream
(evlog.store.nats, whose docstring maps one onto the other).

    EventLog
      kind, where, codec, settings
      append(items, sync)              items as evlog.ingest.event makes them; all or nothing
      reader(types)                    .chunks(range), .next_offset, .tail(n, match)
      next_offset()                    the offset the next event will get, as far as readers know
      follow(next_offset, types, ...)  new frames as they are appended
      sync()                           make durable what appends with sync=False left
      info()                           the storage facts of `evlog info`
      close()

Frames are what the codec (`codec`) reads: JSON Lines frames for a NATS log.
`types` are `--type` patterns a backend may apply itself (a NATS server
filters subjects); callers filter anyway, so a backend may ignore them.
`open_log` picks the backend by the location's form and imports the NATS
client only for a NATS location.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from evlog.settings import Settings
from evlog.store.framing import Codec
from evlog.store.reader import Range
from evlog.store.writer import AppendResult


class LogReader(Protocol):
    next_offset: int

    def chunks(self, rng: Range = ...) -> Iterator[list[bytes]]: ...

    def tail(self, n: int, match: Callable[[bytes], bool] | None) -> tuple[list[bytes], int]: ...


class EventLog(Protocol):
    kind: str    # "local" or "nats"
    where: str   # the directory, or the NATS location without credentials
    codec: Codec

    @property
    def settings(self) -> Settings: ...

    def append(self, items: Iterable[bytes], sync: bool = True) -> AppendResult: ...

    def reader(self, types: Sequence[str] = ()) -> LogReader: ...

    def next_offset(self) -> int: ...

    def follow(self, next_offset: int, types: Sequence[str], stop: threading.Event | None,
               interrupted: Callable[[], BaseException]) -> Iterator[list[bytes]]: ...

    def info(self) -> dict[str, Any]: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


def is_nats(location: str) -> bool:
    return location.startswith(("nats://", "tls://"))


def open_log(location: str, *, creds: str | None = None, timeout: float = 30.0) -> EventLog:
    """The log at `location` (a directory, or nats://.../STREAM); LogNotFound when there is none."""
    if is_nats(location):
        from evlog.store.nats import NatsLog

        log = NatsLog(location, creds=creds, timeout=timeout)
        try:
            log.config()
        except BaseException:
            log.close()
            raise
        return log
    from evlog.store.local import LocalLog
    from evlog.store.log import Log

    return LocalLog(Log.open(Path(location)))
