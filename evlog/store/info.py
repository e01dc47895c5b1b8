"""`evlog info`: the facts about a log, gathered from its files."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from evlog.store.log import Log
from evlog.store.reader import next_offset


def info(log: Log) -> dict[str, Any]:
    view = log.view()  # what readers see: an uncommitted batch is not counted
    segs = view.segments
    codec = log.codec
    events = 0
    first_offset = last_offset = oldest = newest = None
    for i, seg in enumerate(segs):
        try:
            fd = seg.open()
        except FileNotFoundError:
            continue
        try:
            stop = view.end[1] if view.end is not None and seg.base == view.end[0] else None
            tail = seg.tail(fd, write=i < len(segs) - 1, stop=stop)
            events += tail.count
            if tail.count and first_offset is None:
                frame = seg.first_frame(fd, 0)
                if frame is not None:
                    first_offset, _, oldest = codec.head(frame)
            if tail.last_offset is not None:
                last_offset, newest = tail.last_offset, tail.last_time
        finally:
            os.close(fd)
    size = 0
    try:
        with os.scandir(log.segments_dir) as it:
            size = sum(e.stat().st_size for e in it if e.is_file())
    except FileNotFoundError:
        pass
    return {
        "format": log.settings.format,
        "dir": str(log.dir.resolve()),
        "segments": len(segs),
        "first_offset": first_offset,
        "last_offset": last_offset,
        "events": events,
        "bytes": size,
        "oldest_time": oldest,
        "newest_time": newest,
        "groups": group_rows(log, None if last_offset is None else last_offset + 1),
        "hooks": _hooks(log),
        "dead_letters": _count_lines(log.dir / "dead-letter.jsonl"),
    }


def group_rows(log: Log, end: int | None = None) -> list[dict[str, Any]]:
    """Each group's position (the next offset it will be given) and lag."""
    from evlog.consumers.checkpoints import Groups

    groups = Groups(log.dir)
    end = end if end is not None else next_offset(log)
    rows = []
    for name in groups.names():
        position = groups.get(name)
        if position is not None:
            rows.append({"name": name, "position": position, "lag": max(0, end - position)})
    return rows


def _hooks(log: Log) -> int:
    from evlog.consumers.hooks import Registry

    return len(Registry(log.dir).load())


def _count_lines(path: os.PathLike[str]) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def to_json(facts: dict[str, Any]) -> bytes:
    return msgspec.json.encode(facts)


def to_text(facts: dict[str, Any]) -> str:
    rows = [
        ("directory", facts["dir"]),
        ("format", facts["format"]),
        ("segments", facts["segments"]),
        ("events", facts["events"]),
        ("offsets", "-" if facts["first_offset"] is None else f"{facts['first_offset']}..{facts['last_offset']}"),
        ("bytes", facts["bytes"]),
        ("oldest", facts["oldest_time"] or "-"),
        ("newest", facts["newest_time"] or "-"),
        ("groups", ", ".join(f"{g['name']} (lag {g['lag']})" for g in facts["groups"]) or "none"),
        ("hooks", facts["hooks"]),
        ("dead letters", facts["dead_letters"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k.ljust(width)}  {v}\n" for k, v in rows)
