"""Delivering events to a handler: the consumer behind `replay`, `run` and `dlq retry`.

A feeder thread reads the log (the backlog, then new events when following)
into a bounded queue. The consumer groups matching events into tasks (one
event, or up to `batch`), starts up to `concurrency` tasks at once on worker
threads — a task never starts while an earlier unfinished task shares one
of its keys, so each key's events run one at a time and in order — and each
worker runs the handler with retries, exponential backoff and jitter.

The checkpoint only moves over a fully finished prefix of the log: an event
counts as finished when its handler succeeded or its dead-letter entry is
durable. Delivery is therefore at least once: after a crash, events after
the saved position are delivered again, never skipped.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from evlog.consumers import runner
from evlog.consumers.deadletter import Containment
from evlog.consumers.state import dead_letters_of, groups_of
from evlog.errors import DeadLetterFull, EvlogError, ExitCode, HandlerCannotStart, HandlerStopped, UndecodableRecord
from evlog.ingest.event import block_ok
from evlog.query.filters import Filter
from evlog.report import Report, quiet
from evlog.store.backend import EventLog
from evlog.store.framing import Record, undecodable
from evlog.store.reader import Range
from evlog.units import count

CLEAN_ENV_KEEP = ("PATH", "HOME", "LANG", "TZ")
HANDLER_VARS = ("EVLOG_OFFSET", "EVLOG_ID", "EVLOG_TYPE", "EVLOG_KEY", "EVLOG_SUBJECT", "EVLOG_SOURCE",
                "EVLOG_TIME", "EVLOG_ATTEMPT", "EVLOG_DIR", "EVLOG_GROUP", "EVLOG_FIRST_OFFSET",
                "EVLOG_LAST_OFFSET", "EVLOG_COUNT", "EVLOG_HOOK")
CHECKPOINT_EVERY = 0.2  # seconds between checkpoint saves while events flow


@dataclass
class Options:
    command: list[str]
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float | None = 30.0
    batch: int = 1
    concurrency: int = 1
    on_failure: str = "dead-letter"   # or "stop"
    clean_env: bool = False
    env: dict[str, str] = field(default_factory=dict)
    max_memory: int | None = None
    dry_run: bool = False
    list_dry_run: bool = True         # a dry run writes what each handler call would get to out_fd


@dataclass
class Summary:
    events: int = 0
    succeeded: int = 0
    retries: int = 0
    dead_lettered: int = 0
    elapsed_s: float = 0.0
    position: int | None = None
    dry_run: bool = False
    calls: int = 0  # handler calls a dry run would make

    def as_dict(self) -> dict[str, Any]:
        out = {"events": self.events, "succeeded": self.succeeded, "retries": self.retries,
               "dead_lettered": self.dead_lettered, "elapsed_s": round(self.elapsed_s, 3)}
        return {**out, "dry_run": True} if self.dry_run else out

    def text(self) -> str:
        if self.dry_run:
            return (f"dry run: would deliver {count(self.events, 'event')} in {count(self.calls, 'handler call')}; "
                    "nothing was run")
        return (f"delivered {self.succeeded} of {count(self.events, 'event')}, "
                f"{count(self.retries, 'retry', 'retries')}, {self.dead_lettered} dead-lettered, {self.elapsed_s:.2f}s")


def base_env(where: str, clean: bool, group: str | None, hook: str | None) -> dict[str, str]:
    """evlog's environment for handlers: minus EVLOG_TOKEN, or only the clean-env set; plus EVLOG_DIR/GROUP."""
    if clean:
        env = {k: v for k, v in os.environ.items() if k in CLEAN_ENV_KEEP or k.startswith("LC_")}
    else:
        env = {k: v for k, v in os.environ.items() if k != "EVLOG_TOKEN" and k not in HANDLER_VARS}
    env["EVLOG_DIR"] = where if "://" in where else str(Path(where).resolve())
    if group is not None:
        env["EVLOG_GROUP"] = group
    if hook is not None:
        env["EVLOG_HOOK"] = hook
    return env


def event_env(base: dict[str, str], rec: Record, attempt: int, extra: dict[str, str]) -> dict[str, str]:
    """The per-event variables of SPEC 6 replay (a null key or subject is left out)."""
    env = dict(base)
    env.update(EVLOG_OFFSET=str(rec.offset), EVLOG_ID=rec.id, EVLOG_TYPE=rec.type, EVLOG_SOURCE=rec.source,
               EVLOG_TIME=rec.time, EVLOG_ATTEMPT=str(attempt))
    if rec.key is not None:
        env["EVLOG_KEY"] = rec.key
    if rec.subject is not None:
        env["EVLOG_SUBJECT"] = rec.subject
    env.update(extra)
    return env


# What decoding a record that got past its checksum can raise (see framing.undecodable).
_UNDECODABLE = (UndecodableRecord, msgspec.MsgspecError, RecursionError, UnicodeDecodeError)


@dataclass
class _Task:
    first: int
    last: int
    frames: list[bytes]
    keys: frozenset[str]
    done: bool = False
    marker: bool = False   # only moves the position (events that did not match)
    end: int = 0           # the position once this task is done: past the records it covers


@dataclass
class _Result:
    task: _Task
    outcome: runner.Outcome | None   # None when stopped before it finished, or never started
    attempts: int
    error: EvlogError | None = None  # why the task could not be run at all: it stops the consumer




def _marker(end: int) -> _Task:
    """A finished place-holder that moves the position to `end` (events that did not match)."""
    return _Task(end - 1, end - 1, [], frozenset(), done=True, marker=True, end=end)


@dataclass
class _State:
    """A consumer's run: its tasks in log order, those not started, those running, results, the position."""

    position: int | None
    saved: int | None = None
    last_save: float = field(default_factory=time.monotonic)
    order: deque[_Task] = field(default_factory=deque)       # unfinished tasks and markers, in log order
    waiting: deque[_Task] = field(default_factory=deque)     # tasks not started yet, in log order
    running: dict[int, _Task] = field(default_factory=dict)
    done: queue.Queue[_Result] = field(default_factory=queue.Queue)
    feeding: bool = True
    feed_error: BaseException | None = None
    failure: BaseException | None = None


class Consumer:
    """One consumer of the log: a replay, a hook, or the replay of dead letters."""

    def __init__(self, log: EventLog, options: Options, flt: Filter | None = None, *, group: str | None = None,
                 hook: str | None = None, rng: Range | None = None, follow: bool = False,
                 progress: Callable[[Summary], None] | None = None,
                 out_fd: int = 1, err_fd: int = 2, report: Report = quiet) -> None:
        self.log, self.opts = log, options
        self.report = report
        self.select = (flt or Filter()).compile_chunk(log.codec)
        self.as_json = log.codec.json_lines
        self.group, self.hook = group, hook
        self.checkpoint_name = group if hook is None else f"hook.{hook}"
        self.rng = rng or Range()
        self.follow = follow
        self.progress = progress
        self.out_fd, self.err_fd = out_fd, err_fd
        self.types = list(flt.types) if flt is not None else []  # a NATS server filters these itself
        self.groups = groups_of(log)
        self.dead = dead_letters_of(log)
        self.stop = threading.Event()
        self.summary = Summary(dry_run=options.dry_run)
        self.base_env = self._base_env()
        self.cannot_start: HandlerCannotStart | None = None
        o = options
        self.containment = Containment(o.clean_env, dict(o.env), o.max_memory or None, o.timeout)

    # -- environment ---------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        return base_env(self.log.where, self.opts.clean_env, self.group, self.hook)

    def _env(self, task: _Task, rec: Record | None, attempt: int) -> dict[str, str]:
        if rec is None:
            env = dict(self.base_env)
            env.update(EVLOG_ATTEMPT=str(attempt), EVLOG_FIRST_OFFSET=str(task.first),
                       EVLOG_LAST_OFFSET=str(task.last), EVLOG_COUNT=str(len(task.frames)))
            env.update(self.opts.env)
            return env
        return event_env(self.base_env, rec, attempt, self.opts.env)

    def _prepare(self, task: _Task) -> tuple[bytes, Record | None]:
        """The handler's stdin and (one event per call) its record; raises UndecodableRecord naming the
        first record of the task that cannot be decoded."""
        codec = self.log.codec
        stdin = self.as_json(task.frames)  # decodes every record, except in a JSON Lines log
        if self.opts.batch > 1:
            if codec.name == "jsonl" and not block_ok(stdin):
                for frame in task.frames:  # text or nesting worth a closer look: decode each record
                    codec.record(frame)
            return stdin, None
        return stdin, codec.record(task.frames[0])

    # -- the source of events --------------------------------------------------------------

    def planned(self) -> int | None:
        """How many events this run goes through, when that is known before it starts: not following, no
        filter and no time bound; None otherwise (a progress bar then shows no total). After a key
        compaction the offsets of the range hold fewer events than this."""
        r = self.rng
        if self.follow or self.select is not None or self.types or r.since_us is not None \
                or r.until_us is not None:
            return None
        info = self.log.info()
        if info["last_offset"] is None:
            return 0
        first, end = info["first_offset"], info["last_offset"] + 1
        start = self.start_position()
        if start is None:
            start = r.start if r.start is not None else end - r.last if r.last is not None else first
        if r.to is not None:
            end = min(end, r.to + 1)
        start = max(start, first)
        if (start, end) == (first, info["last_offset"] + 1):
            return int(info["events"])  # the whole log: exact, whatever gaps it has
        return max(0, end - start)

    def start_position(self) -> int | None:
        if self.checkpoint_name is not None:
            saved = self.groups.get(self.checkpoint_name)
            if saved is not None:
                return saved
        return None

    def _start_ignored(self, position: int | None) -> None:
        """A group that has a position resumes there: a start given on the command line (--from, --since,
        --last) is ignored, and the user is told so, with the command that moves the group."""
        r = self.rng
        given = [f"--from {r.start}"] if r.start is not None else ["--since"] if r.since_us is not None else \
            [f"--last {r.last}"] if r.last is not None else []
        if given and self.group is not None:
            where = f"at offset {position}" if position is not None else "where it is"
            self.report("warning", f"group {self.group!r} resumes {where}: {given[0]} is ignored (to move the "
                        f"group: evlog groups reset {self.group} --to OFFSET)", group=self.group)

    def _feed(self, out: queue.Queue[Any]) -> None:
        """Feeder thread: (frames, end) items, each a task's matching frames (at most `batch`, maybe none)
        and the offset after the last record the item covers; then ("end", offset) or ("error", e)."""
        try:
            offset_of = self.log.codec.offset
            select = self.select
            batch = self.opts.batch
            saved = self.start_position()
            if saved is not None:
                self._start_ignored(saved)
            r = self.rng
            reader = self.log.reader(self.types)
            chunks = reader.chunks(r if saved is None else Range(start=saved, to=r.to, until_us=r.until_us))
            pending: list[bytes] = []

            def take(chunk: list[bytes], flush: bool) -> None:
                nonlocal pending
                error = None
                if select is None:
                    matched = chunk
                else:
                    matched, chunk, error = self._select(select, chunk)
                    flush = flush or error is not None  # deliver what comes before the record, then stop at it
                i = 0
                while len(pending) + len(matched) - i >= batch:
                    n = batch - len(pending)
                    pending.extend(matched[i:i + n])
                    i += n
                    out.put((pending, offset_of(pending[-1]) + 1))
                    pending = []
                pending.extend(matched[i:])
                if flush and pending:
                    out.put((pending, offset_of(pending[-1]) + 1))
                    pending = []
                if not pending and chunk:  # events that did not match still move the checkpoint
                    out.put(([], offset_of(chunk[-1]) + 1))
                if error is not None:
                    raise error

            for chunk in chunks:
                if self.stop.is_set():
                    return
                if chunk:
                    take(chunk, flush=False)
            if pending:
                out.put((pending, offset_of(pending[-1]) + 1))
                pending = []
            next_offset = max(reader.next_offset, saved or 0, r.start or 0)
            if self.follow and not r.bounded:
                for frames in self.log.follow(next_offset, self.types, self.stop, KeyboardInterrupt):
                    take(frames, flush=True)  # following: deliver what arrived
            out.put(("end", next_offset))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            out.put(("error", e))

    def _select(self, select: Callable[[list[bytes]], list[bytes]],
                chunk: list[bytes]) -> tuple[list[bytes], list[bytes], UndecodableRecord | None]:
        """(matching frames, frames looked at, error): the filter applied up to the first record it cannot
        decode, and the error naming that record's offset."""
        try:
            return select(chunk), chunk, None
        except _UNDECODABLE:
            pass
        for i, frame in enumerate(chunk):
            try:
                select([frame])
            except _UNDECODABLE as e:
                error = e if isinstance(e, UndecodableRecord) else undecodable(self.log.codec, frame, e)
                return select(chunk[:i]), chunk[:i], error
        return select(chunk), chunk, None  # pragma: no cover - the whole chunk failed, but no single frame

    # -- running -----------------------------------------------------------------------------

    def run(self) -> Summary:
        """Consume until the backlog is done (or, following, until stopped); returns the summary.

        A loop of steps: take events from the feeder while there is room, start the tasks that may
        start, collect finished ones, move the checkpoint over the finished prefix. A signal lets the
        running handlers finish (they stop at their timeout), saves the checkpoint and re-raises.
        """
        started = time.monotonic()
        feed: queue.Queue[Any] = queue.Queue(maxsize=64)
        threading.Thread(target=self._feed, args=(feed,), daemon=True, name="evlog-feeder").start()
        st = _State(position=self.start_position())
        st.saved = st.position
        pool = ThreadPoolExecutor(max_workers=self.opts.concurrency, thread_name_prefix="evlog-handler")
        interrupted: BaseException | None = None
        try:
            while True:
                self._take(feed, st)
                if not self.stop.is_set() and st.failure is None:
                    self._start_ready(st, pool)
                if not st.running and (not st.waiting and not st.feeding or self.stop.is_set()
                                       or st.failure is not None):
                    break
                self._collect(st, timeout=0.1)
                self._checkpoint(st)
                if self.progress is not None:
                    self.progress(self.summary)
        except BaseException as e:  # noqa: BLE001 - SIGINT/SIGTERM: finish what runs, save, re-raise
            interrupted = e
            self.stop.set()
            self._drain(st)
        finally:
            self.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self._checkpoint(st, force=True)
            self.summary.position = st.position
            self.summary.elapsed_s = time.monotonic() - started
        if interrupted is not None:
            raise interrupted
        if st.failure is not None:
            if isinstance(st.failure, HandlerCannotStart) and self._more_after(st.position):
                st.failure.exit_code = ExitCode.ERROR
            raise st.failure
        if st.feed_error is not None:
            raise st.feed_error
        return self.summary

    def _take(self, feed: queue.Queue[Any], st: _State) -> None:
        """Take items from the feeder while fewer than a few tasks wait: tasks, markers for skipped events,
        the end of the backlog, or the error that ends the feed (the events before it still go out)."""
        while st.feeding and not self.stop.is_set() and len(st.waiting) < self.opts.concurrency * 2 + 2:
            try:
                item = feed.get(timeout=0 if (st.running or st.waiting) else 0.1)
            except queue.Empty:
                return
            if isinstance(item[0], str):
                st.feeding = False
                if item[0] == "error":
                    st.feed_error = item[1]
                else:
                    st.order.append(_marker(item[1]))
                return
            frames, end = item
            if frames:
                try:
                    self._add_task(frames, end, st.order, st.waiting)
                except UndecodableRecord as e:
                    st.feeding, st.feed_error = False, e
                    return
            elif st.order and st.order[-1].marker:
                st.order[-1].end = end  # runs of skipped events share one marker
            else:
                st.order.append(_marker(end))

    def _collect(self, st: _State, timeout: float) -> None:
        """Account for the tasks that finished (waiting up to `timeout` for the first)."""
        if not st.running:
            return
        try:
            result = st.done.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            st.running.pop(id(result.task), None)
            err = self._finish(result)
            if err is not None and st.failure is None:
                st.failure = err
                self.stop.set()
            try:
                result = st.done.get_nowait()
            except queue.Empty:
                return

    def _checkpoint(self, st: _State, force: bool = False) -> None:
        """Move the position over the finished prefix; save it every CHECKPOINT_EVERY seconds (or now)."""
        while st.order and st.order[0].done:
            st.position = st.order.popleft().end
        if not self.checkpoint_name or self.opts.dry_run or st.position is None or st.position == st.saved:
            return
        if force or time.monotonic() - st.last_save >= CHECKPOINT_EVERY:
            self.groups.set(self.checkpoint_name, st.position)
            st.saved, st.last_save = st.position, time.monotonic()

    def _add_task(self, frames: list[bytes], end: int, order: deque[_Task], waiting: deque[_Task]) -> None:
        codec = self.log.codec
        keys: frozenset[str] = frozenset()
        if self.opts.concurrency > 1:  # keys only matter when tasks may run side by side
            keys = frozenset(k for k in (codec.record(f).key for f in frames) if k is not None)
        offset_of = codec.offset
        task = _Task(offset_of(frames[0]), offset_of(frames[-1]), frames, keys, end=end)
        order.append(task)
        waiting.append(task)

    def _start_ready(self, st: _State, pool: ThreadPoolExecutor) -> None:
        """Start waiting tasks, in log order, while fewer than `concurrency` run; a task waits while an
        earlier unfinished one shares a key with it (a key's events run one at a time, in order)."""
        busy: set[str] = set()
        for t in st.running.values():
            busy |= t.keys
        blocked: set[str] = set()
        for task in list(st.waiting):
            if len(st.running) >= self.opts.concurrency:
                return
            if task.keys & busy or task.keys & blocked:
                blocked |= task.keys
                continue
            st.waiting.remove(task)
            st.running[id(task)] = task
            busy |= task.keys
            if self.opts.dry_run:
                st.done.put(self._dry_run(task))
            else:
                pool.submit(self._work, task, st.done)

    def _dry_run(self, task: _Task) -> _Result:
        """A task not run: what its handler would get on stdin goes to out_fd (with list_dry_run)."""
        try:
            stdin, _ = self._prepare(task)
        except EvlogError as e:
            return _Result(task, None, 0, e)
        if self.opts.list_dry_run:
            runner._write_all(self.out_fd, stdin)
        return _Result(task, runner.Outcome(0, None, b"", 0.0), 0)

    def _work(self, task: _Task, done_q: queue.Queue[_Result]) -> None:
        """Worker thread: run the handler with retries; report the last outcome."""
        opts = self.opts
        attempt = 0
        outcome: runner.Outcome | None = None
        error: EvlogError | None = None
        try:
            stdin, rec = self._prepare(task)
            while True:
                attempt += 1
                outcome = runner.run(opts.command, stdin, self._env(task, rec, attempt), opts.timeout,
                                     opts.max_memory, out_fd=self.out_fd, err_fd=self.err_fd)
                if outcome.ok or outcome.exit_code == runner.EX_DATAERR or attempt > opts.retries:
                    break
                delay = min(opts.max_backoff, opts.backoff * 2 ** min(attempt - 1, 64))  # 2**1024: no float
                delay *= 0.5 + random.random() / 2  # jitter: spread retries of many consumers
                if self.stop.wait(delay):
                    outcome = None  # stopping: not finished, will be delivered again
                    break
        except EvlogError as e:  # a record that cannot be decoded: never run, never counted
            error = e
        finally:
            done_q.put(_Result(task, outcome, attempt, error))

    def _finish(self, result: _Result) -> BaseException | None:
        """Account for a finished task; returns an error that must stop the consumer."""
        task, outcome = result.task, result.outcome
        if result.error is not None:
            return result.error  # unfinished: the checkpoint stays before it
        if outcome is None:
            return None  # interrupted: stays unfinished, so the checkpoint stays before it
        if not outcome.started and self.cannot_start is not None:
            return None  # one dead letter says it already: this one stays unfinished, for the next run
        n = len(task.frames)
        self.summary.events += n
        if self.opts.dry_run:
            self.summary.dry_run = True
            self.summary.calls += 1
            task.done = True
            return None
        self.summary.retries += max(0, result.attempts - 1)
        if outcome.ok:
            self.summary.succeeded += n
            task.done = True
            return None
        what = f"event {task.first}" if n == 1 else f"events {task.first}..{task.last}"
        if self.opts.on_failure == "stop":
            return HandlerStopped(f"handler failed on {what} ({outcome.error}); stopped without advancing "
                                  "past it")
        try:
            for frame in task.frames:
                self.dead.add(group=self.group, hook=self.hook, command=self.opts.command,
                              attempts=result.attempts, exit_code=outcome.exit_code, error=outcome.error or "failed",
                              stderr=outcome.stderr_tail, event=self._event(frame), containment=self.containment)
        except (DeadLetterFull, UndecodableRecord) as e:
            self.summary.events -= n
            return e
        self.summary.dead_lettered += n
        task.done = True
        if not outcome.started:
            self.cannot_start = HandlerCannotStart(outcome.error or "cannot start", what)
            return self.cannot_start
        who = f"hook {self.hook}: " if self.hook else ""
        self.report("warning", f"{who}{what} dead-lettered after {count(result.attempts, 'attempt')}: {outcome.error}",
                    **({"hook": self.hook} if self.hook else {}))
        return None

    def _more_after(self, position: int | None) -> bool:
        """Whether an event at or after `position` is still to be delivered (as far as the range goes)."""
        if self.follow:
            return True
        r = self.rng
        reader = self.log.reader(self.types)
        chunks = reader.chunks(r if position is None else Range(start=position, to=r.to, until_us=r.until_us))
        for chunk in chunks:
            if chunk and (self.select is None or self._select(self.select, chunk)[0]):
                return True
        return False

    def _event(self, frame: bytes) -> Any:
        """The record as a dead-letter entry holds it."""
        try:
            return msgspec.json.decode(self.log.codec.json(frame))
        except _UNDECODABLE as e:
            raise e if isinstance(e, UndecodableRecord) else undecodable(self.log.codec, frame, e) from None

    def _drain(self, st: _State) -> None:
        """After a stop: let running handlers finish (they stop at their timeout) and account for them."""
        while st.running:
            try:
                result = st.done.get(timeout=0.1)
            except queue.Empty:
                continue
            except BaseException:  # noqa: BLE001 - a second signal: keep waiting, handlers are bounded
                continue
            st.running.pop(id(result.task), None)
            self._finish(result)


def run_consumers(consumers: list[Consumer]) -> tuple[list[Summary], list[tuple[Consumer, BaseException]]]:
    """Run independent consumers side by side (a thread each) until all finish; a signal stops all (each
    lets its running handlers finish and saves its checkpoint) and is raised again."""
    with ThreadPoolExecutor(max_workers=max(1, len(consumers)), thread_name_prefix="evlog-consumer") as pool:
        futures = [pool.submit(c.run) for c in consumers]
        try:
            _wait_all(futures)
        except BaseException:
            for c in consumers:
                c.stop.set()
            while True:
                try:
                    _wait_all(futures)
                    break
                except BaseException:  # noqa: BLE001 - a second signal: still let handlers finish
                    continue
            raise
    summaries, errors = [], []
    for c, f in zip(consumers, futures, strict=True):
        e = f.exception()
        summaries.append(c.summary if e is not None else f.result())
        if e is not None:
            errors.append((c, e))
    return summaries, errors


def _wait_all(futures: list[Future[Summary]]) -> None:
    """Wait until every future is done, in short waits so that the main thread still sees signals."""
    while not all(f.done() for f in futures):
        wait(futures, timeout=0.2)


@dataclass
class RetryReport:
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def retry_dead_letters(log: EventLog, chosen: Callable[[dict[str, Any]], bool], command: list[str] | None,
                       timeout: float | None = None) -> RetryReport:
    """Run each chosen entry's handler again (or `command`), contained as its failed run was (its timeout
    unless `timeout` is given; 30s for entries that kept none); drop the entries that now succeed."""
    dead = dead_letters_of(log)
    report = RetryReport()
    updates: dict[int, dict[str, Any]] = {}
    for entry in dead.entries():
        if not chosen(entry):
            continue
        argv = command or entry.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise EvlogError(f"dead letter {entry.get('dlq_id')} has no command; give one after --")
        rec = msgspec.convert(entry["event"], Record)
        attempts = int(entry.get("attempts") or 0) + 1
        c = msgspec.convert(entry.get("containment") or {}, Containment)
        env = event_env(base_env(log.where, c.clean_env, entry.get("group"), entry.get("hook")), rec, attempts, c.env)
        seconds = timeout if timeout is not None else c.timeout if c.timeout is not None else 30.0
        outcome = runner.run(argv, msgspec.json.encode(entry["event"]) + b"\n", env, seconds, c.max_memory)
        if outcome.ok:
            report.succeeded.append(entry["dlq_id"])
        else:
            report.failed.append(entry["dlq_id"])
            updates[entry["dlq_id"]] = {
                "attempts": attempts, "exit_code": outcome.exit_code, "error": outcome.error,
                "stderr": outcome.stderr_tail.decode("utf-8", "replace"), "command": argv}
    done = set(report.succeeded)

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for e in entries:
            if e.get("dlq_id") in done:
                continue
            kept.append({**e, **updates.get(e.get("dlq_id"), {})})  # type: ignore[arg-type]
        return kept

    if report.succeeded or report.failed:
        dead.rewrite(change)
    return report
