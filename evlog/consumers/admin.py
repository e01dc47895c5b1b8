"""Consumer groups, hooks and dead letters as the CLI manages them (SPEC 6 groups, hooks, run, dlq)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import msgspec

from evlog.consumers.checkpoints import check_name
from evlog.consumers.consumer import Consumer, Options, RetryReport, Summary, retry_dead_letters, run_consumers
from evlog.consumers.hooks import Hook, Registry
from evlog.consumers.state import dead_letters_of as _dead
from evlog.consumers.state import groups_of as _groups
from evlog.consumers.state import registry_of
from evlog.errors import EvlogError, UsageError, quoted
from evlog.query.filters import Filter
from evlog.report import Report, quiet
from evlog.store.backend import EventLog as Log
from evlog.store.reader import Range
from evlog.units import parse_duration


def _registry(log: Log) -> Registry:
    return registry_of(log)  # type: ignore[no-any-return]


def next_offset(log: Log) -> int:
    return log.next_offset()


def _first_at(log: Log, since_us: int | None) -> int:
    """The offset of the first record at or after a time (the next offset when there is none)."""
    reader = log.reader()
    for chunk in reader.chunks(Range(since_us=since_us)):
        if chunk:
            return log.codec.offset(chunk[0])
    return next_offset(log)


# -- groups ----------------------------------------------------------------------------------

def reset_group(log: Log, name: str, *, to: int | None, to_time_us: int | None, to_end: bool,
                to_start: bool) -> int:
    groups = _groups(log)
    if groups.get(name) is None:
        raise EvlogError(f"no group named {name!r}")
    if to is not None:
        end = next_offset(log)
        if to > end:  # the group would silently skip the events appended up to `to`
            raise UsageError(f"--to {to} is past the end of the log: the next offset is {end}")
        position = to
    elif to_end:
        position = next_offset(log)
    elif to_start:
        position = 0
    else:
        position = _first_at(log, to_time_us)
    groups.set(name, position)
    return position


def delete_group(log: Log, name: str) -> None:
    if not _groups(log).delete(name):
        raise EvlogError(f"no group named {name!r}")


# -- hooks -----------------------------------------------------------------------------------

def add_hook(log: Log, name: str, command: list[str], *, types: list[str], key: str | None,
             subject: str | None, source: str | None, where: str | None, retries: int, timeout: str,
             batch: int, from_start: bool) -> list[str]:
    """Register a hook; returns warnings (a command that cannot run now is added anyway)."""
    registry = _registry(log)
    hooks = registry.load()
    if name in hooks:
        raise EvlogError(f"a hook named {name!r} exists already (remove it first)")
    program = command[0]
    if "/" in program:  # `run` may start from any directory: keep where ./handle.sh is now
        program = os.path.abspath(program)
    problem = _cannot_run(program)
    warnings = [f"hook {name}: {problem}; added anyway"] if problem else []
    hook = Hook(name, [program, *command[1:]], types, key, subject, source, where, retries, timeout, batch)
    _groups(log).set(hook.group, 0 if from_start else next_offset(log))
    hooks[name] = hook
    registry.save(hooks)
    return warnings


def _cannot_run(program: str) -> str | None:
    """Why `program` would not start as a handler (a path, or a name looked up in PATH), or None."""
    if "/" not in program:
        return None if shutil.which(program) else f"{program!r} is not found in PATH"
    if not os.path.isfile(program):
        return f"{quoted(program)} is not found"
    if not os.access(program, os.X_OK):
        return f"{quoted(program)} is not executable"
    return None


def _hook(log: Log, name: str) -> tuple[Registry, dict[str, Hook], Hook]:
    check_name(name, "hook")
    registry = _registry(log)
    hooks = registry.load()
    if name not in hooks:
        raise EvlogError(f"no hook named {name!r}")
    return registry, hooks, hooks[name]


def hook_row(log: Log, name: str, end: int | None = None, dead: list[dict[str, Any]] | None = None,
             hook: Hook | None = None) -> dict[str, Any]:
    if hook is None:
        hook = _hook(log, name)[2]
    end = next_offset(log) if end is None else end
    position = _groups(log).get(hook.group) or 0
    entries = _dead(log).entries() if dead is None else dead
    return {"name": hook.name, "filters": hook.filters(), "command": hook.command, "position": position,
            "lag": max(0, end - position), "dead_letters": sum(1 for e in entries if e.get("hook") == hook.name),
            "paused": hook.paused}


def hook_rows(log: Log) -> list[dict[str, Any]]:
    hooks = _registry(log).load()
    end = next_offset(log)
    dead = _dead(log).entries()
    return [hook_row(log, name, end, dead, hook) for name, hook in hooks.items()]


def remove_hook(log: Log, name: str) -> None:
    registry, hooks, hook = _hook(log, name)
    del hooks[name]
    registry.save(hooks)
    _groups(log).delete(hook.group)


def set_paused(log: Log, name: str, paused: bool) -> None:
    registry, hooks, hook = _hook(log, name)
    hook.paused = paused
    registry.save(hooks)


def run_hooks(log: Log, names: list[str], follow: bool,
              report: Report = quiet) -> tuple[list[Summary], list[tuple[str, BaseException]]]:
    """Run every active hook (or the named ones) side by side; no summaries when there is none to run."""
    hooks = _registry(log).load()
    for name in names:
        check_name(name, "hook")
        if name not in hooks:
            raise EvlogError(f"no hook named {name!r}")
    chosen = [h for n, h in hooks.items() if (n in names if names else not h.paused)]
    consumers = [
        Consumer(log, Options(command=h.command, retries=h.retries, timeout=parse_duration(h.timeout),
                              batch=h.batch), h.filter(), hook=h.name, follow=follow, report=report)
        for h in chosen
    ]
    if not consumers:
        return [], []
    errors: list[tuple[Consumer, BaseException]] = []
    try:
        summaries, errors = run_consumers(consumers)
    finally:  # each hook's summary, also when a signal stops them all (after their handlers finished)
        failed = {id(c) for c, _ in errors}
        for c in consumers:
            if id(c) not in failed:  # a hook that failed has its error line instead
                report("info", f"hook {c.hook}: {c.summary.text()}", hook=c.hook, **c.summary.as_dict())
    return summaries, [(c.hook or "?", e) for c, e in errors]


# -- dead letters ----------------------------------------------------------------------------

def dead_letter_entries(log: Log, flt: Filter | None, hook: str | None = None,
                        group: str | None = None) -> list[dict[str, Any]]:
    from evlog.store.framing import CODECS

    _check_names(hook, group)
    match = flt.compile(CODECS["jsonl"]) if flt is not None else None
    out = []
    for e in _dead(log).entries():
        if hook is not None and e.get("hook") != hook:
            continue
        if group is not None and e.get("group") != group:
            continue
        if match is not None and not match(msgspec.json.encode(e.get("event"))):
            continue
        out.append(e)
    return out


def _check_names(hook: str | None, group: str | None) -> None:
    if hook is not None:
        check_name(hook, "hook")
    if group is not None:
        check_name(group)


def dead_letter(log: Log, dlq_id: int) -> dict[str, Any]:
    for e in _dead(log).entries():
        if e.get("dlq_id") == dlq_id:
            return e
    raise EvlogError(f"no dead-letter entry {dlq_id}")


def retry(log: Log, ids: list[int], *, hook: str | None, group: str | None, command: list[str] | None,
          timeout: float | None) -> RetryReport:
    _check_names(hook, group)
    wanted = set(ids)

    def chosen(e: dict[str, Any]) -> bool:
        return ((not wanted or e.get("dlq_id") in wanted) and (hook is None or e.get("hook") == hook)
                and (group is None or e.get("group") == group))

    if wanted:
        known = {e.get("dlq_id") for e in _dead(log).entries()}
        missing = sorted(wanted - known)
        if missing:
            raise EvlogError(f"no dead-letter entry {missing[0]}")
    return retry_dead_letters(log, chosen, command, timeout)


def purge(log: Log, ids: list[int], *, all_: bool, before_us: int | None) -> int:
    from evlog.units import format_time

    wanted = set(ids)
    before = format_time(before_us) if before_us is not None else None
    removed = 0

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal removed
        kept = [e for e in entries
                if not (all_ or e.get("dlq_id") in wanted or (before is not None and str(e.get("failed_at")) < before))]
        removed = len(entries) - len(kept)
        return kept

    _dead(log).rewrite(change)
    return removed


# -- facts -------------------------------------------------------------------------------------

def group_rows(log: Log, end: int | None = None) -> list[dict[str, Any]]:
    """Each group's position (the next offset it will be given; on a NATS log, the offset after its
    acknowledged prefix) and lag (on a NATS log, the events it has still to finish)."""
    groups = _groups(log)
    end = end if end is not None else next_offset(log)
    rows = []
    for name in groups.names():
        position = groups.get(name)
        if position is not None:
            lag = groups.lag(name) if hasattr(groups, "lag") else None
            rows.append({"name": name, "position": position, "lag": max(0, end - position) if lag is None else lag})
    return rows


def consumer_facts(log: Log, end: int | None = None) -> dict[str, Any]:
    """What `evlog info` tells of the consumers: groups with lag, the number of hooks (0 on a NATS log,
    which has none: SPEC 3 keeps every key of `info --json`, only `segments` is null) and of dead letters."""
    hooks = 0 if log.kind == "nats" else len(_registry(log).load())
    return {"groups": group_rows(log, end), "hooks": hooks, "dead_letters": _dead(log).count()}
