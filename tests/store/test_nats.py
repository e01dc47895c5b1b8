"""The NATS backend's append path (evlog.store.nats) against a real single-node JetStream server.

What a local log gets from its commit marker, a NATS log gets from atomic batch
publish in chunks and from ids the server deduplicates: these tests hold the
chunking, the rerun after a partial batch, validation before anything is
published, and the time rule on import.
"""

from __future__ import annotations

import json

import pytest
from conftest import Evlog, assert_one_error
from nats_helpers import NatsServer, stream_log

from evlog.ingest.event import Validator
from evlog.store.framing import CODECS
from evlog.store.nats import ATOMIC_BATCH, NatsLog


@pytest.fixture
def log(nats_server: NatsServer):
    with stream_log(nats_server, "chunks") as log:
        yield log


def items(n: int, start: int = 0, **extra: object) -> list[bytes]:
    v = Validator(CODECS["jsonl"], 1 << 20, "test", subject_types=True)
    return [v.from_line(json.dumps({"type": "t.x", "id": f"id-{i}", "data": {"i": i}, **extra}).encode())
            for i in range(start, start + n)]


def test_a_batch_larger_than_the_atomic_limit_gets_contiguous_offsets(log: NatsLog) -> None:
    n = 2 * ATOMIC_BATCH + 500
    result = log.append(items(n))
    assert (result.first, result.last, result.count, result.duplicates) == (0, n - 1, n, 0)
    offsets = [json.loads(f)["offset"] for chunk in log.reader().chunks() for f in chunk]
    assert offsets == list(range(n))


def test_a_rerun_after_a_partial_batch_adds_exactly_what_is_missing(log: NatsLog) -> None:
    """The first chunks of a batch that failed part way are stored; the same input again, within the
    duplicate window, adds only the rest, in order and without a gap."""
    n, stored = 2 * ATOMIC_BATCH + 300, ATOMIC_BATCH + 200
    log.append(items(stored))
    result = log.append(items(n))
    assert (result.count, result.duplicates, result.first, result.last) == (n - stored, stored, stored, n - 1)
    records = [json.loads(f) for chunk in log.reader().chunks() for f in chunk]
    assert [r["id"] for r in records] == [f"id-{i}" for i in range(n)]
    assert [r["offset"] for r in records] == list(range(n))


def test_import_times_are_kept_or_raised_never_backwards(log: NatsLog) -> None:
    log.append(items(3, time="2026-01-01T00:00:10Z"))
    result = log.append(items(2, start=3, time="2026-01-01T00:00:05Z"))
    assert result.raised == 2
    times = [json.loads(f)["time"] for chunk in log.reader().chunks() for f in chunk]
    assert times == ["2026-01-01T00:00:10.000000Z"] * 5


def test_a_bad_line_late_in_a_large_batch_writes_nothing(cli: Evlog, nats_server: NatsServer) -> None:
    """All or nothing holds for the input as a whole: every line is checked before the first chunk is
    published, including the NATS-only rule on types (no empty tokens)."""
    url = f"{nats_server.url}/late"
    lines = [json.dumps({"type": "ok.type", "data": i}) for i in range(2500)]
    lines[2400] = json.dumps({"type": "bad..type"})
    assert_one_error(cli("-d", url, "append", "--batch", input="\n".join(lines) + "\n"), 4, "line 2401",
                     "empty tokens")
    cli.ok("-d", url, "init")  # the failed batch created no stream either
    assert cli.ok("-d", url, "read", "--format", "json") == ""


@pytest.mark.parametrize(("types", "subjects"), [
    (["a.*"], ["chunks.a.*"]), (["a.b", "c.>"], ["chunks.a.b", "chunks.c.>"]), ([], ["chunks.>"])])
def test_type_patterns_are_the_consumers_filter_subjects(log: NatsLog, types: list[str], subjects: list[str]) -> None:
    """`--type` is evaluated by the server: a reader's consumer filters by the type patterns as subjects."""
    sub = log._call(log.consume(1, types))
    try:
        config = log._call(sub.consumer_info()).config
        assert (config.filter_subjects or [config.filter_subject]) == subjects
    finally:
        log._call(sub.unsubscribe())


@pytest.mark.parametrize(("id_", "why"), [
    ("a\nb", "line breaks"), ("a\r\nNats-Expected-Last-Sequence: 1", "line breaks"), (" padded", "whitespace"),
    ("padded\t", "whitespace")])
def test_an_id_that_cannot_be_a_message_header_is_invalid_input(cli: Evlog, nats_server: NatsServer, id_: str,
                                                                why: str) -> None:
    """An id travels as the Nats-Msg-Id header: a line break would end it (or add headers of the caller's
    choosing), and whitespace at its ends would not come back. Refused, single or in a batch, before
    anything is published."""
    url = f"{nats_server.url}/ids"
    cli.ok("-d", url, "init")
    assert_one_error(cli("-d", url, "append", "a.b", "--id", id_), 4, why)
    lines = json.dumps({"type": "a.b", "id": "fine"}) + "\n" + json.dumps({"type": "a.b", "id": id_}) + "\n"
    assert_one_error(cli("-d", url, "append", "--batch", input=lines), 4, "line 2", why)
    assert cli.ok("-d", url, "read", "--format", "json") == ""
