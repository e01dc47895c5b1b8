"""The handler runner: one handler command, run once, contained (SPEC 6 replay).

The command is an argument vector, never a shell. It runs in its own process
group (a new session), with only file descriptors 0-2 open, the environment
it is given, and optionally a cap on its address space. Its stdin receives
the input and is closed; its stdout and stderr are copied through as they
arrive (the last 4 KiB of stderr are kept). One selector loop does all the
I/O, so a handler that never reads stdin or floods its output cannot
deadlock evlog. At the timeout the whole process group gets SIGTERM, then
SIGKILL after a grace period; pipes held open by grandchildren do not keep
evlog waiting.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

STDERR_KEEP = 4096
KILL_GRACE = 2.0        # seconds between SIGTERM and SIGKILL of a timed-out handler
DRAIN_AFTER_EXIT = 0.2  # seconds to keep reading pipes a background grandchild still holds
EX_DATAERR = 65

_output_lock = threading.Lock()


@dataclass
class Outcome:
    exit_code: int | None          # None when it could not start or was killed
    error: str | None              # None on success; "exit status 2", "timed out after 30s", ...
    stderr_tail: bytes
    seconds: float
    started: bool = True           # False when the command could not be started at all (not found, ...)

    @property
    def ok(self) -> bool:
        return self.error is None


# With --max-memory the handler is started through this launcher, which caps its own address space and
# then execs the handler (rlimits survive exec). A preexec_fn would do it in the child between fork and
# exec, which is unsafe in a process with threads and keeps CPython from its vfork/posix_spawn path.
_LIMIT = "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_AS, (n, n)); " \
         "os.execvp(sys.argv[2], sys.argv[2:])"


def _write_all(fd: int, data: bytes) -> None:
    with _output_lock:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BrokenPipeError:
                return
            except InterruptedError:
                continue


def run(argv: list[str], stdin: bytes, env: dict[str, str], timeout: float | None,
        max_memory: int | None = None,
        out_fd: int = 1, err_fd: int = 2) -> Outcome:
    """Run the handler once with `stdin` as its input."""
    started = time.monotonic()
    proc = _start(argv, env, max_memory)
    if isinstance(proc, str):
        return Outcome(None, proc, b"", 0.0, started=False)
    deadline = None if timeout is None else started + timeout
    tail = bytearray()
    try:
        timed_out = not _pump(proc, stdin, deadline, out_fd, err_fd, tail)
        if not timed_out and _wait(proc, deadline) is None:
            timed_out = True
        if timed_out:
            _kill_group(proc)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass
    return _outcome(proc.returncode, timed_out, timeout, bytes(tail), time.monotonic() - started)


def _start(argv: list[str], env: dict[str, str], max_memory: int | None) -> subprocess.Popen[bytes] | str:
    """The handler, started in a session of its own with only fds 0-2; or why it could not start."""
    command = argv
    if max_memory:
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if program is None or not os.access(program, os.X_OK) or os.path.isdir(program):
            return f"cannot start {argv[0]!r}: {'not found' if program is None else 'not executable'}"
        command = [sys.executable, "-I", "-S", "-c", _LIMIT, str(max_memory), program, *argv[1:]]
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, close_fds=True, start_new_session=True)
    except OSError as e:
        return f"cannot start {argv[0]!r}: {e.strerror or e}"
    except subprocess.SubprocessError as e:
        return f"cannot start {argv[0]!r}: {e}"


def _pump(proc: subprocess.Popen[bytes], stdin: bytes, deadline: float | None, out_fd: int, err_fd: int,
          tail: bytearray) -> bool:
    """Feed the handler's stdin and copy its stdout and stderr through (keeping stderr's last STDERR_KEEP
    bytes in `tail`), in one selector loop, until its pipes close; False when the deadline passed."""
    assert proc.stdin and proc.stdout and proc.stderr
    sel = selectors.DefaultSelector()
    pending = memoryview(stdin)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        os.set_blocking(pipe.fileno(), False)
    if pending:
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT:
                break  # a grandchild holds the pipes; the handler itself is done
            wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - now))
            for key, _ in sel.select(wait):
                f: Any = key.fileobj
                if f is proc.stdin:
                    try:
                        pending = pending[os.write(f.fileno(), pending):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = memoryview(b"")  # the handler does not read its input: fine
                    if not pending:
                        sel.unregister(f)
                        f.close()
                    continue
                try:
                    chunk = os.read(f.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(f)
                    continue
                if f is proc.stdout:
                    _write_all(out_fd, chunk)
                else:
                    _write_all(err_fd, chunk)
                    tail += chunk
                    if len(tail) > STDERR_KEEP:
                        del tail[:-STDERR_KEEP]
        return True
    finally:
        sel.close()


def _outcome(rc: int | None, timed_out: bool, timeout: float | None, tail: bytes, seconds: float) -> Outcome:
    if timed_out:
        return Outcome(None, f"timed out after {_fmt_seconds(timeout or 0)}", tail, seconds)
    if rc == 0:
        return Outcome(0, None, tail, seconds)
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return Outcome(None, f"killed by signal {name}", tail, seconds)
    return Outcome(rc, f"exit status {rc}", tail, seconds)


def _wait(proc: subprocess.Popen[bytes], deadline: float | None) -> int | None:
    try:
        return proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the handler's whole process group; SIGKILL to whatever is left after a grace period."""
    pgid = proc.pid  # the handler leads its own group (start_new_session)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + KILL_GRACE
    while time.monotonic() < end:
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _fmt_seconds(s: float) -> str:
    return f"{s:g}s"
