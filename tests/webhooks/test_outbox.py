"""The outbox: messages are written in the transaction of the change they report, only for
subscriptions that want them, once per change, in the program's words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.domain.errors import Refused
from kinloop.services import ingest, ledger, webhooks
from kinloop.services.outbox import message_id
from kinloop.services.programs import LoadedProgram
from kinloop.services.reminders import Reminded, remind_expiring
from kinloop.store.tables import events, outbox, webhook_deliveries
from tests.conftest import NOW
from tests.webhooks.conftest import counts, deliveries, load_tea, purchase, subscribe

NOTHING = {"outbox": 0, "webhook_deliveries": 0, "webhook_attempts": 0}


def book(engine: Engine, program: LoadedProgram, *raws: dict[str, Any]) -> list[ingest.IngestResult]:
    with engine.begin() as conn:
        return ingest.ingest(conn, program, list(raws), now=NOW)


def messages(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                outbox.c.program_id, outbox.c.kind, outbox.c.message_id, outbox.c.payload, outbox.c.created_at
            ).order_by(outbox.c.id)
        )
        return [dict(r._mapping) for r in rows]


def test_without_subscriptions_nothing_is_written(engine: Engine, coffee: LoadedProgram) -> None:
    [result] = book(engine, coffee, purchase("e1"))
    assert result.status == "accepted"
    assert counts(engine) == NOTHING


def test_an_event_writes_its_award_and_tier_change_with_a_delivery_each(engine: Engine, coffee: LoadedProgram) -> None:
    sub_id, _ = subscribe(engine, coffee)
    book(engine, coffee, purchase("e1", amount=120))
    assert messages(engine) == [
        {
            "program_id": coffee.program_id,
            "kind": "award.created",
            "message_id": message_id(coffee.program_id, "award.created", "event:e1"),
            "payload": {
                "member_id": "m1",
                "event_id": "e1",
                "event_type": "purchase",
                "occurred_at": "2026-02-10T09:00:00+00:00",
                "awards": [
                    {
                        "rule": "purchase_stars",
                        "rule_name": "Stars for purchases",
                        "kind": "rule",
                        "currency": "stars",
                        "currency_name": "Stars",
                        "amount": 2,
                        "pending": False,
                        "text": "2 ★",
                    },
                    {
                        "rule": "purchase_beans",
                        "rule_name": "Beans for purchases",
                        "kind": "rule",
                        "currency": "beans",
                        "currency_name": "Beans",
                        "amount": 12,
                        "pending": False,
                        "text": "12 Beans",
                    },
                ],
                "text": "2 ★, 12 Beans",
            },
            "created_at": NOW,
        },
        {
            "program_id": coffee.program_id,
            "kind": "tier.changed",
            "message_id": message_id(coffee.program_id, "tier.changed", "event:e1"),
            "payload": {
                "member_id": "m1",
                "from": None,
                "to": {"key": "green", "name": "Green"},
                "direction": "up",
                "reason": "event e1",
                "event_id": "e1",
                "at": "2026-02-10T09:00:00+00:00",
                "text": "reached Green",
            },
            "created_at": NOW,
        },
    ]
    assert [
        (d["subscription_id"], d["kind"], d["status"], d["attempts"], d["next_attempt_at"]) for d in deliveries(engine)
    ] == [
        (sub_id, "award.created", "pending", 0, NOW),
        (sub_id, "tier.changed", "pending", 0, NOW),
    ]


def test_message_ids_are_distinct_per_program_kind_and_change() -> None:
    ids = {
        message_id(1, "award.created", "event:e1"),
        message_id(2, "award.created", "event:e1"),
        message_id(1, "tier.changed", "event:e1"),
        message_id(1, "award.created", "event:e2"),
    }
    assert len(ids) == 4
    assert message_id(1, "award.created", "event:e1") == message_id(1, "award.created", "event:e1")
    assert all(i.startswith("msg_") and len(i) == 44 for i in ids)


def test_a_failed_transaction_leaves_no_message(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee)
    written: list[int] = []

    def request_that_fails_late() -> None:
        with engine.begin() as conn:
            ingest.ingest(conn, coffee, [purchase("e1")], now=NOW)
            written.append(conn.execute(select(func.count()).select_from(outbox)).scalar_one())
            raise RuntimeError("the request failed after the outbox was written")

    with pytest.raises(RuntimeError, match="after the outbox"):
        request_that_fails_late()
    assert written == [2]  # award.created and tier.changed, inside the transaction
    assert counts(engine) == NOTHING
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0


def test_rejected_and_duplicate_events_write_no_message(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    results = book(
        engine,
        coffee,
        purchase("e1"),  # already booked
        {**purchase("bad"), "type": "refund"},  # not an event type of the program
        purchase("e2", member_id="m2"),
        purchase("e2", member_id="m2"),  # a repeat within the batch
    )
    assert [r.status for r in results] == ["duplicate", "rejected", "accepted", "duplicate"]
    assert [m["payload"]["event_id"] for m in messages(engine)] == ["e1", "e2"]


def test_an_event_that_awards_nothing_writes_no_award_message(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("award.created",))
    check_in = {"member_id": "m1", "type": "check_in", "occurred_at": "2026-02-10T09:00:00Z", "attributes": {}}
    book(engine, coffee, {**check_in, "event_id": "c1"}, {**check_in, "event_id": "c2"})  # one a day
    assert [(m["payload"]["event_id"], m["payload"]["text"]) for m in messages(engine)] == [("c1", "1 Beans")]


def test_each_subscription_gets_the_kinds_it_wants_while_active(engine: Engine, coffee: LoadedProgram) -> None:
    awards, _ = subscribe(engine, coffee, url="https://a.example/hook", kinds=("award.created",))
    tiers, _ = subscribe(engine, coffee, url="https://b.example/hook", kinds=("tier.changed",))
    both, _ = subscribe(engine, coffee, url="https://c.example/hook", kinds=("tier.changed", "award.created"))
    gone, _ = subscribe(engine, coffee, url="https://d.example/hook")
    with engine.begin() as conn:
        webhooks.deactivate(conn, coffee.program_id, gone, now=NOW)
    book(engine, coffee, purchase("e1"))
    assert sorted((d["subscription_id"], d["kind"]) for d in deliveries(engine)) == sorted(
        [(awards, "award.created"), (tiers, "tier.changed"), (both, "award.created"), (both, "tier.changed")]
    )
    assert counts(engine)["outbox"] == 2  # one message, however many subscriptions


def test_a_subscription_of_another_program_gets_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    tea = load_tea(engine)
    subscribe(engine, tea)
    book(engine, coffee, purchase("e1"))
    assert counts(engine) == NOTHING


def test_adjustments_and_reversals_report_tier_changes(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("tier.changed",))
    book(engine, coffee, purchase("e1", amount=200))  # 4 ★: Jade
    with engine.begin() as conn:
        ledger.reverse(conn, coffee, "e1", amount=None, reason="refund", actor="shop", now=NOW)
        ledger.adjust(conn, coffee, "m1", "stars", 16, reason="goodwill", actor="ops", key=None, now=NOW)
    assert [m["payload"] for m in messages(engine)] == [
        {
            "member_id": "m1",
            "from": None,
            "to": {"key": "jade", "name": "Jade"},
            "direction": "up",
            "reason": "event e1",
            "event_id": "e1",
            "at": "2026-02-10T09:00:00+00:00",
            "text": "reached Jade",
        },
        {
            "member_id": "m1",
            "from": {"key": "jade", "name": "Jade"},
            "to": {"key": "green", "name": "Green"},
            "direction": "down",
            "reason": "reversal of e1",
            "event_id": "e1",
            "at": NOW.isoformat(),
            "text": "moved down to Green",
        },
        {
            "member_id": "m1",
            "from": {"key": "green", "name": "Green"},
            "to": {"key": "gold", "name": "Gold"},
            "direction": "up",
            "reason": "adjustment by ops",
            "event_id": None,
            "at": NOW.isoformat(),
            "text": "reached Gold",
        },
    ]
    assert len({m["message_id"] for m in messages(engine)}) == 3


def test_a_refused_adjustment_writes_no_message(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee)
    before = counts(engine)
    with pytest.raises(Refused, match="cannot go below 0"), engine.begin() as conn:
        ledger.adjust(conn, coffee, "m1", "stars", -5, reason="oops", actor="ops", key=None, now=NOW)
    assert counts(engine) == before


# --- points.expiring ------------------------------------------------------------------------
def expiring_setup(engine: Engine, coffee: LoadedProgram) -> None:
    # Beans expire 12 months after they are earned (Europe/Paris dates).
    book(
        engine,
        coffee,
        purchase("a", amount=120, at="2025-03-10T09:00:00Z"),  # 12 Beans, expire 2026-03-10
        purchase("b", amount=50, at="2025-03-10T15:00:00Z"),  # 5 Beans, the same day
        purchase("c", amount=100, at="2025-03-20T09:00:00Z"),  # 10 Beans, expire 2026-03-20
        purchase("d", member_id="m2", amount=300, at="2025-06-01T09:00:00Z"),  # 2026-06-01: later
    )


def remind(engine: Engine, coffee: LoadedProgram, days: int, at_days: int = 0) -> Reminded:
    with engine.begin() as conn:
        return remind_expiring(conn, coffee, days=days, now=NOW + timedelta(days=at_days))


def test_reminders_are_written_once_per_member_currency_and_date(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("points.expiring",))
    expiring_setup(engine, coffee)
    assert remind(engine, coffee, days=30) == Reminded(written=2, already=0, subscribed=True)
    assert [m["payload"] for m in messages(engine)] == [
        {
            "member_id": "m1",
            "currency": "beans",
            "currency_name": "Beans",
            "amount": 17,
            "expires_on": "2026-03-10",
            "text": "17 Beans expire on 2026-03-10",
        },
        {
            "member_id": "m1",
            "currency": "beans",
            "currency_name": "Beans",
            "amount": 10,
            "expires_on": "2026-03-20",
            "text": "10 Beans expire on 2026-03-20",
        },
    ]
    assert remind(engine, coffee, days=30) == Reminded(written=0, already=2, subscribed=True)
    assert remind(engine, coffee, days=30, at_days=15) == Reminded(written=0, already=1, subscribed=True)
    assert counts(engine) == {"outbox": 2, "webhook_deliveries": 2, "webhook_attempts": 0}
    assert remind(engine, coffee, days=100) == Reminded(written=1, already=2, subscribed=True)  # and 2026-06-01


def test_spent_points_are_not_reminded(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("points.expiring",))
    expiring_setup(engine, coffee)
    with engine.begin() as conn:  # soonest-expiring first: the 2026-03-10 lots are used up
        ledger.spend(conn, coffee, "m1", "beans", 17, reason="latte", key=None, now=NOW)
    assert remind(engine, coffee, days=30) == Reminded(written=1, already=0, subscribed=True)
    assert [m["payload"]["expires_on"] for m in messages(engine)] == ["2026-03-20"]


def test_without_a_points_expiring_subscription_reminders_write_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, kinds=("award.created",))
    expiring_setup(engine, coffee)
    before = counts(engine)
    assert remind(engine, coffee, days=30) == Reminded(written=0, already=0, subscribed=False)
    assert counts(engine) == before


def test_deactivating_drops_pending_deliveries(engine: Engine, coffee: LoadedProgram) -> None:
    sub_id, _ = subscribe(engine, coffee, kinds=("award.created",))
    book(engine, coffee, purchase("e1"))
    with engine.begin() as conn:
        first = webhooks.deactivate(conn, coffee.program_id, sub_id, now=NOW)
        again = webhooks.deactivate(conn, coffee.program_id, sub_id, now=NOW + timedelta(hours=1))
    assert (first.active, first.deactivated_at) == (False, NOW)
    assert again == first
    assert [(d["status"], d["next_attempt_at"], d["last_error"]) for d in deliveries(engine)] == [
        ("failed", None, "the subscription was deactivated")
    ]
    with engine.connect() as conn:
        pending = select(func.count()).where(webhook_deliveries.c.status == "pending")
        assert conn.execute(pending).scalar_one() == 0
