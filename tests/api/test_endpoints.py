"""Every endpoint of the HTTP API, through its real app, on SQLite and PostgreSQL.

The coffee program (tests/conftest.py, examples/coffee.yaml): a purchase earns 1 ★ per 50 and
1 Bean per 10 of its amount; tiers Green (0 ★), Jade (4 ★), Gold (16 ★); Beans expire after
12 months (dates in Europe/Paris). The clock is fixed at 2026-03-01 12:00 UTC.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from kinloop.api import deps
from kinloop.services import member_view
from kinloop.store.db import StatementCounter
from kinloop.store.tables import audit_log, entries, members, program_versions
from tests.api.conftest import PROBLEM, Api, assert_problem, event, row_counts
from tests.conftest import EXAMPLES

COFFEE_SOURCE = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
STAMP = "2026-03-01T12:00:00+00:00"


def award(rule: str, currency: str, amount: int, text: str) -> dict[str, Any]:
    return {"rule": rule, "currency": currency, "amount": amount, "kind": "rule", "pending": False, "text": text}


def purchase_awards(stars: int, beans: int) -> list[dict[str, Any]]:
    return [
        award("purchase_stars", "stars", stars, f"{stars} ★"),
        award("purchase_beans", "beans", beans, f"{beans} Beans"),
    ]


# --- events ---------------------------------------------------------------------------------


def test_one_event_lists_its_awards_and_the_tier_reached_in_the_programs_words(api: Api) -> None:
    r = api.client.post("/v1/events", json=event("order-1", "m1", 250), headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "index": 0,
        "event_id": "order-1",
        "status": "accepted",
        "awards": purchase_awards(5, 25),
        "tier_changed": {"from": None, "to": "jade", "text": "reached Jade"},
        "badges": [],
        "tasks": [],
        "error": None,
    }


def test_a_repeated_event_returns_the_first_result_and_awards_nothing(api: Api) -> None:
    first = api.post_event(event("order-1", "m1", 250))
    counts = row_counts(api.engine)
    # The same id with another amount (and even another member) is still the first event.
    again = api.post_event(event("order-1", "m2", 5000))
    assert again == {**first, "status": "duplicate"}
    assert row_counts(api.engine) == counts
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert member["balances"] == {"stars": 5, "beans": 25}
    assert api.client.get("/v1/members/m2", headers=api.auth("read")).status_code == 404


def test_a_batch_succeeds_or_fails_event_by_event_with_each_failure_at_its_index(api: Api) -> None:
    api.post_event(event("old", "m1", 50))
    batch = [
        event("b-1", "m1", 100),
        {**event("b-2", "m1", 100), "type": "refund"},
        {**event("b-3", "m2", 100), "attributes": {}},
        event("old", "m1", 999),
        event("b-1", "m1", 100),
        {**event("b-6", "m3", 100), "occurred_at": "2026-03-02T12:00:00Z"},
        event("b-7", "m2", 200),
    ]
    r = api.client.post("/v1/events", json={"events": batch}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 3)
    results = body["results"]
    assert [(x["index"], x["event_id"], x["status"]) for x in results] == [
        (0, "b-1", "accepted"),
        (1, "b-2", "rejected"),
        (2, "b-3", "rejected"),
        (3, "old", "duplicate"),
        (4, "b-1", "duplicate"),
        (5, "b-6", "rejected"),
        (6, "b-7", "accepted"),
    ]
    assert results[0]["awards"] == purchase_awards(2, 10)
    assert results[0]["tier_changed"] is None  # m1 was Green already, 1 ★ + 2 ★ is still Green
    assert results[4]["awards"] == results[0]["awards"]
    assert results[3]["awards"] == purchase_awards(1, 5)
    assert results[6]["awards"] == purchase_awards(4, 20)
    assert results[6]["tier_changed"] == {"from": None, "to": "jade", "text": "reached Jade"}
    errors = {x["index"]: x["error"] for x in results if x["status"] == "rejected"}
    assert errors[1]["code"] == "unknown_event_type"
    assert errors[1]["field"] == "type"
    assert errors[1]["detail"] == "unknown event type 'refund' (this program knows: check_in, purchase)"
    assert errors[2] == {
        "code": "invalid_attribute",
        "detail": "attribute 'amount' is required for 'purchase' events",
        "field": "attributes.amount",
    }
    assert errors[5]["code"] == "invalid_input"
    assert errors[5]["field"] == "occurred_at"
    assert "in the future" in errors[5]["detail"]
    balances = {
        m: api.client.get(f"/v1/members/{m}", headers=api.auth("read")).json()["balances"] for m in ("m1", "m2")
    }
    assert balances == {"m1": {"stars": 3, "beans": 15}, "m2": {"stars": 4, "beans": 20}}
    assert api.client.get("/v1/members/m3", headers=api.auth("read")).status_code == 404


def test_a_single_event_that_cannot_be_accepted_is_a_problem(api: Api) -> None:
    before = row_counts(api.engine)
    r = api.client.post("/v1/events", json={**event("x", "m1"), "type": "refund"}, headers=api.auth("ingest"))
    body = assert_problem(r, 422, "unknown_event_type")
    assert body["field"] == "type"
    assert row_counts(api.engine) == before


# --- members --------------------------------------------------------------------------------


def test_a_member_has_balances_tier_progress_and_soon_expiring_points(api: Api) -> None:
    # Beans earned a year ago expire within 30 days of the fixed clock, on Paris dates.
    api.post_event(event("old-1", "m1", 100, occurred_at="2025-03-10T09:00:00Z"))
    api.post_event(event("old-2", "m1", 50, occurred_at="2025-03-20T23:30:00Z"))  # 2025-03-21 in Paris
    r = api.client.get("/v1/members/m1", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "member_id": "m1",
        "balances": {"stars": 3, "beans": 15},
        "pending": {"stars": 0, "beans": 0},
        "tier": {"key": "green", "name": "Green"},
        "next_tier": {"key": "jade", "name": "Jade", "missing": 1, "text": "1 ★ to Jade"},
        "tier_status": {
            "source": "earned",
            "earned": "green",
            "qualification": 3,
            "qualification_text": "3 ★ in the current window",
            "window": "lifetime",
            "grace_until": None,
            "paid": None,
            "manual": None,
            "kept": None,
            "keep": None,
        },
        "expiring": [
            {"currency": "beans", "amount": 10, "on": "2026-03-10", "text": "10 Beans expire on 2026-03-10"},
            {"currency": "beans", "amount": 5, "on": "2026-03-21", "text": "5 Beans expire on 2026-03-21"},
        ],
        "display": {"stars": "3 ★", "beans": "15 Beans"},
        "badges": [],
        "tasks": [
            {
                "key": "complete_profile",
                "name": "Complete your profile",
                "every": "once",
                "period": "all",
                "progress": 0,
                "target": 3,
                "done": False,
                "text": "Complete your profile: 0/3",
                "reward": {"currency": "beans", "amount": 5, "text": "5 Beans"},
            }
        ],
        "checkin": {  # m1 has never checked in: day 1 of a streak is on offer today (Paris)
            "streak": 0,
            "best": 0,
            "days": 0,
            "checked_in_today": False,
            "last_day": None,
            "next_reward": {"day": 1, "on": "2026-03-01", "currency": "beans", "amount": 1, "text": "day 1: 1 Beans"},
            "next_milestone": None,
            "makeup_cards_left": 0,
            "text": "no streak yet; not checked in today",
        },
        "campaigns": {
            "active": [],  # NOW is a Sunday; the member day is on Wednesdays
            "next": {
                "key": "member_day",
                "name": "Member day",
                "status": "upcoming",
                "schedule": "every Wednesday",
                "starts_at": None,
                "ends_at": None,
                "member_day": {"weekday": "wednesday", "day_of_month": None},
                "next_start": "2026-03-04T00:00:00+01:00",
                "multiplier": "2",
                "bonus": None,
                "tiers": [],
                "condition": None,
                "rules": ["purchase_beans"],
                "currencies": [],
                "budget": None,
                "text": "Member day: ×2 every Wednesday",
            },
        },
        "privileges": [],  # Green holds none
        "profile": {},
        "holds": {"held": {}, "text": {}, "active": []},
    }


def test_the_top_tier_has_no_next_tier(api: Api) -> None:
    api.post_event(event("big", "m1", 1000))
    body = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert body["tier"] == {"key": "gold", "name": "Gold"}
    assert body["next_tier"] is None
    assert body["display"] == {"stars": "20 ★", "beans": "100 Beans"}


def test_an_unknown_member_is_404(api: Api) -> None:
    body = assert_problem(api.client.get("/v1/members/nobody", headers=api.auth("read")), 404, "unknown_member")
    assert body["field"] == "member_id"


def test_each_read_sees_what_was_committed_before_it_even_after_a_failed_read(api: Api) -> None:
    """Reads share a kept connection on SQLite: each must end its transaction, failed or not,
    or the next would read an old snapshot (or none)."""
    read = api.auth("read")
    api.post_event(event("first", "m1", 100))
    assert api.client.get("/v1/members/m1", headers=read).json()["balances"]["stars"] == 2
    assert_problem(api.client.get("/v1/members/nobody", headers=read), 404, "unknown_member")
    api.post_event(event("second", "m1", 500))
    assert api.client.get("/v1/members/m1", headers=read).json()["balances"]["stars"] == 12
    api.post_event(event("third", "m2", 50))
    assert api.client.get("/v1/members/m2", headers=read).json()["balances"]["stars"] == 1


def _in_transaction(conn: Any) -> bool:
    """Whether the driver's connection is inside a transaction, by the driver's own account."""
    driver = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        return bool(driver.in_transaction)
    import psycopg

    return bool(driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)


def test_a_member_read_runs_outside_any_transaction(api: Api, monkeypatch: Any) -> None:
    """Its one statement is its own snapshot: no BEGIN before it, no COMMIT after (on
    PostgreSQL two of its four round trips, on SQLite 7% of its CPU). A read that finds the
    program changed reads the new version with statements of SQLAlchemy's, in a transaction
    of their own, which is ended: the kept connection (SQLite) is left outside any."""
    seen: list[bool] = []
    show = member_view.show

    def spy(conn: Any, *args: Any, **kwargs: Any) -> Any:
        out = show(conn, *args, **kwargs)
        seen.append(_in_transaction(conn))
        return out

    monkeypatch.setattr(member_view, "show", spy)
    read = api.auth("read")
    api.post_event(event("tx-1", "m1", 100))
    assert api.client.get("/v1/members/m1", headers=read).json()["balances"]["stars"] == 2
    assert seen == [False]

    jade_at_6 = COFFEE_SOURCE.replace("{key: jade, name: Jade, threshold: 4}", "{key: jade, name: Jade, threshold: 6}")
    assert api.client.post("/v1/program/versions", json={"source": jade_at_6}, headers=api.auth("admin")).is_success
    assert api.client.get("/v1/members/m1", headers=read).json()["next_tier"]["text"] == "4 ★ to Jade"
    kept = api.client.app.state.kinloop.loop_reader  # type: ignore[attr-defined]
    if kept is not None:
        assert not kept.in_transaction()
        assert not _in_transaction(kept)
    api.post_event(event("tx-2", "m1", 100))
    assert api.client.get("/v1/members/m1", headers=read).json()["next_tier"]["text"] == "2 ★ to Jade"
    assert seen[-1] is False


def test_on_postgresql_member_reads_take_a_few_threads_at_most(api: Api, monkeypatch: Any) -> None:
    """More threads only contend for the GIL: twelve reads at once run `READ_THREADS` at a time."""
    if api.engine.dialect.name == "sqlite":
        pytest.skip("SQLite reads run on the event loop")
    lock = threading.Lock()
    running = most = 0
    show = member_view.show

    def slow(conn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        try:
            return show(conn, *args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(member_view, "show", slow)
    api.post_event(event("th-1", "m1", 100))
    read = api.auth("read")

    async def twelve_at_once() -> list[httpx.Response]:
        # One event loop, as in a worker (a TestClient without `with` runs one per request).
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kinloop") as client:
            return list(await asyncio.gather(*(client.get("/v1/members/m1", headers=read) for _ in range(12))))

    replies = asyncio.run(twelve_at_once())
    assert [r.status_code for r in replies] == [200] * 12
    assert 1 < most <= deps.READ_THREADS


def test_on_sqlite_posts_leave_the_wal_to_the_checkpointer(api: Api) -> None:
    """No post's commit checkpoints the WAL; committed writes ask the checkpointer instead."""
    st = api.client.app.state.kinloop  # type: ignore[attr-defined]
    if api.engine.dialect.name != "sqlite":
        assert st.checkpointer is None
        return
    with st.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    st.checkpointer.every = 0.0
    api.post_event(event("o-1", "m1", 100))
    assert st.checkpointer.thread is not None
    st.checkpointer.thread.join(30)
    assert st.checkpointer.runs == 1
    r = api.client.post(
        "/v1/members/m1/spends", json={"currency": "beans", "amount": 1, "reason": "r"}, headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    st.checkpointer.thread.join(30)
    assert st.checkpointer.runs == 2


def test_put_creates_or_replaces_a_profile(api: Api) -> None:
    profile = {
        "display_name": "Ada",
        "birthday": "1990-04-01",
        "timezone": "Europe/Paris",
        "joined_at": "2024-01-15",
        "attributes": {"city": "Lyon", "vip": True, "visits": 3},
    }
    r = api.client.put("/v1/members/m9", json=profile, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    stored = {
        "city": "Lyon",
        "vip": True,
        "visits": 3,
        "display_name": "Ada",
        "birthday": "1990-04-01",
        "timezone": "Europe/Paris",
        "joined_at": "2024-01-15",
    }
    assert r.json()["profile"] == stored
    assert r.json()["balances"] == {"stars": 0, "beans": 0}
    assert api.client.get("/v1/members/m9", headers=api.auth("read")).json()["profile"] == stored
    # A PUT replaces the whole profile.
    r = api.client.put("/v1/members/m9", json={"display_name": "Ada L."}, headers=api.auth("ingest"))
    assert r.json()["profile"] == {"display_name": "Ada L."}
    assert api.client.get("/v1/members/m9", headers=api.auth("read")).json()["profile"] == {"display_name": "Ada L."}


def test_a_bad_birthday_or_time_zone_is_refused_and_changes_nothing(api: Api) -> None:
    assert api.client.put("/v1/members/m1", json={"display_name": "Bo"}, headers=api.auth("ingest")).status_code == 200
    before = row_counts(api.engine)
    cases = [
        ({"birthday": "1990-02-30"}, "invalid_input", "birthday"),
        ({"birthday": "01/04/1990"}, "invalid_request", "birthday"),
        ({"joined_at": "2024-13-01"}, "invalid_input", "joined_at"),
        ({"timezone": "Mars/Olympus_Mons"}, "invalid_input", "timezone"),
        ({"display_name": "Bo", "shoe_size": 44}, "invalid_request", "shoe_size"),
    ]
    for body, code, field in cases:
        r = api.client.put("/v1/members/m1", json=body, headers=api.auth("ingest"))
        assert assert_problem(r, 422, code)["field"] == field, body
        # And a member that does not exist yet is not created by a refused PUT.
        r = api.client.put("/v1/members/new-one", json=body, headers=api.auth("ingest"))
        assert assert_problem(r, 422, code)["field"] == field, body
    assert row_counts(api.engine) == before
    assert api.client.get("/v1/members/m1", headers=api.auth("read")).json()["profile"] == {"display_name": "Bo"}


# --- ledger ---------------------------------------------------------------------------------


def test_the_ledger_pages_newest_first_with_a_cursor(api: Api) -> None:
    for i in range(4):
        api.post_event(event(f"o-{i}", "m1", 50 * (i + 1)))  # 2 entries each: stars and beans
    api.post_event(event("other", "m2", 100))
    everything = api.client.get("/v1/members/m1/ledger?limit=500", headers=api.auth("read")).json()
    ids = [e["entry_id"] for e in everything["entries"]]
    assert everything["next_cursor"] is None
    assert len(ids) == 8
    assert ids == sorted(ids, reverse=True)
    assert [e["event_id"] for e in everything["entries"]] == [f"o-{i}" for i in (3, 3, 2, 2, 1, 1, 0, 0)]
    newest = everything["entries"][0]
    assert newest == {
        "entry_id": ids[0],
        "kind": "earn",
        "currency": "beans",
        "amount": 20,
        "signed": 20,
        "from": "issuance",
        "to": "available",
        "event_id": "o-3",
        "rule": "purchase_beans",
        "reason": None,
        "actor": None,
        "effective_at": "2026-02-10T09:00:00+00:00",
        "created_at": STAMP,
        "text": "20 Beans",
    }

    pages = []
    cursor = None
    while True:
        url = "/v1/members/m1/ledger?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(url, headers=api.auth("read")).json()
        pages.append([e["entry_id"] for e in page["entries"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == str(pages[-1][-1])
    assert pages == [ids[0:3], ids[3:6], ids[6:8]]
    # A page that ends exactly at the last entry has no next cursor.
    page = api.client.get("/v1/members/m1/ledger?limit=4&cursor=" + str(ids[3]), headers=api.auth("read")).json()
    assert [e["entry_id"] for e in page["entries"]] == ids[4:8]
    assert page["next_cursor"] is None
    # A cursor beyond every entry starts from the newest.
    page = api.client.get("/v1/members/m1/ledger?limit=2&cursor=9999999999999999999", headers=api.auth("read"))
    assert [e["entry_id"] for e in page.json()["entries"]] == ids[0:2]


# --- adjustments, spends, reversals ---------------------------------------------------------


def _audit(api: Api) -> list[tuple[Any, ...]]:
    with api.engine.connect() as conn:
        rows = conn.execute(
            select(
                audit_log.c.program_id,
                audit_log.c.actor,
                audit_log.c.action,
                audit_log.c.target,
                audit_log.c.reason,
                audit_log.c.details,
                audit_log.c.at,
            ).order_by(audit_log.c.id)
        ).all()
    return [tuple(r) for r in rows]


def test_an_adjustment_needs_admin_and_a_reason_and_is_audited(api: Api) -> None:
    api.post_event(event("order-1", "m1", 250))
    path = "/v1/members/m1/adjustments"
    before = row_counts(api.engine)
    credit = {"currency": "beans", "amount": 10, "reason": "coffee was cold"}
    assert_problem(api.client.post(path, json=credit, headers=api.auth("ingest")), 403, "forbidden")
    no_reason = api.client.post(path, json={"currency": "beans", "amount": 10}, headers=api.auth("admin"))
    assert assert_problem(no_reason, 422, "invalid_request")["field"] == "reason"
    blank = api.client.post(path, json={**credit, "reason": "   "}, headers=api.auth("admin"))
    assert assert_problem(blank, 422, "invalid_input")["field"] == "reason"
    assert row_counts(api.engine) == before
    assert _audit(api) == []

    r = api.client.post(path, json=credit, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    credited = r.json()
    assert credited == {
        "entry_id": credited["entry_id"],
        "member_id": "m1",
        "currency": "beans",
        "amount": 10,
        "balance": 35,
        "replayed": False,
        "text": "10 Beans; balance 35 Beans",
    }
    r = api.client.post(
        path, json={"currency": "stars", "amount": "-2", "reason": "duplicate order"}, headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    debited = r.json()
    assert (debited["amount"], debited["balance"], debited["text"]) == (2, 3, "2 ★; balance 3 ★")
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert member["balances"] == {"stars": 3, "beans": 35}
    assert member["tier"] == {"key": "green", "name": "Green"}  # 3 ★ is below Jade again

    audit = _audit(api)
    assert [row[:6] for row in audit] == [
        (
            api.coffee.program_id,
            "admin key",
            "adjust",
            "m1",
            "coffee was cold",
            {"currency": "beans", "amount": 10, "entry_id": credited["entry_id"]},
        ),
        (
            api.coffee.program_id,
            "admin key",
            "adjust",
            "m1",
            "duplicate order",
            {"currency": "stars", "amount": -2, "entry_id": debited["entry_id"]},
        ),
    ]
    assert all(row[6].isoformat() == STAMP for row in audit)
    with api.engine.connect() as conn:
        actors = conn.execute(
            select(entries.c.kind, entries.c.actor, entries.c.reason).where(
                entries.c.id.in_([credited["entry_id"], debited["entry_id"]])
            )
        ).all()
    assert sorted(tuple(a) for a in actors) == [
        ("adjustment", "admin key", "coffee was cold"),
        ("adjustment", "admin key", "duplicate order"),
    ]


def test_a_spend_is_idempotent_and_never_overdraws(api: Api) -> None:
    api.post_event(event("order-1", "m1", 250))  # 25 Beans
    path = "/v1/members/m1/spends"
    spend = {"currency": "beans", "amount": 10, "reason": "latte", "idempotency_key": "pos-77"}
    r = api.client.post(path, json=spend, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    first = r.json()
    assert first == {
        "entry_id": first["entry_id"],
        "member_id": "m1",
        "currency": "beans",
        "amount": 10,
        "balance": 15,
        "replayed": False,
        "text": "10 Beans; balance 15 Beans",
    }
    counts = row_counts(api.engine)
    again = api.client.post(path, json=spend, headers=api.auth("ingest"))
    assert again.status_code == 200, again.text
    assert again.json() == {**first, "replayed": True}
    assert row_counts(api.engine) == counts

    conflict = api.client.post(path, json={**spend, "amount": 11}, headers=api.auth("ingest"))
    assert_problem(conflict, 409, "idempotency_conflict")
    short = api.client.post(
        path, json={"currency": "beans", "amount": 16, "reason": "two lattes"}, headers=api.auth("ingest")
    )
    body = assert_problem(short, 409, "insufficient_balance")
    assert body["detail"] == "available balance is 15 Beans, 16 Beans asked"
    assert body["field"] == "amount"
    growth = api.client.post(path, json={"currency": "stars", "amount": 1, "reason": "x"}, headers=api.auth("ingest"))
    assert_problem(growth, 409, "currency_not_spendable")
    unknown = api.client.post(
        "/v1/members/nobody/spends", json={"currency": "beans", "amount": 1, "reason": "x"}, headers=api.auth("ingest")
    )
    assert_problem(unknown, 404, "unknown_member")
    assert row_counts(api.engine) == counts
    assert api.client.get("/v1/members/m1", headers=api.auth("read")).json()["balances"] == {"stars": 5, "beans": 15}

    # Exactly the balance is fine; then nothing is left.
    rest = api.client.post(path, json={"currency": "beans", "amount": "15", "reason": "x"}, headers=api.auth("ingest"))
    assert rest.json()["balance"] == 0


def test_a_full_reversal_claws_back_everything_once(api: Api) -> None:
    api.post_event(event("order-1", "m1", 250))
    r = api.client.post("/v1/events/order-1/reversal", json={"reason": "refunded"}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "event_id": "order-1",
        "clawed_back": {"stars": 5, "beans": 25},
        "unrecovered": {},
        "text": {"stars": "5 ★", "beans": "25 Beans"},
        "unrecovered_text": {},
        "tier_changed": {"from": "jade", "to": "green"},
    }
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert (member["balances"], member["tier"]["key"]) == ({"stars": 0, "beans": 0}, "green")
    counts = row_counts(api.engine)
    again = api.client.post("/v1/events/order-1/reversal", json={}, headers=api.auth("ingest"))
    assert_problem(again, 409, "already_reversed")
    assert_problem(
        api.client.post("/v1/events/nope/reversal", json={}, headers=api.auth("ingest")), 404, "unknown_event"
    )
    assert row_counts(api.engine) == counts
    assert [row[2:5] for row in _audit(api)] == [("reverse", "order-1", "refunded")]


def test_a_reversal_of_spent_points_reports_what_it_could_not_recover(api: Api) -> None:
    api.post_event(event("order-2", "m2", 250))
    spent = api.client.post(
        "/v1/members/m2/spends", json={"currency": "beans", "amount": 20, "reason": "mug"}, headers=api.auth("ingest")
    )
    assert spent.status_code == 200, spent.text
    r = api.client.post("/v1/events/order-2/reversal", json={}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["clawed_back"], body["unrecovered"]) == ({"stars": 5, "beans": 5}, {"beans": 20})
    assert body["unrecovered_text"] == {"beans": "20 Beans"}
    assert api.client.get("/v1/members/m2", headers=api.auth("read")).json()["balances"] == {"stars": 0, "beans": 0}


def test_partial_refunds_take_back_in_proportion_until_nothing_is_left(api: Api) -> None:
    api.post_event(event("order-3", "m1", 250))  # 5 ★, 25 Beans
    path = "/v1/events/order-3/reversal"
    r = api.client.post(path, json={"amount": 100, "reason": "one cup returned"}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    assert (r.json()["clawed_back"], r.json()["tier_changed"]) == (
        {"stars": 2, "beans": 10},
        {"from": "jade", "to": "green"},
    )
    too_much = api.client.post(path, json={"amount": "150.01"}, headers=api.auth("ingest"))
    assert assert_problem(too_much, 422, "invalid_amount")["field"] == "amount"
    r = api.client.post(path, json={"amount": "150"}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    assert r.json()["clawed_back"] == {"stars": 3, "beans": 15}
    assert api.client.get("/v1/members/m1", headers=api.auth("read")).json()["balances"] == {"stars": 0, "beans": 0}
    assert_problem(api.client.post(path, json={"amount": 1}, headers=api.auth("ingest")), 409, "already_reversed")


# --- program versions -----------------------------------------------------------------------


def test_program_versions_upload_list_show_diff_and_activate(api: Api) -> None:
    admin, read = api.auth("admin"), api.auth("read")
    listed = api.client.get("/v1/program/versions", headers=read).json()
    assert len(listed) == 1
    v1 = listed[0]
    assert (v1["version"], v1["active"], v1["created_at"]) == (1, True, STAMP)
    assert re.fullmatch(r"[0-9a-f]{64}", v1["digest"])
    shown = api.client.get("/v1/program/versions/1", headers=read).json()
    assert shown == {**v1, "source": COFFEE_SOURCE}

    api.post_event(event("order-1", "m1", 250))  # 5 ★: Jade, 11 ★ to Gold
    gold_at_20 = COFFEE_SOURCE.replace(
        "{key: gold, name: Gold, threshold: 16}", "{key: gold, name: Gold, threshold: 20}"
    )
    r = api.client.post("/v1/program/versions", json={"source": gold_at_20}, headers=admin)
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert (v2["version"], v2["active"], v2["source"]) == (2, True, gold_at_20)
    assert v2["digest"] != v1["digest"]
    assert api.client.get("/v1/members/m1", headers=read).json()["next_tier"]["text"] == "15 ★ to Gold"

    diff = api.client.get("/v1/program/versions/1/diff/2", headers=read).json()
    assert diff == {
        "program": "coffee",
        "from_version": 1,
        "to_version": 2,
        "diff": diff["diff"],
    }
    changed = [line for line in diff["diff"].splitlines() if line[:1] in "+-"]
    assert changed == [
        "--- version 1",
        "+++ version 2",
        "-    - {key: gold, name: Gold, threshold: 16}",
        "+    - {key: gold, name: Gold, threshold: 20}",
    ]
    assert api.client.get("/v1/program/versions/2/diff/2", headers=read).json()["diff"] == ""

    r = api.client.post("/v1/program/versions/1/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {**v1, "active": True}
    assert [(v["version"], v["active"]) for v in api.client.get("/v1/program/versions", headers=read).json()] == [
        (1, True),
        (2, False),
    ]
    assert api.client.get("/v1/members/m1", headers=read).json()["next_tier"]["text"] == "11 ★ to Gold"

    # Uploading without activating keeps the active version.
    staged = gold_at_20.replace("name: Coffee Club", "name: Coffee Club+")
    r = api.client.post("/v1/program/versions", json={"source": staged, "activate": False}, headers=admin)
    assert (r.status_code, r.json()["version"], r.json()["active"]) == (201, 3, False)
    assert [v["active"] for v in api.client.get("/v1/program/versions", headers=read).json()] == [True, False, False]

    assert_problem(api.client.get("/v1/program/versions/9", headers=read), 404, "not_found")
    assert_problem(api.client.get("/v1/program/versions/1/diff/9", headers=read), 404, "not_found")
    assert_problem(api.client.post("/v1/program/versions/9/activate", headers=admin), 404, "not_found")
    with api.engine.connect() as conn:
        active = conn.execute(
            select(program_versions.c.version).where(
                program_versions.c.program_id == api.coffee.program_id, program_versions.c.active.is_(True)
            )
        ).all()
    assert [a.version for a in active] == [1]


def test_a_broken_program_file_is_refused_with_every_problem_at_its_path(api: Api) -> None:
    before = row_counts(api.engine)
    admin = api.auth("admin")
    r = api.client.post("/v1/program/versions", json={"source": "key: coffee\nname: [unclosed"}, headers=admin)
    body = assert_problem(r, 422, "program_invalid")
    assert len(body["errors"]) == 1
    assert body["errors"][0]["path"] == ""
    assert body["errors"][0]["message"].startswith("not valid YAML: line 2")

    bad_rule = COFFEE_SOURCE.replace("    currency: beans\n    rate:", "    currency: bolts\n    rate:")
    bad_rule = bad_rule.replace("timezone: Europe/Paris", "timezone: Europe/Atlantis")
    r = api.client.post("/v1/program/versions", json={"source": bad_rule}, headers=admin)
    body = assert_problem(r, 422, "program_invalid")
    paths = [e["path"] for e in body["errors"]]
    assert paths == sorted(set(paths), key=paths.index)  # each path once
    assert set(paths) == {"timezone", "rules[1].currency"}
    assert all(set(e) == {"path", "message"} and e["message"] for e in body["errors"])

    other = COFFEE_SOURCE.replace("key: coffee\n", "key: tea\n", 1)
    r = api.client.post("/v1/program/versions", json={"source": other}, headers=admin)
    body = assert_problem(r, 422, "program_invalid")
    assert body["errors"] == [{"path": "key", "message": "this key belongs to program 'coffee', not 'tea'"}]
    assert row_counts(api.engine) == before


# --- service endpoints ----------------------------------------------------------------------


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _added(before: str, after: str, name: str, labels: str) -> float:
    return _metric(after, name, labels) - _metric(before, name, labels)


def test_health_readiness_and_metrics(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "alive"}
    r = api.client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    before = api.client.get("/metrics").text
    api.post_event(event("m-1", "m1", 250))
    api.post_event(event("m-1", "m1", 250))
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert "# TYPE kinloop_events_ingested_total counter" in after
    # Counters are per process and shared by every test: compare before and after.
    for status in ("accepted", "duplicate"):
        assert _added(before, after, "kinloop_events_ingested_total", f'program="coffee",status="{status}"') == 1
    for currency, amount in (("stars", 5), ("beans", 25)):
        assert _added(before, after, "kinloop_awards_total", f'currency="{currency}",program="coffee"') == amount
    labels = 'method="POST",route="/v1/events",status="200"'
    assert _added(before, after, "kinloop_http_requests_total", labels) == 2
    assert "kinloop_http_request_seconds_bucket{" in after


def test_the_docs_are_served_from_this_server_only(api: Api) -> None:
    r = api.client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert re.findall(r"https?://", html) == []
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert sorted(assets) == [
        "/static/swagger/favicon-32x32.png",
        "/static/swagger/swagger-ui-bundle.js",
        "/static/swagger/swagger-ui.css",
    ]
    for asset in assets:
        served = api.client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 0
    assert "SwaggerUIBundle" in api.client.get("/static/swagger/swagger-ui-bundle.js").text
    assert "url: '/openapi.json'" in html


def test_the_openapi_schema_documents_every_endpoint_and_its_problems(api: Api) -> None:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["info"]["title"] == "kinloop"
    expected = {
        ("post", "/v1/events"),
        ("get", "/v1/events/{event_id}"),
        ("post", "/v1/events/{event_id}/reversal"),
        ("get", "/v1/members/{member_id}"),
        ("put", "/v1/members/{member_id}"),
        ("get", "/v1/members/{member_id}/ledger"),
        ("post", "/v1/members/{member_id}/adjustments"),
        ("post", "/v1/members/{member_id}/spends"),
        ("post", "/v1/members/{member_id}/tokens"),
        ("get", "/v1/program/versions"),
        ("post", "/v1/program/versions"),
        ("get", "/v1/program/versions/{version}"),
        ("get", "/v1/program/versions/{a}/diff/{b}"),
        ("post", "/v1/program/versions/{version}/activate"),
    }
    documented = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert expected <= documented
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for method, path in documented:
        responses = schema["paths"][path][method]["responses"]
        for status in ("401", "403", "404", "422", "429"):
            assert responses[status]["content"] == problem, (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "code", "detail"}


def test_members_table_holds_nothing_for_refused_requests(api: Api) -> None:
    """A refused request of each kind on a new member id leaves no member behind."""
    ingest, admin = api.auth("ingest"), api.auth("admin")
    refused = [
        (api.client.post("/v1/events", json={**event("z", "ghost"), "type": "refund"}, headers=ingest), 422),
        (
            api.client.post(
                "/v1/members/ghost/spends", json={"currency": "beans", "amount": 1, "reason": "x"}, headers=ingest
            ),
            404,
        ),
        (
            api.client.post(
                "/v1/members/ghost/adjustments", json={"currency": "bolts", "amount": 1, "reason": "x"}, headers=admin
            ),
            422,
        ),
        (api.client.post("/v1/members/ghost/tokens", json={}, headers=admin), 404),
        (api.client.put("/v1/members/ghost", json={"timezone": "Nowhere/Else"}, headers=ingest), 422),
    ]
    assert [r.status_code for r, _ in refused] == [status for _, status in refused]
    with api.engine.connect() as conn:
        assert conn.execute(select(members.c.member_id)).all() == []


def test_a_member_read_checks_the_program_version_in_its_own_statement(api: Api) -> None:
    """Once this process knows the active version, a read sends one statement (the member view
    with the version check), not a lookup of the program first; on SQLite BEGIN and COMMIT too."""
    api.post_event(event("order-1", "m1", 250))
    api.client.get("/v1/members/nobody", headers=api.auth("read"))  # the key is checked (and kept) once
    engine = api.client.app.state.kinloop.engine  # type: ignore[attr-defined]
    with StatementCounter(engine) as counter:
        r = api.client.get("/v1/members/m1", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    selects = [s for s in counter.statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 1
    assert "program_versions" in selects[0]
    assert "FROM balances" in selects[0]
