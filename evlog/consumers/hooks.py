"""The hook registry: `DIR/hooks.toml`, human-editable, one table per hook.

    [hooks.audit]
    command = ["/usr/local/bin/audit", "--fast"]
    types = ["order.*"]          # filters, all optional: types, key, subject, source, where
    retries = 3
    timeout = "30s"
    batch = 1
    paused = false

Each hook is an independent consumer whose checkpoint is the group
`hook.NAME` in `DIR/groups/`. The file is rewritten atomically; a broken file
is an error naming the line and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from evlog.consumers.checkpoints import check_name
from evlog.errors import EvlogError, UsageError, quoted
from evlog.query.filters import Filter
from evlog.store import files
from evlog.units import parse_duration


class Hook(msgspec.Struct):
    name: str
    command: list[str]
    types: list[str] = msgspec.field(default_factory=list)
    key: str | None = None
    subject: str | None = None
    source: str | None = None
    where: str | None = None
    retries: int = 3
    timeout: str = "30s"
    batch: int = 1
    paused: bool = False

    def filter(self) -> Filter:
        return Filter(list(self.types), self.key, self.subject, self.source, self.where)

    def filters(self) -> dict[str, Any]:
        f = {"types": self.types, "key": self.key, "subject": self.subject, "source": self.source,
             "where": self.where}
        return {k: v for k, v in f.items() if v}

    @property
    def group(self) -> str:
        return f"hook.{self.name}"


_FIELDS = ("command", "types", "key", "subject", "source", "where", "retries", "timeout", "batch", "paused")


class Registry:
    def __init__(self, log_dir: Path, fsync: bool = True) -> None:
        self.path = log_dir / "hooks.toml"
        self.fsync = fsync

    def load(self) -> dict[str, Hook]:
        import tomllib

        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError as e:
            raise EvlogError(f"{quoted(self.path)}: not valid UTF-8 (byte {e.start})") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise EvlogError(f"{quoted(self.path)}: {e}") from None
        except RecursionError:
            raise EvlogError(f"{quoted(self.path)}: nested too deeply") from None
        tables = doc.get("hooks", {})
        if not isinstance(tables, dict) or set(doc) - {"hooks"}:
            raise EvlogError(f"{quoted(self.path)}: expected only [hooks.NAME] tables")
        hooks = {}
        lines = text.splitlines()
        for name, table in tables.items():
            where = f"{quoted(self.path)}: line {_line_of(lines, name)}: hook {name!r}"
            if not isinstance(table, dict):
                raise EvlogError(f"{where}: must be a table")
            unknown = set(table) - set(_FIELDS)
            if unknown:
                raise EvlogError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
            try:
                hook = msgspec.convert({"name": name, **table}, Hook)
                check_name(name, "hook")
            except msgspec.ValidationError as e:
                field = str(e).rpartition("$.")[2].rstrip("`") if "$." in str(e) else ""
                field = field.partition("[")[0]
                line = _line_of(lines, name, field) if field else _line_of(lines, name)
                raise EvlogError(f"{quoted(self.path)}: line {line}: hook {name!r}: {e}") from None
            except UsageError as e:
                raise EvlogError(f"{where}: {e}") from None
            bad = _problem(hook)
            if bad is not None:
                key, problem = bad
                raise EvlogError(f"{quoted(self.path)}: line {_line_of(lines, name, key)}: hook {name!r}: "
                                 f"{key}: {problem}")
            hooks[name] = hook
        return hooks

    def save(self, hooks: dict[str, Hook]) -> None:
        parts = ["# evlog hooks: one [hooks.NAME] table per hook (see `man evlog-hooks`).\n"]
        for name, hook in hooks.items():
            parts.append(f"\n[hooks.{name}]\n")
            for field in _FIELDS:
                value = getattr(hook, field)
                if value is None or (field == "types" and not value):
                    continue
                parts.append(f"{field} = {_toml(value)}\n")
        files.write_atomic(self.path, "".join(parts).encode(), self.fsync)


def _problem(hook: Hook) -> tuple[str, str] | None:
    """(key, problem) for the first setting of a well-typed hook that cannot work, or None."""
    if not hook.command:
        return "command", "must not be empty"
    if not all(hook.command):
        return "command", "must not hold an empty string"
    if hook.retries < 0:
        return "retries", f"must be 0 or more, not {hook.retries}"
    if hook.batch < 1:
        return "batch", f"must be 1 or more, not {hook.batch}"
    try:
        if parse_duration(hook.timeout) <= 0:
            return "timeout", f"must be longer than 0, not {hook.timeout!r}"
    except ValueError as e:
        return "timeout", str(e)
    from evlog.store.framing import CODECS

    for key, flt in (("types", Filter(list(hook.types))), ("where", Filter(where=hook.where))):
        try:
            flt.compile(CODECS["jsonl"])
        except UsageError as e:
            return key, str(e)
    return None


def _line_of(lines: list[str], hook: str, key: str = "") -> int:
    """The line of `[hooks.HOOK]` (or of KEY within it), counted from 1, for messages."""
    header = next((i for i, line in enumerate(lines)
                   if line.strip().replace(" ", "") in (f"[hooks.{hook}]", f'[hooks."{hook}"]')), None)
    if header is None:
        return 1
    if key:
        for i in range(header + 1, len(lines)):
            stripped = lines[i].strip()
            if stripped.startswith("["):
                break
            if stripped.split("=", 1)[0].strip() == key:
                return i + 1
    return header + 1


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)
