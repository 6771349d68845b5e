"""`kinloop serve`: uvicorn, with several workers that really share the load.

uvicorn's workers share one listening socket, and an idle worker's event loop accepts every
connection waiting on it in one go (up to the backlog). Clients that keep their connections
alive — an app's HTTP pool, a reverse proxy, the benchmark — open them together, so one
worker took all sixteen of the benchmark's connections and the others had nothing to do.
With `SO_REUSEPORT` every worker listens on a socket of its own, bound to the same address,
and the kernel spreads new connections over them.

uvicorn's supervisor (health checks, restarts of a dead worker, SIGHUP, SIGTTIN / SIGTTOU) is
kept: it hands each worker the parent's sockets by pickling them, and the socket given here
pickles to a fresh listener of the worker's own. The parent's socket is bound but never
listens: it holds the address, and the kernel gives connections only to listening sockets.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from kinloop.domain.errors import AddressInUse

APP = "kinloop.api.app:app_from_env"


def reuse_port_supported() -> bool:
    """Whether this system spreads connections over several listening sockets of one address
    (Linux does; the BSDs and macOS accept SO_REUSEPORT but give one socket everything)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


class _PerWorkerSocket(socket.socket):
    """A socket that each worker process receives as a new socket bound to the same address."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (reuse_port_socket, (self.family, self.getsockname()[:2]))


def reuse_port_socket(family: int, address: tuple[str, int]) -> socket.socket:
    """A TCP socket bound to `address` with SO_REUSEPORT (not yet listening)."""
    sock = _PerWorkerSocket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.set_inheritable(True)
    sock.bind(address)
    return sock


def run(*, host: str, port: int, workers: int) -> None:
    """Serve the API from the environment's database on host:port with `workers` processes."""
    from kinloop.api.app import check_env  # the application, only once it is to be served

    check_env()
    options: dict[str, Any] = {"factory": True, "log_level": "warning", "access_log": False}
    if workers == 1 or not reuse_port_supported():
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(APP, host=host, port=port, workers=workers, **options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # Here, in the parent: a taken address is one clear error, not one per worker.
        sock = reuse_port_socket(family, (host, port))
    except OSError as exc:
        raise AddressInUse(f"cannot listen on {host}:{port}: {exc.strerror}", field="port") from None
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
