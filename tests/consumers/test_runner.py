"""The handler runner (SPEC 6 replay: containment, exit status, timeout), run in-process on real programs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from handler_helpers import kill_pids, pid_alive, python_script, sh_script

from evlog.consumers import runner
from evlog.consumers.runner import Outcome

PY = sys.executable
ENV_BIN = shutil.which("env") or "/usr/bin/env"
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


class Sink:
    """Files standing in for evlog's stdout and stderr (the runner's out_fd and err_fd)."""

    def __init__(self, tmp_path: Path) -> None:
        self.out_path, self.err_path = tmp_path / "stdout", tmp_path / "stderr"
        self.out = os.open(self.out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.err = os.open(self.err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def run(self, argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None,
            timeout: float | None = 30.0, max_memory: int | None = None) -> Outcome:
        return runner.run(argv, stdin, BASE_ENV if env is None else env, timeout, max_memory,
                          out_fd=self.out, err_fd=self.err)

    def stdout(self) -> bytes:
        return self.out_path.read_bytes()

    def stderr(self) -> bytes:
        return self.err_path.read_bytes()

    def close(self) -> None:
        os.close(self.out)
        os.close(self.err)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pidfiles() -> Iterator[list[Path]]:
    """Files where handlers write their pids; every pid in them is SIGKILLed at teardown, whatever happened."""
    paths: list[Path] = []
    try:
        yield paths
    finally:
        for path in paths:
            if path.exists():
                kill_pids(int(word) for word in path.read_text().split() if word.isdigit())


def run_within(deadline: float, sink: Sink, argv: list[str], stdin: bytes = b"",
               timeout: float | None = None) -> Outcome:
    """sink.run on a thread, failing the test (instead of hanging it) if it has not returned by the deadline."""
    result: list[Outcome] = []
    t = threading.Thread(target=lambda: result.append(sink.run(argv, stdin=stdin, timeout=timeout)), daemon=True)
    t.start()
    t.join(deadline)
    assert not t.is_alive(), f"the run did not return within {deadline}s: deadlock"
    return result[0]


def read_pids(path: Path) -> list[int]:
    """The pids a handler wrote to `path` (`echo $$ $!`), once the line is complete."""
    text = wait_until(lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(),
                      message=f"no pids in {path}")
    return [int(word) for word in text.split()]


# -- exit status ---------------------------------------------------------------------------------

def test_exit_status_zero_is_success(sink: Sink) -> None:
    """A handler that exits 0 succeeded: exit code 0, no error."""
    outcome = sink.run(["true"])
    assert outcome.ok and outcome.exit_code == 0 and outcome.error is None


@pytest.mark.parametrize("status", [1, 2, 3, 64, 65, 127, 255])
def test_nonzero_exit_status_is_a_failure_named_exit_status_n(sink: Sink, status: int) -> None:
    """Any other exit status is a failure reported as `exit status N`, with N as the exit code."""
    outcome = sink.run(["sh", "-c", f"exit {status}"])
    assert not outcome.ok
    assert outcome.exit_code == status
    assert outcome.error == f"exit status {status}"


def test_a_handler_killed_by_a_signal_is_a_failure(sink: Sink) -> None:
    """A handler that dies of a signal failed, and the error says which signal."""
    outcome = sink.run(["sh", "-c", "kill -KILL $$"])
    assert not outcome.ok
    assert outcome.exit_code != 0
    assert "SIGKILL" in (outcome.error or "") or "9" in (outcome.error or "")


def test_a_missing_handler_is_a_failure_with_the_reason(sink: Sink, tmp_path: Path) -> None:
    """A handler that does not exist cannot start: a failure that names the command and says why."""
    missing = tmp_path / "no-such-handler"
    outcome = sink.run([str(missing), "arg"])
    assert not outcome.ok
    assert outcome.exit_code is None
    assert str(missing) in (outcome.error or "")
    assert "No such file or directory" in (outcome.error or "")


def test_a_missing_handler_on_path_is_a_failure_with_the_reason(sink: Sink) -> None:
    """A bare command name not found on PATH is a failure with the reason, not an exception."""
    outcome = sink.run(["evlog-test-no-such-command-anywhere"])
    assert not outcome.ok and outcome.exit_code is None
    assert "evlog-test-no-such-command-anywhere" in (outcome.error or "")
    assert "No such file or directory" in (outcome.error or "")


def test_a_handler_that_is_not_executable_is_a_failure_with_the_reason(sink: Sink, tmp_path: Path) -> None:
    """A handler file without the execute bit cannot start: a failure saying permission was denied."""
    script = sh_script(tmp_path / "handler.sh", "exit 0\n")
    script.chmod(0o644)
    outcome = sink.run([str(script)])
    assert not outcome.ok and outcome.exit_code is None
    assert str(script) in (outcome.error or "")
    assert "Permission denied" in (outcome.error or "")


def test_a_handler_with_a_missing_interpreter_is_a_failure_with_the_reason(sink: Sink, tmp_path: Path) -> None:
    """A script whose #! interpreter does not exist cannot start: a failure with the reason."""
    script = tmp_path / "handler"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    outcome = sink.run([str(script)])
    assert not outcome.ok and outcome.exit_code is None
    assert "No such file or directory" in (outcome.error or "")


# -- stdin, stdout, stderr -----------------------------------------------------------------------

def test_stdin_gets_exactly_the_given_bytes(sink: Sink, tmp_path: Path) -> None:
    """The handler reads exactly the bytes given, then end of file."""
    got = tmp_path / "got"
    given = bytes(range(256)) * 3 + b'{"offset":0}\n\x00no newline at the end'
    outcome = sink.run(["sh", "-c", f"cat > '{got}'"], stdin=given)
    assert outcome.ok, outcome
    assert got.read_bytes() == given


def test_empty_stdin_is_closed_at_once(sink: Sink, tmp_path: Path) -> None:
    """With no input the handler's stdin is at end of file from the start (cat does not wait)."""
    got = tmp_path / "got"
    outcome = sink.run(["sh", "-c", f"cat > '{got}'"], stdin=b"", timeout=10)
    assert outcome.ok, outcome
    assert got.read_bytes() == b""


def test_stdout_and_stderr_pass_through(sink: Sink) -> None:
    """What the handler writes to stdout and stderr reaches out_fd and err_fd unchanged; stderr's tail is kept."""
    outcome = sink.run(["sh", "-c", "printf 'to out\\n'; printf 'to err\\n' >&2; printf 'more out'"])
    assert outcome.ok
    assert sink.stdout() == b"to out\nmore out"
    assert sink.stderr() == b"to err\n"
    assert outcome.stderr_tail == b"to err\n"


def test_stdout_is_passed_through_while_the_handler_runs(sink: Sink, tmp_path: Path) -> None:
    """Output is copied as it arrives, not only when the handler exits."""
    release = tmp_path / "release"
    result: list[Outcome] = []
    script = python_script(tmp_path / "h.py", f"""\
        sys.stdout.write("early\\n"); sys.stdout.flush()
        sys.exit(0 if wait_for({str(release)!r}, 20) else 1)
        """)
    t = threading.Thread(target=lambda: result.append(sink.run([str(script)])))
    t.start()
    try:
        wait_until(lambda: sink.stdout() == b"early\n", message="the first line was not passed through")
        assert t.is_alive()
    finally:
        release.touch()
        t.join(30)
    assert result and result[0].ok


def test_only_the_last_4_kib_of_stderr_are_kept(sink: Sink, tmp_path: Path) -> None:
    """All of stderr passes through, and the outcome keeps exactly its last 4096 bytes."""
    blob = b"".join(b"line %05d of stderr\n" % i for i in range(2000))
    (tmp_path / "blob").write_bytes(blob)
    outcome = sink.run(["sh", "-c", f"cat '{tmp_path / 'blob'}' >&2; exit 3"])
    assert outcome.error == "exit status 3"
    assert sink.stderr() == blob
    assert outcome.stderr_tail == blob[-4096:]


# -- no deadlocks ----------------------------------------------------------------------------------

def test_a_handler_that_never_reads_a_large_input_does_not_deadlock(sink: Sink) -> None:
    """A 5 MB input to a handler that ignores stdin and exits: the run finishes, successfully."""
    outcome = run_within(20, sink, ["sh", "-c", "echo ignored"], b"x" * (5 * 1024 * 1024), timeout=None)
    assert outcome.ok, outcome
    assert sink.stdout() == b"ignored\n"


def test_a_handler_that_floods_stdout_without_reading_stdin_does_not_deadlock(sink: Sink) -> None:
    """5 MB in that is never read while 5 MB go out: both pipes are served at once."""
    outcome = run_within(20, sink, ["head", "-c", str(5 * 1024 * 1024), "/dev/zero"], b"y" * (5 * 1024 * 1024),
                         timeout=None)
    assert outcome.ok, outcome
    assert sink.stdout() == b"\0" * (5 * 1024 * 1024)


def test_a_handler_writing_20_mb_to_stdout_and_stderr_does_not_deadlock(sink: Sink, tmp_path: Path) -> None:
    """20 MB read from stdin and written to both stdout and stderr, interleaved, all arrive intact."""
    script = python_script(tmp_path / "flood.py", """\
        src = sys.stdin.buffer
        out, err = sys.stdout.buffer, sys.stderr.buffer
        while True:
            chunk = src.read(65536)
            if not chunk:
                break
            out.write(chunk)
            err.write(chunk)
        out.flush(); err.flush()
        """)
    given = os.urandom(1024) * (20 * 1024)
    outcome = run_within(60, sink, [str(script)], given, timeout=None)
    assert outcome.ok, outcome
    assert sink.stdout() == given
    assert sink.stderr() == given
    assert outcome.stderr_tail == given[-4096:]


# -- timeout and process groups ---------------------------------------------------------------------

def test_timeout_kills_the_whole_process_group_including_a_grandchild(sink: Sink, tmp_path: Path,
                                                                      pidfiles: list[Path]) -> None:
    """Past the timeout the handler and its background grandchild (holding the pipes) die; the run returns
    promptly as `timed out after ...`."""
    pidfile = tmp_path / "pids"
    pidfiles.append(pidfile)
    started = time.monotonic()
    outcome = run_within(15, sink, ["sh", "-c", f"sleep 1000 & echo $$ $! > '{pidfile}'; sleep 1000"], timeout=0.5)
    elapsed = time.monotonic() - started
    handler, grandchild = read_pids(pidfile)
    assert not outcome.ok
    assert outcome.exit_code is None
    assert outcome.error == "timed out after 0.5s"
    assert elapsed < 0.5 + runner.KILL_GRACE + 2.0, f"took {elapsed:.1f}s"
    wait_until(lambda: not pid_alive(handler), message="the handler survived the timeout")
    wait_until(lambda: not pid_alive(grandchild), message="the grandchild survived the timeout")


def test_timeout_kills_a_handler_that_ignores_sigterm(sink: Sink, tmp_path: Path, pidfiles: list[Path]) -> None:
    """A handler group that ignores SIGTERM is killed anyway, within the grace period."""
    pidfile = tmp_path / "pids"
    pidfiles.append(pidfile)
    started = time.monotonic()
    outcome = run_within(15, sink, ["sh", "-c", f"trap '' TERM; sleep 1000 & echo $$ $! > '{pidfile}'; wait"],
                         timeout=0.3)
    elapsed = time.monotonic() - started
    handler, child = read_pids(pidfile)
    assert outcome.error == "timed out after 0.3s"
    assert elapsed < 0.3 + runner.KILL_GRACE + 2.0, f"took {elapsed:.1f}s"
    wait_until(lambda: not pid_alive(handler) and not pid_alive(child),
               message="a handler ignoring SIGTERM survived the timeout")


def test_a_grandchild_holding_the_pipes_does_not_keep_the_run_waiting(sink: Sink, tmp_path: Path,
                                                                      pidfiles: list[Path]) -> None:
    """A handler that exits 0 while a background child still holds stdout/stderr returns promptly, successfully."""
    pidfile = tmp_path / "pids"
    pidfiles.append(pidfile)
    started = time.monotonic()
    outcome = run_within(15, sink, ["sh", "-c", f"sleep 1000 & echo $$ $! > '{pidfile}'; echo done"], timeout=30)
    elapsed = time.monotonic() - started
    assert outcome.ok, outcome
    assert sink.stdout() == b"done\n"
    assert elapsed < 5, f"took {elapsed:.1f}s: waited for the grandchild's pipes"


def test_the_handler_leads_its_own_process_group(sink: Sink) -> None:
    """The handler runs in a new process group (pgid == pid), not in evlog's."""
    outcome = sink.run([sys.executable, "-c", "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"])
    assert outcome.ok, outcome
    pid, pgid, sid = map(int, sink.stdout().split())
    assert pgid == pid
    assert pgid != os.getpgid(0)
    assert sid != os.getsid(0)


def test_only_file_descriptors_0_to_2_are_open(sink: Sink, tmp_path: Path) -> None:
    """The handler sees only fds 0, 1 and 2 in /proc/self/fd, even when evlog holds inheritable ones."""
    script = python_script(tmp_path / "fds.py", """\
        names = os.listdir("/proc/self/fd")
        still_open = []
        for name in names:
            try:
                still_open.append((int(name), os.readlink(f"/proc/self/fd/{name}")))
            except OSError:
                pass  # the descriptor listdir used, closed by now
        print(json.dumps(sorted(still_open)))
        """)
    extra = os.open(tmp_path / "extra", os.O_RDWR | os.O_CREAT)
    r, w = os.pipe()
    try:
        for fd in (extra, r, w):
            os.set_inheritable(fd, True)
        outcome = sink.run([str(script)])
    finally:
        for fd in (extra, r, w):
            os.close(fd)
    assert outcome.ok, outcome
    open_fds = json.loads(sink.stdout())
    assert [fd for fd, _ in open_fds] == [0, 1, 2], open_fds


def test_the_environment_is_exactly_the_one_given(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's environment holds exactly the given variables, nothing of the caller's."""
    monkeypatch.setenv("EVLOG_TOKEN", "secret-token")
    monkeypatch.setenv("CALLER_ONLY", "1")
    given = {"ONE": "1", "SPACES": "a b  c", "NEWLINE": "x\ny", "EQUALS": "k=v=w", "EMPTY": "",
             "UNICODE": "caf\u00e9 \u2603", "EVLOG_OFFSET": "7"}
    outcome = sink.run([ENV_BIN, "-0"], env=given)
    assert outcome.ok, outcome
    seen = dict(item.split("=", 1) for item in sink.stdout().decode().split("\0") if item)
    assert seen == given


def test_max_memory_makes_a_large_allocation_fail(sink: Sink) -> None:
    """Under max_memory a large allocation fails inside the handler; without it the same allocation works."""
    code = ("import sys\ntry:\n    block = bytearray(256 << 20)\nexcept MemoryError:\n    sys.exit(42)\n"
            "print(len(block))")
    capped = sink.run([sys.executable, "-c", code], max_memory=128 << 20)
    assert capped.exit_code == 42, capped
    assert capped.error == "exit status 42"
    free = sink.run([sys.executable, "-c", code])
    assert free.ok, free

