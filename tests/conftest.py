"""Fixtures for the end-to-end tests: the real `evlog` command, run as subprocesses.

- `cli` runs `python -m evlog ...` with a private EVLOG_DIR and XDG_DATA_HOME under
  tmp_path and no inherited EVLOG_* variables; it returns (rc, stdout, stderr) and
  fails the test when a Python traceback shows up on stderr.
- `spawn` starts a long-running evlog process (or any command) in its own session;
  every process it started is SIGKILLed and reaped at teardown.
- `wait_until(predicate, timeout)` polls a condition until a deadline: the only way
  these tests wait for anything.

Slow tests (`@pytest.mark.slow`) are skipped unless `--run-slow` or `-m slow` is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
from nats_helpers import nats_cluster, nats_server  # noqa: F401 - fixtures: real NATS servers on loopback

TRACEBACK = "Traceback (most recent call last)"
DEADLINE = 10.0  # seconds: the bound for anything asynchronous
POLL = 0.025  # seconds between two looks at a condition
EVLOG = [sys.executable, "-m", "evlog"]
FIELDS = ["offset", "id", "time", "type", "source", "subject", "key", "data"]

T = TypeVar("T")


# -- slow tests: opt in ----------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (long crash, stress and soak tests)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    markexpr = (config.getoption("markexpr", "") or "").replace(" ", "")
    if "slow" in markexpr and "notslow" not in markexpr:
        return  # `-m slow` (or an expression that selects them) asks for them
    skip = pytest.mark.skip(reason="slow: opt in with --run-slow or -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


# -- waiting ---------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], T], timeout: float = DEADLINE, interval: float = POLL,
               message: str | Callable[[], str] = "") -> T:
    """Poll `predicate` until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"condition not met within {timeout}s" + (f": {text}" if text else ""))
        time.sleep(interval)


# -- running evlog ---------------------------------------------------------------------------

class Result(NamedTuple):
    rc: int
    out: str
    err: str


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without EVLOG_*, with a private log dir and XDG_DATA_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVLOG_")}
    env["EVLOG_DIR"] = str(tmp_path / "log")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    env.pop("COLUMNS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def assert_no_traceback(stderr: str, what: object = "") -> None:
    assert TRACEBACK not in stderr, f"Python traceback on stderr of {what}:\n{stderr}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("evlog: error:")]


def assert_one_error(result: Result, code: int, *needles: str) -> str:
    """SPEC 5: the exit code, and exactly one `evlog: error: ...` line on stderr (returned)."""
    assert result.rc == code, f"exit {result.rc}, expected {code}; stderr: {result.err!r}"
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line on stderr, got: {result.err!r}"
    assert lines[0].startswith("evlog: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def parse_records(text: str) -> list[dict[str, Any]]:
    """Records from `--format json` output: one JSON object per line, fields in SPEC 4 order."""
    records = []
    for line in text.splitlines():
        rec = json.loads(line)
        assert list(rec) == FIELDS, f"fields {list(rec)} are not SPEC 4's {FIELDS}"
        records.append(rec)
    return records


class Evlog:
    """Runs the real evlog command; `cli(*args)` returns (rc, stdout, stderr)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env = clean_env(tmp_path)
        self.dir = Path(self.env["EVLOG_DIR"])

    def argv(self, args: Sequence[object]) -> list[str]:
        return [*EVLOG, *(str(a) for a in args)]

    def __call__(self, *args: object, input: str | bytes | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60, stdin: Any = None) -> Result:
        binary = isinstance(input, bytes)
        proc = subprocess.run(
            self.argv(args), input=input, env=self.env if env is None else env, cwd=self.tmp,
            stdin=subprocess.DEVNULL if input is None and stdin is None else stdin,
            capture_output=True, timeout=timeout, text=not binary,
        )
        out, err = proc.stdout, proc.stderr
        if binary:
            out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        assert_no_traceback(err, ["evlog", *args])
        return Result(proc.returncode, out, err)

    def ok(self, *args: object, **kw: Any) -> str:
        """Run evlog, require exit 0, return stdout."""
        r = self(*args, **kw)
        assert r.rc == 0, f"evlog {' '.join(map(str, args))}: exit {r.rc}; stderr: {r.err}"
        return r.out

    def records(self, *args: object, d: Path | None = None, **kw: Any) -> list[dict[str, Any]]:
        """`evlog [-d D] read --format json ARGS` as a list of records (exit 0 required)."""
        pre = ["-d", d] if d is not None else []
        return parse_records(self.ok(*pre, "read", "--format", "json", *args, **kw))

    def batch(self, events: Sequence[dict[str, Any]] | str, d: Path | None = None) -> dict[str, Any]:
        """`evlog [-d D] append --batch --json` of these events; returns the summary."""
        text = events if isinstance(events, str) else "".join(json.dumps(e) + "\n" for e in events)
        pre = ["-d", d] if d is not None else []
        return json.loads(self.ok(*pre, "append", "--batch", "--json", input=text))


@pytest.fixture
def cli(tmp_path: Path) -> Evlog:
    return Evlog(tmp_path)


# -- long-running processes ------------------------------------------------------------------

class Background:
    """A process started in its own session; its stdout/stderr collected by threads when piped."""

    def __init__(self, popen: subprocess.Popen[bytes], collect: bool) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._out: list[str] = []
        self._err: list[bytes] = []
        self._threads: list[threading.Thread] = []
        if collect:
            if popen.stdout is not None:
                self._threads.append(threading.Thread(target=self._read_lines, daemon=True))
            if popen.stderr is not None:
                self._threads.append(threading.Thread(target=self._read_err, daemon=True))
            for t in self._threads:
                t.start()

    def _read_lines(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            self._out.append(raw.decode("utf-8", "replace"))

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for chunk in iter(lambda: self.popen.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self._err.append(chunk)

    def lines(self) -> list[str]:
        """Complete stdout lines so far, without their newlines."""
        return [line[:-1] for line in list(self._out) if line.endswith("\n")]

    def records(self) -> list[dict[str, Any]]:
        return parse_records("\n".join(self.lines()))

    def wait_lines(self, n: int, timeout: float = DEADLINE) -> list[str]:
        """Wait until at least n stdout lines have arrived; returns them all."""
        wait_until(lambda: len(self.lines()) >= n, timeout,
                   message=lambda: f"{len(self.lines())} of {n} lines; stderr: {self.stderr()!r}")
        return self.lines()

    def stderr(self) -> str:
        return b"".join(self._err).decode("utf-8", "replace")

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the whole session (the process and everything it started)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float = DEADLINE) -> int:
        """Exit status, waiting at most `timeout`; the output threads are drained too."""
        rc = self.popen.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return rc

    def finish(self) -> None:
        self.kill_group()
        try:
            self.popen.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(DEADLINE)
        for f in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


class Spawner:
    def __init__(self, cli: Evlog) -> None:
        self.cli = cli
        self.started: list[Background] = []

    def __call__(self, *args: object, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
                 stderr: Any = subprocess.PIPE, env: dict[str, str] | None = None, collect: bool = True,
                 argv: Sequence[str] | None = None) -> Background:
        """Start `evlog ARGS` (or `argv`) in a new session, killed at teardown."""
        popen = subprocess.Popen(
            list(argv) if argv is not None else self.cli.argv(args), stdin=stdin, stdout=stdout,
            stderr=stderr, env=self.cli.env if env is None else env, cwd=self.cli.tmp, start_new_session=True,
        )
        bg = Background(popen, collect)
        self.started.append(bg)
        return bg

    def close(self) -> None:
        for bg in self.started:
            bg.finish()


@pytest.fixture
def spawn(cli: Evlog) -> Iterator[Spawner]:
    spawner = Spawner(cli)
    try:
        yield spawner
    finally:
        spawner.close()


# -- files on disk ---------------------------------------------------------------------------

def segment_files(directory: Path) -> list[Path]:
    """The segment files of a log, oldest first (SPEC 3: named by their first offset)."""
    segs = directory / "segments"
    return sorted(p for p in segs.iterdir() if p.suffix in (".jsonl", ".msgpack") and p.stem.isdigit()
                  and len(p.stem) == 20)


def quarantined(directory: Path) -> list[bytes]:
    q = directory / "quarantine"
    if not q.is_dir():
        return []
    return [p.read_bytes() for p in sorted(q.rglob("*")) if p.is_file()]


@pytest.fixture
def clients(spawn: Spawner) -> Iterator[Any]:
    """WebSocket clients of the server tests (server_helpers.Clients), closed at teardown (before the
    server, which `spawn` kills after)."""
    from server_helpers import Clients

    c = Clients()
    try:
        yield c
    finally:
        c.close()
