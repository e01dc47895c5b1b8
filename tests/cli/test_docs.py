"""Docs cannot drift: every command has help with an example and a man page generated from the CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAN_DIR = ROOT / "man"


def _load_gen_man():
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "scripts" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen_man = _load_gen_man()
NODES = gen_man.walk(gen_man.command_tree())
IDS = [" ".join(node.path) or "evlog" for node in NODES]


def test_man_pages_match_the_cli():
    """The files in man/ are exactly what scripts/gen_man.py generates from the CLI definition now."""
    problems = gen_man.compare(gen_man.generate(), MAN_DIR)
    assert not problems, "man pages are out of date; run `python scripts/gen_man.py`:\n" + "\n".join(problems)


def test_generation_is_deterministic():
    """Generating the pages twice gives the same text, with the version and no date on the .TH line."""
    from evlog import __version__

    first, second = gen_man.generate(), gen_man.generate()
    assert first == second
    for text in first.values():
        th = next(line for line in text.splitlines() if line.startswith(".TH"))
        assert f'"evlog {__version__}"' in th and '"1" ""' in th


def test_check_reports_missing_drifted_extra_and_orphan_files(tmp_path):
    """The --check comparison names a missing page, a drifted page, an extra page and an orphaned extra file."""
    pages = gen_man.generate()
    names = sorted(pages)
    for name in names[1:]:
        (tmp_path / name).write_text(pages[name], encoding="utf-8")
    (tmp_path / names[1]).write_text(pages[names[1]] + ".\\\" edited by hand\n", encoding="utf-8")
    (tmp_path / "evlog-gone.1").write_text("", encoding="utf-8")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "evlog-gone.roff").write_text(".SH NOTES\n", encoding="utf-8")
    problems = "\n".join(gen_man.compare(pages, tmp_path))
    assert f"missing: {tmp_path / names[0]}" in problems
    assert f"drifted: {tmp_path / names[1]}" in problems
    assert f"extra: {tmp_path / 'evlog-gone.1'}" in problems
    assert "orphan:" in problems and "evlog-gone.roff" in problems
    assert names[2] not in problems


@pytest.mark.parametrize("node", NODES, ids=IDS)
def test_command_has_help_with_an_example_and_a_man_page(node):
    """Every command and subcommand has help text containing an `Example` and a man page in man/."""
    text = gen_man.help_text(node.command)
    assert text, f"`{' '.join(('evlog', *node.path))}` has no help text"
    assert "Example" in text, f"the help of `{' '.join(('evlog', *node.path))}` has no `Example:` line"
    page = MAN_DIR / f"{node.page}.1"
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing; run `python scripts/gen_man.py`"


@pytest.mark.parametrize("node", NODES, ids=IDS)
def test_help_runs_for_every_command(node):
    """`python -m evlog ... --help` exits 0 for every command and shows its usage line."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "_EVLOG_COMPLETE")}
    env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    result = subprocess.run([sys.executable, "-m", "evlog", *node.path, "--help"], capture_output=True,
                            text=True, env=env, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert " ".join(("evlog", *node.path)) in result.stdout
    assert "--help" in result.stdout
