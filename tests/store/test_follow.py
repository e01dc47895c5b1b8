"""Follow mode (SPEC 6): `read -f` and `tail -f` print new events from any process, once each, in order."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import TRACEBACK, Evlog, Spawner, parse_records, wait_until


def offsets_of(lines: list[str]) -> list[int]:
    return [r["offset"] for r in parse_records("\n".join(lines))]


def test_read_follow_prints_the_backlog_then_new_events(cli: Evlog, spawn: Spawner) -> None:
    """`read -f` prints the existing events, then those appended later by another process."""
    cli.batch([{"type": "old", "data": i} for i in range(3)])
    follower = spawn("read", "-f", "--format", "json")
    assert offsets_of(follower.wait_lines(3)) == [0, 1, 2]
    cli.ok("append", "new", "n:=1")
    cli.batch([{"type": "new", "data": {"n": 2}}, {"type": "new", "data": {"n": 3}}])
    recs = parse_records("\n".join(follower.wait_lines(6)))
    assert recs == cli.records()
    assert [(r["offset"], r["type"]) for r in recs] == [(0, "old"), (1, "old"), (2, "old"), (3, "new"), (4, "new"),
                                                        (5, "new")]
    assert follower.poll() is None, "the follower stopped"


def test_read_follow_from_an_offset_on_an_empty_log(cli: Evlog, spawn: Spawner) -> None:
    """`read -f` on an empty log waits, and `read -f --from K` starts at K."""
    cli.ok("init")
    everything = spawn("read", "-f", "--format", "json")
    later = spawn("read", "-f", "--from", 2, "--format", "json")
    for i in range(4):
        cli.ok("append", "t", f"i:={i}")
    assert offsets_of(everything.wait_lines(4)) == [0, 1, 2, 3]
    assert offsets_of(later.wait_lines(2)) == [2, 3]
    cli.ok("append", "t", "i:=4")
    assert offsets_of(later.wait_lines(3)) == [2, 3, 4]
    assert offsets_of(everything.wait_lines(5)) == [0, 1, 2, 3, 4]


def test_follow_filters_apply_to_new_events(cli: Evlog, spawn: Spawner) -> None:
    """Filters given with `-f` select among new events too."""
    cli.batch([{"type": "order.created", "data": {"n": 1}}, {"type": "user.created", "data": {"n": 9}}])
    follower = spawn("read", "-f", "--type", "order.*", "--where", "data.n > 2 or data.last == true",
                     "--format", "json")
    cli.batch([{"type": "order.created", "data": {"n": 5}},      # 2: matches
               {"type": "order.created", "data": {"n": 1}},      # 3: data.n too small
               {"type": "user.created", "data": {"n": 7}},       # 4: wrong type
               {"type": "order.paid.v2", "data": {"n": 8}}])     # 5: `*` is one token
    cli.ok("append", "order.paid", "n:=3")                       # 6: matches
    cli.ok("append", "order.done", "last:=true")                 # 7: matches: the sentinel
    lines = follower.wait_lines(3)
    assert offsets_of(lines) == [2, 6, 7]  # everything before the sentinel has been seen: nothing else matched


def test_tail_follow_prints_the_last_n_then_new_ones(cli: Evlog, spawn: Spawner) -> None:
    """`tail -n 2 -f` prints the last two events, then new ones as they are appended."""
    cli.batch([{"type": "t", "data": i} for i in range(5)])
    follower = spawn("tail", "-n", 2, "-f", "--format", "json")
    assert offsets_of(follower.wait_lines(2)) == [3, 4]
    cli.ok("append", "t", "--data", "5")
    cli.ok("append", "t", "--data", "6")
    assert offsets_of(follower.wait_lines(4)) == [3, 4, 5, 6]


def test_tail_follow_with_a_filter(cli: Evlog, spawn: Spawner) -> None:
    """`tail -n 1 -f --key K` prints the last matching event, then new matching ones only."""
    cli.batch([{"type": "t", "key": k, "data": i} for i, k in enumerate("ababa")])
    follower = spawn("tail", "-n", 1, "-f", "--key", "b", "--format", "json")
    assert offsets_of(follower.wait_lines(1)) == [3]
    cli.batch([{"type": "t", "key": "a"}, {"type": "t", "key": "b"}, {"type": "t", "key": "a"}])
    cli.ok("append", "t", "--key", "b")
    assert offsets_of(follower.wait_lines(3)) == [3, 6, 8]


@pytest.mark.parametrize("fmt", ["jsonl", pytest.param("msgpack", marks=pytest.mark.slow)])
def test_follow_survives_segment_rolls(cli: Evlog, spawn: Spawner, fmt: str) -> None:
    """Across many 1KiB segment rolls a follower prints every event exactly once, in order."""
    cli.ok("init", "--format", fmt, "--segment-bytes", "1KiB")
    cli.ok("append", "first")
    follower = spawn("read", "-f", "--format", "json")
    tailer = spawn("tail", "-n", 1, "-f", "--format", "json")
    follower.wait_lines(1)
    tailer.wait_lines(1)
    cli.batch([{"type": "roll.batch", "data": {"i": i, "pad": "p" * 200}} for i in range(50)])
    assert offsets_of(follower.wait_lines(51)) == list(range(51))
    for i in range(50):
        cli.ok("append", "roll.one", "--data", json.dumps({"i": i, "pad": "q" * 200}))
    want = cli.records()
    assert len(want) == 101
    assert len(list((cli.dir / "segments").glob(f"*.{fmt}"))) > 20
    assert parse_records("\n".join(follower.wait_lines(101))) == want
    assert parse_records("\n".join(tailer.wait_lines(101))) == want
    # Nothing is printed twice, even later: one more event is the 102nd line of each.
    cli.ok("append", "sentinel")
    assert offsets_of(follower.wait_lines(102)) == list(range(102))
    assert offsets_of(tailer.wait_lines(102)) == list(range(102))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", [["read", "-f"], ["tail", "-f"]], ids=["read", "tail"])
def test_follow_stops_cleanly_on_signals(cli: Evlog, spawn: Spawner, sig: int, code: int,
                                         command: list[str]) -> None:
    """SIGINT stops a follower with exit 130 and SIGTERM with 143, without a traceback."""
    cli.ok("append", "t")
    follower = spawn(*command, "--format", "json")
    follower.wait_lines(1)
    cli.ok("append", "t")
    follower.wait_lines(2)  # it is following now
    follower.signal(sig)
    assert follower.wait() == code
    err = follower.stderr()
    assert TRACEBACK not in err, err
    assert "evlog: error" not in err, err


def test_follow_ends_quietly_when_stdout_closes(cli: Evlog, spawn: Spawner) -> None:
    """A follower whose stdout pipe is closed ends quietly at its next write."""
    cli.ok("append", "t")
    proc = spawn("read", "-f", "--format", "json", stdout=subprocess.PIPE, stderr=subprocess.PIPE, collect=False)
    assert proc.popen.stdout is not None and proc.popen.stderr is not None
    assert json.loads(proc.popen.stdout.readline())["offset"] == 0
    proc.popen.stdout.close()
    cli.ok("append", "t")
    wait_until(lambda: proc.poll() is not None, message="the follower kept running after its reader went away")
    err = proc.popen.stderr.read().decode()
    assert err == "", err
    assert proc.poll() in (0, 128 + signal.SIGPIPE, -signal.SIGPIPE), proc.poll()


def test_a_poll_hands_over_a_bounded_number_of_bytes(tmp_path) -> None:
    """One poll returns at most about POLL_BYTES of a huge commit (memory stays bounded); the next polls
    return the rest, each record once and in order."""
    from engine_helpers import append_n, make_log

    from evlog.store import follow

    log = make_log(tmp_path / "log", "jsonl", segment_bytes=64 << 20)
    append_n(log, 3000, payload="z" * 1000)  # about 3 MiB
    follower = follow.Follower(log, 0)
    got: list[int] = []
    polls = 0
    while True:
        frames = follower.poll(max_bytes=256 << 10)
        polls += 1
        assert sum(map(len, frames)) <= (256 << 10) + (1 << 20) + 2048  # the limit, plus one read chunk
        got += [log.codec.offset(f) for f in frames]
        if not follower.more:
            break
    follower.close()
    assert got == list(range(3000))
    assert polls >= 3
