"""The load client of `kinloop bench api` against small servers that answer in awkward ways."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kinloop.bench_load import _Reply, load

REQUEST = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _serve(answer: Answer, requests: int, **kwargs: Any) -> tuple[list[float], int, dict[str, int], float, int]:
    """Run `load` against a server answering with `answer`; also how many connections it saw."""

    async def scenario() -> tuple[list[float], int, dict[str, int], float, int]:
        accepted = 0

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            try:
                await answer(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            out = await load(port, [REQUEST] * requests, time_limit=30.0, **{"connections": 2, **kwargs})
        finally:
            server.close()
        return (*out, accepted)

    return asyncio.run(scenario())


async def _each_request(
    reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, reply: Callable[[int], Any]
) -> None:
    """Call `reply(n)` for the nth request's head."""
    n = 0
    while await reader.readuntil(b"\r\n\r\n"):
        await reply(n) if asyncio.iscoroutinefunction(reply) else reply(n)
        n += 1


def test_replies_split_anywhere_are_each_counted_once() -> None:
    """A head and body in pieces of a byte or two, and two replies' bytes never merged."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def dribble(_n: int) -> None:
            data = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world"
            for i in range(0, len(data), 3):
                writer.write(data[i : i + 3])
                await writer.drain()
                await asyncio.sleep(0)

        await _each_request(reader, writer, dribble)

    latencies, errors, statuses, _, _ = _serve(answer, 20)
    assert (len(latencies), errors, statuses) == (20, 0, {"200": 20})


def test_chunked_replies() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
        await _each_request(reader, writer, lambda _n: writer.write(body))

    latencies, errors, statuses, _, _ = _serve(answer, 10)
    assert (len(latencies), errors, statuses) == (10, 0, {"201": 10})


def test_connection_close_is_followed_by_a_new_connection() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    latencies, errors, statuses, _, accepted = _serve(answer, 6)
    assert (len(latencies), errors, statuses) == (6, 0, {"200": 6})
    assert accepted >= 6


def test_errors_and_garbage_count_as_errors_and_the_load_goes_on() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(n: int) -> None:
            if n % 3 == 1:
                writer.write(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n")
            elif n % 3 == 2:
                writer.write(b"NONSENSE\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

        await _each_request(reader, writer, reply)

    latencies, errors, statuses, _, _ = _serve(answer, 12, connections=1)
    # On one connection: 200, 503, garbage (connection dropped), then the same on the next.
    assert len(latencies) == 12
    assert statuses == {"200": 4, "503": 4, "0": 4}
    assert errors == 8


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """At a low rate the server's keep-alive timeout closes idle connections between requests:
    the request goes on a new one instead of being lost."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        # then closes, without saying so in the reply

    latencies, errors, statuses, _, accepted = _serve(answer, 4, connections=1, rate=20)
    assert (len(latencies), errors, statuses) == (4, 0, {"200": 4})
    assert accepted == 4


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", True),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n", False),
    ],
)
def test_a_reply_is_complete_when_its_last_byte_is_in(data: bytes, complete: bool) -> None:
    buf = bytearray(data + b"NEXT")
    if complete:
        assert _Reply().feed(buf)
        assert buf == b"NEXT"  # the next reply's bytes are left where they are
    else:
        assert not _Reply().feed(bytearray(data))
