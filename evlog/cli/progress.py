"""Progress bars for long work (replay, compaction): rich, on stderr, only when it is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def consumer_progress(label: str, planned: Callable[[], int | None]) -> Iterator[Callable[[Any], None] | None]:
    """A callback taking a delivery Summary, drawing events done, rate and failures; None off a terminal.
    The total is what the run goes through when that is known before it starts (`planned`), else none."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = planned()
    with Progress(TextColumn(f"{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TextColumn("{task.fields[failures]}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total or None, rate="", failures="")
        started = time.monotonic()

        def update(summary: Any) -> None:
            rate = summary.events / max(1e-6, time.monotonic() - started)
            bar.update(task, completed=summary.events, rate=f"{rate:,.0f}/s",
                       failures=f"{summary.dead_lettered} failed" if summary.dead_lettered else "")

        yield _at_most_every(0.1, update)


@contextmanager
def mirror_progress(log: Any) -> Iterator[Callable[[Any], None] | None]:
    """A callback taking a MirrorSummary, drawing the source position against its end; None off a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = max(0, log.next_offset())
    with Progress(TextColumn("mirror"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[copied]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("mirror", total=total or None, copied="")

        def update(summary: Any) -> None:
            bar.update(task, completed=summary.position, total=max(total, summary.position) or None,
                       copied=f"{summary.count} copied")

        yield _at_most_every(0.1, update)


def _at_most_every(seconds: float, draw: Callable[[Any], None]) -> Callable[[Any], None]:
    """`draw`, skipping calls that come within `seconds` of the last one drawn."""
    last = 0.0

    def throttled(summary: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            draw(summary)

    return throttled


@contextmanager
def step_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A callback (done, total) drawing a bar of steps; None off a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
