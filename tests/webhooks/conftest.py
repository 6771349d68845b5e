"""Fixtures for the webhook tests: a settable clock, a real receiver on 127.0.0.1, and
subscriptions in the coffee program."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.program.loader import parse_program
from kinloop.services import programs, webhooks
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import outbox, webhook_attempts, webhook_deliveries
from kinloop.webhook_signature import verify_signature
from tests.conftest import EXAMPLES, NOW


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """An HTTP server in a thread that answers `failures` requests with 500, then 200s."""

    failures: int = 0
    received: list[Received] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            status = 500 if len(self.received) < self.failures else 200
            self.received.append(Received(path, headers, body, status))
            return status

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = state.answer(self.path, headers, body)
            reply = b"busy, try later" if status != 200 else b"ok"
            self.send_response(status)
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/kinloop"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def subscribe(
    engine: Engine,
    program: LoadedProgram,
    url: str = "https://example.com/hooks",
    kinds: tuple[str, ...] = ("award.created", "tier.changed", "points.expiring"),
) -> tuple[int, str]:
    """Subscribe a URL; returns the subscription id and its secret."""
    with engine.begin() as conn:
        sub, secret = webhooks.create(conn, program.program_id, url=url, kinds=list(kinds), now=NOW)
    return sub.id, secret


TEA_SOURCE = (
    (EXAMPLES / "coffee.yaml")
    .read_text(encoding="utf-8")
    .replace("key: coffee\n", "key: tea\n", 1)
    .replace("name: Coffee Club\n", "name: Tea House\n", 1)
)


def load_tea(engine: Engine) -> LoadedProgram:
    """A second program (a copy of coffee under another key)."""
    with engine.begin() as conn:
        return programs.load(conn, parse_program(TEA_SOURCE), TEA_SOURCE, now=NOW).loaded


def purchase(
    event_id: str, member_id: str = "m1", amount: Any = 120, at: str = "2026-02-10T09:00:00Z"
) -> dict[str, Any]:
    """A coffee purchase: 1 ★ per 50 and 1 Bean per 10 of `amount`."""
    return {
        "event_id": event_id,
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": at,
        "attributes": {"amount": amount},
    }


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (outbox, webhook_deliveries, webhook_attempts)
        }


def deliveries(engine: Engine) -> list[dict[str, Any]]:
    d = webhook_deliveries
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                d.c.id,
                d.c.subscription_id,
                d.c.status,
                d.c.attempts,
                d.c.next_attempt_at,
                d.c.last_status_code,
                d.c.last_error,
                d.c.delivered_at,
                outbox.c.kind,
                outbox.c.message_id,
            )
            .join(outbox, outbox.c.id == d.c.outbox_id)
            .order_by(d.c.id)
        )
        return [dict(r._mapping) for r in rows]


def verified(r: Received, secret: str, now: datetime) -> bool:
    return verify_signature(secret, r.headers.get("kinloop-signature"), r.body, now=now)
