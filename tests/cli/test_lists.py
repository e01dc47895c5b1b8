"""`groups list` and `hooks list`: a table on a terminal (a line saying there are none when empty), one JSON
object per line in a pipe, a JSON array with --json (as before)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

from conftest import Evlog
from handler_helpers import Recorder
from rich.console import Console

from evlog.cli.pretty import rows_table


def on_a_terminal(cli: Evlog, *args: str) -> tuple[str, str]:
    """(stdout as a terminal shows it, stderr) of `evlog ARGS` with a pty as stdout."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cli.argv(args), stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env={**cli.env, "COLUMNS": "100", "NO_COLOR": "1"}, cwd=cli.tmp)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.stderr is not None
        with proc.stderr:
            err = proc.stderr.read()
        assert proc.wait(30) == 0, err
    finally:
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())  # bold headers: the styles, not the text
    return text.replace("\r\n", "\n"), err.decode()


def test_groups_list_in_a_pipe_on_a_terminal_and_as_json(cli: Evlog, tmp_path: Path) -> None:
    cli.ok("init")
    out, err = on_a_terminal(cli, "groups", "list")
    assert out == "" and "no groups" in err
    cli.batch([{"type": "t"}] * 3)
    cli.ok("replay", "--group", "billing", "--to", "1", "--", *Recorder(tmp_path / "h").argv)
    assert [json.loads(x) for x in cli.ok("groups", "list").splitlines()] == [
        {"name": "billing", "position": 2, "lag": 1}]
    assert json.loads(cli.ok("groups", "list", "--json")) == [{"name": "billing", "position": 2, "lag": 1}]
    out, _ = on_a_terminal(cli, "groups", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "position", "lag"]
    assert lines[1].split() == ["billing", "2", "1"]


def test_hooks_list_in_a_pipe_and_on_a_terminal(cli: Evlog) -> None:
    cli.ok("init")
    out, err = on_a_terminal(cli, "hooks", "list")
    assert out == "" and "no hooks" in err
    cli.ok("hooks", "add", "audit", "--type", "order.*", "--", "echo", "audit-cmd")
    [row] = [json.loads(x) for x in cli.ok("hooks", "list").splitlines()]
    assert row["name"] == "audit" and row["command"] == ["echo", "audit-cmd"]
    out, _ = on_a_terminal(cli, "hooks", "list")
    header, line = out.splitlines()[:2]
    assert header.split() == ["name", "state", "filters", "position", "lag", "dead", "letters", "command"]
    assert line.split()[:2] == ["audit", "active"] and "--type 'order.*'" in line and "echo audit-cmd" in line


def test_the_table_aligns_its_columns() -> None:
    console = Console(record=True, width=60, force_terminal=True, color_system=None)
    rows_table([{"name": "a", "position": 5, "lag": 0}, {"name": "longer-name", "position": 12345, "lag": None}],
               ("name", "position", "lag"), console)
    lines = console.export_text().splitlines()
    assert [len(line.rstrip()) for line in lines] == [len(lines[0].rstrip())] * 3  # numbers right-aligned
    assert lines[2].split() == ["longer-name", "12345", "-"]
