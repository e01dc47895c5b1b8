#!/usr/bin/env python3
"""evlog's performance benchmark (SPEC 8), run by hand, never by the test suite.

Every figure is printed beside an anchor measured in the same run on the same
data (jq, grep, cat, bare Python start-up), so the numbers mean something on
any machine. Only the standard library is used; every subprocess runs under a
timeout and the work directory is removed at the end (unless --keep).

    python bench/bench.py                 # everything, at the sizes SPEC 8 names
    python bench/bench.py --quick         # smaller sizes, fewer runs (a minute or two)
    python bench/bench.py --only append-one seek

Steps: append-batch, append-one, seek, read-type, follow-latency.
See bench/README.md for what each step measures and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

STEPS = ("append-batch", "append-one", "seek", "read-type", "follow-latency")
SEED = 20261127
BATCH_CHUNK = 1_000_000  # the big seek log is built by `append --batch` in chunks of this many events

# Per-subprocess deadlines (seconds). Generous: they exist so that nothing hangs, not to judge speed.
T_SHORT = 60  # one start-up-dominated command (append, read --limit 1, tail, python -c)
T_LONG = 1800  # one pass over a million-event file or log (evlog, jq, grep, cat)


class BenchError(Exception):
    """A step could not be measured (a command failed, timed out, or printed the wrong thing)."""


# --------------------------------------------------------------------------- helpers


def log(msg: str = "") -> None:
    print(msg, flush=True)


def fmt_rate(events_per_s: float) -> str:
    return f"{events_per_s:,.0f} ev/s"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def child_env() -> dict[str, str]:
    """The caller's environment without EVLOG_* variables: every command names its log with -d."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EVLOG_")}


def describe(cmd: list[str]) -> str:
    return shlex.join(cmd)


def run(
    cmd: list[str],
    *,
    timeout: float,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    ok_codes: tuple[int, ...] = (0,),
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run cmd to completion and return (wall seconds, result); stdout goes where asked, stderr is kept."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:.0f} s: {describe(cmd)}") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok_codes:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"exit {proc.returncode}: {describe(cmd)}: {' | '.join(err)}")
    return elapsed, proc


def run_file(cmd: list[str], infile: Path | None, *, timeout: float, outfile: Path | None = None) -> float:
    """Run cmd with stdin from infile (or nothing) and stdout to outfile (or /dev/null); return wall seconds."""
    with open(infile if infile else os.devnull, "rb") as fin, open(outfile if outfile else os.devnull, "wb") as fout:
        elapsed, _ = run(cmd, timeout=timeout, stdin=fin, stdout=fout)
    return elapsed


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


@dataclass
class Row:
    name: str
    evlog: str
    anchor: str
    ratio: str
    goal: str
    met: str  # "yes", "no", "-" (report only) or "ERROR"


@dataclass
class Bench:
    args: argparse.Namespace
    evlog: list[str]
    python: str
    work: Path
    jq: str | None
    grep: str | None
    cat: str | None
    rows: list[Row] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    events_file: Path | None = None
    events_count: int = 0
    million_log: Path | None = None  # the log append-batch left behind, reused by read-type
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ----------------------------------------------------------------------- shared

    def ev(self, logdir: Path, *args: str) -> list[str]:
        return [*self.evlog, "-d", str(logdir), *args]

    def events(self) -> Path:
        if self.events_file is None:
            self.events_file = self.work / "events.jsonl"
            self.events_count = self.args.events
            start = time.perf_counter()
            nbytes = generate_events(self.events_file, self.events_count, SEED)
            log(
                f"generated {self.events_count:,} events ({nbytes / self.events_count:.0f} bytes/event on average, "
                f"{nbytes / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s: {self.events_file}"
            )
        return self.events_file

    def head_file(self, n: int) -> Path:
        """A file holding the first n generated events (n <= the generated count)."""
        src = self.events()
        if n >= self.events_count:
            return src
        dst = self.work / f"events-head-{n}.jsonl"
        if not dst.exists():
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                for _, line in zip(range(n), fin, strict=False):
                    fout.write(line)
        return dst

    def batch_append(self, logdir: Path, infile: Path, expect: int) -> float:
        """`evlog append --batch --json < infile`; checks the count it reports; returns wall seconds."""
        with open(infile, "rb") as fin:
            elapsed, proc = run(
                self.ev(logdir, "append", "--batch", "--json"), timeout=T_LONG, stdin=fin, stdout=subprocess.PIPE
            )
        try:
            count = json.loads(proc.stdout)["count"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"append --batch printed {proc.stdout[:200]!r}, not a JSON summary") from exc
        if count != expect:
            raise BenchError(f"append --batch reported {count} events, expected {expect}")
        return elapsed

    def build_log(self, name: str, total: int) -> Path:
        """A fresh log of `total` events, appended by `append --batch` in chunks of at most 1,000,000
        events taken from the generated file (repeated as often as needed)."""
        logdir = self.work / name
        if logdir.exists():
            shutil.rmtree(logdir)
        self.events()
        chunk = min(BATCH_CHUNK, self.events_count)
        done = 0
        start = time.perf_counter()
        while done < total:
            n = min(chunk, total - done)
            self.batch_append(logdir, self.head_file(n), n)
            done += n
            if total > chunk:
                rate = done / (time.perf_counter() - start)
                log(f"  {name}: {done:,}/{total:,} events ({fmt_rate(rate)})")
        elapsed = time.perf_counter() - start
        log(f"built {name}: {total:,} events in {elapsed:.1f} s ({fmt_rate(total / elapsed)})")
        return logdir

    def add(self, *row: str) -> None:
        self.rows.append(Row(*row))

    def error(self, step: str, exc: BaseException) -> None:
        log(f"!! {step}: {exc}")
        self.failed.append(step)
        self.add(step, "ERROR", "", "", "", "ERROR")

    def cleanup(self) -> None:
        for proc in self.live:
            stop_process(proc)
        self.live.clear()

    # ----------------------------------------------------------------------- steps

    def step_append_batch(self) -> None:
        """append --batch of N events into a fresh log, beside jq -c . and cat over the same input."""
        src = self.events()
        n = self.events_count
        runs = self.args.batch_runs
        log(
            f"\n== append-batch: `evlog append --batch` of {n:,} events into a fresh log (fsync default), "
            f"median of {runs} run(s)"
        )
        # Warm the page cache for the input so the first timed command is not penalised.
        run_file([self.cat or "cat"], src, timeout=T_LONG)
        ev_times, jq_times, cat_times = [], [], []
        for i in range(runs):
            logdir = self.work / f"batch-{i}"
            ev_times.append(self.batch_append(logdir, src, n))
            if i < runs - 1:
                shutil.rmtree(logdir)
            else:
                self.million_log = logdir
            if self.jq:
                jq_times.append(run_file([self.jq, "-c", "."], src, timeout=T_LONG))
            if self.cat:
                cat_times.append(run_file([self.cat], src, timeout=T_LONG))
            log(
                f"  run {i + 1}: evlog {fmt_s(ev_times[-1])}"
                + (f", jq {fmt_s(jq_times[-1])}" if jq_times else "")
                + (f", cat {fmt_s(cat_times[-1])}" if cat_times else "")
            )
        ev_rate = n / statistics.median(ev_times)
        line = f"  evlog append --batch: {fmt_rate(ev_rate)}"
        goal = "≥ 700,000 ev/s and ≥ 4x jq"
        if jq_times:
            jq_rate = n / statistics.median(jq_times)
            ratio = ev_rate / jq_rate
            line += f"; jq -c .: {fmt_rate(jq_rate)}; evlog/jq speed = {ratio:.2f}x"
            met = "yes" if ev_rate >= 700_000 and ratio >= 4 else "no"
            self.add(
                "append-batch", fmt_rate(ev_rate), f"jq -c . {fmt_rate(jq_rate)}", f"speed {ratio:.2f}x", goal, met
            )
        else:
            self.add("append-batch", fmt_rate(ev_rate), "jq not found", "", goal, "yes" if ev_rate >= 700_000 else "no")
        if cat_times:
            cat_rate = n / statistics.median(cat_times)
            line += f"; cat: {fmt_rate(cat_rate)}"
            self.add(
                "append-batch vs cat",
                fmt_rate(ev_rate),
                f"cat {fmt_rate(cat_rate)}",
                f"speed {ev_rate / cat_rate:.3f}x",
                "report only",
                "-",
            )
        log(line)

    def step_append_one(self) -> None:
        """One `evlog append t k=v` into an existing log, beside `python -c "import typer, msgspec"`."""
        runs, warm = self.args.one_runs, 3
        log(
            f"\n== append-one: one `evlog append t k=v` into an existing log, median of {runs} runs after "
            f"{warm} warm-ups"
        )
        pkg = subprocess.run(
            [self.python, "-c", "import evlog, os; print(os.path.dirname(evlog.__file__))"],
            capture_output=True,
            text=True,
            timeout=T_SHORT,
            env=child_env(),
        )
        if pkg.returncode != 0 or not pkg.stdout.strip():
            raise BenchError(f"cannot import evlog with {self.python}: {pkg.stderr.strip()}")
        pkgdir = pkg.stdout.strip()
        # PYTHONDONTWRITEBYTECODE may be set and the package installed editable: without this, every
        # start-up would recompile evlog from source and the figure would measure the compiler.
        run([self.python, "-m", "compileall", "-q", pkgdir], timeout=T_LONG)
        log(
            f"  compiled bytecode first: {self.python} -m compileall -q {pkgdir}"
            f" (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"
        )
        logdir = self.work / "one"
        if logdir.exists():
            shutil.rmtree(logdir)
        run(self.ev(logdir, "init"), timeout=T_SHORT)

        def is_offset(out: bytes) -> None:
            if not out.strip().isdigit():
                raise BenchError(f"append printed {out[:100]!r}, not an offset")

        cmd = self.ev(logdir, "append", "t", "k=v")
        anchor = [self.python, "-c", "import typer, msgspec"]
        # Interleave the two commands so that a drift in machine load hits both alike.
        for _ in range(warm):
            _, proc = run(cmd, timeout=T_SHORT, stdout=subprocess.PIPE)
            is_offset(proc.stdout)
            run(anchor, timeout=T_SHORT)
        ev_times, py_times = [], []
        for _ in range(runs):
            ev_times.append(run(cmd, timeout=T_SHORT, stdout=subprocess.PIPE)[0])
            py_times.append(run(anchor, timeout=T_SHORT)[0])
        ev, py = statistics.median(ev_times), statistics.median(py_times)
        ratio = ev / py
        log(
            f"  evlog append: {fmt_ms(ev)} (min {fmt_ms(min(ev_times))}); "
            f"{describe(anchor)}: {fmt_ms(py)} (min {fmt_ms(min(py_times))}); ratio {ratio:.2f}x"
        )
        self.add(
            "append-one",
            fmt_ms(ev),
            f"import typer,msgspec {fmt_ms(py)}",
            f"time {ratio:.2f}x",
            "≤ 1.3x",
            "yes" if ratio <= 1.3 else "no",
        )

    def step_seek(self) -> None:
        """read --from K / --since T --limit 1 and tail -n 10 on a big log versus a 10,000-event log."""
        small_n, big_n, runs = self.args.small_events, self.args.big_events, self.args.seek_runs
        log(f"\n== seek: {small_n:,}-event log vs {big_n:,}-event log, median of {runs} runs after 2 warm-ups")
        small = self.build_log("seek-small", small_n)
        big = self.build_log("seek-big", big_n)

        def last_time(logdir: Path) -> str:
            _, proc = run(
                self.ev(logdir, "read", "--last", "1", "--format", "json"), timeout=T_SHORT, stdout=subprocess.PIPE
            )
            return json.loads(proc.stdout.splitlines()[-1])["time"]

        def lines(expect: int, offset: int | None = None):  # noqa: ANN202
            def check(out: bytes) -> None:
                got = out.splitlines()
                if len(got) != expect:
                    raise BenchError(f"expected {expect} line(s), got {len(got)}: {out[:200]!r}")
                if offset is not None and json.loads(got[0])["offset"] != offset:
                    raise BenchError(f"expected offset {offset}, got {got[0][:200]!r}")

            return check

        def commands(logdir: Path, n: int) -> tuple[int, str, dict[str, tuple[list[str], Any]]]:
            k = n - n // 20  # in the last tenth
            t = last_time(logdir)
            return (
                k,
                t,
                {
                    "read --from K --limit 1": (
                        self.ev(logdir, "read", "--from", str(k), "--limit", "1", "--format", "json"),
                        lines(1, k),
                    ),
                    "read --since T --limit 1": (
                        self.ev(logdir, "read", "--since", t, "--limit", "1", "--format", "json"),
                        lines(1),
                    ),
                    "tail -n 10": (self.ev(logdir, "tail", "-n", "10", "--format", "json"), lines(10)),
                },
            )

        s_k, s_t, s_cmds = commands(small, small_n)
        b_k, b_t, b_cmds = commands(big, big_n)
        log(f"  small: K={s_k:,} T={s_t}; big: K={b_k:,} T={b_t}")
        for name, (s_cmd, s_check) in s_cmds.items():
            b_cmd, b_check = b_cmds[name]
            # Warm-ups check the output; small and big runs are interleaved so load drift hits both alike.
            for _ in range(2):
                s_check(run(s_cmd, timeout=T_SHORT, stdout=subprocess.PIPE)[1].stdout)
                b_check(run(b_cmd, timeout=T_SHORT, stdout=subprocess.PIPE)[1].stdout)
            s_times, b_times = [], []
            for _ in range(runs):
                s_times.append(run(s_cmd, timeout=T_SHORT, stdout=subprocess.PIPE)[0])
                b_times.append(run(b_cmd, timeout=T_SHORT, stdout=subprocess.PIPE)[0])
            s, b = statistics.median(s_times), statistics.median(b_times)
            ratio = b / s
            log(f"  {name}: big {fmt_ms(b)}, small {fmt_ms(s)}, big/small {ratio:.2f}x")
            self.add(
                f"seek: {name}",
                f"{big_n:,} ev: {fmt_ms(b)}",
                f"{small_n:,} ev: {fmt_ms(s)}",
                f"time {ratio:.2f}x",
                "≤ 1.5x",
                "yes" if ratio <= 1.5 else "no",
            )
        if not self.args.keep:
            shutil.rmtree(big)

    def step_read_type(self) -> None:
        """read --type over the million-event log, beside jq and grep over the same records as JSON Lines."""
        n = self.args.events
        runs = self.args.read_runs
        log(f"\n== read-type: filters over a {n:,}-event log, median of {runs} run(s) after 1 warm-up")
        logdir = self.million_log
        if logdir is None:
            logdir = self.build_log("read-log", n)
            self.million_log = logdir
        jsonl = self.work / "records.jsonl"
        t = run_file(self.ev(logdir, "read", "--format", "json"), None, timeout=T_LONG, outfile=jsonl)
        total = count_lines(jsonl)
        if total != n:
            raise BenchError(f"read --format json printed {total} records, expected {n}")
        log(
            f"  made the JSON Lines input: evlog read --format json > {jsonl.name} "
            f"({jsonl.stat().st_size / 2**20:.1f} MiB, {fmt_s(t)}, {fmt_rate(n / t)})"
        )

        cases = [
            # name, evlog filter args, jq filter, grep pattern (or None), counts toward a goal
            (
                "read --type order.paid",
                ["--type", "order.paid"],
                'select(.type=="order.paid")',
                '"type":"order.paid"',
                True,
            ),
            # Token split, not test(): jq's regex engine is slow, and the anchor should be jq at its best.
            (
                "read --type 'order.*'",
                ["--type", "order.*"],
                'select((.type | split(".")) as $t | $t[0] == "order" and ($t | length) == 2)',
                None,
                False,
            ),
            ("read --where 'data.qty > 3'", ["--where", "data.qty > 3"], "select(.data.qty > 3)", None, False),
        ]
        for name, fargs, jq_filter, grep_pat, goal in cases:
            ev_cmd = self.ev(logdir, "read", *fargs, "--format", "json")
            jq_cmd = [self.jq, "-c", jq_filter] if self.jq else None
            # Warm-up doubles as a correctness check: evlog and jq must select the same number of records.
            out = self.work / "filtered.jsonl"
            run_file(ev_cmd, None, timeout=T_LONG, outfile=out)
            ev_count = count_lines(out)
            if jq_cmd:
                run_file(jq_cmd, jsonl, timeout=T_LONG, outfile=out)
                jq_count = count_lines(out)
                if jq_count != ev_count:
                    raise BenchError(f"{name}: evlog selected {ev_count} records, jq {jq_count}")
            out.unlink()
            ev_times, jq_times, grep_times = [], [], []
            grep_cmd = [self.grep, "-c", "-F", grep_pat] if (grep_pat and self.grep) else None
            for _ in range(runs):
                ev_times.append(run_file(ev_cmd, None, timeout=T_LONG))
                if jq_cmd:
                    jq_times.append(run_file(jq_cmd, jsonl, timeout=T_LONG))
                if grep_cmd:
                    with open(jsonl, "rb") as fin:
                        elapsed, proc = run(
                            grep_cmd, timeout=T_LONG, stdin=fin, stdout=subprocess.PIPE, ok_codes=(0, 1)
                        )
                    if int(proc.stdout) != ev_count:
                        raise BenchError(f"grep counted {int(proc.stdout)} lines, evlog printed {ev_count}")
                    grep_times.append(elapsed)
            ev = statistics.median(ev_times)
            line = f"  {name}: {ev_count:,} matches; evlog {fmt_s(ev)} ({fmt_rate(n / ev)})"
            if jq_times:
                jq = statistics.median(jq_times)
                ratio = jq / ev
                line += f"; jq {fmt_s(jq)} ({fmt_rate(n / jq)}); evlog/jq speed {ratio:.2f}x"
                self.add(
                    name,
                    fmt_s(ev),
                    f"jq {fmt_s(jq)}",
                    f"speed {ratio:.2f}x",
                    "≥ 5x jq" if goal else "report only",
                    ("yes" if ratio >= 5 else "no") if goal else "-",
                )
            else:
                self.add(name, fmt_s(ev), "jq not found", "", "≥ 5x jq" if goal else "report only", "-")
            if grep_times:
                g = statistics.median(grep_times)
                line += f"; grep -c -F {fmt_s(g)} ({fmt_rate(n / g)})"
                self.add(
                    f"{name} vs grep", fmt_s(ev), f"grep -cF {fmt_s(g)}", f"speed {g / ev:.2f}x", "report only", "-"
                )
            log(line)

    def step_follow_latency(self) -> None:
        """Append-to-print latency of `read -f` while `append --stream` commits events one at a time."""
        count, gap = self.args.follow_events, 0.020
        log(
            f"\n== follow-latency: {count} events through `append --stream`, one every {gap * 1000:.0f} ms, "
            f"printed by `read -f --format json`"
        )
        logdir = self.work / "follow"
        if logdir.exists():
            shutil.rmtree(logdir)
        run(self.ev(logdir, "init"), timeout=T_SHORT)

        received: dict[int, tuple[float, float, float]] = {}  # seq -> (sent, record time, received)
        warm_seen = threading.Event()
        lock = threading.Lock()
        reader_errors: list[str] = []

        reader = start(self.ev(logdir, "read", "-f", "--format", "json"), stdout=subprocess.PIPE)
        self.live.append(reader)
        assert reader.stdout is not None
        reader_out = reader.stdout

        def read_loop() -> None:
            try:
                for raw in iter(reader_out.readline, b""):
                    now = time.time()
                    try:
                        rec = json.loads(raw)
                        data = rec.get("data") or {}
                        if rec.get("type") == "bench.warmup":
                            warm_seen.set()
                            continue
                        rec_time = datetime.fromisoformat(rec["time"]).timestamp()
                        with lock:
                            received[int(data["seq"])] = (float(data["sent"]), rec_time, now)
                    except (ValueError, KeyError, TypeError) as exc:
                        reader_errors.append(f"{exc}: {raw[:120]!r}")
            except (OSError, ValueError):
                pass

        thread = threading.Thread(target=read_loop, name="follow-reader", daemon=True)
        thread.start()
        writer = start(self.ev(logdir, "append", "--stream"), stdin=subprocess.PIPE)
        self.live.append(writer)
        assert writer.stdin is not None
        try:
            # Wait until the follower is demonstrably watching: warm-up events until one comes through.
            deadline = time.monotonic() + 30
            while not warm_seen.is_set():
                if time.monotonic() > deadline:
                    raise BenchError("read -f printed none of the warm-up events within 30 s")
                if reader.poll() is not None or writer.poll() is not None:
                    raise BenchError("read -f or append --stream exited early")
                writer.stdin.write(b'{"type":"bench.warmup"}\n')
                writer.stdin.flush()
                warm_seen.wait(0.2)
            time.sleep(0.2)  # let the tail of warm-ups drain
            next_send = time.perf_counter()
            for seq in range(count):
                next_send += gap
                line = json.dumps({"type": "bench.latency", "data": {"seq": seq, "sent": time.time()}})
                writer.stdin.write(line.encode() + b"\n")
                writer.stdin.flush()
                pause = next_send - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    if len(received) >= count:
                        break
                time.sleep(0.01)
            writer.stdin.close()
            try:
                code = writer.wait(timeout=T_SHORT)
            except subprocess.TimeoutExpired as exc:
                raise BenchError("append --stream did not exit after its stdin closed") from exc
            if code != 0:
                raise BenchError(f"append --stream exited {code}")
        finally:
            stop_process(writer)
            stop_process(reader)
            thread.join(timeout=5)
            self.live = [p for p in self.live if p not in (writer, reader)]
        if reader_errors:
            log(f"  unparsable follower lines: {reader_errors[:3]}")
        with lock:
            got = dict(received)
        if not got:
            raise BenchError("read -f printed none of the timed events")
        lat = [r - s for s, _, r in got.values()]
        lat_rec = [r - t for _, t, r in got.values()]
        missing = count - len(got)
        p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat)
        log(
            f"  received {len(got)}/{count}; from send: p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}, max {fmt_ms(mx)}; "
            f"from the record's own time: p50 {fmt_ms(percentile(lat_rec, 50))}, "
            f"p99 {fmt_ms(percentile(lat_rec, 99))}, max {fmt_ms(max(lat_rec))}"
        )
        met = "yes" if p99 < 0.050 and missing == 0 else "no"
        self.add(
            "follow-latency p99",
            fmt_ms(p99),
            f"p50 {fmt_ms(p50)} max {fmt_ms(mx)}",
            f"{len(got)}/{count} seen",
            "p99 < 50 ms",
            met,
        )


# --------------------------------------------------------------------------- processes


def start(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start a background command in its own process group (so it can be stopped with its children)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=child_env(), start_new_session=True, **kw)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- data


TYPES = [  # (type, weight)
    ("order.created", 30),
    ("order.paid", 25),
    ("order.shipped", 12),
    ("user.signup", 15),
    ("payment.failed", 10),
    ("order.created.v2", 8),  # not matched by `order.*`, matched by `order.>`
]
CARRIERS = ("dhl", "ups", "gls", "dpd")
METHODS = ("card", "sepa", "paypal")
PLANS = ("free", "team", "pro")
REASONS = ("card_declined", "insufficient_funds", "expired")


def generate_events(path: Path, n: int, seed: int) -> int:
    """Write n deterministic ~130-byte events as JSON Lines; return the byte count."""
    rng = random.Random(seed)
    names = [t for t, _ in TYPES]
    weights = [w for _, w in TYPES]
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    total = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        buf = []
        for i in range(n):
            etype = rng.choices(names, weights)[0]
            cust = f"cust-{rng.randrange(100_000):05d}"
            order = f"o-{rng.randrange(10_000_000):07d}"
            qty = rng.randint(1, 6)
            if etype.startswith("order.created"):
                data: dict[str, Any] = {
                    "order": order,
                    "qty": qty,
                    "total": round(rng.uniform(5, 500), 2),
                    "item": {"sku": f"SKU-{rng.randrange(10_000):04d}", "n": qty},
                }
            elif etype == "order.paid":
                data = {
                    "order": order,
                    "qty": qty,
                    "total": round(rng.uniform(5, 500), 2),
                    "method": rng.choice(METHODS),
                    "cur": "EUR",
                    "seq": i,
                }
            elif etype == "order.shipped":
                data = {
                    "order": order,
                    "qty": qty,
                    "carrier": rng.choice(CARRIERS),
                    "to": {"zip": f"{rng.randrange(100_000):05d}", "cc": "DE"},
                }
            elif etype == "user.signup":
                cust = f"user-{rng.randrange(1_000_000):06d}"
                data = {
                    "plan": rng.choice(PLANS),
                    "ref": {"src": "ads", "campaign": f"c{rng.randrange(100)}"},
                    "lang": "de",
                    "seq": i,
                }
            else:  # payment.failed
                data = {
                    "order": order,
                    "total": round(rng.uniform(5, 500), 2),
                    "cur": "EUR",
                    "reason": rng.choice(REASONS),
                    "retry": rng.randint(0, 3),
                }
            line = dumps({"type": etype, "key": cust, "data": data}) + "\n"
            total += len(line)
            buf.append(line)
            if len(buf) >= 10_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return total


# --------------------------------------------------------------------------- main


def find_evlog(explicit: str | None) -> Path:
    if explicit:
        p = Path(explicit)
        found = p if p.exists() else (Path(w) if (w := shutil.which(explicit)) else None)
        if found is None:
            sys.exit(f"bench: --evlog {explicit}: not found")
        return found.resolve()
    here = Path(__file__).resolve().parent.parent
    for cand in (here / ".venv" / "bin" / "evlog", Path(sys.executable).parent / "evlog"):
        if cand.exists():
            return cand
    w = shutil.which("evlog")
    if w is None:
        sys.exit("bench: no evlog command found; give --evlog PATH")
    return Path(w)


def interpreter_of(script: Path) -> str:
    """The Python that runs the evlog script, from its shebang (falling back to this interpreter)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        parts = shlex.split(first[2:])
        if parts and Path(parts[0]).name == "env":
            parts = [a for a in parts[1:] if not a.startswith("-")]
            if parts and (w := shutil.which(parts[0])):
                return w
        elif parts and "python" in Path(parts[0]).name:
            return parts[0]
    return sys.executable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="evlog performance benchmark (SPEC 8); figures beside anchors.")
    ap.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer runs (events 200,000, big log 1,000,000)"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=STEPS,
        metavar="NAME",
        help=f"run only these steps: {', '.join(STEPS)}",
    )
    ap.add_argument(
        "--events",
        metavar="N",
        type=int,
        help="events generated and appended by append-batch/read-type (default 1,000,000; --quick 200,000)",
    )
    ap.add_argument(
        "--big-events", metavar="N", type=int, help="events in the big seek log (default 10,000,000; --quick 1,000,000)"
    )
    ap.add_argument(
        "--small-events", metavar="N", type=int, default=10_000, help="events in the small seek log (10,000)"
    )
    ap.add_argument(
        "--evlog", metavar="PATH", help="the evlog command (default: the project's .venv/bin/evlog, else PATH)"
    )
    ap.add_argument(
        "--workdir", metavar="DIR", help="make the temporary work directory inside DIR (default: system temp)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (its path is printed)")
    a = ap.parse_args(argv)
    a.events = a.events or (200_000 if a.quick else 1_000_000)
    a.big_events = a.big_events or (1_000_000 if a.quick else 10_000_000)
    a.batch_runs = 1 if a.quick else 3
    a.one_runs = 15 if a.quick else 30
    a.seek_runs = 7 if a.quick else 15
    a.read_runs = 1 if a.quick else 3
    a.follow_events = 100 if a.quick else 300
    for name in ("events", "big_events", "small_events"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return a


def print_table(rows: list[Row]) -> None:
    head = Row("name", "evlog", "anchor", "ratio", "goal", "met")
    cols = list(head.__dataclass_fields__)
    widths = {c: max(len(getattr(r, c)) for r in [head, *rows]) for c in cols}

    def fmt(r: Row) -> str:
        return "  ".join(getattr(r, c).ljust(widths[c]) for c in cols).rstrip()

    log(fmt(head))
    log("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        log(fmt(r))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = [s for s in STEPS if not args.only or s in args.only]
    evlog_path = find_evlog(args.evlog)
    python = interpreter_of(evlog_path)
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="evlog-bench-", dir=base))
    bench = Bench(
        args=args,
        evlog=[str(evlog_path)],
        python=python,
        work=work,
        jq=shutil.which("jq"),
        grep=shutil.which("grep"),
        cat=shutil.which("cat"),
    )

    version = subprocess.run(
        [str(evlog_path), "--version"], capture_output=True, text=True, timeout=T_SHORT, env=child_env()
    ).stdout.strip()
    jq_version = (
        subprocess.run([bench.jq, "--version"], capture_output=True, text=True, timeout=T_SHORT).stdout.strip()
        if bench.jq
        else "not found"
    )
    log(f"evlog bench: {version} ({evlog_path}, python {python})")
    log(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"anchors: {jq_version}, "
        f"grep {bench.grep}, cat {bench.cat}"
    )
    log(
        f"mode: {'quick' if args.quick else 'full'}; steps: {', '.join(steps)}; events {args.events:,}; "
        f"big log {args.big_events:,}; work dir {work}"
    )

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: stop our children, remove the work dir

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    interrupted = False
    try:
        for step in steps:
            try:
                getattr(bench, "step_" + step.replace("-", "_"))()
            except BenchError as exc:
                bench.error(step, exc)
            finally:
                bench.cleanup()
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted")
    finally:
        bench.cleanup()
        if args.keep:
            log(f"kept the work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    log(
        f"\nresults ({'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s; "
        f"events {args.events:,}, big seek log {args.big_events:,} events):\n"
    )
    print_table(bench.rows)
    log(
        "\nratio: 'speed' = evlog's events/s over the anchor's (higher is better); 'time' = evlog's wall time over "
        "the anchor's (lower is better)."
    )
    if interrupted:
        return 130
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
