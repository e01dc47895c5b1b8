"""Input for `append --batch` and `append --stream`: JSON Lines, validated line by line.

A batch is validated whole before the log is locked: accepted events are
kept in a spool (in memory, spilling to an unlinked temporary file in the
log directory past SPOOL_MEMORY bytes), so a batch larger than RAM costs
disk, not memory, and an invalid line means nothing is appended at all.
The bytes counted are what the items cost in memory, Python's overhead of
each bytes object and list slot included (about 40 bytes, a third of a
typical event), so the bound holds for many small events too.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from evlog.errors import InvalidEvent, InvalidLine
from evlog.ingest.event import MAX_INT_DIGITS, Validator, block_ok
from evlog.store.framing import Codec

READ_SIZE = 1 << 20
SPOOL_MEMORY = 32 << 20   # what a batch keeps in memory before spilling (documented in the README)
ITEM_OVERHEAD = sys.getsizeof(b"") + 8  # a bytes object's header, and its slot in the list
_LEN = struct.Struct("<I")


class Spool:
    """Items in input order: in memory up to a limit, then in an unlinked temporary file.

    JSON Lines items hold no newline, so the file is newline-separated and is
    read back in large blocks; MessagePack items are length-prefixed.
    """

    def __init__(self, directory: Path | None, codec: Codec, memory_limit: int = SPOOL_MEMORY) -> None:
        self.directory, self.memory_limit = directory, memory_limit
        self.lined = codec.name == "jsonl"
        self.items: list[bytes] = []
        self.bytes = 0
        self.count = 0
        self.file: IO[bytes] | None = None

    def extend(self, items: list[bytes]) -> None:
        self.items.extend(items)
        self.bytes += sum(map(len, items)) + ITEM_OVERHEAD * len(items)
        if self.bytes > self.memory_limit:
            self._spill()

    def _spill(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=self.directory, prefix=".batch-")  # noqa: SIM115
        if self.lined:
            self.file.write(b"\n".join(self.items))
            self.file.write(b"\n")
        else:
            self.file.write(b"".join(_LEN.pack(len(i)) + i for i in self.items))
        self.count += len(self.items)
        self.items, self.bytes = [], 0

    def __len__(self) -> int:
        return self.count + len(self.items)

    def __iter__(self) -> Iterator[bytes]:
        if self.file is not None:
            f = self.file
            f.flush()
            f.seek(0)
            if self.lined:
                carry = b""
                while block := f.read(READ_SIZE):
                    parts = (carry + block).split(b"\n")
                    carry = parts.pop()
                    yield from parts
            else:
                for _ in range(self.count):
                    (n,) = _LEN.unpack(f.read(_LEN.size))
                    yield f.read(n)
        yield from self.items

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def blocks(fd: int, before_wait: Callable[[], None] | None = None) -> Iterator[tuple[bytes, list[bytes]]]:
    """(bytes read, the complete lines in them): input in the groups that arrived together.

    The bytes may end with the start of a line that the next group completes;
    a final unterminated line is a group of its own. `before_wait` is called
    when no input is there yet and reading would wait for it.
    """
    carry = b""
    while True:
        if before_wait is not None and not select.select([fd], [], [], 0)[0]:
            before_wait()
        block = os.read(fd, READ_SIZE)
        if not block:
            if carry:
                yield carry, [carry]
            return
        data = carry + block if carry else block
        parts = data.split(b"\n")
        carry = parts.pop()
        if parts:
            yield data, parts


def lines(fd: int, before_wait: Callable[[], None] | None = None) -> Iterator[list[bytes]]:
    """Complete input lines, in the groups that arrived together (a final unterminated line included)."""
    for _, parts in blocks(fd, before_wait):
        yield parts


def read_batch(fd: int, validator: Validator, spool: Spool) -> Spool:
    """Validate every line into the spool; raise InvalidLine naming the first bad line."""
    number = 0
    first_bad: tuple[int, str] | None = None
    others = 0
    from_line = validator.from_line
    for data, group in blocks(fd):
        if first_bad is None:
            try:
                fast = block_ok(data) and max(map(len, group), default=0) <= MAX_INT_DIGITS
                spool.extend(validator.from_lines(group, fast))
                number += len(group)
                continue
            except (InvalidEvent, msgspec.MsgspecError):
                pass  # a blank or bad line in this group: go line by line
        items: list[bytes] = []
        add = items.append
        for line in group:
            number += 1
            try:
                add(from_line(line))
            except InvalidEvent as e:
                if not line.strip():
                    continue  # blank lines are ignored
                if first_bad is None:
                    first_bad = (number, str(e))
                else:
                    others += 1
        if first_bad is None:
            spool.extend(items)
    if first_bad is not None:
        spool.close()
        raise InvalidLine(first_bad[0], first_bad[1], others)
    return spool
