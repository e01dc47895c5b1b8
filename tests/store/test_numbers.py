"""Numbers at the edges of what JSON readers decode: a float beyond a double's range reads as infinity, an
integer with more digits than Python reads is refused when appended (SPEC 7: nothing stored breaks readers)."""

from __future__ import annotations

import json

import pytest
from conftest import Evlog, assert_one_error, parse_records


def test_a_float_out_of_range_is_kept_and_read_as_infinity(cli: Evlog) -> None:
    """A batch line with 1e400 is appended; every reader copes: json keeps the text, --where compares it
    as infinity, cloudevents and pretty render it, replay delivers it."""
    cli.batch('{"type":"big","data":{"x":1e400}}\n{"type":"small","data":{"x":1}}\n')
    assert '"x":1e400' in cli.ok("read", "--format", "json")
    assert [r["type"] for r in cli.records("--where", "data.x > 1000000")] == ["big"]
    assert len(cli.ok("read", "--format", "cloudevents").splitlines()) == 2
    assert cli.ok("read", "--format", "pretty").count("\n") == 2
    out = cli.ok("replay", "--json", "--", "sh", "-c", "cat > /dev/null")
    assert json.loads(out)["succeeded"] == 2


@pytest.mark.parametrize("how", ["batch", "data", "field"])
def test_an_integer_python_cannot_read_is_invalid_input(cli: Evlog, how: str) -> None:
    """An integer of more than 4,300 digits is refused (exit 4), however it comes in."""
    big = "7" * 4301
    cli.ok("init")
    if how == "batch":
        r = cli("append", "--batch", input='{"type":"ok"}\n{"type":"t","data":{"n":' + big + '}}\n')
        assert_one_error(r, 4, "line 2")
    elif how == "data":
        assert_one_error(cli("append", "t", "--data", '{"n":' + big + '}'), 4)
    else:
        assert_one_error(cli("append", "t", f"n:={big}"), 4)
    assert cli.ok("read") == ""
    assert cli("append", "--batch", input='{"type":"t","data":{"n":' + "7" * 4300 + '}}\n').rc == 0


def test_a_stored_integer_readers_cannot_decode_stops_them_cleanly(cli: Evlog) -> None:
    """A record holding such an integer (written by an older version) stops `read --where`, cloudevents and
    replay with exit 5 naming its offset, never an internal error."""
    cli.ok("append", "ok")
    seg = next((cli.dir / "segments").glob("*.jsonl"))
    import zlib
    body = b'{"offset":1,"id":"x","time":"2030-01-01T00:00:00.000000Z","type":"t","source":"s","subject":null,' \
           b'"key":null,"data":' + b"9" * 5000
    with open(seg, "ab") as f:
        f.write(body + b',"crc32":"%08x"}\n' % zlib.crc32(body))
    for args in (["read", "--where", "data > 1"], ["read", "--format", "cloudevents"],
                 ["replay", "--", "true"]):
        r = cli(*args)
        assert r.rc == 5, (args, r)
        assert "offset 1" in r.err
    assert len(parse_records(cli.ok("read", "--to", "0"))) == 1
