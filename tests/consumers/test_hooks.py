"""The hook registry (evlog.consumers.hooks): hooks.toml written and read back, errors naming file, hook, key."""

from __future__ import annotations

import pytest

from evlog.consumers.hooks import Hook, Registry
from evlog.errors import EvlogError


def test_a_saved_registry_reads_back_the_same(tmp_path):
    """Every field of every hook survives save and load, in order."""
    hooks = {
        "audit": Hook("audit", ["/usr/bin/audit", "--fast"], ["order.*"], "k", None, "src", "data.n > 1", 5, "2m", 10,
                      paused=True),
        "mail": Hook("mail", ["./m.sh"]),
    }
    reg = Registry(tmp_path)
    reg.save(hooks)
    assert reg.load() == hooks
    assert list(reg.load()) == ["audit", "mail"]


def test_a_missing_file_is_no_hooks(tmp_path):
    """Without hooks.toml there are no hooks."""
    assert Registry(tmp_path).load() == {}


@pytest.mark.parametrize(("text", "needles"), [
    ("[hooks.a]\ncommand = \"x\"\n", ["hooks.toml", "line 2", "'a'", "command"]),
    ("[hooks.a]\ncommand = [\"x\"]\nbatch = 0\n", ["line 3", "'a'", "batch"]),
    ("[hooks.a]\ncommand = [\"x\"]\nretries = -1\n", ["'a'", "retries"]),
    ("[hooks.a]\ncommand = [\"x\"]\ntimeout = \"soon\"\n", ["'a'", "timeout"]),
    ("[hooks.a]\ncommand = []\n", ["'a'", "command"]),
    ("[hooks.a]\ncommand = [\"x\"]\ncolour = 1\n", ["'a'", "colour"]),
    ("[hooks.\"bad name\"]\ncommand = [\"x\"]\n", ["bad name"]),
    ("[hooks.a]\ncommand = [\"x\"]\ntypes = [\"a..b*\"]\n", ["'a'"]),
    ("[hooks.a\ncommand", ["hooks.toml"]),
    ("[other]\nx = 1\n", ["hooks.toml"]),
])
def test_a_broken_registry_names_the_file_the_hook_and_the_problem(tmp_path, text, needles):
    """A hand-edited hooks.toml that is wrong is one EvlogError naming where."""
    (tmp_path / "hooks.toml").write_text(text)
    with pytest.raises(EvlogError) as err:
        Registry(tmp_path).load()
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert "\n" not in str(err.value)


def test_a_hook_knows_its_filter_and_group(tmp_path):
    """A hook's filters become a Filter; its checkpoint is the group hook.NAME."""
    hook = Hook("h", ["x"], ["a.*"], key="k", where="data > 1")
    f = hook.filter()
    assert (f.types, f.key, f.where) == (["a.*"], "k", "data > 1")
    assert hook.group == "hook.h"
    assert hook.filters() == {"types": ["a.*"], "key": "k", "where": "data > 1"}
