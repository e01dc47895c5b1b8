"""Reading a NATS log through evlog's own protocol connection (evlog.store.nats_wire), against a real server.

The oracle is the client library: the frames built from the deliveries it hands
over (NatsLog.frame) must equal the frames built from the raw protocol, for
messages in evlog's own shape and in any other a NATS client can store.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import Evlog
from nats_helpers import NatsServer, stream_log

from evlog.consumers.nats import NatsGroups
from evlog.store.nats import NatsLog, _fetch


@pytest.fixture
def log(nats_server: NatsServer):
    with stream_log(nats_server, "wire") as log:
        yield log


def append(cli: Evlog, log: NatsLog, n: int, start: int = 0) -> None:
    lines = "".join(json.dumps({"type": f"t.{i % 3}", "key": f"k{i}", "data": {"i": i}}) + "\n"
                    for i in range(start, start + n))
    cli.ok("-d", f"{log.location.servers[0]}/{log.stream}", "append", "--batch", input=lines)


def read_all(log: NatsLog, types: list[str] | None = None) -> list[bytes]:
    return [f for chunk in log.reader(types or []).chunks() for f in chunk]


def frames_by_the_client_library(log: NatsLog) -> list[bytes]:
    async def get() -> list[bytes]:
        sub = await log.consume(1, ())
        try:
            return [log.frame(m) for m in await _fetch(sub, 10_000, 2.0)]
        finally:
            await sub.unsubscribe()

    return log._call(get(), 30)


def test_a_small_log_is_read_whole_every_time(cli: Evlog, log: NatsLog) -> None:
    """Several pull requests are in flight; the server may answer a later one ("nothing for you") before an
    earlier one's events. A read must not take that answer for the end of the log."""
    append(cli, log, 40)
    for _ in range(25):
        assert len(read_all(log)) == 40


def test_messages_of_any_shape_read_as_the_client_library_reads_them(cli: Evlog, log: NatsLog) -> None:
    """evlog's own messages (plain, with an import's time, in atomic batches) and messages stored by other
    clients: no headers, other headers first, ids that must be escaped in JSON."""
    cli.ok("-d", f"{log.location.servers[0]}/{log.stream}", "append", "--batch",
           input=json.dumps({"type": "t.imported", "time": "2026-01-01T00:00:00Z", "data": 1}) + "\n")
    append(cli, log, 3)

    async def foreign() -> None:
        js = log._js
        await js.publish("wire.t.bare", b'{"source":"x","subject":null,"key":null,"data":[1]}')
        await js.publish("wire.t.other", b'{"source":"x","subject":"s","key":"k","data":{}}',
                         headers={"X-First": "1", "Nats-Msg-Id": "other-1", "X-Last": "2"})
        await js.publish("wire.t.quote", b'{"source":"x","subject":null,"key":null,"data":"q"}',
                         headers={"Nats-Msg-Id": 'say "h\u00e9"\\ok'})
        await js.publish("wire.t.caf\u00e9", b'{"source":"x","subject":null,"key":null,"data":null}',
                         headers={"Nats-Msg-Id": "u-1"})

    log._call(foreign(), 30)
    got = read_all(log)
    assert got == frames_by_the_client_library(log)
    records = [json.loads(f) for f in got]
    assert [r["offset"] for r in records] == list(range(8))
    assert [r["id"] for r in records[4:]] == ["", "other-1", 'say "h\u00e9"\\ok', "u-1"]
    assert records[0]["time"] == "2026-01-01T00:00:00.000000Z"
    assert records[7]["type"] == "t.caf\u00e9"


def test_a_large_log_and_a_filtered_read(cli: Evlog, log: NatsLog) -> None:
    """Many requests' worth of events, split across socket reads; a type filter runs on the server."""
    append(cli, log, 12_000)
    got = read_all(log)
    assert [json.loads(f)["offset"] for f in got] == list(range(12_000))
    assert got == [f for chunk in log.reader().chunks() for f in chunk]
    ones = [json.loads(f) for f in read_all(log, ["t.1"])]
    assert [r["data"]["i"] for r in ones] == list(range(1, 12_000, 3))


def test_reading_leaves_no_consumer_behind(cli: Evlog, log: NatsLog) -> None:
    append(cli, log, 10)
    for _ in range(3):
        read_all(log)
    deadline = time.monotonic() + 5
    while log.state().consumer_count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.state().consumer_count == 0


def test_a_follower_keeps_going_through_quiet_times(cli: Evlog, log: NatsLog) -> None:
    """Its requests expire every half second while nothing comes; events after a quiet time still arrive."""
    append(cli, log, 2)
    stop = threading.Event()
    got: list[int] = []

    def follow() -> None:
        for frames in log.follow(0, (), stop, KeyboardInterrupt):
            got.extend(json.loads(f)["offset"] for f in frames)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        time.sleep(2.0)
        append(cli, log, 3, start=2)
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(10)
    assert got == [0, 1, 2, 3, 4]
    assert not follower.is_alive()


def test_a_groups_acknowledgements_reach_the_server_before_it_exits(cli: Evlog, log: NatsLog) -> None:
    """Acks go out on the pulling connection; the process waits for the server to have read them."""
    append(cli, log, 3000)
    url = f"{log.location.servers[0]}/{log.stream}"
    cli.ok("-d", url, "replay", "--group", "g", "--batch", "100", "--", "sh", "-c", "cat > /dev/null")
    groups = NatsGroups(log)
    assert groups.lag("g") == 0
    assert groups.get("g") == 3000
