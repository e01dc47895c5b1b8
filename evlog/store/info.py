"""The storage facts of a log (`evlog info` adds its consumers): format, segments, offsets, events, bytes, times."""

from __future__ import annotations

import os
from typing import Any

from evlog.store.log import Log


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
    }
