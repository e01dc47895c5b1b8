"""Stopping on signals: SIGTERM unwinds like Ctrl-C, and the exit code says which (130/143)."""

from __future__ import annotations

import signal


class Terminated(BaseException):
    """SIGTERM arrived: unwind like KeyboardInterrupt, then exit 143."""


_received: list[int] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Terminated()


class PipeClosed(Exception):  # noqa: N818 - named for what happened, like BrokenPipeError
    """stdout's reader went away (`evlog read | head -1`): stop quietly, exit 0."""


def install() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt again


def interrupted() -> BaseException:
    """The exception for a signal noticed outside Python code (e.g. while waiting in a watcher)."""
    return Terminated() if _received else KeyboardInterrupt()
