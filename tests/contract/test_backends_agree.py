"""Where SPEC 3 says a NATS log keeps the contract, the same input gives the same output on both backends.

The events carry their own ids and past times, so that records are equal field for field (an empty log keeps
imported times exactly, SPEC 4), not only modulo id and time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Evlog
from contract_helpers import (
    DLQ_KEYS,
    Log,
    history,
    history_time,
    nats_module,  # noqa: F401 - fixture: the module's NATS server
    parallel,
    stream_name,
)
from nats_helpers import NatsServer

EVENTS = history(9) + [
    {"type": "order.created", "id": "o-1", "time": history_time(9), "key": "k1", "subject": "cart-9",
     "source": "shop", "data": {"sku": "A1", "items": [{"n": 1}, {"n": 2}], "note": "caf\u00e9 \u2615"}},
    {"type": "order.created.v2", "id": "o-2", "time": history_time(10), "data": [1, 2.5, None, True]},
]

QUERIES: list[tuple[object, ...]] = [
    ("read",),
    ("read", "--format", "cloudevents"),
    ("read", "--format", "data"),
    ("read", "--format", "pretty"),
    ("read", "--type", "*.odd", "--type", "order.>"),
    ("read", "--where", 'data.items[1].n == 2 or data.n in [1, 4] or key matches "^k2$"'),
    ("read", "--since", history_time(2), "--until", history_time(6), "--format", "cloudevents"),
    ("read", "--last", 4, "--key", "k1", "--limit", 1),
    ("tail", "-n", 3, "--format", "pretty"),
]


def shape(out: str, query: tuple[object, ...]) -> list[Any]:
    """Output made comparable: JSON lines as (key, value) lists (so field order counts), other lines as text."""
    if "pretty" in query:
        return out.splitlines()
    return [list(json.loads(line).items()) if isinstance(json.loads(line), dict) else json.loads(line)
            for line in out.splitlines()]


@pytest.fixture
def pair(cli: Evlog, tmp_path: Path, nats_module: NatsServer,  # noqa: F811
         request: pytest.FixtureRequest) -> tuple[Log, Log]:
    """A fresh local log and a fresh NATS log."""
    return (Log(cli, str(tmp_path / "local-log"), "local"),
            Log(cli, f"{nats_module.url}/{stream_name(request)}", "nats"))


def test_the_same_history_reads_the_same(pair: tuple[Log, Log]) -> None:
    """Every read and tail query prints the same from both backends."""
    local, nats = pair
    summaries = parallel(lambda: local.batch(EVENTS), lambda: nats.batch(EVENTS))
    assert summaries == [{"count": len(EVENTS), "first": 0, "last": len(EVENTS) - 1}] * 2
    outs = parallel(*(lambda q=q, lg=lg: lg.ok(*q) for q in QUERIES for lg in (local, nats)))
    for i, query in enumerate(QUERIES):
        here, there = outs[2 * i], outs[2 * i + 1]
        assert here, query
        assert shape(here, query) == shape(there, query), query


def test_info_agrees(pair: tuple[Log, Log]) -> None:
    """info --json has the same keys and says the same of the same history, but for where and how it is stored."""
    local, nats = pair
    parallel(lambda: local.batch(EVENTS), lambda: nats.batch(EVENTS))
    here, there = parallel(local.info, nats.info)
    assert list(here) == list(there)
    for key in ("dir", "segments", "bytes"):  # where the log is and how it is stored
        here.pop(key)
        there.pop(key)
    assert here == there


@pytest.mark.slow
def test_consumers_agree(pair: tuple[Log, Log]) -> None:
    """The same replays leave the same group positions and the same dead-letter entries."""
    local, nats = pair
    parallel(lambda: local.batch(EVENTS), lambda: nats.batch(EVENTS))
    handler = ["sh", "-c", 'cat > /dev/null; [ "$EVLOG_TYPE" = item.odd ] && exit 65; exit 0']
    results = parallel(*(lambda lg=lg: lg.replay(handler, "--group", "g", "--to", 6, "--json") for lg in pair))
    assert [r.rc for r in results] == [3, 3]
    assert [json.loads(r.out.splitlines()[-1])["dead_lettered"] for r in results] == [3, 3]
    assert local.groups() == nats.groups() == [{"name": "g", "position": 7, "lag": len(EVENTS) - 7}]
    here, there = local.dead_letters(), nats.dead_letters()
    assert len(here) == 3
    keys = DLQ_KEYS - {"failed_at"}
    assert [{k: e[k] for k in keys} for e in here] == [{k: e[k] for k in keys} for e in there]


@pytest.mark.slow
def test_mirror_between_backends_keeps_ids_times_and_order(pair: tuple[Log, Log], tmp_path: Path) -> None:
    """mirror copies a local log to NATS and back unchanged; run again, it adds nothing."""
    local, nats = pair
    local.batch(EVENTS)
    back = Log(local.cli, str(tmp_path / "back"), "local")
    local.ok("mirror", local.location, nats.location)
    local.ok("mirror", nats.location, back.location)
    original, there, back_again = parallel(local.records, nats.records, back.records)
    assert len(original) == len(EVENTS)
    assert there == original
    assert back_again == original
    local.ok("mirror", local.location, nats.location)
    local.ok("mirror", nats.location, back.location)
    assert parallel(lambda: nats.info()["events"], lambda: back.info()["events"]) == [len(EVENTS)] * 2
