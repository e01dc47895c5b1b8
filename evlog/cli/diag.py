"""evlog's own diagnostics on stderr: `evlog: error: ...` lines, or JSON objects.

With `--log-format json` (or EVLOG_LOG_FORMAT=json) each diagnostic is one
object per line with `ts`, `level`, `msg` and any fields.
"""

from __future__ import annotations

import sys
import time
from typing import Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Diagnostics:
    def __init__(self) -> None:
        self.format = "text"
        self.threshold = LEVELS["info"]

    def configure(self, fmt: str | None = None, quiet: bool = False, verbose: bool = False) -> None:
        if fmt:
            self.format = fmt
        self.threshold = LEVELS["error"] if quiet else LEVELS["debug"] if verbose else LEVELS["info"]

    def emit(self, level: str, message: str, **fields: Any) -> None:
        """One diagnostic; also the `Report` that the layers below the command line are given."""
        msg = message
        if LEVELS[level] < self.threshold:
            return
        if self.format == "json":
            import msgspec

            t = time.time()
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
            if not msg.isascii():  # a lone surrogate (bytes that were not UTF-8) cannot be encoded as JSON
                msg = msg.encode("utf-8", "backslashreplace").decode()
            line = msgspec.json.encode({"ts": ts, "level": level, "msg": msg, **fields}).decode()
        else:
            # Text lines are whole sentences; fields are for machines (--log-format json).
            line = ("evlog: " if level == "info" else f"evlog: {level}: ") + msg
            if "\n" in line or "\r" in line:  # one diagnostic, one line, whatever a message quotes
                line = line.replace("\r", "\\r").replace("\n", "\\n")
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass

    def error(self, msg: str, **fields: Any) -> None:
        self.emit("error", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.emit("warning", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.emit("info", msg, **fields)

    def debug(self, msg: str, **fields: Any) -> None:
        self.emit("debug", msg, **fields)


diag = Diagnostics()
