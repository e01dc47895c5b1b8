"""A log in a local directory, behind the interface of evlog.store.backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from evlog.report import Report, quiet
from evlog.settings import Settings
from evlog.store.log import Log
from evlog.store.reader import Reader, next_offset
from evlog.store.writer import AppendResult, open_writer, sync_segments


class LocalLog:
    kind = "local"

    def __init__(self, log: Log, report: Report = quiet) -> None:
        self.log = log
        self.where = str(log.dir)
        self.codec = log.codec
        self.report = report  # what a writer did besides appending (a torn tail cut, ...)
        self.unsynced: int | None = None  # appends with sync=False left segments from this base unsynced

    @property
    def settings(self) -> Settings:
        return self.log.settings

    def append(self, items: Iterable[bytes], sync: bool = True) -> AppendResult:
        with open_writer(self.log) as w:
            for note in w.notes:
                self.report("warning", note)
            if not sync and self.unsynced is None and w.segment is not None:
                self.unsynced = w.segment.base
            return w.append(items, sync=sync)

    def sync(self) -> None:
        """Make durable what appends with sync=False left."""
        if self.unsynced is not None:
            sync_segments(self.log, self.unsynced)
            self.unsynced = None

    def reader(self, types: Sequence[str] = ()) -> Reader:
        return Reader(self.log)

    def next_offset(self) -> int:
        return next_offset(self.log)

    def follow(self, next_offset: int, types: Sequence[str], stop: threading.Event | None,
               interrupted: Callable[[], BaseException]) -> Iterator[list[bytes]]:
        from evlog.store.follow import Follower

        return Follower(self.log, next_offset).follow(interrupted, stop)

    def info(self) -> dict[str, Any]:
        from evlog.store.info import info

        return info(self.log)

    def close(self) -> None:
        pass
