"""The dead-letter file (evlog.consumers.deadletter): durable entries, ids never reused, a bounded size."""

from __future__ import annotations

import json

import pytest

from evlog.consumers.deadletter import DeadLetters
from evlog.errors import DeadLetterFull, EvlogError

EVENT = {"offset": 7, "id": "x", "time": "2026-01-01T00:00:00.000000Z", "type": "t", "source": "s",
         "subject": None, "key": None, "data": 1}


def add(dead: DeadLetters, **over) -> int:
    fields = {"group": "g", "hook": None, "command": ["./h"], "attempts": 1, "exit_code": 2,
              "error": "exit status 2", "stderr": b"oops", "event": EVENT} | over
    return dead.add(**fields)


def test_entries_have_the_spec_fields_and_increasing_ids(tmp_path):
    """Each entry is one JSON object with the SPEC's fields; ids increase from 1."""
    dead = DeadLetters(tmp_path, 100)
    assert [add(dead), add(dead, hook="h", group=None)] == [1, 2]
    entries = dead.entries()
    assert [e["dlq_id"] for e in entries] == [1, 2]
    assert {"dlq_id", "failed_at", "group", "hook", "command", "attempts", "exit_code", "error", "stderr",
            "event"} <= set(entries[0])
    assert entries[0]["stderr"] == "oops" and entries[0]["event"] == EVENT
    lines = (tmp_path / "dead-letter.jsonl").read_text().splitlines()
    assert [json.loads(line)["dlq_id"] for line in lines] == [1, 2]


def test_ids_are_never_reused_after_a_purge(tmp_path):
    """After every entry is removed, the next one still gets a new id."""
    dead = DeadLetters(tmp_path, 100)
    add(dead)
    add(dead)
    dead.rewrite(lambda entries: [])
    assert dead.entries() == []
    assert add(dead) == 3


def test_a_full_file_refuses_more(tmp_path):
    """At max_entries another add raises DeadLetterFull and writes nothing."""
    dead = DeadLetters(tmp_path, 2)
    add(dead)
    add(dead)
    with pytest.raises(DeadLetterFull):
        add(dead)
    assert dead.count() == 2


def test_count_needs_no_parse(tmp_path):
    """count() counts the entries' lines even when one is damaged (entries() would refuse it)."""
    dead = DeadLetters(tmp_path, 10)
    add(dead)
    with open(tmp_path / "dead-letter.jsonl", "a") as f:
        f.write("{not json\n\n")
    assert dead.count() == 2
    with pytest.raises(EvlogError, match="line 2"):
        dead.entries()


def test_rewrite_changes_entries_in_one_step(tmp_path):
    """rewrite replaces the whole file with what the change returns."""
    dead = DeadLetters(tmp_path, 10)
    for _ in range(3):
        add(dead)
    dead.rewrite(lambda entries: [e for e in entries if e["dlq_id"] != 2])
    assert [e["dlq_id"] for e in dead.entries()] == [1, 3]


def test_containment_is_kept_with_an_entry(tmp_path):
    """The containment options a handler ran with are stored, so that a retry runs it the same way."""
    from evlog.consumers.deadletter import Containment

    dead = DeadLetters(tmp_path, 10)
    add(dead, containment=Containment(clean_env=True, env={"A": "1"}, max_memory=1 << 20, timeout=5.0))
    assert dead.entries()[0]["containment"] == {"clean_env": True, "env": {"A": "1"}, "max_memory": 1 << 20,
                                                 "timeout": 5.0}
