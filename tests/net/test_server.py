"""`evlog serve` and `evlog subscribe` (SPEC 6): the log streamed to authenticated WebSocket clients.

Every test runs the real server as a subprocess on 127.0.0.1, port 0, with a private log
directory, and talks to it with real clients over loopback.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import stat
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import (
    DEADLINE,
    TRACEBACK,
    Background,
    Evlog,
    Result,
    Spawner,
    assert_one_error,
    error_lines,
    segment_files,
    wait_until,
)
from engine_helpers import append_undecodable
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import (
    TOKEN,
    UPGRADE,
    Clients,
    Server,
    batch_text,
    offsets,
    receive,
    receive_until_closed,
    start_server,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from evlog.errors import UsageError
from evlog.net.hub import RING_BYTES, RING_EVENTS, STEP_BYTES
from evlog.net.server import STALL_SECONDS, parse_query

BURST = 30_000  # events in one burst; with their padding, more bytes than the server's ring holds

CLIENTS = "evlog_clients_connected"
SENT = "evlog_events_sent_total"
LAST = "evlog_last_offset"


def disconnects(reason: str) -> str:
    return f'evlog_disconnects_total{{reason="{reason}"}}'


@pytest.fixture
def server(cli: Evlog, spawn: Spawner) -> Server:
    """A server on an empty log, with the token given by --token."""
    cli.ok("init")
    return start_server(spawn)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def q(**params: object) -> str:
    """A query string; list values repeat the parameter."""
    pairs: list[tuple[str, str]] = []
    for k, v in params.items():
        name = "from" if k == "from_" else k
        for item in v if isinstance(v, list) else [v]:
            pairs.append((name, str(item)))
    return urllib.parse.urlencode(pairs)


def stop_server(server: Server, sig: int = signal.SIGTERM) -> int:
    server.proc.signal(sig)
    return server.proc.wait(DEADLINE)


# -- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize("headers, query", [
    ({}, ""),
    (bearer("wrong-token"), ""),
    ({}, "token=wrong-token"),
    (bearer(""), ""),
    ({"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()}, ""),
    ({}, "token="),
], ids=["no-credentials", "wrong-bearer", "wrong-query-token", "empty-bearer", "basic-scheme", "empty-query-token"])
def test_stream_without_valid_credentials_is_401_and_not_upgraded(server: Server, headers: dict[str, str],
                                                                   query: str) -> None:
    """Missing or wrong credentials on /stream get HTTP 401 and no WebSocket upgrade."""
    r = server.get("/stream" + (f"?{query}" if query else ""), {**UPGRADE, **headers})
    assert r.status == 401, r
    assert not r.header_values("Upgrade") and not r.header_values("Sec-WebSocket-Accept"), r.headers


def test_a_websocket_client_with_a_wrong_token_is_refused_with_401(server: Server, clients: Clients) -> None:
    """A real WebSocket client presenting a wrong token fails its handshake with HTTP 401."""
    for how in ("header", "query"):
        with pytest.raises(InvalidStatus) as e:
            clients.connect(server, token="not-the-token", how=how)
        assert e.value.response.status_code == 401


@pytest.mark.parametrize("how", ["header", "query"])
def test_the_token_is_accepted_in_the_header_or_the_query(cli: Evlog, server: Server, clients: Clients,
                                                          how: str) -> None:
    """`Authorization: Bearer TOKEN` and `?token=TOKEN` both open the stream."""
    cli.ok("append", "hello", "n:=1")
    ws = clients.connect(server, q(from_="beginning"), how=how)
    [message] = receive(ws, 1)
    assert json.loads(message)["type"] == "hello"


def test_health_answers_200_without_credentials(server: Server) -> None:
    """GET /health is 200 {"status": "ok"} with no credentials."""
    r = server.get("/health")
    assert r.status == 200
    assert json.loads(r.body) == {"status": "ok"}


def test_metrics_need_credentials(server: Server) -> None:
    """GET /metrics is 401 without credentials or with a wrong token, 200 with the token."""
    assert server.get("/metrics").status == 401
    assert server.get("/metrics", bearer("wrong")).status == 401
    assert server.get("/metrics?token=wrong").status == 401
    assert server.get("/metrics", bearer(TOKEN)).status == 200
    assert server.get(f"/metrics?token={TOKEN}").status == 200


def test_metrics_report_clients_events_sent_disconnects_and_last_offset(cli: Evlog, server: Server,
                                                                        clients: Clients) -> None:
    """/metrics is Prometheus text: clients connected, events sent, disconnects by reason, last offset."""
    r = server.get("/metrics", bearer(TOKEN))
    assert r.status == 200
    assert any(v.startswith("text/plain") for v in r.header_values("Content-Type")), r.headers
    m = server.metrics()
    assert m[CLIENTS] == 0 and m[SENT] == 0
    assert any(k.startswith("evlog_disconnects_total{reason=") for k in m), m

    cli.batch([{"type": "m", "data": i} for i in range(3)])
    a = clients.connect(server, q(from_="beginning"))
    b = clients.connect(server, q(from_="beginning"), how="query")
    assert offsets(receive(a, 3)) == [0, 1, 2]
    assert offsets(receive(b, 3)) == [0, 1, 2]
    server.wait_metric(CLIENTS, 2)
    server.wait_metric(SENT, 6)
    server.wait_metric(LAST, 2)

    cli.ok("append", "m", "n:=4")
    assert offsets(receive(a, 1)) == [3]
    assert offsets(receive(b, 1)) == [3]
    server.wait_metric(LAST, 3)
    server.wait_metric(SENT, 8)


def test_a_client_that_closes_is_counted_as_closed_and_logs_no_error(cli: Evlog, server: Server,
                                                                     clients: Clients) -> None:
    """A client that says goodbye normally is a `closed` disconnect, not an `error`, and no error is logged."""
    ws = clients.connect(server)
    server.wait_metric(CLIENTS, 1)
    cli.ok("append", "x")
    receive(ws, 1)
    ws.close()
    server.wait_metric(CLIENTS, 0)
    m = server.metrics()
    assert (m[disconnects("closed")], m[disconnects("error")]) == (1, 0), m
    assert stop_server(server) == 143
    assert error_lines(server.proc.stderr()) == [], server.proc.stderr()


def test_http_responses_carry_one_content_type(server: Server) -> None:
    """/health is JSON and /metrics is Prometheus text, each with a single Content-Type header."""
    health = server.get("/health")
    assert [v.split(";")[0] for v in health.header_values("Content-Type")] == ["application/json"], health.headers
    metrics = server.get("/metrics", bearer(TOKEN))
    assert [v.split(";")[0] for v in metrics.header_values("Content-Type")] == ["text/plain"], metrics.headers


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_token_never_appears_in_the_servers_log(cli: Evlog, spawn: Spawner, clients: Clients,
                                                    log_format: str) -> None:
    """Requests carrying the token in the query are logged with the token redacted, in text and JSON logs."""
    cli.ok("init")
    server = start_server(spawn, "--log-format", log_format, "serve")
    clients.connect(server, how="query")
    clients.connect(server, q(from_="beginning"), how="query").close()
    assert server.get(f"/metrics?token={TOKEN}").status == 200
    assert server.get(f"/health?token={TOKEN}").status == 200
    assert server.get(f"/nowhere?token={TOKEN}").status == 404
    assert server.get(f"/stream?from=banana&token={TOKEN}", UPGRADE).status == 400
    assert server.get(f"/stream?token={TOKEN}&token={TOKEN}", UPGRADE).status == 101
    assert stop_server(server) == 143
    err = server.proc.stderr()
    assert "/metrics" in err and "/nowhere" in err, f"requests are not logged at all: {err!r}"
    assert TOKEN not in err, err
    if log_format == "json":
        for line in err.splitlines():
            obj = json.loads(line)
            assert {"ts", "level", "msg"} <= set(obj), line


def test_a_percent_encoded_token_parameter_is_not_logged_either(cli: Evlog, server: Server) -> None:
    """`?tok%65n=TOKEN` is the same query parameter as `?token=TOKEN`: its value is not logged."""
    r = server.get(f"/stream?tok%65n={TOKEN}", UPGRADE)
    assert r.status in (101, 401)
    assert stop_server(server) == 143
    assert TOKEN not in server.proc.stderr(), server.proc.stderr()


def test_a_client_message_larger_than_a_few_kib_is_refused(server: Server, clients: Clients) -> None:
    """A client sending a 64 KiB message is disconnected with 1009 (message too big)."""
    ws = clients.connect(server)
    ws.send("x" * 65536)
    _, closed = receive_until_closed(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1009, closed


# -- origins -----------------------------------------------------------------------------------

def test_allowed_origins_match_exactly_and_others_get_403(cli: Evlog, spawn: Spawner, clients: Clients) -> None:
    """With --allow-origin, listed origins and requests without Origin connect; any other Origin is 403."""
    cli.ok("init")
    server = start_server(spawn, "serve", "--allow-origin", "https://app.example",
                          "--allow-origin", "https://ops.example:8443")
    for origin in ("https://app.example", "https://ops.example:8443"):
        clients.connect(server, headers={"Origin": origin})
    clients.connect(server)  # no Origin header: not a browser
    for origin in ("https://evil.example", "http://app.example", "https://app.example.evil.test",
                   "https://app.example:443", "https://ops.example", "null"):
        r = server.get("/stream", {**UPGRADE, **bearer(TOKEN), "Origin": origin})
        assert r.status == 403, (origin, r)
        assert not r.header_values("Sec-WebSocket-Accept")
    with pytest.raises(InvalidStatus) as e:
        clients.connect(server, headers={"Origin": "https://evil.example"})
    assert e.value.response.status_code == 403


def test_without_allow_origin_any_origin_connects(server: Server, clients: Clients) -> None:
    """Without --allow-origin, the Origin header is not checked."""
    clients.connect(server, headers={"Origin": "https://anything.example"})


# -- bad parameters ----------------------------------------------------------------------------

BAD_QUERIES = [
    "from=banana",
    "from=-1",
    "from=",
    "last=abc",
    "last=-3",
    "format=xml",
    "since=bad",
    "where=" + urllib.parse.quote("data.n >"),
    "where=" + urllib.parse.quote("(type == 'a'"),
    "where=" + urllib.parse.quote('type matches "("'),
    "type=" + urllib.parse.quote("order.>.x"),
    "from=1&last=2",
    "from=1&since=2026-01-01",
    "since=1h&last=3",
    "from=1&from=2",
    "colour=red",
    # Non-ASCII digits (str.isdigit() takes them, int() takes some) and numbers of absurd length.
    "from=" + urllib.parse.quote("²"),
    "from=" + urllib.parse.quote("١٢"),
    "last=" + urllib.parse.quote("²"),
    "last=" + urllib.parse.quote("١٢"),
    "last=" + "9" * 5000,
    "from=" + "9" * 400,
    "from=99999999999999999999",
    "since=" + "9" * 400,
    "since=" + "9" * 400 + "s",
    "since=99999999999999999d",
    "since=" + urllib.parse.quote("²h"),
]


def test_bad_query_parameters_are_400_with_a_reason_and_no_upgrade(server: Server) -> None:
    """Each invalid /stream parameter gets HTTP 400 with a non-empty reason, and no upgrade."""
    for query in BAD_QUERIES:
        r = server.get(f"/stream?{query}", {**UPGRADE, **bearer(TOKEN)})
        assert r.status == 400, (query, r)
        assert r.body.strip(), f"{query}: empty reason"
        assert not r.header_values("Sec-WebSocket-Accept"), query
    assert server.get("/health").status == 200


@pytest.mark.parametrize("query", [
    "from=" + urllib.parse.quote("١٢"),
    "last=" + urllib.parse.quote("²"),
    "since=99999999999999999d",
    "since=" + "9" * 400 + "s",
])
def test_a_malformed_number_is_refused_before_the_upgrade(server: Server, clients: Clients, query: str) -> None:
    """A WebSocket client asking with a malformed number fails its handshake with 400, never 101 then 1011."""
    with pytest.raises(InvalidStatus) as e:
        clients.connect(server, query)
    assert e.value.response.status_code == 400
    assert error_lines(server.proc.stderr()) == [], server.proc.stderr()


def test_a_time_before_the_epoch_starts_at_the_beginning(cli: Evlog, server: Server, clients: Clients) -> None:
    """`since` far in the past (before 1970, within what RFC 3339 can write) is the whole log."""
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    for since in ("1900-01-01", "0001-01-01T00:00:00Z", "36500d"):
        ws = clients.connect(server, q(since=since))
        assert offsets(receive(ws, 3)) == [0, 1, 2], since


def test_a_client_sees_the_reason_for_a_400(server: Server, clients: Clients) -> None:
    """A WebSocket client's handshake fails with 400 and the reason in the body."""
    with pytest.raises(InvalidStatus) as e:
        clients.connect(server, "format=xml")
    assert e.value.response.status_code == 400
    assert b"format" in bytes(e.value.response.body or b"")


def test_a_catastrophic_pattern_does_not_hold_up_the_server(cli: Evlog, server: Server, clients: Clients) -> None:
    """A client filtering with a pattern that backtracks exponentially under Python's re gets its matches, while
    /health, /metrics and other clients are served as usual (RE2 matches in linear time)."""
    evil = 'data.s matches "(a+)+$"'
    trap = {"type": "t", "data": {"s": "a" * 40 + "!"}}
    cli.batch([trap, {"type": "t", "data": {"s": "aaa"}}])
    pathological = clients.connect(server, q(from_="beginning", where=evil))
    plain = clients.reader(clients.connect(server, q(from_="beginning")), expect=6, timeout=2 * DEADLINE)
    server.wait_metric(CLIENTS, 2)
    cli.batch([trap, trap, trap, {"type": "t", "data": {"s": "a" * 5000}}])
    assert server.get("/health").status == 200
    assert server.metrics()[LAST] == 5
    plain.wait(6)
    assert plain.offsets == list(range(6))
    assert offsets(receive(pathological, 2)) == [1, 5]


PARAM_NAMES = ["from", "since", "last", "type", "key", "subject", "source", "where", "format", "token", "x", ""]
param_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789²١٢", min_size=1, max_size=25),  # digits, ASCII or not
    st.text(alphabet="0123456789²١٢.-+eEdhms ", max_size=30),
    st.sampled_from(["beginning", "end", "json", "cloudevents", "order.*", "a.>", "1h", "2026-01-01",
                     'data.n > 1', 'type matches "("', 'type matches "(?=a)"', "9" * 5000]),
)


@settings(max_examples=400, deadline=None)
@given(query=st.one_of(
    st.text(max_size=200),
    st.tuples(st.sampled_from(PARAM_NAMES), param_values).map(lambda pair: urllib.parse.urlencode([pair])),
    st.lists(st.tuples(st.sampled_from(PARAM_NAMES), param_values), max_size=4).map(urllib.parse.urlencode),
))
def test_parse_query_returns_or_raises_usage_error(query: str) -> None:
    """Whatever the query string, parse_query returns a query or raises UsageError: never anything else."""
    try:
        parse_query(query)
    except UsageError as e:
        assert str(e).strip() and "\n" not in str(e)


# -- the stream --------------------------------------------------------------------------------

def test_backlog_then_live_in_order_across_segment_rolls_while_other_processes_append(
        cli: Evlog, spawn: Spawner, clients: Clients, tmp_path: Path) -> None:
    """Clients get the backlog then live events, in offset order, with no gaps or duplicates, across
    segment rolls, while one process appends a batch and others append one event at a time."""
    cli.ok("init", "--segment-bytes", "1KiB")
    backlog, bulk_n, singles_n = 150, 600, 25
    cli.batch([{"type": "old", "key": f"k{i % 3}", "data": {"i": i}} for i in range(backlog)])
    server = start_server(spawn)
    early = clients.connect(server, q(from_="beginning"))
    live_only = clients.connect(server)
    server.wait_metric(CLIENTS, 2)

    bulk_file = tmp_path / "bulk.jsonl"
    bulk_file.write_text(batch_text([{"type": "bulk", "key": f"k{i % 7}", "data": {"i": i, "pad": "p" * 40}}
                                     for i in range(bulk_n)]))
    results: list[int] = []

    def one_at_a_time() -> None:
        for i in range(singles_n):
            results.append(cli("append", "single", f"i:={i}").rc)

    singles = threading.Thread(target=one_at_a_time)
    with bulk_file.open("rb") as stdin:
        bulk = spawn("append", "--batch", stdin=stdin)
        singles.start()
        # Clients that join while both writers are at work.
        wait_until(lambda: len(results) >= 3)
        middle = clients.connect(server, q(from_="beginning"))
        resumed = clients.connect(server, q(from_=100))
        singles.join(120)
        assert bulk.wait(60) == 0, bulk.stderr()
    assert results == [0] * singles_n

    total = backlog + bulk_n + singles_n
    lines = cli.ok("read", "--format", "json").splitlines()
    assert [json.loads(line)["offset"] for line in lines] == list(range(total))
    assert len(segment_files(cli.dir)) > 20, "the log did not roll its segments"
    assert receive(early, total) == lines
    assert receive(middle, total) == lines
    assert receive(resumed, total - 100) == lines[100:]
    got = offsets(receive(live_only, total - backlog))
    assert got == list(range(backlog, total))

    cli.ok("append", "sentinel")  # the next message after everything is the new event: no duplicates
    for ws in (early, middle, resumed, live_only):
        assert offsets(receive(ws, 1)) == [total]


FILTER_EVENTS = [
    {"type": "order.created", "key": "k1", "data": {"n": 1}},
    {"type": "order.created.v2", "key": "k1", "data": {"n": 5}},
    {"type": "order.paid", "key": "k2", "data": {"n": 7}},
    {"type": "user.signup", "key": "k1", "data": {"n": 9}},
    {"type": "user.profile.updated", "key": "k1", "data": {"n": 3}},
    {"type": "user", "key": None, "data": {"n": 8}},
    {"type": "payment.done", "key": "k1", "data": {"n": 6}},
    {"type": "order.cancelled", "data": None},
]
SENTINEL = {"type": "order.zzz", "key": "k1", "data": {"n": 100}}  # matches every filter below


@pytest.mark.parametrize("params, flags", [
    ({"type": ["order.*", "user.>"]}, ["--type", "order.*", "--type", "user.>"]),
    ({"key": "k1"}, ["--key", "k1"]),
    ({"where": 'data.n > 4 and type matches "^order"'}, ["--where", 'data.n > 4 and type matches "^order"']),
    ({"type": "order.>", "key": "k1", "where": "data.n >= 5"},
     ["--type", "order.>", "--key", "k1", "--where", "data.n >= 5"]),
], ids=["type-patterns", "key", "where", "all-together"])
def test_filters_select_the_same_events_as_read(cli: Evlog, server: Server, clients: Clients,
                                                params: dict[str, object], flags: list[str]) -> None:
    """Stream filters (type patterns, key, where) select, from backlog and live, exactly what `read` does."""
    cli.batch(FILTER_EVENTS)
    ws = clients.connect(server, q(from_="beginning", **params))
    server.wait_metric(CLIENTS, 1)
    cli.batch(FILTER_EVENTS)
    cli.batch([SENTINEL])
    expected = cli.ok("read", "--format", "json", *flags).splitlines()
    assert 3 <= len(expected) < 2 * len(FILTER_EVENTS)
    assert receive(ws, len(expected)) == expected


def test_format_cloudevents_sends_what_read_prints(cli: Evlog, server: Server, clients: Clients) -> None:
    """`format=cloudevents` sends each event as `read --format cloudevents` prints it."""
    cli.batch([{"type": "order.created", "key": "k", "subject": "s", "data": {"a": [1, 2]}},
               {"type": "plain", "data": None}])
    ws = clients.connect(server, q(from_="beginning", format="cloudevents"))
    cli.ok("append", "later", "x=y", "--key", "k2")
    expected = cli.ok("read", "--format", "cloudevents").splitlines()
    got = receive(ws, 3)
    assert got == expected
    first = json.loads(got[0])
    assert first["specversion"] == "1.0" and first["sequence"] == "0" and first["partitionkey"] == "k"


def test_from_end_is_the_default_and_gets_only_new_events(cli: Evlog, server: Server, clients: Clients) -> None:
    """Without `from`, a client gets only the events appended after it connected."""
    cli.batch([{"type": "before"} for _ in range(5)])
    server.wait_metric(LAST, 4)
    ws = clients.connect(server)
    server.wait_metric(CLIENTS, 1)
    cli.batch([{"type": "after", "data": i} for i in range(3)])
    got = [json.loads(m) for m in receive(ws, 3)]
    assert [(r["offset"], r["type"]) for r in got] == [(5, "after"), (6, "after"), (7, "after")]


def test_from_last_and_since_choose_where_the_stream_starts(cli: Evlog, server: Server, clients: Clients) -> None:
    """`from=N` resumes at N, `last=N` starts N events from the end, `since=T` at the first event at or after T;
    each then carries on live."""
    cli.batch([{"type": "t", "data": i} for i in range(6)])
    cli.batch([{"type": "t", "data": i} for i in range(6, 10)])  # a later append: a later time
    time6 = cli.records("--from", 6, "--limit", 1)[0]["time"]
    assert cli.records("--from", 5, "--limit", 1)[0]["time"] < time6
    resumed = clients.connect(server, q(from_=3))
    last = clients.connect(server, q(last=2))
    since = clients.connect(server, q(since=time6))
    beginning = clients.connect(server, q(from_="beginning"))
    assert offsets(receive(resumed, 7)) == list(range(3, 10))
    assert offsets(receive(last, 2)) == [8, 9]
    assert offsets(receive(since, 4)) == [6, 7, 8, 9]
    assert offsets(receive(beginning, 10)) == list(range(10))
    cli.ok("append", "t", "n:=10")
    for ws in (resumed, last, since, beginning):
        assert offsets(receive(ws, 1)) == [10]


# -- slow clients and memory -------------------------------------------------------------------

def burst_events(first: int, n: int, pad: int) -> list[dict[str, object]]:
    return [{"type": "burst", "data": {"i": i, "pad": "x" * pad}} for i in range(first, first + n)]


def check_closed_for_lagging(messages: list[str], closed: ConnectionClosed, start: int) -> None:
    """The stalled client got a gap-free prefix, then 1013 with a reason naming where to resume."""
    got = offsets(messages)
    assert got == list(range(start, start + len(got)))
    rcvd = closed.rcvd
    assert rcvd is not None and rcvd.code == 1013, closed
    m = re.search(r"offset (\d+)", rcvd.reason)
    assert m, rcvd.reason
    assert int(m.group(1)) <= (got[-1] + 1 if got else start), "resuming there would skip events"


def test_a_stalled_client_is_closed_with_1013_and_healthy_clients_get_every_event(
        cli: Evlog, spawn: Spawner, clients: Clients) -> None:
    """A client that stops reading is closed with 1013 once it has taken nothing for STALL_SECONDS, healthy
    clients beside it get every event, and the server's memory does not grow with what the stalled clients miss."""
    cli.ok("init")
    server = start_server(spawn)
    burst, step, pad = BURST, BURST // 12, 2048
    assert burst * pad > RING_BYTES, "the burst must be more than the server's ring holds"
    healthy = [clients.reader(clients.connect(server), expect=2 * burst, timeout=240) for _ in range(2)]
    stalled = clients.stalled(server)
    server.wait_metric(CLIENTS, 3)

    def burst_from(first: int, stalled: ClientConnection, lagging: int) -> tuple[list[str], ConnectionClosed]:
        """Append `burst` events a step at a time; drain the stalled client as soon as it has been dropped."""
        drained = None
        for start in range(first, first + burst, step):
            cli.batch(burst_events(start, step, pad))
            for r in healthy:
                r.wait(start + step)
            if drained is None and server.metrics()[disconnects("lagging")] >= lagging:
                drained = receive_until_closed(stalled, timeout=60)
        if drained is None:
            server.wait_metric(disconnects("lagging"), lagging, timeout=STALL_SECONDS + 20)
            drained = receive_until_closed(stalled, timeout=60)
        return drained

    messages, closed = burst_from(0, stalled, 1)
    check_closed_for_lagging(messages, closed, 0)
    rss_first = server.rss_kib()

    stalled = clients.stalled(server)
    server.wait_metric(CLIENTS, 3)
    messages, closed = burst_from(burst, stalled, 2)
    check_closed_for_lagging(messages, closed, burst)
    rss_second = server.rss_kib()

    for r in healthy:
        r.wait(2 * burst)
        assert r.offsets == list(range(2 * burst))
        assert r.closed is None and r.error is None
    m = server.metrics()
    assert (m[disconnects("lagging")], m[disconnects("closed")], m[disconnects("error")]) == (2, 0, 0), m
    # Memory is the shared ring's, whatever the stalled clients miss: a second burst adds nothing.
    assert rss_second - rss_first < 100 * 1024, f"RSS grew from {rss_first} KiB to {rss_second} KiB"


MIB = 1 << 20


def test_memory_is_bounded_in_bytes_when_clients_with_big_events_never_read(cli: Evlog, spawn: Spawner,
                                                                            clients: Clients) -> None:
    """With events of about 1 MiB and clients that never read (two on the backlog, two live), the server's peak
    memory grows by no more than its ring and a few steps of bytes per client, whatever the number of events."""
    cli.ok("init")
    big = 1_000_000
    events = [{"type": "big", "data": {"i": i, "pad": "x" * big}} for i in range(40)]
    server = start_server(spawn)
    base = server.rss_kib()
    for i in range(0, 40, 5):
        cli.batch(events[i:i + 5])
    server.wait_metric(LAST, 39)
    stalled = [clients.stalled(server, q(from_="beginning")) for _ in range(2)]
    stalled += [clients.stalled(server) for _ in range(2)]
    server.wait_metric(CLIENTS, 4)
    for i in range(0, 40, 5):
        cli.batch(events[i:i + 5])
    server.wait_metric(LAST, 79)
    reader = clients.reader(clients.connect(server, q(from_="beginning")), expect=80, timeout=60)
    reader.wait(80)
    assert reader.offsets == list(range(80))
    # A client holds at most a step of events being read and one being written (a step is STEP_BYTES, or one
    # bigger event, frame and JSON); the follower hands over a batch of five events at a time here.
    per_client = 2 * STEP_BYTES + 4 * MIB
    bound = RING_BYTES + 5 * per_client + 10 * MIB + 48 * MIB  # 48 MiB: allocator slack
    peak = server.rss_kib("VmHWM")
    print(f"RSS at start {base // 1024} MiB, peak {peak // 1024} MiB, bound +{bound // MIB} MiB")
    assert (peak - base) * 1024 < bound, \
        f"peak RSS grew by {(peak - base) // 1024} MiB from {base // 1024} MiB; the bound is {bound // MIB} MiB"


def test_the_1013_reason_names_the_offset_after_the_last_event_delivered(cli: Evlog, server: Server,
                                                                         clients: Clients) -> None:
    """Resuming from the offset named in a 1013 close gives the next event: nothing skipped, nothing twice."""
    stalled = clients.stalled(server)
    server.wait_metric(CLIENTS, 1)
    step = BURST // 4
    for start in range(0, BURST, step):
        cli.batch(burst_events(start, step, 1024))
    server.wait_metric(disconnects("lagging"), 1, timeout=STALL_SECONDS + 20)
    messages, closed = receive_until_closed(stalled, timeout=60)
    check_closed_for_lagging(messages, closed, 0)
    assert closed.rcvd is not None
    reason = closed.rcvd.reason
    resume = re.search(r"offset (\d+)", reason)
    assert resume, reason
    again = clients.connect(server, q(from_=resume.group(1)))
    assert offsets(receive(again, 1)) == [offsets(messages)[-1] + 1], f"close reason: {reason!r}"


def test_a_client_that_keeps_up_gets_every_event_of_one_batch_larger_than_its_queue(
        cli: Evlog, server: Server, clients: Clients) -> None:
    """A reading client is not dropped because one `append --batch` brought more events than the server's ring."""
    reader = clients.reader(clients.connect(server), expect=3 * RING_EVENTS, timeout=60)
    server.wait_metric(CLIENTS, 1)
    cli.batch([{"type": "big", "data": i} for i in range(3 * RING_EVENTS)])
    reader.wait(3 * RING_EVENTS)
    assert reader.offsets == list(range(3 * RING_EVENTS))


# -- a follower that fails ---------------------------------------------------------------------

FOLLOWER_UP = "evlog_follower_up"
FOLLOWER_FAILURES = "evlog_follower_failures_total"


def test_a_failing_follower_makes_health_503_and_recovers_after_repair(cli: Evlog, spawn: Spawner,
                                                                        clients: Clients, tmp_path: Path) -> None:
    """When following the log hits a damaged record, /health is 503 naming the problem, /metrics has
    evlog_follower_up 0, the failure is logged once however often it is retried, and streaming resumes by
    itself once `evlog verify --repair` has moved the record aside."""
    cli.ok("init")
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    server = start_server(spawn)
    live = clients.connect(server)
    server.wait_metric(CLIENTS, 1)
    assert server.metrics()[FOLLOWER_UP] == 1
    # Records 3 and 4 as a copy of the log writes them, added to the served log's segment with 3 damaged.
    scratch = tmp_path / "scratch"
    shutil.copytree(cli.dir, scratch)
    cli.batch([{"type": "t", "data": 3}, {"type": "t", "data": 4}], d=scratch)
    segment = segment_files(cli.dir)[-1]
    added = bytearray(segment_files(scratch)[-1].read_bytes()[segment.stat().st_size:])
    assert added.startswith(b'{"offset":3,') and added.count(b"\n") == 2, added
    added[added.index(b'"data":') + 7] ^= 0x01
    with segment.open("ab") as f:
        f.write(bytes(added))

    wait_until(lambda: server.get("/health").status == 503, message="/health still says ok")
    health = server.get("/health")
    assert [v.split(";")[0] for v in health.header_values("Content-Type")] == ["application/json"]
    body = json.loads(health.body)
    assert body["status"] == "unhealthy" and "offset 3" in body["problem"], body
    assert server.metrics()[FOLLOWER_UP] == 0
    wait_until(lambda: server.metrics()[FOLLOWER_FAILURES] >= 3, message="following is not retried")
    failures = [line for line in error_lines(server.proc.stderr()) if "following the log failed" in line]
    assert len(failures) == 1, server.proc.stderr()
    assert server.metrics()[LAST] == 2

    assert cli("verify", "--repair").rc == 0
    server.wait_metric(FOLLOWER_UP, 1, timeout=2 * DEADLINE)
    assert json.loads(server.get("/health").body) == {"status": "ok"}
    assert offsets(receive(live, 1)) == [4]
    assert cli.ok("append", "t") == "5\n"
    assert offsets(receive(live, 1)) == [5]
    server.wait_metric(LAST, 5)
    assert "following the log again" in server.proc.stderr()


def test_a_record_that_is_not_utf8_is_never_sent_in_a_text_frame(cli: Evlog, spawn: Spawner,
                                                                   clients: Clients) -> None:
    """A stored record whose text is not UTF-8 (checksum intact) is treated as the damaged record it is:
    clients get the records before it, never its bytes, and /health is 503 naming its offset, whether the
    server reads it live or from disk for a client that starts at the beginning."""
    cli.ok("init")
    cli.batch([{"type": "t", "data": i} for i in range(3)])
    server = start_server(spawn)
    live = clients.connect(server)
    server.wait_metric(CLIENTS, 1)
    bad = append_undecodable(cli.dir)
    wait_until(lambda: server.get("/health").status == 503, message="/health still says ok")
    assert f"offset {bad}" in json.loads(server.get("/health").body)["problem"]
    early = clients.connect(server, q(from_="beginning"))
    assert offsets(receive(early, 3)) == [0, 1, 2]
    for ws in (early, live):
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1)


# -- limits and tokens -------------------------------------------------------------------------

def test_max_clients_refuses_the_next_handshake(cli: Evlog, spawn: Spawner, clients: Clients) -> None:
    """With --max-clients 2, a third handshake gets an HTTP error; once one leaves, a new client fits."""
    cli.ok("init")
    server = start_server(spawn, "serve", "--max-clients", 2)
    first = clients.connect(server)
    clients.connect(server, how="query")
    server.wait_metric(CLIENTS, 2)
    with pytest.raises(InvalidStatus) as e:
        clients.connect(server)
    assert e.value.response.status_code >= 400 and e.value.response.status_code != 401
    r = server.get("/stream", {**UPGRADE, **bearer(TOKEN)})
    assert r.status >= 400 and not r.header_values("Sec-WebSocket-Accept")
    first.close()
    server.wait_metric(CLIENTS, 1)
    clients.connect(server)
    server.wait_metric(CLIENTS, 2)


def test_max_clients_holds_when_many_handshake_at_once(cli: Evlog, spawn: Spawner, clients: Clients) -> None:
    """With --max-clients 2, eight simultaneous handshakes let in at most two clients."""
    cli.ok("init")
    server = start_server(spawn, "serve", "--max-clients", 2)
    accepted: list[int] = []
    refused: list[int] = []
    together = threading.Barrier(8, timeout=DEADLINE)

    def one() -> None:
        together.wait()
        try:
            clients.connect(server)
            accepted.append(1)
        except InvalidStatus as e:
            refused.append(e.response.status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * DEADLINE)
    assert len(accepted) + len(refused) == 8
    assert len(accepted) <= 2, f"{len(accepted)} clients let in"
    assert all(status >= 400 and status != 401 for status in refused), refused


@pytest.mark.parametrize("rewrite", ["in-place", "rename"])
def test_a_rewritten_token_file_takes_effect(cli: Evlog, spawn: Spawner, clients: Clients, tmp_path: Path,
                                             rewrite: str) -> None:
    """--token-file is re-read when it changes: the new token works and the old one is refused."""
    cli.ok("init")
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token-00000001\n")
    server = start_server(spawn, "serve", "--token-file", tokens, token=None)
    assert server.get("/metrics", bearer("old-token-00000001")).status == 200
    assert server.get("/metrics", bearer("new-token-00000002")).status == 401
    if rewrite == "in-place":
        tokens.write_text("new-token-00000002\n")
    else:
        (tmp_path / "tokens.tmp").write_text("new-token-00000002\n")
        os.replace(tmp_path / "tokens.tmp", tokens)
    wait_until(lambda: server.get("/metrics", bearer("new-token-00000002")).status == 200,
               message="the new token is not accepted")
    assert server.get("/metrics", bearer("old-token-00000001")).status == 401
    clients.connect(server, token="new-token-00000002")
    with pytest.raises(InvalidStatus) as e:
        clients.connect(server, token="old-token-00000001", how="query")
    assert e.value.response.status_code == 401
    assert "token-000" not in server.proc.stderr()


def test_a_token_file_holds_one_token_per_line(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """Every line of --token-file is an accepted token; blank lines are not."""
    cli.ok("init")
    tokens = tmp_path / "tokens"
    tokens.write_text("alpha-token-0123456789\n\n  beta-token-0123456789  \n")
    server = start_server(spawn, "serve", "--token-file", tokens, token=None)
    assert server.get("/metrics", bearer("alpha-token-0123456789")).status == 200
    assert server.get("/metrics", bearer("beta-token-0123456789")).status == 200
    assert server.get("/metrics", bearer("gamma-token-0123456789")).status == 401
    assert server.get("/metrics?token=").status == 401


def serve_once(cli: Evlog, *args: object, env: dict[str, str] | None = None) -> Result:
    """`evlog serve --port 0 ARGS` expected to refuse to start (a server that starts is killed at the deadline)."""
    return cli("serve", "--port", 0, *args, env=env, timeout=DEADLINE)


@pytest.mark.parametrize("target", ["a-file", "dangling"])
def test_a_symlinked_serve_token_is_refused(cli: Evlog, tmp_path: Path, target: str) -> None:
    """DIR/.serve-token is never followed when it is a symbolic link: serve and subscribe exit 1 saying so."""
    cli.ok("init")
    planted = tmp_path / "planted"
    if target == "a-file":
        planted.write_text("a-long-enough-planted-secret-value\n")
        planted.chmod(0o600)
    (cli.dir / ".serve-token").symlink_to(planted)
    r = serve_once(cli)
    assert_one_error(r, 1, ".serve-token", "symbolic link")
    assert "planted-secret" not in r.err
    r = cli("subscribe", "ws://127.0.0.1:9/stream", "--no-reconnect", timeout=DEADLINE)
    assert_one_error(r, 1, ".serve-token", "symbolic link")
    assert (cli.dir / ".serve-token").is_symlink() and (target == "dangling") == (not planted.exists())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=["0644", "0640", "0604", "0620"])
def test_a_serve_token_open_to_group_or_others_is_refused(cli: Evlog, mode: int) -> None:
    """An existing DIR/.serve-token that group or others may read or write is refused (exit 1) with the fix."""
    cli.ok("init")
    path = cli.dir / ".serve-token"
    path.write_text("an-existing-token-of-fine-length\n")
    path.chmod(mode)
    r = serve_once(cli)
    assert_one_error(r, 1, str(path), f"chmod 600 {path}")
    assert "an-existing-token" not in r.err
    r = cli("subscribe", "ws://127.0.0.1:9/stream", "--no-reconnect", timeout=DEADLINE)
    assert_one_error(r, 1, f"chmod 600 {path}")
    path.chmod(0o600)
    assert "an-existing-token" not in cli("subscribe", "ws://127.0.0.1:9/stream", "--no-reconnect").err


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_short_token_is_a_usage_error(cli: Evlog, how: str) -> None:
    """A token shorter than 7 characters, from --token or EVLOG_TOKEN, is a usage error (exit 2) that does
    not show it."""
    cli.ok("init")
    short = "sh0rt6"
    assert len(short) == 6
    if how == "option":
        r = serve_once(cli, "--token", short)
    else:
        r = serve_once(cli, env={**cli.env, "EVLOG_TOKEN": short})
    assert_one_error(r, 2, "--token" if how == "option" else "EVLOG_TOKEN", "7 characters")
    assert short not in r.err
    r = serve_once(cli, "--token", "a")
    assert_one_error(r, 2, "7 characters")


def test_a_short_but_allowed_token_is_warned_about(cli: Evlog, spawn: Spawner) -> None:
    """A token of 7 to 15 characters works, with a warning that names no token."""
    cli.ok("init")
    server = start_server(spawn, "serve", "--token", "tok-1234", token=None)
    assert server.get("/metrics", bearer("tok-1234")).status == 200
    wait_until(lambda: "easy to guess" in server.proc.stderr(), message=lambda: server.proc.stderr())
    assert "tok-1234" not in server.proc.stderr()


def test_a_token_file_line_shorter_than_7_characters_is_refused(cli: Evlog, spawn: Spawner,
                                                                 tmp_path: Path) -> None:
    """A --token-file with a short token is an error naming its line at start-up; a rewrite that adds one keeps
    the good lines, warns, and never accepts the short token."""
    cli.ok("init")
    tokens = tmp_path / "tokens"
    tokens.write_text("a-good-token-for-the-file\nshort1\n")
    r = serve_once(cli, "--token-file", tokens)
    assert_one_error(r, 1, "line 2", "7 characters")
    assert "short1" not in r.err

    tokens.write_text("a-good-token-for-the-file\n")
    server = start_server(spawn, "serve", "--token-file", tokens, token=None)
    tokens.write_text("another-good-token-here\nshort2\n")
    wait_until(lambda: server.get("/metrics", bearer("another-good-token-here")).status == 200)
    assert server.get("/metrics", bearer("short2")).status == 401
    assert server.get("/metrics", bearer("a-good-token-for-the-file")).status == 401
    wait_until(lambda: "line 2" in server.proc.stderr(), message=lambda: server.proc.stderr())
    assert "short2" not in server.proc.stderr()


def test_without_a_token_one_is_generated_into_dir_serve_token_mode_0600(cli: Evlog, spawn: Spawner) -> None:
    """With no token given, serve stores a generated one in DIR/.serve-token (mode 0600), says where, never
    prints it, and uses the same one next time."""
    cli.ok("init")
    server = start_server(spawn, token=None)
    path = cli.dir / ".serve-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 16
    assert server.get("/metrics", bearer(token)).status == 200
    assert server.get("/metrics", bearer(token[:-1])).status == 401
    assert ".serve-token" in server.proc.stderr()
    assert stop_server(server) == 143
    assert token not in server.proc.stderr()

    again = start_server(spawn, token=None)
    assert path.read_text().strip() == token
    assert again.get("/metrics", bearer(token)).status == 200


def test_evlog_token_is_used_when_set(cli: Evlog, spawn: Spawner) -> None:
    """EVLOG_TOKEN is the token when set: it is accepted, others are not, and no token file is made."""
    cli.ok("init")
    secret = "token-from-the-environment-77"
    server = start_server(spawn, token=None, env={**cli.env, "EVLOG_TOKEN": secret})
    assert server.get("/metrics", bearer(secret)).status == 200
    assert server.get("/metrics", bearer(TOKEN)).status == 401
    assert not (cli.dir / ".serve-token").exists()
    assert stop_server(server) == 143
    assert secret not in server.proc.stderr()


# -- stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_clients_with_1001_and_exits_with_its_code(cli: Evlog, server: Server, clients: Clients,
                                                                   sig: int, code: int) -> None:
    """SIGTERM (143) or SIGINT (130) closes every connection with 1001 (going away), without a traceback."""
    connected = [clients.connect(server), clients.connect(server, q(from_="beginning"), how="query")]
    server.wait_metric(CLIENTS, 2)
    cli.ok("append", "x")
    for ws in connected:
        receive(ws, 1)
    assert stop_server(server, sig) == code
    for ws in connected:
        _, closed = receive_until_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1001, closed
    assert TRACEBACK not in server.proc.stderr()
    assert error_lines(server.proc.stderr()) == [], server.proc.stderr()


# -- subscribe ---------------------------------------------------------------------------------

SUBSCRIBE_EVENTS = [
    {"type": "order.created", "key": "cust-1", "subject": "o-1", "data": {"sku": "A1", "count": 3}},
    {"type": "order.paid", "key": "cust-1", "data": {"amount": 12.5, "items": [{"sku": "A1"}], "ok": True}},
    {"type": "user.signup", "data": {"name": "Zoë", "quote": "say \"hi\"\n", "big": 12345678901234567890}},
    {"type": "note", "data": None},
    {"type": "user.deleted", "key": "cust-2", "data": [1, "two", None, False, -0.25]},
]


def subscriber(spawn: Spawner, server: Server, *args: object, env: dict[str, str] | None = None,
               token: str | None = TOKEN) -> Background:
    tok = ["--token", token] if token is not None else []
    return spawn("subscribe", server.url, *tok, *args, env=env)


@pytest.mark.parametrize("fmt", ["json", "cloudevents", "data", "pretty"])
def test_subscribe_prints_events_like_read(cli: Evlog, spawn: Spawner, server: Server, fmt: str) -> None:
    """`subscribe --format F` prints the backlog and then live events exactly as `read --format F` does."""
    cli.batch(SUBSCRIBE_EVENTS)
    sub = subscriber(spawn, server, "--from", "beginning", "--format", fmt)
    n = len(SUBSCRIBE_EVENTS)
    sub.wait_lines(n)
    cli.batch(SUBSCRIBE_EVENTS)
    sub.wait_lines(2 * n)
    expected = cli.ok("read", "--format", fmt)
    if fmt == "data":  # the same JSON values; read passes stored bytes through, so spacing may differ
        assert [json.loads(line) for line in sub.lines()] == [json.loads(line) for line in expected.splitlines()]
    else:
        assert "\n".join(sub.lines()) + "\n" == expected


def test_subscribe_applies_filters(cli: Evlog, spawn: Spawner, server: Server) -> None:
    """`subscribe` with --type, --key and --where prints what `read` with the same filters prints."""
    flags = ["--type", "order.*", "--type", "user.>", "--key", "k1", "--where", "data.n > 2"]
    cli.batch(FILTER_EVENTS)
    sub = subscriber(spawn, server, "--from", "beginning", "--format", "json", *flags)
    cli.batch(FILTER_EVENTS)
    cli.batch([SENTINEL])
    expected = cli.ok("read", "--format", "json", *flags).splitlines()
    assert 3 <= len(expected) < 2 * len(FILTER_EVENTS)
    assert sub.wait_lines(len(expected)) == expected


@pytest.mark.parametrize("source", ["option", "environment", "serve-token-file"])
def test_subscribe_finds_its_token(cli: Evlog, spawn: Spawner, source: str) -> None:
    """`subscribe` takes its token from --token, else EVLOG_TOKEN, else the local log's .serve-token."""
    cli.ok("init")
    cli.ok("append", "hello")
    if source == "serve-token-file":
        server = start_server(spawn, token=None)
        sub = subscriber(spawn, server, "--from", "beginning", "--format", "json", token=None)
    elif source == "environment":  # EVLOG_TOKEN wins over a stale .serve-token
        server = start_server(spawn)
        (cli.dir / ".serve-token").write_text("stale-token\n")
        sub = subscriber(spawn, server, "--from", "beginning", "--format", "json", token=None,
                         env={**cli.env, "EVLOG_TOKEN": TOKEN})
    else:  # --token wins over EVLOG_TOKEN
        server = start_server(spawn)
        sub = subscriber(spawn, server, "--from", "beginning", "--format", "json",
                         env={**cli.env, "EVLOG_TOKEN": "stale-token"})
    [line] = sub.wait_lines(1)
    assert json.loads(line)["type"] == "hello"


def test_subscribe_with_a_wrong_token_fails_at_once(cli: Evlog, server: Server) -> None:
    """A refused token is an error (exit 1) naming HTTP 401, not a reason to retry forever."""
    r = cli("subscribe", server.url, "--token", "wrong-token", timeout=DEADLINE)
    assert r.rc == 1, r
    [line] = error_lines(r.err)
    assert "401" in line


def test_subscribe_reconnects_with_backoff_and_resumes_without_duplicates(cli: Evlog, spawn: Spawner,
                                                                         server: Server) -> None:
    """When the server restarts on the same port, subscribe retries with growing delays, then resumes after
    the last offset it printed: every event once, in order."""
    cli.batch([{"type": "a", "data": i} for i in range(5)])
    sub = subscriber(spawn, server, "--from", "beginning", "--format", "json")
    sub.wait_lines(5)
    assert stop_server(server) == 143

    def delays() -> list[float]:
        return [float(d) for d in re.findall(r"reconnecting in ([0-9.]+)s", sub.stderr())]

    wait_until(lambda: len(delays()) >= 3, message=lambda: sub.stderr())
    assert delays()[:3] == sorted(set(delays()[:3])), f"the delays do not grow: {delays()}"
    cli.batch([{"type": "b", "data": i} for i in range(5)])  # while the server is down

    start_server(spawn, port=server.port)
    sub.wait_lines(10, timeout=2 * DEADLINE)
    cli.batch([{"type": "c", "data": i} for i in range(5)])
    lines = sub.wait_lines(15)
    assert lines == cli.ok("read", "--format", "json").splitlines()
    assert sub.poll() is None
    assert TRACEBACK not in sub.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_subscribe_no_reconnect_exits_when_the_server_goes_away(cli: Evlog, spawn: Spawner, server: Server,
                                                                sig: int) -> None:
    """With --no-reconnect, subscribe exits once the server is gone, having printed what it got."""
    cli.batch([{"type": "a", "data": i} for i in range(3)])
    sub = subscriber(spawn, server, "--from", "beginning", "--format", "json", "--no-reconnect")
    sub.wait_lines(3)
    server.proc.signal(sig)
    rc = sub.wait(DEADLINE)
    assert rc in (0, 1), sub.stderr()
    assert TRACEBACK not in sub.stderr()
    assert sub.lines() == cli.ok("read", "--format", "json").splitlines()


def test_subscribe_no_reconnect_with_nothing_listening_fails(cli: Evlog, server: Server) -> None:
    """With --no-reconnect and no server at the address, subscribe exits 1 with one error line."""
    url = server.url
    assert stop_server(server) == 143
    r = cli("subscribe", url, "--token", TOKEN, "--no-reconnect", timeout=DEADLINE)
    assert r.rc == 1, r
    assert len(error_lines(r.err)) == 1, r.err


@pytest.mark.parametrize("how", ["from-end", "filter-matched-nothing"])
def test_subscribe_that_printed_nothing_resumes_where_its_stream_began(cli: Evlog, spawn: Spawner, server: Server,
                                                                       how: str) -> None:
    """A subscriber that has printed nothing yet (default `from` end, or a filter that matched nothing so far)
    resumes after a reconnect where its first stream began: events appended while it was away are printed."""
    cli.batch([{"type": "before", "data": i} for i in range(3)])
    server.wait_metric(LAST, 2)
    flags = ["--type", "wanted"] if how == "filter-matched-nothing" else []
    sub = subscriber(spawn, server, "--format", "json", *flags)
    server.wait_metric(CLIENTS, 1)
    if flags:
        cli.batch([{"type": "other", "data": i} for i in range(3)])
        server.wait_metric(SENT, 0)
        server.wait_metric(LAST, 5)
    assert stop_server(server) == 143
    wait_until(lambda: "reconnecting" in sub.stderr(), message=lambda: sub.stderr())
    cli.batch([{"type": "wanted", "data": i} for i in range(3)])  # while the server is down
    start_server(spawn, port=server.port)
    cli.batch([{"type": "wanted", "data": "live"}])
    expected = cli.ok("read", "--format", "json", "--type", "wanted").splitlines()
    assert len(expected) == 4
    assert sub.wait_lines(4, timeout=2 * DEADLINE) == expected


def flip_record(cli: Evlog, offset: int) -> None:
    """Damage the stored record at `offset` (a JSON Lines log): one flipped bit inside its data."""
    for path in segment_files(cli.dir):
        data = bytearray(path.read_bytes())
        at = data.find(b'{"offset":%d,' % offset)
        if at >= 0:
            pos = data.index(b'"data":', at) + 9
            data[pos] ^= 0x01
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no record {offset}")


def test_subscribe_backs_off_from_a_server_that_fails_at_once(cli: Evlog, spawn: Spawner) -> None:
    """A subscriber whose every connection fails at once (the server closes with 1011 at a damaged record)
    reconnects ever more slowly: the backoff starts again only after a healthy connection."""
    cli.ok("init", "--segment-bytes", "1KiB")
    cli.batch([{"type": "t", "data": {"i": i, "pad": "p" * 60}} for i in range(30)])
    assert len(segment_files(cli.dir)) > 3
    flip_record(cli, 2)  # in the first, sealed segment: the server starts, a backlog read fails there
    server = start_server(spawn)
    sub = subscriber(spawn, server, "--from", "beginning", "--format", "json")

    def delays() -> list[float]:
        return [float(d) for d in re.findall(r"reconnecting in ([0-9.]+)s", sub.stderr())]

    wait_until(lambda: len(delays()) >= 4, timeout=3 * DEADLINE, message=lambda: sub.stderr())
    assert [json.loads(line)["offset"] for line in sub.lines()] == [0, 1]
    first = delays()[:4]
    assert first == sorted(set(first)), f"the delays do not grow: {first}"


SECRET = "query-token-that-must-stay-secret"


def test_subscribe_never_shows_a_token_from_its_url(cli: Evlog, spawn: Spawner, server: Server) -> None:
    """A token in the URL's query appears in no error, warning or debug line of subscribe."""
    url = server.url + "?token=" + SECRET
    r = cli("subscribe", url, "--token", "wrong-token-wrong-token")
    assert r.rc == 1 and "401" in r.err, r
    assert SECRET not in r.err and "[redacted]" in r.err, r.err

    sub = spawn("-v", "subscribe", url, "--token", TOKEN)
    server.wait_metric(CLIENTS, 1)
    assert stop_server(server) == 143
    wait_until(lambda: "reconnecting" in sub.stderr(), message=lambda: sub.stderr())
    sub.signal(signal.SIGTERM)
    sub.wait()
    assert "connected to" in sub.stderr(), sub.stderr()
    assert SECRET not in sub.stderr(), sub.stderr()

    r = cli("subscribe", url, "--token", TOKEN, "--no-reconnect")
    assert r.rc == 1, r
    assert SECRET not in r.err, r.err


@pytest.mark.parametrize("start", ["١٢", "²", "9" * 25, "-1"])
def test_subscribe_from_takes_ascii_digits_only(cli: Evlog, server: Server, start: str) -> None:
    """`subscribe --from` with non-ASCII digits or an absurd number is a usage error (exit 2) before connecting."""
    r = cli("subscribe", server.url, "--token", TOKEN, "--from", start, "--no-reconnect", timeout=DEADLINE)
    assert_one_error(r, 2, "--from")
    assert server.metrics()[CLIENTS] == 0
