"""The delivery worker against a real HTTP receiver on 127.0.0.1: signed requests, retries
with backoff on an injected clock, delivered exactly once, nothing lost when a worker dies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from kinloop.services import ingest, webhooks
from kinloop.services.programs import LoadedProgram
from kinloop.services.webhooks import MAX_ATTEMPTS, Worker, backoff
from kinloop.store.tables import webhook_attempts
from tests.conftest import NOW
from tests.webhooks.conftest import Clock, Receiver, deliveries, purchase, subscribe, verified


def book(engine: Engine, program: LoadedProgram, *raws: dict[str, Any]) -> None:
    with engine.begin() as conn:
        ingest.ingest(conn, program, list(raws), now=NOW)


def attempt_log(engine: Engine) -> list[tuple[int, int, Any, int | None]]:
    a = webhook_attempts
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(a.c.delivery_id, a.c.attempt, a.c.at, a.c.status_code).order_by(a.c.id))
        ]


@pytest.fixture
def worker(engine: Engine, clock: Clock) -> Iterator[Worker]:
    with Worker(engine, clock=clock) as w:
        yield w


def test_backoff_doubles_from_10_seconds_up_to_an_hour() -> None:
    waits = [backoff(n).total_seconds() for n in range(1, 12)]
    assert waits == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert backoff(1000) == timedelta(hours=1)


def test_a_message_is_posted_signed_with_its_id_and_kind(
    engine: Engine, coffee: LoadedProgram, receiver: Receiver, worker: Worker, clock: Clock
) -> None:
    _, secret = subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    counts = worker.drain()
    assert counts.as_json() == {"delivered": 1, "retrying": 0, "failed": 0}
    [got] = receiver.received
    [delivery] = deliveries(engine)
    assert got.path == "/hooks/kinloop"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["kinloop-message-id"] == delivery["message_id"]
    assert got.headers["kinloop-event-kind"] == "award.created"
    assert got.headers["kinloop-signature"].startswith(f"t={int(NOW.timestamp())},v1=")
    assert verified(got, secret, clock.now)
    assert not verified(got, "whsec_wrong", clock.now)
    body = json.loads(got.body)
    assert body == {
        "id": delivery["message_id"],
        "kind": "award.created",
        "created_at": NOW.isoformat(),
        "program": "coffee",
        "data": body["data"],
    }
    assert (body["data"]["event_id"], body["data"]["text"]) == ("e1", "2 ★, 12 Beans")
    assert (delivery["status"], delivery["attempts"], delivery["delivered_at"], delivery["next_attempt_at"]) == (
        "delivered",
        1,
        NOW,
        None,
    )


def test_a_failing_receiver_gets_retries_with_backoff_and_the_message_exactly_once(
    engine: Engine, coffee: LoadedProgram, receiver: Receiver, worker: Worker, clock: Clock
) -> None:
    receiver.failures = 3
    _, secret = subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))

    assert worker.drain().as_json() == {"delivered": 0, "retrying": 1, "failed": 0}
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"], d["next_attempt_at"], d["last_status_code"]) == (
        "pending",
        1,
        NOW + timedelta(seconds=10),
        500,
    )
    assert d["last_error"] == "HTTP 500: busy, try later"
    assert worker.drain().claimed == 0  # not due yet
    clock.advance(9)
    assert worker.drain().claimed == 0
    clock.advance(1)  # +10 s: the second attempt
    assert worker.drain().as_json() == {"delivered": 0, "retrying": 1, "failed": 0}
    assert deliveries(engine)[0]["next_attempt_at"] == NOW + timedelta(seconds=30)
    clock.advance(20)  # +30 s: the third
    assert worker.drain().as_json() == {"delivered": 0, "retrying": 1, "failed": 0}
    assert deliveries(engine)[0]["next_attempt_at"] == NOW + timedelta(seconds=70)
    clock.advance(40)  # +70 s: the fourth succeeds
    assert worker.drain().as_json() == {"delivered": 1, "retrying": 0, "failed": 0}
    clock.advance(7200)
    assert worker.drain().claimed == 0

    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert len(receiver.accepted) == 1
    assert len({r.headers["kinloop-message-id"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1  # the same message each time
    assert [r.headers["kinloop-attempt"] for r in receiver.received] == ["1", "2", "3", "4"]
    # Each attempt is signed when it is sent.
    stamps = [r.headers["kinloop-signature"].split(",")[0] for r in receiver.received]
    assert stamps == [f"t={int(NOW.timestamp()) + s}" for s in (0, 10, 30, 70)]
    assert all(verified(r, secret, NOW + timedelta(seconds=70)) for r in receiver.received)
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"], d["last_status_code"], d["last_error"], d["delivered_at"]) == (
        "delivered",
        4,
        200,
        None,
        NOW + timedelta(seconds=70),
    )
    assert [(n, at, code) for _, n, at, code in attempt_log(engine)] == [
        (1, NOW, 500),
        (2, NOW + timedelta(seconds=10), 500),
        (3, NOW + timedelta(seconds=30), 500),
        (4, NOW + timedelta(seconds=70), 200),
    ]


def test_a_worker_that_dies_after_claiming_loses_nothing(
    engine: Engine, coffee: LoadedProgram, receiver: Receiver, clock: Clock
) -> None:
    subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    with Worker(engine, clock=clock) as doomed:
        assert len(doomed.claim()) == 1  # claimed and committed ... and then the process dies
    assert receiver.received == []
    with Worker(engine, clock=clock) as restarted:
        clock.advance(59)
        assert restarted.drain().claimed == 0  # still leased to the dead worker
        clock.advance(1)
        assert restarted.drain().as_json() == {"delivered": 1, "retrying": 0, "failed": 0}
    assert len(receiver.received) == 1
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"]) == ("delivered", 2)
    assert [n for _, n, _, _ in attempt_log(engine)] == [2]  # the first attempt never happened


def test_a_worker_that_dies_after_sending_sends_again_at_least_once(
    engine: Engine, coffee: LoadedProgram, receiver: Receiver, clock: Clock
) -> None:
    subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    with Worker(engine, clock=clock) as doomed:
        sent = doomed.send(doomed.claim())  # delivered, but the outcome is never recorded
    assert [a.status_code for a in sent] == [200]
    clock.advance(60)
    with Worker(engine, clock=clock) as restarted:
        assert restarted.drain().delivered == 1
    # At least once: the receiver saw the message twice, under one id, and drops the repeat.
    assert [r.status for r in receiver.received] == [200, 200]
    assert len({r.headers["kinloop-message-id"] for r in receiver.received}) == 1
    assert [(d["status"], d["attempts"]) for d in deliveries(engine)] == [("delivered", 2)]


def test_a_late_outcome_of_a_lapsed_claim_does_not_reschedule(
    engine: Engine, coffee: LoadedProgram, clock: Clock
) -> None:
    subscribe(engine, coffee, url="http://receiver.test/hook", kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    refuse = httpx.MockTransport(lambda request: httpx.Response(503))
    with Worker(engine, clock=clock, transport=refuse) as slow, Worker(engine, clock=clock, transport=refuse) as other:
        claimed = slow.claim()
        late = slow.send(claimed)
        clock.advance(60)  # the lease runs out; the other worker takes the delivery
        taken = other.claim()
        assert [c.attempt for c in taken] == [2]
        assert slow.record(late).retrying == 0  # logged, but the schedule is the new claim's
        [d] = deliveries(engine)
        assert (d["attempts"], d["next_attempt_at"]) == (2, NOW + timedelta(seconds=120))
        other.record(other.send(taken))
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"], d["next_attempt_at"]) == ("pending", 2, clock.now + backoff(2))
    assert [n for _, n, _, _ in attempt_log(engine)] == [1, 2]


def test_after_the_last_attempt_the_delivery_fails(engine: Engine, coffee: LoadedProgram, clock: Clock) -> None:
    subscribe(engine, coffee, url="http://receiver.test/hook", kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    seen: list[httpx.Request] = []

    def down(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, text="bad gateway")

    with Worker(engine, clock=clock, transport=httpx.MockTransport(down)) as worker:
        for n in range(1, MAX_ATTEMPTS):
            assert worker.drain().as_json() == {"delivered": 0, "retrying": 1, "failed": 0}
            clock.advance(backoff(n).total_seconds())
        assert worker.drain().as_json() == {"delivered": 0, "retrying": 0, "failed": 1}
        clock.advance(86_400)
        assert worker.drain().claimed == 0
    assert len(seen) == MAX_ATTEMPTS
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"], d["next_attempt_at"], d["last_status_code"], d["last_error"]) == (
        "failed",
        MAX_ATTEMPTS,
        None,
        502,
        "HTTP 502: bad gateway",
    )
    assert [n for _, n, _, _ in attempt_log(engine)] == list(range(1, MAX_ATTEMPTS + 1))


def test_a_worker_that_dies_on_the_last_attempt_leaves_it_failed(
    engine: Engine, coffee: LoadedProgram, clock: Clock
) -> None:
    subscribe(engine, coffee, url="http://receiver.test/hook", kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    refuse = httpx.MockTransport(lambda request: httpx.Response(503))
    with Worker(engine, clock=clock, transport=refuse) as worker:
        for n in range(1, MAX_ATTEMPTS):
            worker.drain()
            clock.advance(backoff(n).total_seconds())
        assert len(worker.claim()) == 1  # the last attempt, never recorded
        clock.advance(60)
        assert worker.drain().claimed == 0
    [d] = deliveries(engine)
    assert (d["status"], d["attempts"], d["next_attempt_at"]) == ("failed", MAX_ATTEMPTS, None)
    assert d["last_error"] == f"gave up after {MAX_ATTEMPTS} attempts (the outcome of the last was never recorded)"


def test_an_unreachable_receiver_is_an_attempt_with_an_error(
    engine: Engine, coffee: LoadedProgram, clock: Clock
) -> None:
    subscribe(engine, coffee, url="http://receiver.test/hook", kinds=("award.created",))
    book(engine, coffee, purchase("e1"))

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Worker(engine, clock=clock, transport=httpx.MockTransport(unreachable)) as worker:
        assert worker.drain().retrying == 1
    [d] = deliveries(engine)
    assert (d["status"], d["last_status_code"], d["last_error"]) == (
        "pending",
        None,
        "ConnectError: connection refused",
    )
    assert [code for _, _, _, code in attempt_log(engine)] == [None]


def test_many_messages_go_out_in_rounds_each_once(
    engine: Engine, coffee: LoadedProgram, receiver: Receiver, clock: Clock
) -> None:
    subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    subscribe(engine, coffee, url=receiver.url + "/second", kinds=("award.created",))
    book(engine, coffee, *(purchase(f"e{i}", member_id=f"m{i % 7}") for i in range(25)))
    with Worker(engine, clock=clock, batch=4) as worker:
        assert worker.drain().as_json() == {"delivered": 50, "retrying": 0, "failed": 0}
    assert len(receiver.received) == 50
    pairs = {(r.path, r.headers["kinloop-message-id"]) for r in receiver.received}
    assert len(pairs) == 50
    assert {d["status"] for d in deliveries(engine)} == {"delivered"}


def test_on_postgresql_concurrent_claims_skip_each_others_rows(
    engine: Engine, coffee: LoadedProgram, clock: Clock
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises claims with its write lock")
    subscribe(engine, coffee, url="http://receiver.test/hook", kinds=("award.created",))
    book(engine, coffee, purchase("e1"), purchase("e2"), purchase("e3"))
    with engine.connect() as first, engine.connect() as second:
        with first.begin():
            mine = webhooks.claim(first, now=NOW, limit=2)
            with second.begin():  # would block on the first's row locks without SKIP LOCKED
                theirs = webhooks.claim(second, now=NOW, limit=2)
        assert len(mine) == 2
        assert len(theirs) == 1
        assert {c.delivery_id for c in mine}.isdisjoint(c.delivery_id for c in theirs)
