"""Input for `append --batch` and `--stream`: JSON Lines validated line by line, and the spool (evlog.ingest.spool)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading

import pytest
from engine_helpers import FORMATS, make_log, records, validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evlog.errors import ExitCode, InvalidEvent, InvalidLine
from evlog.ingest import spool as ingest
from evlog.ingest.spool import Spool, lines, read_batch
from evlog.store.writer import open_writer


def new_spool(log, memory_limit: int | None = None) -> Spool:
    """A spool for the log's items (the constructor takes the codec in newer versions)."""
    kwargs = {} if memory_limit is None else {"memory_limit": memory_limit}
    if "codec" in inspect.signature(Spool).parameters:
        return Spool(log.dir, log.codec, **kwargs)
    return Spool(log.dir, **kwargs)


def input_fd(tmp_path, data: bytes, name: str = "input") -> int:
    path = tmp_path / name
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def batch(log, tmp_path, data: bytes, memory_limit: int | None = None) -> Spool:
    fd = input_fd(tmp_path, data)
    try:
        return read_batch(fd, validator(log), new_spool(log, memory_limit))
    finally:
        os.close(fd)


def append_spool(log, spool) -> None:
    try:
        with open_writer(log) as w:
            w.append(spool)
    finally:
        spool.close()


def jsonl(*events) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@pytest.fixture(params=FORMATS)
def log(request, tmp_path):
    return make_log(tmp_path / "log", request.param, segment_bytes=4096, max_event_bytes=4096)


# -- lines -------------------------------------------------------------------------------------------


def test_lines_yields_every_line_including_an_unterminated_last_one(tmp_path):
    """lines() gives each input line without its newline, blank ones too, and a final line without newline."""
    fd = input_fd(tmp_path, b"a\nbb\n\nccc")
    try:
        got = [x for group in lines(fd) for x in group]
    finally:
        os.close(fd)
    assert got == [b"a", b"bb", b"", b"ccc"]


def test_lines_rejoins_lines_split_across_reads(tmp_path):
    """Lines longer than one read, and lines straddling reads, come out whole."""
    content = b"".join(b"%d:%s\n" % (i, b"x" * (i * 9973 % 300_000)) for i in range(40))
    fd = input_fd(tmp_path, content)
    try:
        groups = list(lines(fd))
    finally:
        os.close(fd)
    assert len(groups) > 1
    assert [x for g in groups for x in g] == content.split(b"\n")[:-1]


def test_lines_yields_what_arrived_together_from_a_pipe():
    """From a pipe, lines() yields a group as soon as complete lines arrive, without waiting for EOF."""
    r, w = os.pipe()
    got = []
    seen_first = threading.Event()

    def consume():
        for group in lines(r):
            got.append(group)
            seen_first.set()

    t = threading.Thread(target=consume)
    t.start()
    try:
        os.write(w, b"one\ntwo\nthr")
        assert seen_first.wait(10), "the first complete lines were not yielded before EOF"
        assert got == [[b"one", b"two"]]
        os.write(w, b"ee\n")
    finally:
        os.close(w)
        t.join(10)
        os.close(r)
    assert [x for g in got for x in g] == [b"one", b"two", b"three"]


# -- read_batch -----------------------------------------------------------------------------------------


def test_a_valid_batch_is_spooled_in_order_and_appended(log, tmp_path):
    """Every line of a valid batch (events, CloudEvents, read output; blank lines skipped) is appended in order."""
    data = (jsonl({"type": "a", "data": 1}) + b"\n   \n" +
            jsonl({"specversion": "1.0", "id": "ce", "source": "s", "type": "b", "partitionkey": "pk", "data": 2},
                  {"offset": 99, "id": "rid", "time": "2020-01-01T00:00:00.000000Z", "type": "c", "source": "s",
                   "subject": None, "key": None, "data": 3}) + b'{"type":"d","data":4}')
    spool = batch(log, tmp_path, data)
    assert len(spool) == 4
    append_spool(log, spool)
    got = records(log)
    assert [(r.offset, r.type, r.data) for r in got] == [(0, "a", 1), (1, "b", 2), (2, "c", 3), (3, "d", 4)]
    assert (got[1].id, got[1].key) == ("ce", "pk")
    assert got[2].id == "rid"


def test_an_empty_batch_is_not_an_error(log, tmp_path):
    """No lines, or only blank ones, make an empty spool."""
    assert len(batch(log, tmp_path, b"")) == 0
    assert len(batch(log, tmp_path, b"\n\n  \n")) == 0


def test_the_first_bad_line_is_named_and_the_others_counted(log, tmp_path):
    """InvalidLine names the first bad line (blank lines count) with its reason, and counts the other bad lines."""
    data = (jsonl({"type": "ok"}) + b"\n" + jsonl({"type": "bad type"}, {"type": "ok"}) + b"{broken\n" +
            jsonl({"type": "ok", "key": 5}, {"type": "ok"}))
    with pytest.raises(InvalidLine) as err:
        batch(log, tmp_path, data)
    e = err.value
    assert (e.line, e.others) == (3, 2)
    assert "whitespace" in e.reason
    assert str(e).startswith("line 3: ")
    assert "2 more invalid lines" in str(e)
    assert isinstance(e, InvalidEvent) and e.exit_code == ExitCode.INVALID_INPUT


def test_a_single_bad_line_has_no_count_of_others(log, tmp_path):
    """With one bad line, the message names it and mentions no others."""
    with pytest.raises(InvalidLine) as err:
        batch(log, tmp_path, jsonl({"type": "a"}, {"nope": 1}))
    assert (err.value.line, err.value.others) == (2, 0)
    assert "more invalid" not in str(err.value)
    assert "type" in err.value.reason


def test_line_numbers_stay_right_in_a_large_batch(log, tmp_path):
    """In input spanning many reads, the bad line's number counts every line before it."""
    good = json.dumps({"type": "bulk", "key": "k", "data": {"pad": "p" * 200}}).encode() + b"\n"
    n = (3 * ingest.READ_SIZE) // len(good)
    data = good * n + b"\n" + json.dumps({"type": "bulk", "key": 7}).encode() + b"\n" + good * 10 + b"[]\n"
    with pytest.raises(InvalidLine) as err:
        batch(log, tmp_path, data)
    assert (err.value.line, err.value.others) == (n + 2, 1)
    assert "key" in err.value.reason


def test_an_invalid_batch_appends_nothing(log, tmp_path):
    """When a batch has a bad line, the log is left exactly as it was."""
    append_spool(log, batch(log, tmp_path, jsonl({"type": "before"})))
    before = [s.path.read_bytes() for s in log.segments()]
    with pytest.raises(InvalidLine):
        batch(log, tmp_path, jsonl(*[{"type": "x", "data": i} for i in range(100)]) + b"{oops\n")
    assert [s.path.read_bytes() for s in log.segments()] == before


text = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=4)
event_st = st.fixed_dictionaries(
    {"type": st.sampled_from(["a", "a.b", 'q"t', "z\\w"])},
    optional={
        "data": st.none() | st.integers(-5, 5) | st.text(max_size=8) | st.lists(st.booleans(), max_size=3),
        "key": st.none() | text,
        "subject": st.none() | text,
        "source": st.sampled_from([None, "", "src"]) | text,
        "id": text.filter(bool),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event_st, min_size=1, max_size=12), fmt=st.sampled_from(FORMATS))
def test_a_batch_stores_what_one_line_at_a_time_stores(tmp_path_factory, events, fmt):
    """Appending lines as a batch gives the same records as validating each line on its own."""
    base = tmp_path_factory.mktemp("same")
    ids = [e.get("id") for e in events]
    events = [e for i, e in enumerate(events) if e.get("id") is None or e["id"] not in ids[:i]]
    ids = [e.get("id") for e in events]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    one = make_log(base / "one", fmt)
    (base / "in").write_bytes(payload)
    fd = os.open(base / "in", os.O_RDONLY)
    try:
        append_spool(one, read_batch(fd, validator(one), new_spool(one)))
    finally:
        os.close(fd)
    other = make_log(base / "other", fmt)
    with open_writer(other) as w:
        w.append([validator(other).from_line(line) for line in payload.splitlines()])

    def fields(log):
        return [(r.type, r.source, r.subject, r.key, r.data, r.id if ids[i] is not None else None)
                for i, r in enumerate(records(log))]

    assert fields(one) == fields(other)


def test_identical_lines_give_identical_records(log, tmp_path):
    """The same input line twice in a batch is stored twice the same way (empty strings included)."""
    line = json.dumps({"type": "t", "source": "", "subject": "", "key": ""}).encode() + b"\n"
    append_spool(log, batch(log, tmp_path, line * 3))
    got = {(r.source, r.subject, r.key) for r in records(log)}
    assert len(got) == 1


# -- the spool -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_ids", [False, True])
def test_spool_spills_past_its_memory_limit_and_keeps_the_order(log, with_ids):
    """Past its memory limit the spool moves items to a temporary file, and iterates all of them in input order."""
    make = validator(log).from_line
    items = [make(json.dumps({"type": "s", "data": {"i": i, "pad": "x" * (i % 37)},
                              **({"id": f"id-{i}"} if with_ids else {})}).encode()) for i in range(500)]
    spool = new_spool(log, memory_limit=1000)
    for it in items:
        spool.extend([it])
    try:
        assert spool.file is not None  # spilled to disk
        assert len(spool) == 500
        assert list(spool) == items
        assert list(spool) == items  # iterating twice gives the same
        assert not [n for n in os.listdir(log.dir) if n.startswith(".batch-")]  # the temporary file is unlinked
    finally:
        spool.close()


def test_the_spool_counts_what_its_items_cost_in_memory(log):
    """Many small events: what the spool holds in memory, Python's objects and list slots included, stays
    within its limit (plus the group being added), not just the events' own bytes."""
    limit = 64 << 10
    spool = new_spool(log, memory_limit=limit)
    group = [b"x"] * 500
    group_cost = sum(map(sys.getsizeof, group)) + 8 * len(group)
    try:
        for _ in range(200):
            spool.extend(list(group))
            held = sum(map(sys.getsizeof, spool.items)) + 8 * len(spool.items)
            assert held <= limit + group_cost
        assert spool.file is not None
        assert len(spool) == 100_000
    finally:
        spool.close()


@pytest.mark.slow
def test_a_large_batch_peaks_under_its_memory_bound(tmp_path):
    """SPEC 8: `append --batch` memory is bounded by its settings, not its input. 1,500,000 events (~200 MB)
    peak well under 200 MiB of RSS (measured by a parent whose only child is evlog)."""
    src = tmp_path / "events.jsonl"
    with open(src, "w") as f:
        for start in range(0, 1_500_000, 50_000):
            f.write("".join(f'{{"type":"order.created","key":"cust-{i % 9973}","data":{{"order":"o-{i:08d}",'
                            f'"qty":{i % 7},"total":{i % 1000}.5,"note":"{"n" * (i % 40)}"}}}}\n'
                            for i in range(start, start + 50_000)))
    probe = ("import resource, subprocess, sys\n"
             "with open(sys.argv[1], 'rb') as f:\n"
             "    rc = subprocess.run([sys.executable, '-m', 'evlog', '-d', sys.argv[2], 'append', '--batch'],"
             " stdin=f, stdout=subprocess.DEVNULL).returncode\n"
             "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(src), str(tmp_path / "log")], capture_output=True,
                         text=True, check=True, timeout=600).stdout.split()
    assert out[0] == "0"
    assert int(out[1]) < 200 * 1024, f"peak RSS {int(out[1]) // 1024} MiB"


def test_a_spilled_batch_appends_every_event_in_order(log, tmp_path):
    """A batch far larger than the spool's memory limit is appended whole, in input order."""
    data = jsonl(*[{"type": "big", "key": f"k{i % 5}", "data": {"i": i}} for i in range(400)])
    spool = batch(log, tmp_path, data, memory_limit=512)
    assert len(spool) == 400
    append_spool(log, spool)
    got = records(log)
    assert [r.data["i"] for r in got] == list(range(400))
    assert [r.offset for r in got] == list(range(400))


def test_a_spool_under_its_limit_stays_in_memory(log):
    """A small batch never touches the disk."""
    spool = new_spool(log)
    spool.extend([validator(log).from_line(b'{"type":"t"}')])
    assert spool.file is None and len(spool) == 1
    spool.close()


@pytest.mark.parametrize("mode", ["always", "batch"])
def test_a_stream_syncs_every_group_or_only_before_it_waits(tmp_path, monkeypatch, mode):
    """With fsync = always every group commit of `append --stream` is synced; with batch, groups that arrive
    back to back share one sync, made before waiting for more input (here: once, at the end)."""
    import os as os_module

    from evlog.ingest import append as appending
    from evlog.store.reader import read_frames

    log = make_log(tmp_path / "log", "jsonl", segment_bytes=64 << 20, fsync=mode)
    line = b'{"type":"t","data":"' + b"x" * 1000 + b'"}\n'
    source = tmp_path / "input.jsonl"
    source.write_bytes(line * 5000)  # about 5 MB, all there at once: several reads, so several groups
    calls = []
    real_fsync = os_module.fsync
    monkeypatch.setattr(os_module, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    fd = os_module.open(source, os_module.O_RDONLY)
    try:
        assert appending.stream(appending.Target(str(log.dir)), fd, None).bad == 0
    finally:
        os_module.close(fd)
    assert len(list(read_frames(log))) == 5000
    if mode == "always":
        assert len(calls) >= 5
    else:
        assert 1 <= len(calls) <= 3  # the directory when the first segment is created; then the segment and the
        # directory once, at the end
