"""The load of `kinloop bench api`: a minimal HTTP/1.1 client for loopback, in callbacks.

It shares the machine with the server it measures, so what it spends is taken from the
server: each connection is an `asyncio.Protocol` that parses replies as bytes arrive and
sends the next request from the same callback, with no task, stream or coroutine per
request (the streams client it replaces cost 0.05 ms of CPU a request saturated, 0.09 paced).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any


class _Reply:
    """An HTTP/1.1 response parsed incrementally: the head, then a body by length or by chunks."""

    def __init__(self) -> None:
        self.status = 0
        self.close = False
        self.left = -1  # body bytes still to come; -1 before the head
        self.chunked = False

    def feed(self, buf: bytearray) -> bool:
        """Take what of `buf` belongs to this reply (removing it); True when the reply is complete."""
        if self.left < 0 and not self._head(buf):
            return False
        if self.chunked:
            return self._chunks(buf)
        if len(buf) < self.left:
            self.left -= len(buf)
            buf.clear()
            return False
        del buf[: self.left]
        return True

    def _head(self, buf: bytearray) -> bool:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buf[:end])
        del buf[: end + 4]
        self.status = int(head[9:12])  # ValueError on anything but "HTTP/1.x NNN"
        self.left = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.left = int(value)
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.close = b"close" in value.lower()
        return True

    def _chunks(self, buf: bytearray) -> bool:
        while True:
            if self.left == 0:  # at a chunk's size line
                eol = buf.find(b"\r\n")
                if eol < 0:
                    return False
                size = int(bytes(buf[:eol]).split(b";")[0], 16)
                del buf[: eol + 2]
                if size == 0:
                    self.left = 2  # the empty line after the last chunk (no trailers here)
                    self.chunked = False
                    return self.feed(buf)
                self.left = size + 2  # the chunk and its CRLF
            take = min(self.left, len(buf))
            del buf[:take]
            self.left -= take
            if self.left:
                return False
            # (`left` is 0 again: the next size line)


class _Wire(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.reply: _Reply | None = None
        self.t0 = 0.0  # when the request in flight was due (or sent)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, request: bytes, t0: float) -> None:
        assert self.transport is not None  # sent on only after connection_made
        if self.transport.is_closing():
            # Closed by the server while idle (its keep-alive timeout, at a low rate): this
            # request goes on a new connection, its wait for it counted.
            self.run.reopen(self, (request, t0))
            return
        self.t0 = t0
        self.reply = _Reply()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        reply = self.reply
        if reply is None:
            return  # bytes no request asked for: ignored
        try:
            complete = reply.feed(self.buf)
        except ValueError:
            self._fail()
            return
        if complete:
            self.reply = None
            self.run.replied(self, reply.status, reply.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reply is not None:  # lost with a request in flight
            self._fail()

    def _fail(self) -> None:
        """The request in flight failed (status 0); the connection is replaced."""
        self.reply = None
        self.run.replied(self, 0, True)

    def close(self) -> None:
        self.reply = None  # what comes after is not counted
        if self.transport is not None:
            self.transport.close()


class _Run:
    """The schedule of one load: which request goes next, and when; what came back."""

    def __init__(
        self, port: int, requests: list[bytes], rate: float | None, time_limit: float, connections: int
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.requests = requests
        self.rate = rate
        self.todo: Iterator[int] = iter(range(len(requests)))
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.started = time.perf_counter()
        self.deadline = self.started + time_limit
        self.busy = connections  # connections not yet finished
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.wires: set[_Wire] = set()
        self.opening: set[asyncio.Task[None]] = set()

    async def open(self, first: tuple[bytes, float] | None = None) -> None:
        """A new connection, given the next request (or `first`)."""
        _, wire = await self.loop.create_connection(lambda: _Wire(self), "127.0.0.1", self.port)
        self.wires.add(wire)
        if first is None:
            self.next(wire)
        else:
            wire.send(*first)

    def reopen(self, wire: _Wire, first: tuple[bytes, float] | None = None) -> None:
        """Let go of `wire` and go on with a new connection (given `first` as its request)."""
        wire.close()
        self.wires.discard(wire)
        task = self.loop.create_task(self.open(first))
        self.opening.add(task)  # held: the loop keeps only a weak reference to a task
        task.add_done_callback(self._opened)

    def next(self, wire: _Wire) -> None:
        """Give `wire` its next request, now or when it is due; or let it finish."""
        now = time.perf_counter()
        # The deadline is checked before taking a request: what was sent is a prefix.
        i = next(self.todo, None) if now < self.deadline else None
        if i is None:
            self._done_with_one()
            return
        if self.rate is None:
            wire.send(self.requests[i], now)
            return
        due = self.started + i / self.rate
        if due > now:
            self.loop.call_later(due - now, wire.send, self.requests[i], due)
        else:
            wire.send(self.requests[i], due)  # late: the wait so far counts in its latency

    def replied(self, wire: _Wire, status: int, close: bool) -> None:
        self.latencies.append(time.perf_counter() - wire.t0)
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if not 200 <= status < 300:
            self.errors += 1
        if close:
            self.reopen(wire)
        else:
            self.next(wire)

    def _opened(self, task: asyncio.Task[None]) -> None:
        self.opening.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1  # the server went away: this connection is done
            self.statuses["refused"] = self.statuses.get("refused", 0) + 1
            self._done_with_one()

    def _done_with_one(self) -> None:
        """A connection has nothing more to send; the load ends with the last."""
        self.busy -= 1
        if self.busy == 0 and not self.finished.done():
            self.finished.set_result(None)


async def load(
    port: int, requests: list[bytes], *, connections: int, time_limit: float, rate: float | None = None
) -> tuple[list[float], int, dict[str, int], float]:
    """`connections` keep-alive connections to 127.0.0.1:`port`, one request in flight on each,
    until the requests run out or `time_limit` seconds pass: (latencies in seconds, errors,
    replies by status, seconds taken).

    With a `rate`, request i is due i / rate seconds after the start: a connection that takes
    it early waits for then, and its latency runs from then, not from when it was sent; if all
    connections are busy, the wait is counted in the latency of the requests it delays."""
    run = _Run(port, requests, rate, time_limit, connections)
    await asyncio.gather(*(run.open() for _ in range(connections)))
    try:
        # Bounded even if the server stops answering: what is still in flight then is an error.
        await asyncio.wait_for(asyncio.shield(run.finished), time_limit + 30)
    except TimeoutError:
        run.errors += run.busy
        run.statuses["timeout"] = run.busy
    finally:
        for wire in run.wires:
            wire.close()
    return run.latencies, run.errors, run.statuses, time.perf_counter() - run.started
