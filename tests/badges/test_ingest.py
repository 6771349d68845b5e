"""Badges through ingestion, on SQLite and PostgreSQL: awarded with the event that earns them,
in its transaction, once per level, whatever arrives twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.services import growth_badges, ingest, member_view, outbox, verify
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import (
    entries,
    leaderboard_scores,
    member_badges,
    member_counters,
    task_progress,
    webhook_subscriptions,
)
from tests.badges.programs import FORUM, event, load
from tests.conftest import NOW, load_example


@pytest.fixture
def forum(engine: Engine) -> LoadedProgram:
    return load(engine)


def feed(engine: Engine, loaded: LoadedProgram, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return [r.as_json(loaded.program) for r in ingest.ingest(conn, loaded, raws, now=NOW)]


def held(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return sorted((b, lv) for b, lv in conn.execute(select(member_badges.c.badge, member_badges.c.level)))


ANSWERS = [event(f"a{i}", "answer", f"2026-02-0{i + 1}T10:00:00+08:00") for i in range(3)]


def test_the_reply_lists_badges_next_to_awards(engine: Engine, forum: LoadedProgram) -> None:
    results = feed(engine, forum, ANSWERS)
    assert [r.get("badges", []) for r in results] == [
        [],
        [{"badge": "helpful", "level": "bronze", "text": "earned Helpful (Bronze)"}],
        [{"badge": "helpful", "level": "silver", "text": "earned Helpful (Silver)"}],
    ]
    # Silver's reward is booked with the event, through the ledger, and moves the tier.
    assert results[2]["awards"] == [
        {
            "rule": "answer_growth",
            "currency": "growth",
            "amount": 3,
            "kind": "rule",
            "pending": False,
            "text": "3 Growth",
        },
        {"rule": "helpful", "currency": "growth", "amount": 15, "kind": "badge", "pending": False, "text": "15 Growth"},
    ]
    assert results[2]["tier_changed"]["to"] == "regular"
    with engine.connect() as conn:
        view = member_view.show(conn, forum, "m1", now=NOW)
        assert verify.verify(conn, forum).ok
        kinds = sorted(conn.execute(select(entries.c.award_kind, entries.c.rule).where(entries.c.kind == "earn")))
    assert kinds == [
        ("badge", "helpful"),
        ("rule", "answer_growth"),
        ("rule", "answer_growth"),
        ("rule", "answer_growth"),
    ]
    assert view.balances["growth"] == 24
    helpful = view.badges[0]
    assert [e["name"] for e in helpful["earned"]] == ["Helpful (Bronze)", "Helpful (Silver)"]
    assert helpful["earned"][0]["awarded_at"] == "2026-02-02T02:00:00+00:00"
    assert helpful["next"] == {"level": "gold", "name": "Helpful (Gold)", "reward": None}
    regular = view.badges[4]
    assert regular["next"]["text"] == "0/7 to Regular (Week)"


def test_a_badge_is_awarded_in_the_events_transaction(engine: Engine, forum: LoadedProgram) -> None:
    feed(engine, forum, ANSWERS[:1])
    # Given a transaction that ingests the earning event and then fails:
    conn = engine.connect()
    with conn.begin() as tx:
        [r] = ingest.ingest(conn, forum, ANSWERS[1:2], now=NOW)
        assert r.outcome["badges"] == [["helpful", "bronze"]]
        tx.rollback()  # the caller's transaction fails
    conn.close()
    # Then nothing of it remains; sending the event again earns the badge, once.
    assert held(engine) == []
    assert feed(engine, forum, ANSWERS[1:2])[0]["badges"][0]["level"] == "bronze"
    assert held(engine) == [("helpful", "bronze")]


def test_never_twice_with_repeated_events(engine: Engine, forum: LoadedProgram) -> None:
    first = feed(engine, forum, ANSWERS[:2])
    # The same events again, in a batch with copies of themselves: duplicates, nothing new.
    again = feed(engine, forum, [ANSWERS[1], ANSWERS[1], ANSWERS[0]])
    assert [r["status"] for r in again] == ["duplicate"] * 3
    assert again[0]["badges"] == first[1]["badges"]  # a repeat returns the first result
    more = feed(engine, forum, [event("a9", "answer", "2026-02-09T10:00:00+08:00")])
    assert [b["level"] for b in more[0]["badges"]] == ["silver"]
    assert held(engine) == [("helpful", "bronze"), ("helpful", "silver")]
    with engine.connect() as conn:
        rewards = conn.execute(select(func.count()).where(entries.c.award_kind == "badge")).scalar()
    assert rewards == 1


def test_a_late_event_counts_in_its_own_day(engine: Engine, forum: LoadedProgram) -> None:
    day = [event(f"c{i}", "comment", f"2026-02-10T1{i}:00:00+08:00") for i in range(2)]
    feed(engine, forum, [*day, event("c9", "comment", "2026-02-11T10:00:00+08:00")])
    # A third comment of the 10th arriving late completes that day, not the 11th.
    [late] = feed(engine, forum, [event("c3", "comment", "2026-02-10T23:59:00+08:00")])
    assert late["badges"] == [{"badge": "chatty", "level": None, "text": "earned Chatty"}]
    with engine.connect() as conn:
        counters = sorted(conn.execute(select(member_counters.c.period, member_counters.c.count)))
    assert counters == [("d2026-02-10", 3), ("d2026-02-11", 1)]


def test_badge_awarded_webhook(engine: Engine, forum: LoadedProgram) -> None:
    with engine.begin() as conn:
        conn.execute(
            webhook_subscriptions.insert().values(
                program_id=forum.program_id,
                url="https://example.com/h",
                secret="s",
                kinds=["badge.awarded", "award.created"],
                active=True,
                created_at=NOW,
            )
        )
    feed(engine, forum, ANSWERS)
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.outbox.c.kind, outbox.outbox.c.payload).order_by(outbox.outbox.c.id)).all()
    payloads = [json.loads(p) if isinstance(p, str) else p for _, p in rows]
    assert [k for k, _ in rows] == ["award.created"] * 3 + ["badge.awarded"] * 2
    # Silver's reward is reported with the event's awards, named after the badge.
    assert [(a["kind"], a["rule_name"], a["text"]) for a in payloads[2]["awards"]] == [
        ("rule", "Answer growth", "3 Growth"),
        ("badge", "Helpful", "15 Growth"),
    ]
    payloads = payloads[3:]
    assert payloads[1] == {
        "member_id": "m1",
        "badge": "helpful",
        "badge_name": "Helpful",
        "level": "silver",
        "level_name": "Silver",
        "event_id": "a2",
        "at": "2026-02-03T10:00:00+08:00",  # when the event happened, as sent
        "text": "earned Helpful (Silver)",
    }


def test_a_program_without_badges_or_tasks_pays_nothing(engine: Engine) -> None:
    bench = load_example(engine, "bench")
    assert bench.program.badges == ()
    assert bench.program.tasks == ()
    with engine.connect() as conn:
        # No batch state, and so no query, for a program without badges or tasks.
        assert growth_badges.start(conn, bench.program, [1, 2], [NOW.date()]) is None
    raws = [{"event_id": "k1", "member_id": "m1", "type": "check_in", "occurred_at": "2026-01-05T11:00:00Z"}]
    [result] = feed(engine, bench, raws)
    assert "badges" not in result
    assert "tasks" not in result
    with engine.connect() as conn:
        for table in (member_badges, member_counters, task_progress):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
        view = member_view.show(conn, bench, "m1", now=NOW)
    assert view.badges == []
    assert view.tasks == []


def test_coffee_keeps_its_numbers_with_its_onboarding_task(engine: Engine) -> None:
    coffee = load_example(engine, "coffee")
    raws = [
        {
            "event_id": "p1",
            "member_id": "m1",
            "type": "purchase",
            "occurred_at": "2026-01-05T10:00:00Z",
            "attributes": {"amount": 120},
        },
        {"event_id": "k1", "member_id": "m1", "type": "check_in", "occurred_at": "2026-01-05T11:00:00Z"},
        {"event_id": "k2", "member_id": "m1", "type": "check_in", "occurred_at": "2026-01-05T12:00:00Z"},
    ]
    results = feed(engine, coffee, raws)
    # The issue-2 numbers of coffee: 120 -> 2 ★ + 12 Beans; a check-in: 1 Bean, once a day.
    assert [[a["text"] for a in r["awards"]] for r in results] == [["2 ★", "12 Beans"], ["1 Beans"], []]
    assert all("badges" not in r and "tasks" not in r for r in results)
    with engine.connect() as conn:
        for table in (member_badges, member_counters, task_progress):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
        view = member_view.show(conn, coffee, "m1", now=NOW + timedelta(days=1))
    assert view.badges == []
    assert [t["text"] for t in view.tasks] == ["Complete your profile: 0/3"]


def test_badge_rewards_count_on_leaderboards_as_the_ledger_says(engine: Engine) -> None:
    # A board on the currency a badge level pays: its scores must match the ledger (verify).
    forum = load(
        engine, FORUM + "leaderboards:\n  - {key: growth, name: Growth, period: month, measure: {currency: growth}}\n"
    )
    feed(engine, forum, ANSWERS)
    with engine.connect() as conn:
        report = verify.verify(conn, forum)
        score = conn.execute(select(leaderboard_scores.c.score)).scalar_one()
    assert report.ok, report.mismatches
    assert score == 3 * 3 + 15  # three answers and Helpful (Silver)
