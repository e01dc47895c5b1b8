"""The `pretty` format: one colored, aligned line per event, for people at a terminal."""

from __future__ import annotations

import io
import shutil

import msgspec
from rich.console import Console
from rich.text import Text

from evlog.store.framing import Codec, Record

_encode = msgspec.json.Encoder().encode
TYPE_STYLES = ("cyan", "green", "magenta", "yellow", "blue", "bright_cyan", "bright_green", "bright_magenta")


class PrettyRenderer:
    """offset  time  type  key  [subject]  data — aligned columns sized to the terminal;
    the data is compact JSON, cut with an ellipsis to fit the line."""

    def __init__(self, codec: Codec | None, width: int | None = None, color: bool | None = None) -> None:
        self.codec = codec
        self.width = width or shutil.get_terminal_size((100, 24)).columns
        self.buffer = io.StringIO()
        self.console = Console(file=self.buffer, width=self.width, force_terminal=color,
                               no_color=color is False, highlight=False, soft_wrap=True)
        wide = self.width >= 120
        self.full_time = self.width >= 100
        self.type_width = 28 if wide else 20
        self.key_width = 20 if wide else 12
        self.subject_width = 20 if wide else 0
        self.offset_width = 7

    def render(self, frame: bytes) -> bytes:
        assert self.codec is not None
        return self.render_record(self.codec.record(frame))

    def render_record(self, rec: Record) -> bytes:
        data = "" if rec.data is None else _encode(rec.data).decode()
        self.offset_width = max(self.offset_width, len(str(rec.offset)))
        when = rec.time[:10] + " " + rec.time[11:23] if self.full_time else rec.time[5:10] + " " + rec.time[11:19]
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{rec.offset:>{self.offset_width}} ", style="dim")
        line.append(when + " ", style="bright_black")
        line.append(_fit(rec.type, self.type_width).ljust(self.type_width) + " ",
                    style="bold " + TYPE_STYLES[sum(rec.type.split(".")[0].encode()) % len(TYPE_STYLES)])
        line.append(_fit(rec.key or "", self.key_width).ljust(self.key_width) + " ", style="yellow")
        if self.subject_width:
            line.append(_fit(rec.subject or "", self.subject_width).ljust(self.subject_width) + " ", style="italic")
        room = max(8, self.width - len(line.plain) - 1)
        line.append(_fit(data, room))
        self.console.print(line)
        out = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return out.encode()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def rows_table(rows: list[dict], columns: tuple[str, ...], console: Console | None = None) -> None:
    """Rows as a table with these columns (`groups list`, `hooks list` on a terminal)."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold", justify="right" if col in NUMERIC else "left")
    for r in rows:
        table.add_row(*("-" if r.get(c) is None else str(r.get(c)) for c in columns))
    (console or Console()).print(table)


NUMERIC = frozenset({"position", "lag", "dead letters"})


def dead_letter_table(entries: list[dict]) -> None:
    """`dlq list` on a terminal: one row per entry."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "failed at", "consumer", "offset", "type", "key", "attempts", "error"):
        table.add_column(col, overflow="ellipsis", no_wrap=True)
    for e in entries:
        ev = e.get("event") or {}
        consumer = f"hook {e['hook']}" if e.get("hook") else f"group {e['group']}" if e.get("group") else "-"
        table.add_row(str(e.get("dlq_id")), str(e.get("failed_at", ""))[:19], consumer, str(ev.get("offset")),
                      str(ev.get("type")), str(ev.get("key") or ""), str(e.get("attempts")), str(e.get("error")))
    Console().print(table)
