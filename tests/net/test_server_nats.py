"""`evlog serve` as a WebSocket gateway over a NATS log: a browser can subscribe to a clustered log.

A real single-node JetStream server (tests/nats_helpers.py) holds the log; the
real `evlog serve` and real WebSocket clients talk over loopback.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from conftest import Evlog, Spawner, assert_one_error
from nats_helpers import NatsServer
from server_helpers import Clients, offsets, receive, start_server

TOKEN = "a-token-of-some-length"


@pytest.fixture
def url(nats_server: NatsServer) -> str:
    return f"{nats_server.url}/served"


def test_backlog_then_live_events_with_server_side_type_filters(cli: Evlog, spawn: Spawner, clients: Clients,
                                                                url: str) -> None:
    """A client from the beginning gets the backlog then live events in offset order; a client with a type
    pattern gets only its types; both see exactly what `read` shows."""
    cli.ok("-d", url, "append", "--batch", input="".join(
        json.dumps({"type": "order.created" if i % 2 else "user.seen", "data": {"i": i}}) + "\n" for i in range(40)))
    server = start_server(spawn, "-d", url, "serve", token=TOKEN)
    everything = clients.connect(server, "from=beginning")
    orders = clients.connect(server, urllib.parse.urlencode({"from": "beginning", "type": "order.*"}))
    backlog = receive(everything, 40)
    assert offsets(backlog) == list(range(40))
    for i in range(5):
        cli.ok("-d", url, "append", "order.created", f"i:={100 + i}")
    live = receive(everything, 5)
    assert offsets(live) == list(range(40, 45))
    got = receive(orders, 25)
    assert offsets(got) == [o for o in range(45) if o % 2 or o >= 40]
    assert all(json.loads(m)["type"] == "order.created" for m in got)
    read = cli.ok("-d", url, "read", "--format", "json").splitlines()
    assert [json.loads(m) for m in backlog + live] == [json.loads(line) for line in read]


def test_health_and_metrics_over_a_nats_log(cli: Evlog, spawn: Spawner, url: str) -> None:
    cli.ok("-d", url, "append", "a.b")
    server = start_server(spawn, "-d", url, "serve", token=TOKEN)
    assert server.get("/health").status == 200
    server.wait_metric("evlog_last_offset", 0)


def test_serve_on_a_nats_log_needs_an_explicit_token(cli: Evlog, url: str) -> None:
    """There is no directory to keep a generated token in: exit 2 with one line saying what to give."""
    cli.ok("-d", url, "init")
    assert_one_error(cli("-d", url, "serve", "--port", "0"), 2, "--token")
