"""The dead-letter file: `DIR/dead-letter.jsonl`, one JSON object per failed event.

Entries are appended under `DIR/.dead-letter.lock` and fsynced before the
call returns, so an entry is durable before a consumer's checkpoint moves
past its event. The file never holds more than `[dead_letter] max_entries`:
a consumer that would exceed it gets DeadLetterFull and stops instead of
dropping anything. Removing or updating entries rewrites the file under the
lock (temporary file, fsync, rename).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import msgspec

from evlog.errors import DeadLetterFull, EvlogError, quoted
from evlog.store import files
from evlog.store.framing import Record
from evlog.units import format_time, now_us

_encode = msgspec.json.Encoder().encode


class Containment(msgspec.Struct):
    """How the failed run contained its handler (replay --clean-env/--env/--max-memory/--timeout), kept in an
    entry beside the SPEC's keys so that `dlq retry` runs the handler the same way."""

    clean_env: bool = False
    env: dict[str, str] = msgspec.field(default_factory=dict)
    max_memory: Annotated[int, msgspec.Meta(ge=1)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None


class Entry(msgspec.Struct):
    """What an entry must hold to be listed, filtered and retried; other keys are kept as they are.

    The file is as trusted as hooks.toml: its `command` and `containment` say what `dlq retry` runs.
    """

    dlq_id: int
    event: Record
    failed_at: str = ""
    group: str | None = None
    hook: str | None = None
    command: list[str] | None = None
    attempts: int = 0
    exit_code: int | None = None
    error: str | None = None
    stderr: str = ""
    containment: Containment | None = None


class DeadLetters:
    def __init__(self, log_dir: Path, max_entries: int, fsync: bool = True) -> None:
        self.path = log_dir / "dead-letter.jsonl"
        self.lock_path = log_dir / ".dead-letter.lock"
        self.seq_path = log_dir / ".dead-letter.last-id"
        self.max_entries, self.fsync = max_entries, fsync

    @contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(data.split(b"\n"), 1):
            if line.strip():
                try:
                    entry = msgspec.json.decode(line)
                except (msgspec.DecodeError, RecursionError):
                    raise EvlogError(f"{quoted(self.path)}: line {n} is not valid JSON") from None
                try:
                    if not isinstance(entry, dict):
                        raise msgspec.ValidationError(f"expected an object, not {type(entry).__name__}")
                    msgspec.convert(entry, Entry)
                except msgspec.ValidationError as e:
                    raise EvlogError(f"{quoted(self.path)}: line {n} is not a dead-letter entry ({e})") from None
                out.append(entry)
        return out

    def count(self) -> int:
        """The number of entries (non-blank lines; not parsed, so a damaged file still counts)."""
        try:
            with open(self.path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def add(self, *, group: str | None, hook: str | None, command: list[str], attempts: int,
            exit_code: int | None, error: str, stderr: bytes, event: Any,
            containment: Containment | None = None) -> int:
        """Append one entry durably; returns its dlq_id."""
        with self.locked():
            existing = self.entries()
            if len(existing) >= self.max_entries:
                raise DeadLetterFull(self.path, self.max_entries)
            dlq_id = max(self._last_id(), max((e.get("dlq_id", 0) for e in existing), default=0)) + 1
            entry = {
                "dlq_id": dlq_id, "failed_at": format_time(now_us()), "group": group, "hook": hook,
                "command": command, "attempts": attempts, "exit_code": exit_code, "error": error,
                "stderr": stderr.decode("utf-8", "replace"), "event": event,
            }
            if containment is not None:
                entry["containment"] = msgspec.structs.asdict(containment)
            created = not self.path.exists()
            with open(self.path, "ab") as f:
                f.write(_encode(entry) + b"\n")
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            if created and self.fsync:
                files.fsync_dir(self.path.parent)
            # Ids are never reused, even after a purge: the last one given out is kept aside.
            files.write_atomic(self.seq_path, b"%d\n" % dlq_id, self.fsync)
            return dlq_id

    def _last_id(self) -> int:
        try:
            return int(self.seq_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def rewrite(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        """Replace the entries with change(entries), atomically, under the lock."""
        with self.locked():
            kept = change(self.entries())
            files.write_atomic(self.path, b"".join(_encode(e) + b"\n" for e in kept), self.fsync)
