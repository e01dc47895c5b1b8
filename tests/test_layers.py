"""The layout holds: each layer imports only layers below it, and the engine knows no terminal, no network
library and no file watcher.

    top level (errors, settings, units, ids, report)   may import: the standard library, msgspec
    store                                                 + top level
    query, ingest                                         + store          (not each other)
    consumers, net                                        + query, ingest  (not each other)
    cli                                                   + everything

Imports are read from the source with `ast`, wherever they stand (a function-level import counts), so a
lazy import cannot slip a wrong arrow past this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "evlog"
RANK = {"top": 0, "store": 1, "query": 2, "ingest": 2, "consumers": 3, "net": 3, "cli": 4, "main": 5}
# Libraries only some places may use: the terminal, the network, the file watcher.
ONLY = {
    "typer": {"cli"},
    "rich": {"cli"},
    "websockets": {"net"},
    "watchfiles": {"store.follow"},
    "nats": {"store.nats", "consumers.nats"},
}


def layer_of(module: str) -> str:
    """'evlog.store.log' -> 'store'; 'evlog.errors' -> 'top'; 'evlog.__main__' -> 'main'."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in RANK:
        return parts[1]
    return "main" if parts[1:] == ["__main__"] else "top"


def imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            if base in ("evlog", "evlog.store", "evlog.query", "evlog.ingest", "evlog.consumers", "evlog.net",
                        "evlog.cli"):
                found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]  # from evlog.store import x
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def violations(mods: list[tuple[str, Path]]) -> list[str]:
    problems = []
    known = {m for m, _ in mods}
    for module, path in mods:
        mine = layer_of(module)
        where = ".".join(module.split(".")[1:])
        for name, line in imports(path, module):
            top = name.split(".")[0]
            if top in ONLY:
                allowed = ONLY[top]
                if not any(where == a or where.startswith(a + ".") or mine == a for a in allowed):
                    problems.append(f"{path.name}:{line}: {module} imports {name} (only {', '.join(sorted(allowed))})")
                continue
            if top != "evlog" or name == "evlog" or name not in known and not any(k.startswith(name + ".")
                                                                                  for k in known):
                continue
            theirs = layer_of(name)
            if theirs == mine or theirs == "top" and mine != "top":
                continue
            if theirs == "top" and mine == "top":
                continue
            if RANK[theirs] >= RANK[mine]:
                problems.append(f"{path.name}:{line}: {module} ({mine}) imports {name} ({theirs})")
    return problems


def test_every_module_is_in_a_layer():
    """Every module of the package sits in a known layer."""
    assert {layer_of(m) for m, _ in modules()} <= set(RANK)


def test_each_layer_imports_only_layers_below_it():
    """No import runs from a lower layer to a higher one, or sideways between peers."""
    assert violations(modules()) == []


def test_the_engine_knows_no_terminal_network_or_watcher():
    """typer and rich only in evlog/cli, websockets only in evlog/net, watchfiles only in the follower, nats only
    in the NATS backend."""
    assert [v for v in violations(modules()) if "only" in v] == []


@pytest.mark.parametrize(("module", "line", "why"), [
    ("evlog.store.fake", "from evlog.cli.diag import diag", "store imports cli"),
    ("evlog.store.fake", "import typer", "the engine imports typer"),
    ("evlog.query.fake", "from evlog.ingest import event", "query imports its peer ingest"),
    ("evlog.consumers.fake", "from evlog.net import hub", "consumers imports its peer net"),
    ("evlog.ingest.fake", "    from evlog.consumers.runner import run", "a lazy import still counts"),
    ("evlog.units", "from evlog.store import files", "the top level imports store"),
    ("evlog.consumers.fake", "import watchfiles", "only the follower watches files"),
    ("evlog.cli.fake", "from evlog import units", None),
    ("evlog.net.fake", "import websockets", None),
    ("evlog.consumers.fake", "import nats", "only the NATS backend speaks NATS"),
    ("evlog.store.nats", "    import nats.js.api", None),
])
def test_the_check_fails_on_a_wrong_import(tmp_path: Path, module: str, line: str, why: str | None):
    """The scan finds a wrong import wherever it stands (the test can fail), and lets right ones pass."""
    path = tmp_path / "fake.py"
    body = line if not line.startswith(" ") else "def f():\n" + line
    path.write_text(body + "\n")
    found = violations([*modules(), (module, path)])
    assert bool([v for v in found if module in v]) == (why is not None), (why, found)
