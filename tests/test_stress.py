"""Everything at once against one log (SPEC 7): appenders of every kind (some killed or interrupted
mid-write), followers, a replay that follows with a group, key compaction and retention, and verify.

At the end every follower printed each record of the final log exactly once, in order, with the
offset and id the log has (and nothing the log never committed); the replay got every record at
least once; every acknowledged event is in the log unless compaction was entitled to remove it;
a batch is all or nothing and a stream a prefix; and verify never found a healthy log corrupt.

The scenario is seeded and bounded. The default run is short; `--run-slow` adds a longer one.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Evlog, Spawner, parse_records, wait_until
from handler_helpers import Recorder, kill_pids

KEYS = [f"k{i}" for i in range(6)]


@dataclass
class Ledger:
    """What the appenders did: acknowledged events, batches and streams, and who was stopped."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)      # id -> event
    batches: list[list[dict[str, Any]]] = field(default_factory=list)    # every batch tried
    streams: list[list[dict[str, Any]]] = field(default_factory=list)    # every stream tried, in order
    failures: list[str] = field(default_factory=list)                    # unexpected outcomes

    def ack(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            for e in events:
                self.acked[e["id"]] = e


class Scenario:
    def __init__(self, cli: Evlog, spawn: Spawner, tmp_path: Path, seed: int, seconds: float) -> None:
        self.cli, self.spawn, self.tmp = cli, spawn, tmp_path
        self.seed, self.seconds = seed, seconds
        self.last_error = ""  # stderr of the last evlog that failed, for the failure messages
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.counter = 0
        self.counter_lock = threading.Lock()
        self.verify_runs = 0
        self.compactions = 0
        self.reads: list[tuple[int, list[dict[str, Any]]]] = []

    def event(self, rng: random.Random, who: str) -> dict[str, Any]:
        with self.counter_lock:
            self.counter += 1
            n = self.counter
        key = rng.choice(KEYS) if rng.random() < 0.5 else None
        return {"type": f"stress.{who}", "id": f"{who}-{self.seed}-{n}", "key": key,
                "data": {"n": n, "pad": "p" * rng.randrange(0, 300)}}

    def run_process(self, argv: list[str], rng: random.Random, input_text: str | None,
                    kill_chance: float) -> int | None:
        """Run evlog; with `kill_chance`, SIGKILL or SIGINT it at a random moment (returns None then)."""
        p = subprocess.Popen(self.cli.argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.cli.env, cwd=self.cli.tmp, start_new_session=True)
        killer = None
        if rng.random() < kill_chance:
            sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
            killer = threading.Timer(rng.uniform(0.05, 0.6), lambda: _signal(p, sig))
            killer.start()
        _, err = p.communicate(input_text.encode() if input_text is not None else None, timeout=60)
        if killer is not None:
            killer.cancel()
        if b"Traceback" in err:
            if killer is not None and _during_interpreter_start(err):
                return None  # interrupted while Python itself was starting (exit 1): as if killed
            self.ledger.failures.append(f"traceback from {argv[:2]}: {err.decode()[-500:]}")
        if p.returncode in (-signal.SIGKILL, 130, 143, -signal.SIGINT, -signal.SIGTERM):
            return None
        if p.returncode:
            self.last_error = err.decode(errors="replace")[-500:]
        return p.returncode

    # -- the actors ---------------------------------------------------------------------------

    def appender(self, k: int) -> None:
        rng = random.Random(self.seed * 100 + k)
        while not self.stop.is_set():
            kind = rng.choice(["single", "single", "batch", "stream"])
            if kind == "single":
                e = self.event(rng, f"a{k}")
                argv = ["append", e["type"], "--id", e["id"], "--data", json.dumps(e["data"])]
                if e["key"]:
                    argv += ["--key", e["key"]]
                rc = self.run_process(argv, rng, None, 0.1)
                if rc == 0:
                    self.ledger.ack([e])
                elif rc is not None:
                    self.ledger.failures.append(f"append exited {rc}: {self.last_error}")
            else:
                n = rng.randrange(2, 120) if rng.random() < 0.8 else rng.randrange(2000, 8000)
                events = [self.event(rng, f"{kind[0]}{k}") for _ in range(n)]
                text = "".join(json.dumps(e) + "\n" for e in events)
                with self.ledger.lock:
                    (self.ledger.batches if kind == "batch" else self.ledger.streams).append(events)
                rc = self.run_process(["append", f"--{kind}"], rng, text, 0.3)
                if rc == 0:
                    self.ledger.ack(events)
                elif rc is not None:
                    self.ledger.failures.append(f"append --{kind} exited {rc}: {self.last_error}")

    def compactor(self) -> None:
        rng = random.Random(self.seed)
        while not self.stop.wait(rng.uniform(0.2, 0.6)):
            args = ["compact", "--keys", "--wait"]
            if rng.random() < 0.3:
                args += ["--max-events", str(rng.randrange(1500, 4000))]
            rc = self.run_process(args, rng, None, 0.15)
            if rc not in (0, None):
                self.ledger.failures.append(f"compact exited {rc}")
            self.compactions += 1

    def reader(self) -> None:
        """Reads from random offsets while compaction runs; every read is kept for the final check."""
        rng = random.Random(self.seed + 1)
        while not self.stop.wait(0.05):
            start = rng.randrange(0, max(1, self.counter))
            r = self.cli("read", "--from", start, "--format", "json")
            if r.rc != 0:
                self.ledger.failures.append(f"read --from {start} failed on a healthy log: {r.err}")
                continue
            self.reads.append((start, parse_records(r.out)))

    def verifier(self) -> None:
        while not self.stop.wait(0.3):
            r = self.cli("verify", "--json")
            self.verify_runs += 1
            if r.rc != 0:
                self.ledger.failures.append(f"verify said a healthy log is corrupt: {r.out} {r.err}")

    # -- the run --------------------------------------------------------------------------------

    def run(self, appenders: int) -> None:
        cli = self.cli
        cli.ok("init", "--segment-bytes", "8KiB")
        cli.ok("append", "first", "--id", "first")
        follower = self.spawn("read", "-f", "--format", "json")
        tail = self.spawn("tail", "-n", "0", "-f", "--format", "json")
        recorder = Recorder(self.tmp / "handler")
        replay = self.spawn("replay", "--follow", "--group", "g", "--retries", "0", "--batch", "1000", "--",
                            *recorder.argv)
        wait_until(lambda: follower.lines(), message="the follower printed the first event")
        threads = [threading.Thread(target=self.appender, args=(k,)) for k in range(appenders)]
        threads += [threading.Thread(target=self.compactor), threading.Thread(target=self.verifier),
                    threading.Thread(target=self.reader)]
        for t in threads:
            t.start()
        time.sleep(self.seconds)  # the scenario's length, not a synchronisation
        self.stop.set()
        for t in threads:
            t.join(120)
        cli.ok("append", "last", "--id", "last")  # also cuts a torn tail a killed writer left
        final = cli.records()
        end = final[-1]["offset"]
        for proc in (follower, tail):
            wait_until(lambda proc=proc: proc.records() and proc.records()[-1]["offset"] >= end, 30,
                       message=lambda proc=proc: f"a follower stopped short: {proc.stderr()}")
        wait_until(lambda: end in {r["offset"] for r in recorder.records()}, 60,
                   message=lambda: f"the replay did not reach {end}: {replay.stderr()}")
        for proc in (follower, tail, replay):
            proc.signal(signal.SIGINT)
            assert proc.wait(30) in (0, 130), proc.stderr()
            assert "Traceback" not in proc.stderr()
        kill_pids(c["pid"] for c in recorder.calls())
        assert cli("verify").rc == 0
        self.check(final, follower.records(), tail.records(), recorder.records())

    def check(self, final: list[dict[str, Any]], followed: list[dict[str, Any]], tailed: list[dict[str, Any]],
              replayed: list[dict[str, Any]]) -> None:
        ledger = self.ledger
        assert ledger.failures == []
        by_offset = {r["offset"]: r for r in final}
        by_id = {r["id"]: r for r in final}
        assert len(by_id) == len(final), "an id appears twice"
        later_keys = _later_keys(final)
        first_offset = final[0]["offset"]

        def entitled_to_go(r: dict[str, Any]) -> bool:
            """Compaction may remove a record: a later record of its key exists, or retention took it."""
            return r["offset"] < first_offset or (r["key"] is not None and later_keys.get(r["key"], -1) > r["offset"])

        for start, seen in self.reads:
            offs = [r["offset"] for r in seen]
            assert offs == sorted(set(offs)), f"read --from {start}: a record twice or out of order"
            if offs:
                skipped = [o for o in by_offset if start <= o <= offs[-1] and o not in set(offs)]
                assert skipped == [], f"read --from {start} skipped surviving records {skipped[:10]}"
            for r in seen:
                kept = by_offset.get(r["offset"])
                assert (kept == r) if kept is not None else entitled_to_go(r), f"read --from {start}: {r}"
        for name, seen in (("read -f", followed), ("tail -f", tailed)):
            offs = [r["offset"] for r in seen]
            assert offs == sorted(set(offs)), f"{name}: a record twice or out of order"
            start = offs[0]
            missing = [o for o in by_offset if o >= start and o not in set(offs)]
            assert missing == [], f"{name} skipped surviving records {missing[:10]}"
            for r in seen:
                kept = by_offset.get(r["offset"])
                if kept is not None:
                    assert kept == r, f"{name} printed {r} where the log holds {kept}"
                else:
                    assert entitled_to_go(r), f"{name} printed {r}, which the log never kept"
        delivered = {(r["offset"], r["id"]) for r in replayed}
        for r in final:
            assert (r["offset"], r["id"]) in delivered, f"the replay never got {r['offset']}"
        for off, id_ in delivered:
            kept = by_offset.get(off)
            assert (kept is None and id_ not in by_id) or (kept is not None and kept["id"] == id_), \
                f"the replay got {off} {id_}, which the log does not hold there"
        def gone(e: dict[str, Any]) -> bool:
            """Absent, though it may have been committed: compaction or retention could take it."""
            return e["id"] not in by_id and not (
                (e["key"] is not None and e["key"] in later_keys) or first_offset > 0)

        for e in ledger.acked.values():
            assert not gone(e), f"acknowledged event {e['id']} is lost"
        for events in ledger.batches:
            present = [e["id"] in by_id for e in events]
            if any(present):
                assert not any(gone(e) for e in events[present.index(True):]), \
                    f"a batch is partly there: {[e['id'] for e in events][:3]}..."
        for events in ledger.streams:
            seen_gap = False
            for e in events:
                if e["id"] in by_id:
                    assert not seen_gap, f"a stream left more than a prefix: {e['id']}"
                elif gone(e):
                    seen_gap = True
        assert self.verify_runs > 0 and self.compactions > 0 and self.reads


def _later_keys(final: list[dict[str, Any]]) -> dict[str, int]:
    """The newest offset of each key in the final log."""
    out: dict[str, int] = {}
    for r in final:
        if r["key"] is not None:
            out[r["key"]] = r["offset"]
    return out


def _during_interpreter_start(err: bytes) -> bool:
    """A KeyboardInterrupt raised before any of evlog's code ran (Python itself was still starting: no
    program can handle a signal then); anything else is a traceback evlog should not print."""
    text = err.decode("utf-8", "replace")
    return text.rstrip().endswith("KeyboardInterrupt") and "/evlog/" not in text


def _signal(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        p.send_signal(sig)
    except ProcessLookupError:
        pass


def test_everything_at_once_short(cli: Evlog, spawn: Spawner, tmp_path: Path) -> None:
    """A short run of every writer, reader, compaction and verify at once keeps every guarantee."""
    Scenario(cli, spawn, tmp_path, seed=7, seconds=6).run(appenders=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_everything_at_once_long(cli: Evlog, spawn: Spawner, tmp_path: Path, seed: int) -> None:
    """A longer run, with more appenders, keeps every guarantee."""
    Scenario(cli, spawn, tmp_path, seed=seed, seconds=40).run(appenders=4)


def test_parse_records_is_strict() -> None:
    """(sanity) records are checked field by field."""
    assert parse_records(json.dumps({"offset": 0, "id": "a", "time": "t", "type": "x", "source": "s",
                                     "subject": None, "key": None, "data": None})) != []
