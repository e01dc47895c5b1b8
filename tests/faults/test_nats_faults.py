"""Faults on a log kept on NATS JetStream (SPEC 3 NATS, 5, 6 append/replay/groups/mirror, 7): a cluster node
SIGKILLed under load, the only server killed and restarted, a mirror SIGKILLed mid-copy. Real nats-server
processes and the real evlog command as subprocesses; nothing is mocked.

What must hold whatever dies: an append that exited 0 is in the log, once; a failed one exits 1 with one line
on stderr and can be run again with the same ids without duplicates; followers and replay groups go on by
themselves and deliver every event at least once; a mirror run again after a kill leaves an exact copy.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import TRACEBACK, Background, Evlog, Result, Spawner, assert_one_error, wait_until
from nats_helpers import NatsCluster, NatsServer

T = TypeVar("T")
STREAM = "S"
RUN_TIMEOUT = 90.0  # seconds any one evlog command may take, however the cluster is doing
START_SLACK = 13.0  # seconds past --nats-timeout for a command started on a busy machine (start-up, last try)
GRACE = 3.0  # seconds past --nats-timeout for a running command to give up


# -- asking the servers directly -------------------------------------------------------------------------

def js_ask(urls: Iterable[str], ask: Callable[[Any], Awaitable[T]]) -> T:
    """Ask JetStream something over a short-lived connection to one of `urls`."""
    import nats

    async def quiet(_: Exception) -> None:
        pass

    async def go() -> T:
        nc = await nats.connect(servers=list(urls), connect_timeout=2, allow_reconnect=False, error_cb=quiet)
        try:
            return await ask(nc.jetstream(timeout=2))
        finally:
            await nc.close()

    return asyncio.run(go())


def live(nodes: Iterable[NatsServer]) -> list[str]:
    return [n.url for n in nodes if n.proc is not None and n.proc.poll() is None]


def stream_leader(cluster: NatsCluster, stream: str = STREAM) -> NatsServer | None:
    """The node that leads the stream now (None while there is none, or when nobody answers)."""
    async def ask(js: Any) -> str | None:
        return (await js.stream_info(stream)).cluster.leader

    try:
        name = js_ask(live(cluster.nodes), ask)
    except Exception:  # noqa: BLE001 - no answer is "no leader yet"
        return None
    return next((n for n in cluster.nodes if n.name == name), None)


def stream_count(server: NatsServer, stream: str) -> int:
    """Messages the stream holds (0 when it does not exist yet, or the server does not answer)."""
    async def ask(js: Any) -> int:
        return int((await js.stream_info(stream)).state.messages)

    try:
        return js_ask([server.url], ask)
    except Exception:  # noqa: BLE001
        return 0


# -- running evlog from threads ----------------------------------------------------------------------------

def run(cli: Evlog, args: list[str], input: str | None = None, timeout: float = RUN_TIMEOUT) -> Result:
    """evlog ARGS as a subprocess, safe to call from any thread (it asserts nothing); rc -1 when it hung."""
    try:
        p = subprocess.run(cli.argv(args), input=input, env=cli.env, cwd=cli.tmp, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL if input is None else None)
    except subprocess.TimeoutExpired as e:
        return Result(-1, str(e.stdout or ""), f"did not end within {timeout}s: {e.stderr!r}")
    return Result(p.returncode, p.stdout, p.stderr)


@dataclass
class Attempt:
    """One evlog run by an appender: what it was asked to append and how it ended."""

    kind: str              # "one" (a single append) or "batch"
    ids: list[str]
    args: list[str]
    input: str | None
    budget: float          # its --nats-timeout
    rc: int                # -1: it did not end within RUN_TIMEOUT
    out: str
    err: str
    started: float
    ended: float


def batch_lines(ids: list[str]) -> str:
    return "".join(json.dumps({"type": "load.batch", "id": i, "key": f"k{n % 5}", "data": {"id": i, "n": n}}) + "\n"
                   for n, i in enumerate(ids))


class Load:
    """Appenders that run until stopped: `lanes` threads of single appends, one thread of `append --batch`."""

    def __init__(self, cli: Evlog, url: str, *, lanes: int, batch_size: int) -> None:
        self.cli, self.url, self.batch_size = cli, url, batch_size
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._singles, args=(lane,), daemon=True) for lane in range(lanes)]
        self.threads.append(threading.Thread(target=self._batches, daemon=True))

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(RUN_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self.threads), "an appender did not stop"

    def attempt(self, kind: str, ids: list[str], args: list[str], input: str | None = None,
                budget: float = 10.0) -> Attempt:
        started = time.monotonic()
        r = run(self.cli, ["--nats-timeout", str(budget), "-d", self.url, *args], input)
        a = Attempt(kind, ids, args, input, budget, r.rc, r.out, r.err, started, time.monotonic())
        with self.lock:
            self.attempts.append(a)
        return a

    @staticmethod
    def budget(n: int) -> float:
        """Every other run gets a retry budget shorter than an election, so that some appends fail."""
        return 10.0 if n % 2 == 0 else 1.0

    def _singles(self, lane: int) -> None:
        n = 0
        while not self.stop.is_set():
            id_ = f"one-{lane}-{n}"
            self.attempt("one", [id_], ["append", "load.one", "--id", id_, f"id={id_}", f"n:={n}"],
                         budget=self.budget(n + lane))
            n += 1

    def _batches(self) -> None:
        k = 0
        while not self.stop.is_set():
            ids = [f"batch-{k}-{i}" for i in range(self.batch_size)]
            self.attempt("batch", ids, ["append", "--batch", "--json"], batch_lines(ids), budget=self.budget(k))
            k += 1

    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    def ended_after(self, moment: float, kind: str, ok: bool) -> int:
        return sum(1 for a in self.snapshot() if a.ended > moment and a.kind == kind and (not ok or a.rc == 0))

    def wait_for(self, since: float, *, ones: int, batches: int, ok: bool, what: str) -> None:
        """Wait until this many single appends and batches ended (with exit 0 when `ok`) after `since`."""
        wait_until(lambda: self.ended_after(since, "one", ok) >= ones and self.ended_after(since, "batch", ok)
                   >= batches, 90, interval=0.05, message=lambda: f"{what}: {self.snapshot()[-3:]}")


def check_attempt(a: Attempt) -> None:
    """SPEC 5: exit 0, or exit 1 with one `evlog: error:` line and no traceback, within the retry budget."""
    what = f"evlog --nats-timeout {a.budget} {' '.join(a.args)}"
    assert a.rc != -1, f"{what} did not end within {RUN_TIMEOUT}s: {a.err}"
    assert TRACEBACK not in a.err, f"traceback on stderr of {what}:\n{a.err}"
    if a.rc == 0:
        if a.kind == "one":
            assert a.out.strip().isdigit(), f"{what} printed {a.out!r}, not an offset"
        return
    assert_one_error(Result(a.rc, a.out, a.err), 1)
    took = a.ended - a.started
    assert took < a.budget + START_SLACK, f"{what} failed after {took:.1f}s"


# -- the replay handler's output ---------------------------------------------------------------------------

def delivered(path: Path) -> list[dict[str, Any]]:
    """Records the `cat >> FILE` handler received, complete lines only."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines() if line.strip()]


def cat_handler(out: Path) -> list[str]:
    return ["sh", "-c", 'cat >> "$1"', "sh", str(out)]


def check_log(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """SPEC 4 on a whole log: ids unique, offsets contiguous from 0, times never decreasing; records by id."""
    dupes = [i for i, count in Counter(r["id"] for r in records).items() if count > 1]
    assert not dupes, f"{len(dupes)} ids more than once in the log, e.g. {dupes[:5]}"
    assert [r["offset"] for r in records] == list(range(len(records))), "offsets are not contiguous from 0"
    back = [(records[i]["offset"], records[i - 1]["time"], records[i]["time"]) for i in range(1, len(records))
            if records[i]["time"] < records[i - 1]["time"]]
    assert not back, f"time decreases along the log at {back[:3]}"
    return {r["id"]: r for r in records}


# -- 1. a three-node cluster loses a node under load -------------------------------------------------------

def cluster_run(cli: Evlog, spawn: Spawner, tmp_path: Path, cluster: NatsCluster, *, kills: int, lanes: int,
                batch_size: int) -> None:
    """Appenders and a following replay group run while, `kills` times, a node (the stream leader, then
    alternately a follower) is SIGKILLed, appended past, and restarted. Then every append that exited 0 is in
    the log once, the failed ones run again add nothing twice, the group has delivered every event, and a
    `read -f` has printed the whole log."""
    url = f"{cluster.url}/{STREAM}"
    cli.ok("-d", url, "init", "--replicas", "3", timeout=RUN_TIMEOUT)
    out = tmp_path / "delivered.jsonl"
    replay = spawn("--nats-timeout", "10", "-d", url, "replay", "--group", "G", "--follow", "--batch", "100",
                   "--", *cat_handler(out))
    follower = spawn("--nats-timeout", "10", "-d", url, "read", "-f", "--format", "json")
    load = Load(cli, url, lanes=lanes, batch_size=batch_size).start()
    try:
        load.wait_for(0, ones=lanes, batches=1, ok=True, what="no load built up")
        wait_until(lambda: delivered(out), 60, message=lambda: f"the replay delivers nothing: {replay.stderr()!r}")
        for k in range(kills):
            leader = wait_until(lambda: stream_leader(cluster), 60, message="the stream has no leader")
            victim = leader if k % 2 == 0 else next(n for n in cluster.nodes if n is not leader)
            victim.kill()
            # appends go on while the node is down: some wait for an election, some fail
            load.wait_for(time.monotonic(), ones=2 * lanes, batches=1, ok=False,
                          what="appends stopped ending after the kill")
            victim.start()
            load.wait_for(time.monotonic(), ones=lanes, batches=1, ok=True,
                          what="appends do not succeed after the restart")
    finally:
        load.finish()

    attempts = load.snapshot()
    for a in attempts:
        check_attempt(a)
    # a failed append run again with the same ids adds what is missing, nothing twice
    retries = [load.attempt(a.kind, a.ids, a.args, a.input) for a in attempts if a.rc != 0]
    for a in retries:
        check_attempt(a)
        assert a.rc == 0, f"evlog {' '.join(a.args)} failed again with the cluster whole: {a.err}"

    by_id = check_log(cli.records(d=url, timeout=RUN_TIMEOUT))
    done = [a for a in attempts + retries if a.rc == 0]
    lost = [i for a in done for i in a.ids if i not in by_id]
    assert not lost, f"{len(lost)} acknowledged events are not in the log, e.g. {lost[:5]}"
    for a in done:
        if a.kind == "one":
            assert by_id[a.ids[0]]["offset"] == int(a.out), \
                f"append {a.ids[0]} printed offset {a.out.strip()}; the log has it at {by_id[a.ids[0]]['offset']}"
    ours = {i for a in attempts for i in a.ids}
    assert set(by_id) <= ours, f"events nobody appended: {sorted(set(by_id) - ours)[:5]}"

    # the group catches up with the whole log: every event at least once, none skipped, none altered
    def missing() -> set[str]:
        return set(by_id) - {r["id"] for r in delivered(out)}

    wait_until(lambda: not missing() or replay.poll() is not None, 120, interval=0.2,
               message=lambda: f"{len(missing())} events never delivered, e.g. {sorted(missing())[:5]}; "
                               f"replay stderr: {replay.stderr()[-2000:]!r}")
    assert replay.poll() is None, f"the replay stopped (exit {replay.poll()}): {replay.stderr()[-2000:]!r}"
    assert not missing()
    for rec in delivered(out):
        assert rec == by_id.get(rec["id"]), f"the handler got {rec}; the log holds {by_id.get(rec['id'])}"
    assert TRACEBACK not in replay.stderr()

    def at_the_end() -> bool:
        r = run(cli, ["--nats-timeout", "10", "-d", url, "groups", "list", "--json"])
        return r.rc == 0 and [(g["name"], g["position"], g["lag"]) for g in json.loads(r.out)] == [("G", len(by_id), 0)]

    wait_until(at_the_end, 30, interval=0.2, message="`groups list` does not show G at the end of the log")
    replay.signal(signal.SIGTERM)
    assert replay.wait(30) == 143, replay.stderr()[-2000:]

    # a follower (`read -f`) started before the kill prints the whole log, in order, once
    wait_until(lambda: len(follower.lines()) >= len(by_id) or follower.poll() is not None, 60, interval=0.2)
    assert follower.poll() is None, f"the follower stopped (exit {follower.poll()}): {follower.stderr()[-2000:]!r}"
    assert [r["id"] for r in follower.records()] == list(by_id)


def test_a_cluster_node_killed_under_load_loses_no_acknowledged_event(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_cluster: NatsCluster) -> None:
    """With the stream leader SIGKILLed under appends, a following replay group and a `read -f`, then restarted:
    every append that exited 0 is in the log once, failed ones exit 1 with one line, the group delivers every
    event and the follower prints them all."""
    cluster_run(cli, spawn, tmp_path, nats_cluster, kills=1, lanes=2, batch_size=2500)


@pytest.mark.slow
def test_cluster_nodes_killed_again_and_again_lose_no_acknowledged_event(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_cluster: NatsCluster) -> None:
    """Four kills in a row (leaders and followers), more appenders and larger batches: nothing acknowledged is
    lost or doubled, the group delivers every event and the follower prints them all."""
    cluster_run(cli, spawn, tmp_path, nats_cluster, kills=4, lanes=3, batch_size=4000)


# -- 2. the only server dies ---------------------------------------------------------------------------------

def events(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"type": "t.x", "id": f"{prefix}-{i}", "data": {"id": f"{prefix}-{i}"}} for i in range(n)]


def test_with_the_only_server_down_commands_exit_1_with_one_line_and_a_restart_loses_nothing(
        cli: Evlog, nats_server: NatsServer) -> None:
    """SIGKILL the only server: append, append --batch, read, tail, info and groups list exit 1 with one line
    within --nats-timeout; restarted on the same port and store, appends work again and every event is there."""
    url = f"{nats_server.url}/{STREAM}"
    cli.ok("-d", url, "init")
    cli.batch(events("before", 5), d=url)
    cli.ok("-d", url, "append", "t.x", "--id", "before-one")
    nats_server.kill()

    runs = {
        "append": (["append", "t.x", "--id", "during-one"], None),
        "append --batch": (["append", "--batch"], "".join(json.dumps(e) + "\n" for e in events("during", 3))),
        "read": (["read"], None),
        "tail": (["tail", "-n", "3"], None),
        "info": (["info", "--json"], None),
        "groups list": (["groups", "list", "--json"], None),
    }
    results: dict[str, tuple[Result, float]] = {}

    def one(name: str) -> None:
        args, input = runs[name]
        started = time.monotonic()
        r = run(cli, ["--nats-timeout", "2", "-d", url, *args], input, timeout=60)
        results[name] = (r, time.monotonic() - started)

    threads = [threading.Thread(target=one, args=(name,)) for name in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(70)
    assert set(results) == set(runs)
    for name, (r, took) in results.items():
        assert TRACEBACK not in r.err, f"{name}: {r.err}"
        assert_one_error(r, 1)
        assert took < 2 + START_SLACK, f"{name} took {took:.1f}s with --nats-timeout 2"

    nats_server.start()
    cli.ok("--nats-timeout", "30", "-d", url, "append", "t.x", "--id", "after-one")
    cli.batch(events("during", 3), d=url)
    ids = [r["id"] for r in cli.records(d=url)]
    assert ids == [f"before-{i}" for i in range(5)] + ["before-one", "after-one"] + [f"during-{i}" for i in range(3)]


def test_a_batch_cut_off_by_the_server_dying_exits_1_and_can_be_run_again(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_server: NatsServer) -> None:
    """`append --batch` of 6,000 lines whose only server is SIGKILLed mid-way exits 1 with one line within
    --nats-timeout; run again after the restart, the log holds every line once, in input order."""
    url = f"{nats_server.url}/{STREAM}"
    cli.ok("-d", url, "init")
    ids = [f"b-{i}" for i in range(6_000)]
    lines = tmp_path / "lines.jsonl"
    lines.write_text(batch_lines(ids))
    with lines.open("rb") as f:
        bg = spawn("--nats-timeout", "2", "-d", url, "append", "--batch", stdin=f)
    wait_until(lambda: stream_count(nats_server, STREAM) > 0 or bg.poll() is not None, 30, interval=0.01)
    nats_server.kill()
    killed = time.monotonic()
    rc = bg.wait(60)
    took = time.monotonic() - killed
    if rc == 0:
        pytest.fail("the batch ended before the server was killed: nothing was cut off")
    assert_one_error(Result(rc, "".join(bg.lines()), bg.stderr()), 1)

    nats_server.start()
    stored = wait_until(lambda: stream_count(nats_server, STREAM), 30, message="the restarted server lost the stream")
    assert stored < len(ids)
    summary = json.loads(cli.ok("-d", url, "append", "--batch", "--json", input=lines.read_text()))
    assert summary["count"] == len(ids) - stored
    records = cli.records(d=url)
    check_log(records)
    assert [r["id"] for r in records] == ids
    assert took < 2 + GRACE, f"the batch exited {took:.1f}s after its server died, with --nats-timeout 2"


def test_followers_and_a_replay_group_go_on_after_their_server_restarts(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_server: NatsServer) -> None:
    """`read -f`, `tail -f`, `mirror --follow` and `replay --group --follow` outlive a SIGKILL and restart of
    their only server and go on with the events appended after it, none skipped (SPEC 3: followers and replays
    reconnect by themselves)."""
    url = f"{nats_server.url}/{STREAM}"
    cli.ok("-d", url, "init")
    cli.ok("-d", url, "append", "t.x", "--id", "first")
    out, copy = tmp_path / "delivered.jsonl", tmp_path / "copy"

    def printed(bg: Background) -> Callable[[], list[str]]:
        return lambda: [r["id"] for r in bg.records()]

    def copied() -> list[str]:
        r = run(cli, ["-d", str(copy), "read", "--format", "json"])
        return [json.loads(line)["id"] for line in r.out.splitlines()] if r.rc == 0 else []

    read_f = spawn("-d", url, "read", "-f", "--format", "json")
    tail_f = spawn("-d", url, "tail", "-f", "-n", "5", "--format", "json")
    followers: dict[str, tuple[Background, Callable[[], list[str]]]] = {
        "read -f": (read_f, printed(read_f)),
        "tail -f": (tail_f, printed(tail_f)),
        "mirror --follow": (spawn("mirror", "--follow", url, copy), copied),
        "replay --group --follow": (spawn("-d", url, "replay", "--group", "G", "--follow", "--", *cat_handler(out)),
                                    lambda: [r["id"] for r in delivered(out)]),
    }

    def sees_first(name: str, bg: Background, seen: Callable[[], list[str]]) -> None:
        wait_until(lambda: seen() == ["first"], message=lambda: f"{name}: {bg.stderr()!r}")

    for name, (bg, seen) in followers.items():
        sees_first(name, bg, seen)
    nats_server.kill()
    nats_server.start()
    cli.ok("-d", url, "append", "t.x", "--id", "second")
    cli.batch(events("third", 3), d=url)
    want = ["first", "second", "third-0", "third-1", "third-2"]

    def settled() -> bool:
        return all(bg.poll() is not None or seen() == want for bg, seen in followers.values())

    wait_until(settled, 20, interval=0.2, message=lambda: "; ".join(f"{name} has {seen()}"
                                                                    for name, (_, seen) in followers.items()))
    broken = [f"{name} stopped with exit {bg.poll()}: {bg.stderr().strip()!r}" for name, (bg, _) in followers.items()
              if bg.poll() is not None]
    assert not broken, "\n".join(broken)
    assert {name: seen() for name, (_, seen) in followers.items()} == dict.fromkeys(followers, want)


# -- 3. a mirror killed mid-copy -----------------------------------------------------------------------------

def mirror_source(n: int) -> list[dict[str, Any]]:
    """Varied events: several types, keys, subjects and sources, nested and non-ASCII data, nulls."""
    out = []
    for i in range(n):
        e: dict[str, Any] = {"type": f"order.t{i % 3}", "id": f"m-{i:06d}", "source": f"src{i % 2}",
                             "data": {"n": i, "text": "é✓ \"q\"", "list": [1, None, {"ok": i % 2 == 0}]}}
        if i % 2:
            e["key"] = f"k{i % 7}"
        if i % 5 == 0:
            e["subject"] = f"s{i % 11}"
        if i % 13 == 0:
            e["data"] = None
        out.append(e)
    return out


def events_in(cli: Evlog, location: str) -> int:
    """The number of events a log holds, as evlog itself says (0 when there is no log yet)."""
    r = run(cli, ["-d", location, "info", "--json"])
    return json.loads(r.out)["events"] if r.rc == 0 else 0


def written(location: str, server: NatsServer) -> int:
    """How far a mirror has got, cheaply: the stream's messages, or complete lines in a local log's segments
    (which may include a batch not committed yet)."""
    if "://" in location:
        return stream_count(server, location.rsplit("/", 1)[1])
    segments = Path(location) / "segments"
    return sum(p.read_bytes().count(b"\n") for p in segments.glob("*.jsonl")) if segments.is_dir() else 0


def copy_is_exact(cli: Evlog, src: str, dst: str) -> None:
    """DST holds SRC's events, once each, in order, with the same ids, times and fields; offsets contiguous."""
    a = cli.records(d=src, timeout=RUN_TIMEOUT)
    b = cli.records(d=dst, timeout=RUN_TIMEOUT)
    check_log(b)
    want = [{k: v for k, v in r.items() if k != "offset"} for r in a]
    got = [{k: v for k, v in r.items() if k != "offset"} for r in b]
    if got != want:
        first = next((i for i, (x, y) in enumerate(zip(want, got, strict=False)) if x != y), min(len(a), len(b)))
        pytest.fail(f"the destination differs: {len(b)} events for {len(a)}; first difference at position "
                    f"{first}: {want[first] if first < len(a) else None} vs {got[first] if first < len(b) else None}")


def kill_mirror(spawn: Spawner, args: list[str], dst: str, server: NatsServer, beyond: int) -> None:
    """Start `evlog mirror ...` and SIGKILL it once more than `beyond` events are written into DST."""
    bg = spawn(*args)
    wait_until(lambda: written(dst, server) > beyond or bg.poll() is not None, 60, interval=0.005,
               message=lambda: f"the mirror copies nothing: {bg.stderr()!r}")
    bg.kill_group()
    bg.wait(30)
    assert TRACEBACK not in bg.stderr()


def mirror_run(cli: Evlog, spawn: Spawner, tmp_path: Path, server: NatsServer, *, direction: str,
               group: str | None, n: int, kills: int) -> None:
    """Mirror `n` events, SIGKILL the mirror `kills` times as it copies, run it again: an exact copy, and a
    further run adds nothing."""
    src_kind, dst_kind = direction.split("-to-")
    src = f"{server.url}/SRC" if src_kind == "nats" else str(tmp_path / "src")
    if src_kind == "nats":
        cli.ok("-d", src, "init")
    cli.batch(mirror_source(n), d=src)
    opts = ["--group", group] if group else []

    for attempt in range(3):  # a mirror that finished before it was killed proves nothing: a fresh destination
        dst = f"{server.url}/DST{attempt}" if dst_kind == "nats" else str(tmp_path / f"dst{attempt}")
        held = first_cut = 0
        for _ in range(kills):
            # once past one chunk (1,000) more than DST held, at least one more chunk is committed
            kill_mirror(spawn, ["mirror", *opts, src, dst], dst, server, beyond=held + 1000)
            held = events_in(cli, dst)
            first_cut = first_cut or held
            if held >= n:
                break
        if 0 < first_cut < n:
            break
    else:
        pytest.fail(f"the mirror always finished before it could be killed ({n} events)")

    r = run(cli, ["mirror", *opts, "--json", src, dst])
    assert r.rc == 0 and TRACEBACK not in r.err, r.err
    summary = json.loads(r.out)
    assert summary["position"] == n
    assert summary["events"] == n - held, f"the rerun copied {summary['events']} events; {n - held} were missing"
    copy_is_exact(cli, src, dst)
    again = json.loads(cli.ok("mirror", *opts, "--json", src, dst))
    assert again["events"] == 0, f"a further run added {again['events']} events"
    if group:
        rows = json.loads(cli.ok("-d", src, "groups", "list", "--json"))
        assert [(g["name"], g["position"]) for g in rows] == [(group, n)]


MIRRORS = [pytest.param(d, g, id=f"{d}{'-group' if g else ''}")
           for d in ("local-to-nats", "nats-to-local") for g in (None, "edge")]


@pytest.mark.parametrize(("direction", "group"), [MIRRORS[0], MIRRORS[3]])
def test_a_mirror_killed_midway_and_run_again_makes_an_exact_copy(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_server: NatsServer, direction: str,
        group: str | None) -> None:
    """`evlog mirror [--group NAME] SRC DST` SIGKILLed after copying part of 4,000 events, then run again: DST is
    an exact copy of SRC (ids, order, fields, times), without duplicates, and a further run adds nothing."""
    mirror_run(cli, spawn, tmp_path, nats_server, direction=direction, group=group, n=4_000, kills=1)


@pytest.mark.slow
@pytest.mark.parametrize(("direction", "group"), MIRRORS)
def test_a_mirror_killed_several_times_and_run_again_makes_an_exact_copy(
        cli: Evlog, spawn: Spawner, tmp_path: Path, nats_server: NatsServer, direction: str,
        group: str | None) -> None:
    """20,000 events, each way, with and without --group: the mirror SIGKILLed three times as it copies, then run
    to the end: an exact copy."""
    mirror_run(cli, spawn, tmp_path, nats_server, direction=direction, group=group, n=20_000, kills=3)
