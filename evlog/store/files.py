"""Files written safely: atomic replacement, directory fsync, quarantine, temporary files of dead processes.

Everything that replaces a file (index files, checkpoints, the hook registry,
the dead-letter file) does it the same way: a temporary file, fsync, rename,
fsync of the directory. Bytes that must leave a segment are first kept in
DIR/quarantine/.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, directory fsync.

    The temporary file is `.NAME.PID.RANDOM.tmp`: unique per call (threads of one
    process never share one), and `clean_temporary` can tell a dead writer's leftovers.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies (SPEC 7)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


TEMP_SUFFIX = ".tmp"
_TEMP_RE = r"\..+\.(\d+)\.[^.]+\.tmp"  # compiled on first use (re's cache): not on the append path


def clean_temporary(directory: Path) -> list[str]:
    """Remove the temporary files (see write_atomic) of processes that no longer run; their names."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        m = re.fullmatch(_TEMP_RE, name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(log_dir: Path, name: str, why: str, data: bytes) -> Path:
    """Keep `data` in DIR/quarantine/NAME.STAMP.WHY, durably (nothing damaged is ever just dropped); returns
    the path."""
    qdir = log_dir / "quarantine"
    qdir.mkdir(exist_ok=True)
    keep = qdir / f"{name}.{time.time_ns()}.{why}"
    with open(keep, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(qdir)
    return keep
