"""Real handler programs for the runner, replay, hook and dead-letter tests (not a test module).

A handler is a small script written to tmp_path and made executable. The
recording handler appends one JSON line per call to its calls file (one
`write` on an O_APPEND descriptor, so lines of concurrent handlers never mix):
its EVLOG_* variables, its stdin, its pid and the time. Handlers that must
block wait for a release file the test creates, with a deadline, so nothing
waits on a sleep and nothing is left running for long.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PRELUDE = f"""\
#!{sys.executable}
import json, os, sys, time


def record(path, **fields):
    line = (json.dumps(fields) + "\\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def evlog_env():
    return {{k: v for k, v in os.environ.items() if k.startswith("EVLOG_")}}


def wait_for(path, timeout=30.0):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True

"""


def executable(path: Path, text: str) -> Path:
    """Write `text` to `path` and make it executable."""
    path.write_text(text)
    path.chmod(0o755)
    return path


def python_script(path: Path, body: str) -> Path:
    """An executable Python script: the prelude (record, evlog_env, wait_for) followed by `body`."""
    return executable(path, PRELUDE + textwrap.dedent(body))


def sh_script(path: Path, body: str) -> Path:
    """An executable /bin/sh script."""
    return executable(path, "#!/bin/sh\n" + textwrap.dedent(body))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; [] when it does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Recorder:
    """The recording handler: `argv` runs it; `calls()` are the recorded calls in the order they started.

    `exit_code` is a Python expression over `offset`, `attempt`, `key`, `data` (the stdin text) and
    `env`, evaluated by the handler to choose its exit status. `before_exit` is extra handler code run
    after recording the start (it may call `record(DONE, ...)`, `wait_for(...)`, write to stderr).
    """

    def __init__(self, directory: Path, name: str = "handler", exit_code: str = "0", before_exit: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.calls_path = directory / f"{name}.calls.jsonl"
        self.done_path = directory / f"{name}.done.jsonl"
        body = f"""\
        CALLS = {str(self.calls_path)!r}
        DONE = {str(self.done_path)!r}
        data = sys.stdin.buffer.read().decode("utf-8", "replace")
        env = evlog_env()
        offset = int(env.get("EVLOG_OFFSET", "-1"))
        attempt = int(env.get("EVLOG_ATTEMPT", "0"))
        key = env.get("EVLOG_KEY")
        record(CALLS, env=env, stdin=data, pid=os.getpid(), time=time.time(), argv=sys.argv[1:])
        """
        body = textwrap.dedent(body) + textwrap.dedent(before_exit) + f"\nsys.exit({exit_code})\n"
        self.path = python_script(directory / f"{name}.py", body)
        self.argv = [str(self.path)]

    def calls(self) -> list[dict[str, Any]]:
        return read_jsonl(self.calls_path)

    def done(self) -> list[dict[str, Any]]:
        return read_jsonl(self.done_path)

    def offsets(self) -> list[int]:
        return [int(c["env"]["EVLOG_OFFSET"]) for c in self.calls()]

    def records(self) -> list[dict[str, Any]]:
        """The records the handler got on stdin, one per line, in call order."""
        return [json.loads(line) for c in self.calls() for line in c["stdin"].splitlines()]


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL leftover handler processes (handlers run in their own sessions, out of reach of killpg)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
