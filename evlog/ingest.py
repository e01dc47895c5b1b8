"""Input for `append --batch` and `append --stream`: JSON Lines, validated line by line.

A batch is validated whole before the log is locked: accepted events are
kept in a spool (in memory, spilling to an unlinked temporary file in the
log directory past SPOOL_MEMORY bytes), so a batch larger than RAM costs
disk, not memory, and an invalid line means nothing is appended at all.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from evlog.errors import InvalidEvent, InvalidLine
from evlog.event import Pending, Validator

READ_SIZE = 1 << 20
SPOOL_MEMORY = 64 << 20
_LEN = struct.Struct("<II")
_NO_ID = 0xFFFFFFFF


class Spool:
    """Pending events in input order: a list, then a temporary file."""

    def __init__(self, directory: Path, memory_limit: int = SPOOL_MEMORY) -> None:
        self.directory, self.memory_limit = directory, memory_limit
        self.items: list[Pending] = []
        self.bytes = 0
        self.file: tempfile._TemporaryFileWrapper[bytes] | None = None  # type: ignore[name-defined]
        self.spilled = 0

    def add(self, item: Pending) -> None:
        self.items.append(item)
        self.bytes += len(item.rest) + 64
        if self.bytes > self.memory_limit:
            self._spill()

    def _spill(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=self.directory, prefix=".batch-")  # noqa: SIM115
        parts = []
        for item in self.items:
            id_bytes = item.id.encode() if item.id is not None else b""
            parts.append(_LEN.pack(_NO_ID if item.id is None else len(id_bytes), len(item.rest)))
            parts.append(id_bytes)
            parts.append(item.rest)
        self.file.write(b"".join(parts))
        self.spilled += len(self.items)
        self.items, self.bytes = [], 0

    def __len__(self) -> int:
        return self.spilled + len(self.items)

    def __iter__(self) -> Iterator[Pending]:
        if self.file is not None:
            f = self.file
            f.flush()
            f.seek(0)
            for _ in range(self.spilled):
                id_len, rest_len = _LEN.unpack(f.read(_LEN.size))
                id_ = None if id_len == _NO_ID else f.read(id_len).decode()
                yield Pending(id_, f.read(rest_len), 0)
        yield from self.items

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def lines(fd: int) -> Iterator[list[bytes]]:
    """Complete input lines, in the groups that arrived together (a final unterminated line included)."""
    carry = b""
    while True:
        block = os.read(fd, READ_SIZE)
        if not block:
            if carry:
                yield [carry]
            return
        data = carry + block if carry else block
        parts = data.split(b"\n")
        carry = parts.pop()
        if parts:
            yield parts


def read_batch(fd: int, validator: Validator, spool: Spool) -> Spool:
    """Validate every line into the spool; raise InvalidLine naming the first bad line."""
    number = 0
    first_bad: tuple[int, str] | None = None
    others = 0
    from_line = validator.from_line
    add = spool.add
    for group in lines(fd):
        for line in group:
            number += 1
            if not line.strip():
                continue
            try:
                item = from_line(line)
            except InvalidEvent as e:
                if first_bad is None:
                    first_bad = (number, str(e))
                else:
                    others += 1
                continue
            if first_bad is None:
                add(item)
    if first_bad is not None:
        spool.close()
        raise InvalidLine(first_bad[0], first_bad[1], others)
    return spool
