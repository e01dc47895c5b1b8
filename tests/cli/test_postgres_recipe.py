"""The README's "Into a database" recipe, run as written against a real PostgreSQL.

The recipe is read from the README (the sh block under "### Into a database"),
so the text a user copies is the text tested. It needs PostgreSQL's initdb,
pg_ctl and psql; where they are not installed the test is skipped with that
reason (the recipe is "tested where available"). PostgreSQL refuses to run as
root: as root, the server runs as the `postgres` user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats_helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("initdb", "pg_ctl", "psql")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


def recipe() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Into a database", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README: no sh block under 'Into a database'"
    return match.group(1)


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL on a Unix socket in a temporary directory; the environment psql needs."""
    bins = {name: _pg_bin(name) for name in TOOLS}
    missing = [name for name, path in bins.items() if path is None]
    if missing:
        pytest.skip(f"PostgreSQL is not installed here (no {', '.join(missing)})")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL cannot be started")
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="evlog-pg-"))
    if as_user:
        os.chown(home, user.pw_uid, user.pw_gid)
    data, port = home / "data", free_port()
    subprocess.run([*as_user, bins["initdb"], "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    options = f"-c listen_addresses='' -c unix_socket_directories='{home}' -p {port}"
    subprocess.run([*as_user, bins["pg_ctl"], "-D", str(data), "-o", options, "-w", "-t", "60",
                    "-l", str(home / "server.log"), "start"], check=True, capture_output=True, timeout=90)
    env = {"PGHOST": str(home), "PGPORT": str(port), "PGUSER": "postgres", "PGDATABASE": "postgres"}
    try:
        yield env
    finally:
        subprocess.run([*as_user, bins["pg_ctl"], "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def test_read_output_loads_into_jsonb_with_psql_copy(cli, tmp_path, postgres):
    """Every event arrives as one jsonb value, with strings that hold backslashes, quotes, tabs,
    commas and non-ASCII text intact."""
    tricky = ['back\\slash "quoted"', "tab\there, comma", "naïve ✓", "line\nbreak", "\\N"]
    lines = [json.dumps({"type": "order.created", "key": f"k{i}", "data": {"note": t, "n": i}})
             for i, t in enumerate(tricky)]
    lines += [json.dumps({"type": "order.paid", "data": {"n": i}}) for i in range(3)]
    cli.ok("append", "--batch", input="\n".join(lines) + "\n")
    psql = _pg_bin("psql")
    assert psql is not None
    env = {**os.environ, **postgres, "EVLOG_DIR": str(cli.dir), "PATH": f"{Path(psql).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"order\.created\s*\|\s*5", done.stdout) and re.search(r"order\.paid\s*\|\s*3", done.stdout)
    stored = subprocess.run([psql, "-At", "-c", "SELECT e::text FROM events ORDER BY (e->>'offset')::int"],
                            env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    from_db = [json.loads(line) for line in stored.splitlines()]
    from_log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert from_db == from_log
    assert [r["data"]["note"] for r in from_db[:5]] == tricky
