"""kinloop.client against the real application (in process), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from kinloop.api import deps
from kinloop.api.app import create_app
from kinloop.client import (
    BatchResult,
    EventResult,
    KinloopApiError,
    KinloopClient,
    LedgerEntry,
    Member,
    verify_webhook,
)
from kinloop.clock import utcnow
from kinloop.services import keys
from tests.conftest import load_example


@dataclass
class Api:
    base_url: str
    admin: str
    ingest: str
    read: str

    def client(self, key: str) -> KinloopClient:
        return KinloopClient(self.base_url, key, timeout=30)


@pytest.fixture
def api(db_url: str, engine: Engine) -> Iterator[Api]:
    """The application under uvicorn in a thread, on a free loopback port: the client talks HTTP."""
    lp = load_example(engine, "coffee")
    with engine.begin() as conn:
        made = {s: keys.create(conn, lp.program_id, s, name=f"{s} test", now=utcnow())[0] for s in keys.SCOPES}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(db_url), lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield Api(f"http://127.0.0.1:{sock.getsockname()[1]}", made["admin"], made["ingest"], made["read"])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _recent_plain_noon() -> datetime:
    """Noon in Paris on the latest past day that is not coffee's member day (a Wednesday, when
    purchases earn double Beans): the awards these tests expect must not depend on the weekday."""
    paris = ZoneInfo("Europe/Paris")
    day = (utcnow() - timedelta(hours=12)).astimezone(paris).date()
    while day.weekday() == 2:
        day -= timedelta(days=1)
    return datetime.combine(day, dt_time(12), tzinfo=paris).astimezone(UTC)


ANCHOR = _recent_plain_noon()


def at(hours_ago: float = 1) -> datetime:
    """A moment `hours_ago` (at most 12) before the anchor: on the anchor's day."""
    return ANCHOR - timedelta(hours=hours_ago)


def test_post_event_then_read_the_member(api: Api) -> None:
    with api.client(api.ingest) as kl:
        result = kl.post_event("o-1", "m-1", "purchase", at(), {"amount": 250})
        assert isinstance(result, EventResult)
        assert result.status == "accepted"
        assert {(a.currency, a.amount) for a in result.awards} == {("stars", 5), ("beans", 25)}
        assert result.tier_changed is not None
        assert result.tier_changed.to == "jade"
        again = kl.post_event("o-1", "m-1", "purchase", at(), {"amount": 250})
        assert again.status == "duplicate"
    with api.client(api.read) as kl:
        member = kl.member("m-1")
    assert isinstance(member, Member)
    assert member.balances == {"stars": 5, "beans": 25}
    assert member.tier is not None
    assert member.tier.key == "jade"
    assert member.next_tier is not None
    assert member.next_tier.text == "11 ★ to Gold"


def test_batch_items_succeed_or_fail_one_by_one(api: Api) -> None:
    with api.client(api.ingest) as kl:
        batch = kl.post_events(
            [
                {"event_id": "c-1", "member_id": "m-2", "type": "check_in", "occurred_at": at(2).isoformat()},
                {"event_id": "c-2", "member_id": "m-2", "type": "no_such_type", "occurred_at": at(2)},
                {"event_id": "c-3", "member_id": "m-2", "type": "purchase", "occurred_at": at(2)},
            ]
        )
    assert isinstance(batch, BatchResult)
    assert (batch.accepted, batch.duplicates, batch.rejected) == (1, 0, 2)
    assert [r.status for r in batch.results] == ["accepted", "rejected", "rejected"]
    assert batch.results[1].error is not None
    assert batch.results[1].error.code == "unknown_event_type"
    assert batch.results[2].error is not None
    assert batch.results[2].error.field is not None


def test_errors_are_problem_details(api: Api) -> None:
    with api.client(api.read) as kl:
        with pytest.raises(KinloopApiError) as unknown:
            kl.member("nobody")
        assert (unknown.value.status, unknown.value.code, unknown.value.field) == (404, "unknown_member", "member_id")
        with pytest.raises(KinloopApiError) as forbidden:
            kl.post_event("o-9", "m-9", "purchase", at(), {"amount": 10})
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    with api.client(api.ingest) as kl, pytest.raises(KinloopApiError) as invalid:
        kl.post_event("o-9", "m-9", "purchase", at(), {"amount": "lots"})
    assert invalid.value.status == 422
    assert invalid.value.detail
    with api.client("kl_nope_nope") as kl, pytest.raises(KinloopApiError) as bad_key:
        kl.member("m-1")
    assert (bad_key.value.status, bad_key.value.code) == (401, "unauthorized")
    with api.client(api.ingest) as kl, pytest.raises(ValueError, match="time zone"):
        kl.post_event("o-10", "m-1", "check_in", datetime(2026, 1, 1))


def test_ledger_pages_and_iterator(api: Api) -> None:
    with api.client(api.ingest) as kl:
        kl.post_events(
            [
                {
                    "event_id": f"p-{i}",
                    "member_id": "m-3",
                    "type": "purchase",
                    "occurred_at": at(10 - i / 10),
                    "attributes": {"amount": 60},
                }
                for i in range(7)
            ]
        )
    with api.client(api.read) as kl:
        first = kl.ledger("m-3", limit=5)
        assert len(first.entries) == 5
        assert first.next_cursor is not None
        second = kl.ledger("m-3", cursor=first.next_cursor, limit=5)
        everything = list(kl.iter_ledger("m-3", page_size=3))
    assert all(isinstance(e, LedgerEntry) for e in everything)
    assert [e.entry_id for e in everything[:10]] == [e.entry_id for e in first.entries + second.entries]
    assert len(everything) == 14  # stars and beans for each purchase
    assert everything == sorted(everything, key=lambda e: -e.entry_id)
    assert {e.from_ for e in everything} == {"issuance"}


def test_spend_adjust_reverse_and_member_token(api: Api) -> None:
    with api.client(api.ingest) as kl:
        kl.post_event("o-4", "m-4", "purchase", at(), {"amount": 300})  # 6 stars, 30 beans
        spent = kl.spend("m-4", "beans", 10, "a latte", idempotency_key="s-1")
        assert (spent.amount, spent.balance, spent.replayed) == (10, 20, False)
        assert kl.spend("m-4", "beans", 10, "a latte", idempotency_key="s-1").replayed
        with pytest.raises(KinloopApiError) as short:
            kl.spend("m-4", "beans", 1000, "too much")
        assert short.value.status == 409
        reversal = kl.reverse("o-4", amount="150")
        assert reversal.clawed_back == {"stars": 3, "beans": 15}
        token = kl.member_token("m-4", ttl_seconds=60)
        assert token.member_id == "m-4"
    with api.client(api.admin) as kl:
        moved = kl.adjust("m-4", "beans", -2, "goodwill correction")
        assert moved.balance == 3
        kl.set_profile("m-4", display_name="Ada", attributes={"vip": True})
    with api.client(token.token) as own:
        mine = own.member("m-4")
        assert mine.balances == {"stars": 3, "beans": 3}
        assert mine.profile == {"vip": True, "display_name": "Ada"}
        with pytest.raises(KinloopApiError) as other:
            own.member("m-1")
        assert other.value.status == 404


def sign(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_verify_webhook() -> None:
    body = b'{"kind":"tier.changed","member_id":"m-1"}'
    t = 1_790_000_000
    header = f"t={t},v1={sign('whsec', t, body)}"
    assert verify_webhook("whsec", header, body, now=t + 10)
    assert verify_webhook(b"whsec", header, body.decode(), now=datetime.fromtimestamp(t, UTC))
    assert not verify_webhook("other", header, body, now=t)
    assert not verify_webhook("whsec", header, body + b" ", now=t)
    assert not verify_webhook("whsec", header, body, now=t + 301)
    assert verify_webhook("whsec", header, body, now=t + 1000, tolerance=1000)
    rotated = f"t={t},v1={'0' * 64},v1={sign('whsec', t, body)}"
    assert verify_webhook("whsec", rotated, body, now=t)
    for broken in ("", None, "garbage", f"t=x,v1={sign('whsec', t, body)}", f"t={t}", f"v1={sign('whsec', t, body)}"):
        assert not verify_webhook("whsec", broken, body, now=t)


def test_errors_without_a_problem_body_and_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer kl_x_y"
        if request.url.path.endswith("busy"):
            body = {"code": "rate_limited", "detail": "too many requests for this key", "status": 429}
            return httpx.Response(429, json=body, headers={"Retry-After": "2"})
        return httpx.Response(502, text="<html>Bad gateway</html>")

    with KinloopClient("http://kinloop.test", "kl_x_y", transport=httpx.MockTransport(handler)) as kl:
        with pytest.raises(KinloopApiError) as gateway:
            kl.member("m-1")
        assert (gateway.value.status, gateway.value.code) == (502, "http_error")
        assert "Bad gateway" in gateway.value.detail
        with pytest.raises(KinloopApiError) as busy:
            kl.member("busy")
        assert (busy.value.status, busy.value.code, busy.value.retry_after) == (429, "rate_limited", 2.0)


def test_the_reply_comes_after_the_commit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An acknowledged event is committed: the transaction ends before the reply is sent
    (FastAPI ends dependencies with yield after it, unless told otherwise)."""
    commit = deps._commit

    def slow_commit(conn: Any) -> None:
        time.sleep(0.3)
        commit(conn)

    monkeypatch.setattr(deps, "_commit", slow_commit)
    with api.client(api.ingest) as kl:
        started = time.monotonic()
        kl.post_event("o-slow", "m-slow", "purchase", at(), {"amount": 100})
        assert time.monotonic() - started >= 0.3
    monkeypatch.setattr(deps, "_commit", commit)
    with api.client(api.read) as kl:
        assert kl.member("m-slow").balances == {"stars": 2, "beans": 10}


def test_many_concurrent_writers_all_get_through(api: Api) -> None:
    """More writers at once than the server has threads: none waits for a thread that a
    writer blocked on the database lock holds (they queue for the lock without one)."""

    def post(i: int) -> str:
        with api.client(api.ingest) as kl:
            return kl.post_event(f"c-{i}", f"m-{i % 5}", "check_in", at(1 + i / 1000)).status

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(post, range(64)))
    assert statuses == ["accepted"] * 64
