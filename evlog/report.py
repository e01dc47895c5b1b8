"""How the layers below the command line tell about things that are not errors.

They never print: a long-running piece (a stream of appends, a consumer, the
server, a subscriber) takes a `Report` callback and calls it with a level
("debug", "info", "warning", "error"), one sentence, and fields for machines;
the command line passes its diagnostics (text or JSON lines on stderr).
Short calls return their warnings instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = Callable[..., None]  # report(level, message, **fields)


def quiet(level: str, message: str, **fields: Any) -> None:
    """A Report that drops everything (the default where nobody listens)."""
