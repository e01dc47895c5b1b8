"""Signals at any moment of a command's life end it quietly with 130 / 143 (SPEC 5), never a traceback."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from conftest import TRACEBACK, Evlog


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_is_a_quiet_exit(cli: Evlog, sig: int) -> None:
    """A signal that arrives while evlog is still starting (importing its modules, once the interpreter
    itself is up) gives the signal's exit code and no traceback."""
    cli.ok("append", "t")
    for _ in range(5):
        p = subprocess.Popen(cli.argv(["read"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=cli.env, cwd=cli.tmp)
        maps = Path(f"/proc/{p.pid}/maps")
        while p.poll() is None and "fcntl.cpython" not in _text(maps):
            pass  # until it is importing its command line (a C module of the standard library it needs)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
        assert TRACEBACK not in err.decode(), err.decode()
        assert p.returncode in (0, 128 + sig), p.returncode


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
