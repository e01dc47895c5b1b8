"""Where a contract test's log lives (not a test module).

Every scenario of tests/contract/ is written once, in a base class that is not collected (its name has no
`Test` prefix), against a `log` fixture: a `Log`, the real `evlog -d LOCATION ...` command pointed at a
fresh log location. The test classes mix a base class with one of the two locations SPEC 3 allows:

- `LocalLog`: a fresh directory under tmp_path;
- `NatsLog`: a fresh stream (`nats://127.0.0.1:PORT/STREAM`) on one real JetStream server per module
  (`nats_module`, which a test module imports so that pytest sees the fixture).

Nothing is mocked: the command runs as a subprocess, bounded by `TIMEOUT`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import Evlog, Result, assert_no_traceback, parse_records
from nats_helpers import NatsServer, need_nats

TIMEOUT = 45.0  # seconds: the bound on every evlog command these tests run

# SPEC 4: the generated id is a UUIDv7; times are UTC with microseconds.
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# SPEC 6 info: the JSON keys, in this order.
INFO_KEYS = ["format", "dir", "segments", "first_offset", "last_offset", "events", "bytes", "oldest_time",
             "newest_time", "groups", "hooks", "dead_letters"]
# SPEC 6 compact --json.
COMPACT_KEYS = {"segments_before", "segments_after", "events_before", "events_after", "bytes_before", "bytes_after"}
# SPEC 6 replay --json.
SUMMARY_KEYS = {"events", "succeeded", "retries", "dead_lettered", "elapsed_s"}
# SPEC 6 dlq: the fields of a dead-letter entry.
DLQ_KEYS = {"dlq_id", "failed_at", "group", "hook", "command", "attempts", "exit_code", "error", "stderr", "event"}

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

BASE_TIME = datetime(2020, 1, 1, tzinfo=UTC)
WORKERS = 6  # commands run at once by `parallel`

T = TypeVar("T")


def parallel(*calls: Callable[[], T]) -> list[T]:
    """Run independent commands at the same time (each bounded by its own timeout); their results in order."""
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(calls) or 1)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


# -- times -----------------------------------------------------------------------------------------

def stamp(moment: datetime) -> str:
    """A time as evlog prints it (SPEC 4): UTC, six fractional digits, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def history_time(i: int) -> str:
    """The time of the i-th event of `history`: 2020-01-01T00:00:00Z plus i times six hours."""
    return stamp(BASE_TIME + timedelta(hours=6 * i))


def now_stamp(delta: timedelta = timedelta(0)) -> str:
    return stamp(datetime.now(UTC) + delta)


# -- input -----------------------------------------------------------------------------------------

def jsonl(events: Sequence[dict[str, Any]]) -> str:
    """JSON Lines, compact, as a producer would pipe them."""
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)


def history(n: int, pad: int = 0) -> list[dict[str, Any]]:
    """n events with their own ids and increasing past times (kept as they are on import into an empty log).

    Types alternate between `item.even` and `item.odd`, keys cycle over k0..k2, every third has a subject;
    `pad` adds that many bytes of payload so that small segments fill up.
    """
    events = []
    for i in range(n):
        data: dict[str, Any] = {"n": i}
        if pad:
            data["pad"] = "x" * pad
        event = {"type": "item.even" if i % 2 == 0 else "item.odd", "id": f"h-{i}", "time": history_time(i),
                 "key": f"k{i % 3}", "data": data}
        if i % 3 == 0:
            event["subject"] = f"s{i}"
        events.append(event)
    return events


# -- the command, pointed at one log ---------------------------------------------------------------

class Log:
    """The real `evlog -d LOCATION ...` for one log location; `log(*args)` returns (rc, stdout, stderr)."""

    def __init__(self, cli: Evlog, location: str, backend: str) -> None:
        self.cli = cli
        self.location = location
        self.backend = backend

    def argv(self, *args: object) -> list[object]:
        """Arguments for `spawn`: the global `-d LOCATION` and then `args`."""
        return ["-d", self.location, *args]

    def __call__(self, *args: object, input: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = TIMEOUT) -> Result:
        return self.cli("-d", self.location, *args, input=input, env=env, timeout=timeout)

    def ok(self, *args: object, **kw: Any) -> str:
        """Run evlog on this log, require exit 0, return stdout."""
        r = self(*args, **kw)
        assert r.rc == 0, f"evlog -d {self.location} {' '.join(map(str, args))}: exit {r.rc}; stderr: {r.err}"
        return r.out

    def append(self, *args: object, **kw: Any) -> int:
        """`evlog append ARGS`: the printed offset (a bare integer and a newline, SPEC 6)."""
        out = self.ok("append", *args, **kw)
        assert re.fullmatch(r"\d+\n", out), f"append printed {out!r}, not a bare offset"
        return int(out)

    def batch(self, events: Sequence[dict[str, Any]] | str, *options: object) -> dict[str, Any]:
        """`evlog append --batch --json OPTIONS` of these events: the summary."""
        text = events if isinstance(events, str) else jsonl(events)
        return json.loads(self.ok("append", "--batch", "--json", *options, input=text))

    def records(self, *args: object) -> list[dict[str, Any]]:
        """`evlog read --format json ARGS` as records (exit 0 required)."""
        return parse_records(self.ok("read", "--format", "json", *args))

    def offsets(self, *args: object) -> list[int]:
        return [r["offset"] for r in self.records(*args)]

    def offsets_for(self, queries: Iterable[tuple[object, ...]]) -> dict[tuple[object, ...], list[int]]:
        """`offsets(*q)` for each read query q, run at the same time: {q: offsets}."""
        qs = list(queries)
        return dict(zip(qs, parallel(*(lambda q=q: self.offsets(*q) for q in qs)), strict=True))

    def info(self) -> dict[str, Any]:
        return json.loads(self.ok("info", "--json"))

    def groups(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("groups", "list", "--json"))

    def position(self, group: str) -> int | None:
        rows = {row["name"]: row for row in self.groups()}
        return rows[group]["position"] if group in rows else None

    def dead_letters(self, *args: object) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.ok("dlq", "list", "--json", *args).splitlines()]

    def replay(self, handler: Sequence[object], *options: object, **kw: Any) -> Result:
        return self("replay", *options, "--", *handler, **kw)


def summary(result: Result) -> dict[str, Any]:
    """The `replay --json` summary: the last line of stdout."""
    assert_no_traceback(result.err)
    lines = result.out.splitlines()
    assert lines, f"no summary on stdout; stderr: {result.err!r}"
    value = json.loads(lines[-1])
    assert set(value) == SUMMARY_KEYS, value
    return value


def stream_name(request: pytest.FixtureRequest) -> str:
    """A stream name no other test uses: the test's name and a random suffix, within [A-Za-z0-9_-]{1,64}."""
    base = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:40]
    return f"{base}-{uuid.uuid4().hex[:10]}"


# -- the two locations -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nats_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One single-node JetStream server for a whole test module; every test takes its own stream."""
    need_nats()
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store").start()
    try:
        yield server
    finally:
        server.stop()


class LocalLog:
    """The log is a fresh directory under tmp_path."""

    backend = "local"
    # Small segments, so that retention has sealed segments to delete (SPEC 6 init: as small as 1KiB).
    retention_init: tuple[str, ...] = ("--segment-bytes", "1KiB")

    @pytest.fixture
    def log(self, cli: Evlog, tmp_path: Path) -> Log:
        return Log(cli, str(tmp_path / "contract-log"), self.backend)


class NatsLog:
    """The log is a fresh stream on the module's NATS server."""

    backend = "nats"
    # Segments are a local setting; a stream has none.
    retention_init: tuple[str, ...] = ()

    @pytest.fixture
    def log(self, cli: Evlog, nats_module: NatsServer, request: pytest.FixtureRequest) -> Log:
        return Log(cli, f"{nats_module.url}/{stream_name(request)}", self.backend)
