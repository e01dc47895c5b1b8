#!/usr/bin/env python3
"""evlog's performance benchmark (SPEC 8), run by hand, never by the test suite.

Every figure is printed beside an anchor measured in the same run on the same
data (jq, grep, cat, bare Python start-up), so the numbers mean something on
any machine. Only the standard library is used; every subprocess runs under a
timeout and the work directory is removed at the end (unless --keep).

    python bench/bench.py                 # everything, at the sizes SPEC 8 names
    python bench/bench.py --quick         # smaller sizes, fewer runs (a few minutes)
    python bench/bench.py --only append-one seek

Steps: append-batch, append-one, seek, read-type, follow-latency, replay, compact-memory, batch-memory, serve.
The serve step's WebSocket clients run in helper processes under evlog's own interpreter (they need the
`websockets` package that evlog is installed with); bench.py itself still needs only the standard library.
See bench/README.md for what each step measures and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

STEPS = (
    "append-batch",
    "append-one",
    "seek",
    "read-type",
    "follow-latency",
    "replay",
    "compact-memory",
    "batch-memory",
    "serve",
)
SEED = 20261127
BATCH_CHUNK = 1_000_000  # the big seek log is built by `append --batch` in chunks of this many events

# Per-subprocess deadlines (seconds). Generous: they exist so that nothing hangs, not to judge speed.
T_SHORT = 60  # one start-up-dominated command (append, read --limit 1, tail, python -c)
T_LONG = 1800  # one pass over a million-event file or log (evlog, jq, grep, cat)

# `compact-memory` runs each measured command as the only child of a fresh wrapper process, so that
# RUSAGE_CHILDREN's ru_maxrss (KiB on Linux) is the peak RSS of that one command and nothing else.
MAXRSS_WRAPPER = """\
import json, os, resource, subprocess, sys, time
stdin = open(os.environ["BENCH_STDIN"], "rb") if os.environ.get("BENCH_STDIN") else subprocess.DEVNULL
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "maxrss_kib": ru.ru_maxrss, "wall": wall,
                  "stdout": p.stdout.decode(errors="replace")[-20000:],
                  "stderr": p.stderr.decode(errors="replace")[-2000:]}))
"""

# `serve` runs its WebSocket clients in helper processes under evlog's own interpreter, which has the
# `websockets` package evlog needs (bench.py itself may run under a Python without it). The helper talks
# JSON lines on stdout and reads one command line on stdin:
#   -> {"ready": n, ...}   all clients have connected (or failed)
#   -> {"warm": true}      every connected client has received a bench.warmup event (so it is live)
#   <- "expect N"          N timed events were appended; wait until every client has them (or DRAIN s)
#   -> {"result": ...}     per-client counts, a latency histogram, the stalled client's fate
SERVE_CLIENT = r'''
import asyncio, base64, json, os, socket, sys, time, urllib.parse

from websockets.asyncio.client import connect

URL, TOKEN, N, STALL, DRAIN = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5])
BUCKET = 1e-4          # latency histogram: 0.1 ms buckets ...
NBUCKETS = 600_000     # ... up to 60 s; the last bucket collects everything slower
hist = [0] * (NBUCKETS + 1)
lat_max = [0.0]
per_second = {}  # int(time.time()) -> timed events received by all clients in that second


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Stats:
    def __init__(self):
        self.connected = False
        self.error = None
        self.done = False  # the connection ended
        self.count = 0     # timed (bench.serve) events received
        self.warm = False
        self.last_offset = None
        self.gaps = 0
        self.dups = 0
        self.first_recv = None
        self.last_recv = None
        self.close_code = None
        self.close_reason = None


async def client(st, url):
    try:
        async with connect(url, additional_headers={"Authorization": "Bearer " + TOKEN}, compression=None,
                           open_timeout=30, close_timeout=2, max_size=None) as ws:
            st.connected = True
            try:
                async for msg in ws:
                    now = time.time()
                    if msg.startswith('{"offset":'):
                        off = int(msg[10:msg.index(",", 10)])
                    else:
                        off = json.loads(msg)["offset"]
                    last = st.last_offset
                    if last is not None:
                        if off <= last:
                            st.dups += 1
                            continue
                        if off != last + 1:
                            st.gaps += off - last - 1
                    st.last_offset = off
                    i = msg.rfind('"sent":')
                    if i < 0:
                        st.warm = True
                        continue
                    lat = now - float(msg[i + 7:msg.index("}", i)])
                    if lat > lat_max[0]:
                        lat_max[0] = lat
                    hist[min(NBUCKETS, max(0, int(lat / BUCKET)))] += 1
                    st.count += 1
                    sec = int(now)
                    per_second[sec] = per_second.get(sec, 0) + 1
                    if st.first_recv is None:
                        st.first_recv = now
                    st.last_recv = now
            finally:
                st.close_code, st.close_reason = ws.close_code, ws.close_reason
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a failed connection or a closed-with-error one: recorded, not fatal
        if not st.connected:
            st.error = f"{type(e).__name__}: {e}"
    finally:
        st.done = True


def stall_connect():
    """A client that completes the WebSocket handshake and then never reads (tiny receive buffer)."""
    u = urllib.parse.urlsplit(URL)
    s = socket.socket(socket.AF_INET6 if ":" in (u.hostname or "") else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect((u.hostname, u.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {u.path}?from=end HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {TOKEN}\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: read the response head and not one byte more
        b = s.recv(1)
        if not b:
            raise OSError("connection closed during the handshake")
        head += b
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status + " ":
        raise OSError(f"handshake answered {status!r}")
    return s


def close_frame(buf):
    """The (code, reason) of the first close frame in a server-to-client frame stream, else None."""
    i = 0
    while i + 2 <= len(buf):
        op, n, j = buf[i] & 0x0F, buf[i + 1] & 0x7F, i + 2
        if n == 126:
            n, j = int.from_bytes(buf[j:j + 2], "big"), j + 2
        elif n == 127:
            n, j = int.from_bytes(buf[j:j + 8], "big"), j + 8
        if buf[i + 1] & 0x80:
            j += 4
        if j + n > len(buf):
            return None
        if op == 8:
            code = int.from_bytes(buf[j:j + 2], "big") if n >= 2 else None
            return code, buf[j + 2:j + n].decode(errors="replace")
        i = j + n
    return None


def stall_drain(s):
    """After the measurement: read what the stalled socket holds, to see whether the server closed it."""
    buf, end = bytearray(), "open"
    s.settimeout(2)
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            b = s.recv(1 << 20)
            if not b:
                end = "eof"
                break
            buf += b
    except socket.timeout:
        end = "open (no data for 2 s)"
    except OSError as e:
        end = f"{type(e).__name__}"
    cf = close_frame(bytes(buf))
    return {"end": end, "bytes_buffered": len(buf), "close_code": cf[0] if cf else None,
            "close_reason": cf[1] if cf else None}


async def main():
    loop = asyncio.get_running_loop()
    stall, stall_error = None, None
    if STALL:
        try:
            stall = await loop.run_in_executor(None, stall_connect)
        except OSError as e:
            stall_error = str(e)
    stats = [Stats() for _ in range(N)]
    url = URL + ("&" if "?" in URL else "?") + "from=end"
    tasks = [asyncio.create_task(client(st, url)) for st in stats]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(st.connected or st.done for st in stats):
        await asyncio.sleep(0.02)
    errors = [st.error for st in stats if st.error]
    say({"ready": sum(st.connected for st in stats), "errors": errors[:3], "stall_error": stall_error})

    def live(st):
        return st.connected and not st.done

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(st.warm for st in stats if live(st)):
        await asyncio.sleep(0.01)
    say({"warm": all(st.warm for st in stats if live(st)), "live": sum(live(st) for st in stats)})
    line = await loop.run_in_executor(None, sys.stdin.readline)
    expect = int(line.split()[1])
    deadline = time.monotonic() + DRAIN
    while time.monotonic() < deadline and not all(st.count >= expect or not live(st) for st in stats):
        await asyncio.sleep(0.01)
    drained_at = time.time()
    stall_end = await loop.run_in_executor(None, stall_drain, stall) if stall is not None else None
    say({"result": {
        "drained_at": drained_at,
        "clients": [{k: getattr(st, k) for k in ("connected", "error", "count", "gaps", "dups", "first_recv",
                                                   "last_recv", "close_code", "close_reason", "done")}
                    for st in stats],
        "hist": {str(i): n for i, n in enumerate(hist) if n},
        "bucket": BUCKET,
        "max": lat_max[0],
        "per_second": {str(k): v for k, v in per_second.items()},
        "stall": stall_end,
        "stall_error": stall_error,
    }})
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=5)
    if stall is not None:
        stall.close()


asyncio.run(main())
'''


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
    million_log: Path | None = None  # the log append-batch left behind, reused by read-type and replay
    records_file: Path | None = None  # million_log's records as JSON Lines, made once (read-type, replay)
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
        jsonl = self.records(logdir, n)

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

    # ----------------------------------------------------------------------- replay

    def records(self, logdir: Path, n: int) -> Path:
        """The log's records as JSON Lines (`evlog read --format json > file`), made once per run."""
        if self.records_file is None:
            jsonl = self.work / "records.jsonl"
            t = run_file(self.ev(logdir, "read", "--format", "json"), None, timeout=T_LONG, outfile=jsonl)
            total = count_lines(jsonl)
            if total != n:
                raise BenchError(f"read --format json printed {total} records, expected {n}")
            log(
                f"  made the JSON Lines input: evlog read --format json > {jsonl.name} "
                f"({jsonl.stat().st_size / 2**20:.1f} MiB, {fmt_s(t)}, {fmt_rate(n / t)})"
            )
            self.records_file = jsonl
        return self.records_file

    def replay_json(self, cmd: list[str], expect: int) -> float:
        """Run a `replay --json` command; check that it delivered `expect` events; return wall seconds."""
        elapsed, proc = run(cmd, timeout=T_LONG, stdout=subprocess.PIPE)
        try:
            summary = json.loads(proc.stdout.splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise BenchError(f"replay --json printed {proc.stdout[-200:]!r}, not a JSON summary") from exc
        if summary.get("events") != expect or summary.get("succeeded") != expect or summary.get("dead_lettered"):
            raise BenchError(f"replay delivered {summary}, expected {expect} events, all succeeded")
        return elapsed

    def step_replay(self) -> None:
        """replay --batch 1000 into `sh -c 'cat > /dev/null'`, beside cat | sh -c 'cat > /dev/null' over the
        same records; and per-event handlers beside a shell loop that starts the same handler per line."""
        n, runs, h = self.args.events, self.args.read_runs, self.args.handler_events
        sh = shutil.which("sh")
        if sh is None:
            raise BenchError("no sh on PATH")
        log(
            f"\n== replay: `evlog replay --batch 1000` over {n:,} events and per-event handlers over {h:,} events, "
            f"median of {runs} run(s) (load average {os.getloadavg()[0]:.2f})"
        )
        logdir = self.million_log
        if logdir is None:
            logdir = self.build_log("read-log", n)
            self.million_log = logdir
        jsonl = self.records(logdir, n)
        handler = [sh, "-c", "cat > /dev/null"]
        ev_cmd = self.ev(logdir, "replay", "--batch", "1000", "--json", "--", *handler)
        cat_cmd = [sh, "-c", 'cat -- "$1" | sh -c "cat > /dev/null"', "sh", str(jsonl)]
        log(f"  evlog: {describe(ev_cmd)}\n  anchor: {describe(cat_cmd)}")
        run_file(cat_cmd, None, timeout=T_LONG)  # warm the page cache for the anchor's input
        ev_times, cat_times = [], []
        for i in range(runs):
            ev_times.append(self.replay_json(ev_cmd, n))
            cat_times.append(run_file(cat_cmd, None, timeout=T_LONG))
            log(f"  run {i + 1}: evlog {fmt_s(ev_times[-1])}, cat | sh {fmt_s(cat_times[-1])}")
        ev_rate, cat_rate = n / statistics.median(ev_times), n / statistics.median(cat_times)
        ratio = ev_rate / cat_rate
        log(f"  replay --batch 1000: {fmt_rate(ev_rate)}; cat | sh -c 'cat > /dev/null': {fmt_rate(cat_rate)}")
        self.add(
            "replay --batch 1000",
            fmt_rate(ev_rate),
            f"cat|sh {fmt_rate(cat_rate)}",
            f"speed {ratio:.3f}x",
            "≥ 300,000 ev/s",
            "yes" if ev_rate >= 300_000 else "no",
        )

        # Per-event handlers: one process per event, beside a shell loop that starts the same handler per line.
        h = min(h, n)
        head = self.work / f"records-head-{h}.jsonl"
        with open(jsonl, "rb") as fin, open(head, "wb") as fout:
            for _, line in zip(range(h), fin, strict=False):
                fout.write(line)
        one_cmd = self.ev(logdir, "replay", "--to", str(h - 1), "--json", "--", *handler)
        loop_cmd = [
            sh,
            "-c",
            "while read -r line; do printf '%s\\n' \"$line\" | sh -c 'cat > /dev/null'; done < \"$1\"",
            "sh",
            str(head),
        ]
        log(f"  evlog: {describe(one_cmd)}\n  anchor: {describe(loop_cmd)}")
        ev_times, loop_times = [], []
        for i in range(runs):
            ev_times.append(self.replay_json(one_cmd, h))
            loop_times.append(run_file(loop_cmd, None, timeout=T_LONG))
            log(f"  run {i + 1}: evlog {fmt_s(ev_times[-1])}, shell loop {fmt_s(loop_times[-1])}")
        ev_rate, loop_rate = h / statistics.median(ev_times), h / statistics.median(loop_times)
        log(
            f"  replay, one handler per event: {ev_rate:,.0f} handlers/s; shell loop: {loop_rate:,.0f} handlers/s; "
            f"evlog/loop speed {ev_rate / loop_rate:.2f}x"
        )
        self.add(
            f"replay per-event ({h:,})",
            f"{ev_rate:,.0f} handlers/s",
            f"sh loop {loop_rate:,.0f}/s",
            f"speed {ev_rate / loop_rate:.2f}x",
            "report only",
            "-",
        )

    # ----------------------------------------------------------------------- compact-memory

    def peak_rss(self, cmd: list[str], timeout: float, stdin: Path | None = None) -> tuple[float, float, str]:
        """Run cmd as the only child of a fresh wrapper (its stdin from a file, or nothing); return (peak RSS
        MiB, wall seconds, its stdout)."""
        _, proc = run_group([self.python, "-c", MAXRSS_WRAPPER, *cmd], timeout=timeout,
                            env={"BENCH_STDIN": str(stdin) if stdin else ""})
        try:
            res = json.loads(proc.stdout)
        except ValueError as exc:
            raise BenchError(f"the RSS wrapper printed {proc.stdout[-200:]!r}") from exc
        if res["rc"] != 0:
            raise BenchError(f"exit {res['rc']}: {describe(cmd)}: {res['stderr'].strip()[-300:]}")
        kib = res["maxrss_kib"] if sys.platform != "darwin" else res["maxrss_kib"] / 1024  # bytes on macOS
        return kib / 1024, res["wall"], res["stdout"]

    def step_batch_memory(self) -> None:
        """Peak RSS of `append --batch` of a large input (the generated events, repeated): SPEC 8 bounds it
        by settings, not by the input."""
        n = self.args.memory_events
        log(f"\n== batch-memory: `evlog append --batch` of {n:,} events (load average {os.getloadavg()[0]:.2f})")
        src = self.events()
        data = self.work / f"memory-{n}.jsonl"
        written = 0
        with open(data, "wb") as fout:
            while written < n:
                with open(src, "rb") as fin:
                    for line in fin:
                        if written >= n:
                            break
                        fout.write(line)
                        written += 1
        size = data.stat().st_size
        logdir = self.work / "memory"
        if logdir.exists():
            shutil.rmtree(logdir)
        py_mib, _, _ = self.peak_rss([self.python, "-c", "pass"], T_SHORT)
        cmd = self.ev(logdir, "append", "--batch", "--json")
        log(f"  measured: {describe(cmd)} < {data.name} ({size / 2**20:.0f} MiB; peak RSS from RUSAGE_CHILDREN)")
        mib, wall, out = self.peak_rss(cmd, T_LONG * 2, stdin=data)
        summary = json.loads(out.strip().splitlines()[-1])
        data.unlink()
        if summary.get("count", summary.get("appended")) != n:
            raise BenchError(f"append --batch --json reported {summary}, expected {n:,} events")
        log(f"  peak RSS {mib:.1f} MiB for {size / 2**20:.0f} MiB of input, {fmt_s(wall)} ({fmt_rate(n / wall)}); "
            f"python -c pass {py_mib:.1f} MiB")
        self.add(
            f"append --batch peak RSS ({n:,} ev)",
            f"{mib:.1f} MiB",
            f"input {size / 2**20:.0f} MiB, python {py_mib:.1f} MiB",
            f"rss {mib / (size / 2**20):.2f}x input",
            "< 200 MiB",
            "yes" if mib < 200 else "no",
        )
        if not self.args.keep:
            shutil.rmtree(logdir, ignore_errors=True)

    def step_compact_memory(self) -> None:
        """Peak RSS of `compact --keys` on a log of N events with N/10 keys in 16 MiB segments."""
        n = self.args.compact_events
        keys = max(1, n // 10)
        final = 100
        log(
            f"\n== compact-memory: `evlog compact --keys` on {n:,} events with {keys:,} keys in 16MiB segments "
            f"(load average {os.getloadavg()[0]:.2f})"
        )
        src = self.events()
        data = self.work / f"compact-{n}.jsonl"
        key_field = re.compile(rb'"key":"[^"]*"')
        with open(data, "wb") as fout:
            i, buf = 0, []
            while i < n:  # the generated events, each key replaced: event i gets key k-(i mod keys)
                with open(src, "rb") as fin:
                    for line in fin:
                        if i >= n:
                            break
                        buf.append(key_field.sub(b'"key":"k-%06d"' % (i % keys), line, count=1))
                        i += 1
                        if len(buf) >= 10_000:
                            fout.write(b"".join(buf))
                            buf.clear()
            fout.write(b"".join(buf))
        tail = self.work / "compact-final.jsonl"
        tail.write_text("".join(f'{{"type":"bench.final","data":{{"n":{j}}}}}\n' for j in range(final)))
        logdir = self.work / "compact"
        if logdir.exists():
            shutil.rmtree(logdir)
        run(self.ev(logdir, "init", "--segment-bytes", "16MiB"), timeout=T_SHORT)
        t = self.batch_append(logdir, data, n)
        self.batch_append(logdir, tail, final)  # later than every keyed event, so their segments are sealed
        _, proc = run(self.ev(logdir, "info", "--json"), timeout=T_LONG, stdout=subprocess.PIPE)
        before = json.loads(proc.stdout)
        log(
            f"  built the log: {n:,} events by append --batch in {fmt_s(t)}, then {final} unkeyed events; "
            f"{before['segments']} segments, {before['events']:,} events, {before['bytes'] / 2**20:.1f} MiB"
        )
        data.unlink()

        py_mib, _, _ = self.peak_rss([self.python, "-c", "pass"], T_SHORT)
        info_mib, info_wall, _ = self.peak_rss(self.ev(logdir, "info"), T_LONG)
        cmd = self.ev(logdir, "compact", "--keys", "--json")
        log(f"  measured: {describe(cmd)} (peak RSS from RUSAGE_CHILDREN in a fresh wrapper)")
        mib, wall, out = self.peak_rss(cmd, T_LONG)
        try:
            summary = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise BenchError(f"compact --json printed {out[-200:]!r}, not a JSON summary") from exc
        log(
            f"  compact --keys: peak RSS {mib:.1f} MiB, {fmt_s(wall)}, {fmt_rate(n / wall)}; "
            f"python -c pass {py_mib:.1f} MiB; evlog info {info_mib:.1f} MiB ({fmt_s(info_wall)})"
        )
        log(
            f"  segments {summary.get('segments_before')} -> {summary.get('segments_after')}, events "
            f"{summary.get('events_before'):,} -> {summary.get('events_after'):,}, MiB "
            f"{summary.get('bytes_before', 0) / 2**20:.1f} -> {summary.get('bytes_after', 0) / 2**20:.1f}"
        )

        # Checks: the survivors are one event per key from the sealed segments plus the active segment whole.
        problems = []
        _, proc = run(self.ev(logdir, "info", "--json"), timeout=T_LONG, stdout=subprocess.PIPE)
        after = json.loads(proc.stdout)
        if summary.get("events_before") != n + final:
            problems.append(f"compact reported events_before {summary.get('events_before')}, expected {n + final}")
        if after["events"] != summary.get("events_after"):
            problems.append(f"info --json says {after['events']} events, compact said {summary.get('events_after')}")
        per_segment = 16 * 2**20 / (before["bytes"] / before["events"])  # records in one full segment
        active = after["events"] - keys - final  # keyed events left in the active segment
        log(
            f"  info --json after: {after['events']:,} events in {after['segments']} segments = {keys:,} keys "
            f"+ {final} final + {active:,} keyed events in the active segment (a full segment holds "
            f"~{per_segment:,.0f})"
        )
        if not 0 <= active <= per_segment * 1.1:
            problems.append(f"{after['events']} events remain, expected {keys + final} + at most one segment")
        # Spot check one key: its first event (offset 0) is gone, its newest is kept.
        newest = (n - 1) // keys * keys
        _, proc = run(
            self.ev(logdir, "read", "--key", "k-000000", "--format", "json"), timeout=T_LONG, stdout=subprocess.PIPE
        )
        offsets = [json.loads(x)["offset"] for x in proc.stdout.splitlines()]
        if not offsets or offsets[-1] != newest or (n > keys and 0 in offsets):
            problems.append(f"key k-000000: offsets {offsets[:5]}..., expected the newest {newest} and not 0")
        vt, _ = run(self.ev(logdir, "verify"), timeout=T_LONG, stdout=subprocess.PIPE)
        log(f"  evlog verify: exit 0 ({fmt_s(vt)}); key k-000000 now has offsets {offsets}")
        if problems:
            raise BenchError("; ".join(problems))
        self.add(
            f"compact --keys peak RSS ({n:,} ev)",
            f"{mib:.1f} MiB",
            f"python {py_mib:.1f}, info {info_mib:.1f} MiB",
            f"rss {mib / info_mib:.2f}x info",
            "< 150 MiB",
            "yes" if mib < 150 else "no",
        )
        self.add(
            "compact --keys time",
            f"{fmt_s(wall)} ({fmt_rate(n / wall)})",
            f"info {fmt_s(info_wall)}",
            "",
            "report only",
            "-",
        )
        if not self.args.keep:
            shutil.rmtree(logdir)

    # ----------------------------------------------------------------------- serve

    def step_serve(self) -> None:
        """`evlog serve` with many WebSocket clients and one that never reads, while events are appended."""
        a = self.args
        clients, rate, secs, drain = a.serve_clients, a.serve_rate, a.serve_seconds, 20.0
        tick = 0.010
        per_tick = max(1, round(rate * tick))
        ticks = max(1, round(secs / tick))
        total_target = per_tick * ticks
        procs = a.serve_procs or max(1, min(4, (os.cpu_count() or 1) // 2))
        procs = min(procs, max(1, clients))
        log(
            f"\n== serve: {clients} WebSocket clients (+1 that never reads) in {procs} helper process(es), "
            f"{per_tick} events every {tick * 1000:.0f} ms ({per_tick / tick:,.0f} ev/s) for {secs:g} s through "
            f"`append --stream` (load average {os.getloadavg()[0]:.2f})"
        )
        logdir = self.work / "serve"
        if logdir.exists():
            shutil.rmtree(logdir)
        run(self.ev(logdir, "init"), timeout=T_SHORT)
        token = "bench-" + os.urandom(8).hex()

        server = subprocess.Popen(
            self.ev(logdir, "serve", "--port", "0", "--token", token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(),
            start_new_session=True,
        )
        self.live.append(server)
        assert server.stderr is not None
        server_err: list[str] = []
        url_found: queue.Queue[str] = queue.Queue()

        def read_server_err() -> None:
            assert server.stderr is not None
            for raw in iter(server.stderr.readline, b""):
                text = raw.decode(errors="replace").rstrip()
                server_err.append(text)
                del server_err[:-50]
                m = re.search(r"serving (wss?://\S+/stream)", text)
                if m:
                    url_found.put(m.group(1))

        threading.Thread(target=read_server_err, name="serve-stderr", daemon=True).start()
        try:
            url = url_found.get(timeout=30)
        except queue.Empty:
            raise BenchError(f"serve printed no `serving ws://...` line within 30 s: {server_err[-3:]}") from None
        log(f"  server pid {server.pid}: {url}")

        # Server RSS, sampled every second from /proc, with the CPU seconds of the server and the helpers.
        samples: list[tuple[float, float]] = []  # (time.time(), MiB)
        cpu: list[tuple[float, float | None, float | None]] = []  # (time.time(), server s, client helpers s)
        helpers: list[subprocess.Popen[bytes]] = []
        sampling_stop = threading.Event()

        def sample_rss() -> None:
            while True:
                now = time.time()
                mib = vm_rss_mib(server.pid)
                if mib is not None:
                    samples.append((now, mib))
                helper_cpu = [cpu_seconds(h.pid) for h in list(helpers)]
                helpers_s = None if None in helper_cpu else sum(c for c in helper_cpu if c is not None)
                cpu.append((now, cpu_seconds(server.pid), helpers_s))
                if sampling_stop.wait(1.0):
                    return

        sampler = threading.Thread(target=sample_rss, name="serve-rss", daemon=True)
        sampler.start()
        idle_rss = vm_rss_mib(server.pid)

        helper = self.work / "serve_client.py"
        helper.write_text(SERVE_CLIENT)
        inbox: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        for i, share in enumerate(shares):
            with open(self.work / f"serve_client_{i}.err", "wb") as errf:  # a file: nothing to drain meanwhile
                hp = subprocess.Popen(
                    [self.python, str(helper), url, token, str(share), "1" if i == 0 else "0", str(drain)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errf,
                    env=child_env(),
                    start_new_session=True,
                )
            self.live.append(hp)
            helpers.append(hp)

            def read_helper(idx: int, p: subprocess.Popen[bytes]) -> None:
                assert p.stdout is not None
                for raw in iter(p.stdout.readline, b""):
                    try:
                        inbox.put((idx, json.loads(raw)))
                    except ValueError:
                        pass
                inbox.put((idx, None))

            threading.Thread(target=read_helper, args=(i, hp), name=f"serve-helper-{i}", daemon=True).start()

        def wait_all(key: str, timeout: float) -> list[dict[str, Any]]:
            got: dict[int, dict[str, Any]] = {}
            deadline = time.monotonic() + timeout
            while len(got) < len(helpers):
                try:
                    idx, msg = inbox.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise BenchError(f"a client helper sent no {key!r} within {timeout:.0f} s") from None
                if msg is None and idx in got:
                    continue  # it said what we waited for, then exited
                if msg is None:
                    try:
                        helpers[idx].wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    err = (self.work / f"serve_client_{idx}.err").read_text(errors="replace")
                    raise BenchError(f"client helper {idx} exited early: {err.strip()[-500:]}")
                if key in msg:
                    got[idx] = msg
            return [got[i] for i in range(len(helpers))]

        writer = start(self.ev(logdir, "append", "--stream"), stdin=subprocess.PIPE)
        self.live.append(writer)
        assert writer.stdin is not None
        ready = wait_all("ready", 90)
        connected = sum(r["ready"] for r in ready)
        errors = [e for r in ready for e in r["errors"]]
        stall_error = ready[0].get("stall_error")
        log(
            f"  connected {connected}/{clients} clients"
            + (f" (errors: {errors[:3]})" if errors else "")
            + (f"; stalled client failed: {stall_error}" if stall_error else "; stalled client connected")
        )
        # Warm-ups until every client has received one: from then on each is live and sees every new event.
        deadline = time.monotonic() + 60
        warmed = 0
        while warmed < len(helpers):
            if time.monotonic() > deadline:
                raise BenchError("the clients saw none of the warm-up events within 60 s")
            if writer.poll() is not None or server.poll() is not None:
                raise BenchError(f"append --stream or serve exited early: {server_err[-3:]}")
            writer.stdin.write(b'{"type":"bench.warmup"}\n')
            writer.stdin.flush()
            try:
                while True:
                    idx, msg = inbox.get(timeout=0.2)
                    if msg is None:
                        raise BenchError(f"client helper {idx} exited early")
                    if "warm" in msg:
                        warmed += 1
            except queue.Empty:
                pass
        time.sleep(0.5)  # let the last warm-ups drain

        # Send: per_tick lines every tick, each stamped with its send time; if the pipe blocks, catch up
        # as fast as it allows, and stop at the deadline whatever was sent.
        watchdog = threading.Timer(secs + 60, lambda: stop_process(writer))
        watchdog.start()
        seq, late_max = 0, 0.0
        send_start_rss = vm_rss_mib(server.pid)  # clients connected and live, nothing sent yet
        send_start = time.time()
        t0 = time.perf_counter()
        try:
            for k in range(ticks):
                pause = t0 + k * tick - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    late_max = max(late_max, -pause)
                if time.perf_counter() - t0 > secs + 5:
                    break
                now = time.time()
                chunk = "".join(
                    f'{{"type":"bench.serve","data":{{"seq":{seq + j},"sent":{now:.6f}}}}}\n' for j in range(per_tick)
                )
                writer.stdin.write(chunk.encode())
                writer.stdin.flush()
                seq += per_tick
            send_secs = time.perf_counter() - t0
            writer.stdin.close()
            try:
                code = writer.wait(timeout=120)
            except subprocess.TimeoutExpired as exc:
                raise BenchError("append --stream did not exit within 120 s after its stdin closed") from exc
            commit_secs = time.perf_counter() - t0
        except (BrokenPipeError, ValueError) as exc:
            raise BenchError(f"append --stream stopped taking input after {seq} events: {exc}") from exc
        finally:
            watchdog.cancel()
        if code != 0:
            raise BenchError(f"append --stream exited {code}")
        for hp in helpers:
            assert hp.stdin is not None
            hp.stdin.write(f"expect {seq}\n".encode())
            hp.stdin.flush()
        results = [r["result"] for r in wait_all("result", drain + 60)]
        metrics = fetch_metrics(url, token)
        sampling_stop.set()
        sampler.join(timeout=5)
        end_rss = vm_rss_mib(server.pid)
        _, proc = run(self.ev(logdir, "info", "--json"), timeout=T_LONG, stdout=subprocess.PIPE)
        in_log = json.loads(proc.stdout)["events"]
        stop_process(server)
        self.live = [p for p in self.live if p is not server]
        if server.returncode not in (143, -signal.SIGTERM):
            log(f"  note: serve exited {server.returncode} on SIGTERM (SPEC: 143); stderr: {server_err[-3:]}")

        # Delivery.
        per_client = [c for r in results for c in r["clients"]]
        counts = [c["count"] for c in per_client]
        full = sum(1 for c in per_client if c["count"] == seq)
        gaps = sum(c["gaps"] for c in per_client)
        dups = sum(c["dups"] for c in per_client)
        closed = [c for c in per_client if c["done"] and c["count"] < seq]
        delivered = sum(counts)
        last_recv = max((c["last_recv"] or 0 for c in per_client), default=0)
        deliver_secs = max(1e-9, last_recv - send_start) if last_recv else float("nan")
        send_rate = seq / send_secs
        commit_rate = seq / commit_secs
        deliver_rate = delivered / deliver_secs if last_recv else 0.0
        log(
            f"  sent {seq:,} of {total_target:,} events in {send_secs:.2f} s ({fmt_rate(send_rate)}, target "
            f"{fmt_rate(per_tick / tick)}; the sender ran up to {late_max * 1000:.0f} ms behind its schedule); "
            f"append --stream done after {commit_secs:.2f} s ({fmt_rate(commit_rate)}); the log holds {in_log:,} "
            f"events (warm-ups included)"
        )
        log(
            f"  delivered {delivered:,} messages ({deliver_rate:,.0f} msg/s until the last arrival, "
            f"{last_recv - send_start:.1f} s after sending began); {full}/{clients} clients got all {seq:,}; "
            f"per client min {min(counts, default=0):,}, median {statistics.median(counts) if counts else 0:,.0f}; "
            f"gaps {gaps}, duplicates {dups}"
        )
        timeline: dict[int, int] = {}
        for r in results:
            for sec, cnt in r["per_second"].items():
                timeline[int(sec)] = timeline.get(int(sec), 0) + cnt
        if timeline:
            first_sec = int(send_start)
            series = [timeline.get(t, 0) for t in range(first_sec, max(timeline) + 1)]
            log(f"  messages received per wall-clock second from the start of sending: {series}")
        if closed:
            reasons: dict[str, int] = {}
            for c in closed:
                r = f"{c['close_code']} {c['close_reason'] or ''}".strip()
                r = re.sub(r"offset \d+", "offset N", r)
                reasons[r] = reasons.get(r, 0) + 1
            log(f"  {len(closed)} client(s) were disconnected before getting every event: {reasons}")
        if metrics:
            log(
                "  server /metrics: "
                + ", ".join(f"{k} {v}" for k, v in metrics.items() if k.startswith(("evlog_disc", "evlog_events")))
            )

        # Latency.
        hist: dict[int, int] = {}
        for r in results:
            for b, cnt in r["hist"].items():
                hist[int(b)] = hist.get(int(b), 0) + cnt
        bucket = results[0]["bucket"]
        lat_max = max(r["max"] for r in results)
        if hist:
            p50, p99 = hist_percentile(hist, 50, bucket), hist_percentile(hist, 99, bucket)
            log(
                f"  append-to-client latency over {sum(hist.values()):,} deliveries: p50 {fmt_ms(p50)}, "
                f"p99 {fmt_ms(p99)}, max {fmt_ms(lat_max)} (from the send-time stamp, so it includes "
                f"append --stream's commit and fsync)"
            )

        # Memory.
        drained_at = max(r["drained_at"] for r in results)
        during = [m for t, m in samples if send_start - 1.5 <= t <= drained_at]
        start_rss = send_start_rss if send_start_rss is not None else float("nan")
        end_candidates = [m for t, m in samples if t <= drained_at]
        rss_end = end_candidates[-1] if end_candidates else (end_rss or float("nan"))
        peak = max(during + [start_rss]) if during else start_rss
        stall = results[0].get("stall")
        if samples:
            log(
                f"  server RSS (VmRSS, every 1 s, {len(samples)} samples): idle {idle_rss or float('nan'):.1f} MiB, "
                f"at send start {start_rss:.1f}, peak {peak:.1f}, at the end of the drain {rss_end:.1f} MiB; "
                f"series {[round(m) for _, m in samples]}"
            )
        window = [c for c in cpu if send_start - 1.5 <= c[0] <= drained_at + 1.5]
        if len(window) >= 2 and window[0][1] is not None and window[-1][1] is not None:
            span = window[-1][0] - window[0][0]
            used = (window[-1][1] - window[0][1]) / span
            line = f"  CPU over {span:.1f} s of sending and draining: evlog serve {used:.0%}"
            if window[0][2] is not None and window[-1][2] is not None:
                line += f", client helper(s) {(window[-1][2] - window[0][2]) / span:.0%}"
            log(line + f" (100% = one core of {os.cpu_count()}; the server runs one event loop)")
        if stall:
            log(
                f"  stalled client (never read; then drained after the measurement): connection {stall['end']}, "
                f"{stall['bytes_buffered']:,} bytes were waiting, close frame "
                f"{stall['close_code']} {stall['close_reason'] or ''}".rstrip()
            )

        self.add(
            f"serve delivery ({clients} clients)",
            f"{full}/{clients} got all {seq:,}",
            f"sent {fmt_rate(send_rate)}; {deliver_rate:,.0f} msg/s",
            f"rate {send_rate / (per_tick / tick):.2f}x target",
            "every client, every event",
            "yes" if full == clients and connected == clients and gaps == 0 and dups == 0 else "no",
        )
        if hist:
            self.add(
                "serve latency p99",
                fmt_ms(p99),
                f"p50 {fmt_ms(p50)} max {fmt_ms(lat_max)}",
                f"{sum(hist.values()):,} msgs",
                "p99 < 200 ms",
                "yes" if p99 < 0.200 else "no",
            )
        else:
            self.add("serve latency p99", "no deliveries", "", "", "p99 < 200 ms", "no")
        if samples:
            growth = rss_end - start_rss
            self.add(
                "serve RSS (1 client stalled)",
                f"{start_rss:.0f}→peak {peak:.0f}→end {rss_end:.0f} MiB",
                f"idle {idle_rss or float('nan'):.0f} MiB",
                f"end-start {growth:+.0f} MiB",
                "flat: end-start < 100 MiB",
                "yes" if growth < 100 else "no",
            )
        else:
            self.add("serve RSS (1 client stalled)", "n/a (no /proc)", "", "", "flat", "-")


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


def run_group(cmd: list[str], *, timeout: float,
              env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Like run(), with stdout captured, but in a process group of its own that a timeout kills whole
    (a wrapper and the command it runs); `env` adds to the children's environment."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**child_env(), **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise BenchError(f"timed out after {timeout:.0f} s: {describe(cmd)}") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"exit {proc.returncode}: {describe(cmd)}: {' | '.join(tail)}")
    return elapsed, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def vm_rss_mib(pid: int) -> float | None:
    """A process's resident set size (VmRSS in /proc/PID/status) in MiB; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (/proc/PID/stat); None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def fetch_metrics(ws_url: str, token: str) -> dict[str, str]:
    """The serve endpoint's /metrics as {series: value}; empty when it cannot be fetched."""
    url = re.sub(r"^ws", "http", ws_url).rsplit("/", 1)[0] + "/metrics"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode(errors="replace")
    except OSError as exc:
        log(f"  could not fetch {url}: {exc}")
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = v
    return out


def hist_percentile(hist: dict[int, int], p: float, bucket: float) -> float:
    """Nearest-rank percentile of a histogram {bucket index: count}, as the upper edge of its bucket."""
    total = sum(hist.values())
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return (b + 1) * bucket
    return (max(hist) + 1) * bucket


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


def generate_events(path: Path, n: int, seed: int, types: list[tuple[str, int]] | None = None,
                    counts: dict[str, int] | None = None) -> int:
    """Write n deterministic ~130-byte events as JSON Lines; return the byte count. `types` is the (type,
    weight) mix (TYPES by default; a type not in TYPES gets an order-shaped payload); `counts`, when given,
    is filled with the count per type."""
    rng = random.Random(seed)
    names = [t for t, _ in types or TYPES]
    weights = [w for _, w in types or TYPES]
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    total = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        buf = []
        for i in range(n):
            etype = rng.choices(names, weights)[0]
            if counts is not None:
                counts[etype] = counts.get(etype, 0) + 1
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
            elif etype == "payment.failed":
                data = {
                    "order": order,
                    "total": round(rng.uniform(5, 500), 2),
                    "cur": "EUR",
                    "reason": rng.choice(REASONS),
                    "retry": rng.randint(0, 3),
                }
            else:  # a type a caller added to the mix (bench_nats.py's rare type)
                data = {"order": order, "qty": qty, "total": round(rng.uniform(5, 500), 2), "cur": "EUR", "seq": i}
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
        "--compact-events",
        metavar="N",
        type=int,
        help="events in the compact-memory log, with N/10 keys (default 1,000,000; --quick 200,000)",
    )
    ap.add_argument(
        "--memory-events",
        metavar="N",
        type=int,
        help="events in batch-memory's append --batch input (default 5,000,000; --quick 1,000,000)",
    )
    ap.add_argument(
        "--handler-events",
        metavar="N",
        type=int,
        default=2_000,
        help="events for replay's one-handler-per-event figure (2,000)",
    )
    ap.add_argument("--serve-clients", metavar="N", type=int, default=50, help="serve: WebSocket clients (50)")
    ap.add_argument(
        "--serve-rate", metavar="N", type=int, default=20_000, help="serve: target append rate, events/s (20,000)"
    )
    ap.add_argument(
        "--serve-seconds", metavar="S", type=float, help="serve: seconds of appending (default 10; --quick 3)"
    )
    ap.add_argument(
        "--serve-procs",
        metavar="N",
        type=int,
        help="serve: client helper processes (default: half the CPUs, 1 to 4)",
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
    a.compact_events = a.compact_events or (200_000 if a.quick else 1_000_000)
    a.memory_events = a.memory_events or (1_000_000 if a.quick else 5_000_000)
    a.serve_seconds = a.serve_seconds or (3.0 if a.quick else 10.0)
    for name in (
        "events",
        "big_events",
        "small_events",
        "compact_events",
        "memory_events",
        "handler_events",
        "serve_clients",
        "serve_rate",
    ):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return a


def print_table(rows: list[Row], first: str = "name") -> None:
    head = Row(first, "evlog", "anchor", "ratio", "goal", "met")
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
