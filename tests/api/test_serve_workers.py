"""`kinloop serve --workers N`: every worker listens on a socket of its own (SO_REUSEPORT), so
keep-alive connections opened together are spread over the workers instead of all landing on
the one that happened to be awake."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinloop.api import serve as server
from kinloop.cli.app import app as cli
from tests.api.conftest import free_port

pytestmark = pytest.mark.skipif(
    not server.reuse_port_supported() or not Path("/proc/net/tcp").exists(), reason="needs SO_REUSEPORT and /proc"
)
STARTUP_TIMEOUT = 60.0


def _sockets_on(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets on `port` in `state` ("0A" LISTEN, "01" ESTABLISHED)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == state:
            found.add(fields[9])
    return found


def _held_by(pid: int, inodes: set[str]) -> set[str]:
    fds = Path("/proc") / str(pid) / "fd"
    held = set()
    for fd in os.listdir(fds):
        try:
            link = os.readlink(fds / fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            held.add(link[8:-1])
    return held


def _workers(pid: int, port: int) -> list[int]:
    """The child processes of `pid` that hold a socket listening on `port`."""
    listening = _sockets_on(port, "0A")
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = (Path("/proc") / entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and _held_by(int(entry), listening):
                out.append(int(entry))
    return out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    result = CliRunner().invoke(cli, ["init", "examples/coffee.yaml", "--db", db])
    assert result.exit_code == 0, result.output
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kinloop", "serve", "--db", db, "--port", str(port), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(_workers(proc.pid, port)) < 2:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_each_worker_listens_on_a_socket_of_its_own(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = served
    listening = _sockets_on(port, "0A")
    first, second = (_held_by(w, listening) for w in _workers(proc.pid, port))
    assert len(listening) == 2
    assert first.isdisjoint(second)
    # The parent holds the address but does not listen: no connection can wait on it unserved.
    assert not _held_by(proc.pid, listening)


def test_connections_opened_together_are_spread_over_the_workers(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = served
    # All connected before any is served, as a client's pool or a proxy opens them. The kernel
    # picks a worker's socket by a hash of each connection's addresses, a fair coin for each of
    # the 24: one worker gets 3 or fewer of them about 3 times in 10,000. From one shared socket
    # (uvicorn's own) it was 24 and 0, 22 and 2, 16 and 8.
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(24)]
    try:
        for c in conns:
            c.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        for c in conns:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        established = _sockets_on(port, "01")
        per_worker = [len(_held_by(w, established)) for w in _workers(proc.pid, port)]
        assert sum(per_worker) == 24
        assert min(per_worker) >= 4, per_worker
    finally:
        for c in conns:
            c.close()


def test_a_taken_address_is_one_clear_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert CliRunner().invoke(cli, ["init", "examples/coffee.yaml", "--db", db]).exit_code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--db", db, "--port", str(port), "--workers", "2"])
    assert result.exit_code == 1
    assert "address_in_use" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("setting", ["KINLOOP_RATE_LIMIT", "KINLOOP_POOL_SIZE"])
@pytest.mark.parametrize("value", ["many", "0", "-3"])
def test_a_bad_setting_is_refused_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert CliRunner().invoke(cli, ["init", "examples/coffee.yaml", "--db", db]).exit_code == 0
    monkeypatch.setenv(setting, value)
    result = CliRunner().invoke(cli, ["serve", "--db", db, "--port", str(free_port())])
    assert result.exit_code == 2
    assert setting in result.output
    assert "Traceback" not in result.output
