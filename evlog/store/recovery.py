"""Undoing what a dead writer left behind: a batch that never committed, a damaged commit marker.

Call with the append lock held (a writer does, before it appends; so does
`verify --repair`). Nothing is dropped: bytes cut off go to DIR/quarantine/.
"""

from __future__ import annotations

import os
import time

from evlog.store import files
from evlog.store.log import DamagedMarker, Log


def recover_pending(log: Log) -> list[str]:
    """Undo the pending multi-record write of a dead writer (call with the append lock held).

    Its bytes go to DIR/quarantine/ first: a segment it created is moved there
    whole, the part of the segment it began in is copied, then cut off. A
    damaged marker (one that names no position) is removed and nothing is cut.
    """
    pending = log.pending()
    if pending is None:
        return []
    if isinstance(pending, DamagedMarker):
        log.pending_path.unlink(missing_ok=True)
        files.fsync_dir(log.segments_dir)
        return [f"removed a damaged commit marker ({pending.text!r}); no record was set aside"]
    base, pos = pending
    actions = []
    qdir = log.dir / "quarantine"
    qdir.mkdir(exist_ok=True)
    stamp = time.time_ns()
    for seg in log.segments():
        if seg.base > base:
            keep = qdir / f"{seg.name}.{stamp}.uncommitted"
            os.replace(seg.path, keep)  # the data file first: readers list segments by it
            seg.index_path.unlink(missing_ok=True)
            seg.time_path.unlink(missing_ok=True)
            actions.append(f"moved {seg.name}, written by an interrupted batch, to {keep}")
        elif seg.base == base:
            fd = os.open(seg.path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                if size > pos:
                    keep = files.quarantine(log.dir, f"{seg.name}.{pos}", "uncommitted", os.pread(fd, size - pos, pos))
                    os.ftruncate(fd, pos)
                    os.fsync(fd)
                    actions.append(f"cut {size - pos} bytes of an interrupted batch from {seg.name} into {keep}")
                seg.rebuild_index(fd, write=True)
            finally:
                os.close(fd)
    files.fsync_dir(qdir)
    files.fsync_dir(log.segments_dir)
    log.pending_path.unlink(missing_ok=True)  # last: until here, readers keep ignoring those bytes
    files.fsync_dir(log.segments_dir)
    return actions
