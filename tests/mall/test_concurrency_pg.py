"""The mall under concurrency on PostgreSQL, with real processes released together: stock is
never oversold, points never double-spent, a code never issued twice, a hold captured once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from kinloop.clock import utcnow
from kinloop.domain.errors import InsufficientBalance, SoldOut
from kinloop.services import holds, ingest, mall, orders, programs
from kinloop.services import verify as verify_svc
from kinloop.store.db import connect
from kinloop.store.tables import entries, reward_codes, rewards
from kinloop.store.tables import orders as orders_table
from tests.conftest import NOW, load_example
from tests.test_concurrency_pg import pg_url, run_together

pytestmark = pytest.mark.postgres
__all__ = ["pg_url"]
PROCESSES = 4


def seed(url: str, member_ids: list[str], beans: int) -> None:
    """The coffee program and members with `beans` Beans each."""
    engine = connect(url)
    coffee = load_example(engine, "coffee")
    with engine.begin() as conn:
        ingest.ingest(
            conn,
            coffee,
            [
                {
                    "event_id": f"seed-{m}",
                    "member_id": m,
                    "type": "purchase",
                    "occurred_at": NOW.isoformat(),
                    "attributes": {"amount": beans * 10},
                }
                for m in member_ids
            ],
            now=NOW,
        )
    engine.dispose()


def put_reward(url: str, key: str, **fields: Any) -> None:
    engine = connect(url)
    with engine.begin() as conn:
        loaded = programs.active(conn, "coffee")
        mall.put(conn, loaded, key, {"name": key, "currency": "beans", "price": 10, **fields}, now=NOW)
    engine.dispose()


# --- process bodies ---------------------------------------------------------------------------
def order_worker(url: str, member_ids: list[str], reward: str, attempts: int) -> dict[str, Any]:
    engine = connect(url)
    placed: list[list[str]] = []
    refused = 0
    try:
        for n in range(attempts):
            member_id = member_ids[n % len(member_ids)]
            try:
                with engine.begin() as conn:
                    loaded = programs.active(conn, "coffee")
                    order = orders.place(conn, loaded, member_id, reward, key=None, now=utcnow())
                placed.append(list(order.codes))
            except (SoldOut, InsufficientBalance):
                refused += 1
        return {"placed": len(placed), "codes": placed, "refused": refused}
    finally:
        engine.dispose()


def capture_worker(url: str, hold_id: int) -> str:
    engine = connect(url)
    try:
        with engine.begin() as conn:
            loaded = programs.active(conn, "coffee")
            return holds.capture(conn, loaded, hold_id, now=utcnow()).outcome
    finally:
        engine.dispose()


def verified(url: str) -> list[Any]:
    engine = connect(url)
    with engine.connect() as conn:
        report = verify_svc.verify(conn, programs.active(conn, "coffee"))
    engine.dispose()
    return report.mismatches


def scalar(url: str, query: Any) -> Any:
    engine = connect(url)
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    engine.dispose()
    return value


# --- tests ------------------------------------------------------------------------------------
def test_stock_is_never_oversold(pg_url: str) -> None:
    buyers = [f"m{i:02d}" for i in range(20)]
    seed(pg_url, buyers, 1000)
    put_reward(pg_url, "mug", stock=10)
    got = run_together([(f"w{w}", order_worker, (pg_url, buyers[w::PROCESSES], "mug", 10)) for w in range(PROCESSES)])
    assert sum(r["placed"] for r in got.values()) == 10
    assert sum(r["refused"] for r in got.values()) == PROCESSES * 10 - 10
    assert scalar(pg_url, select(rewards.c.sold)) == 10
    assert scalar(pg_url, select(func.count()).select_from(orders_table)) == 10
    assert verified(pg_url) == []


def test_points_are_never_double_spent(pg_url: str) -> None:
    seed(pg_url, ["m00"], 100)  # ten orders' worth
    put_reward(pg_url, "latte")
    got = run_together([(f"w{w}", order_worker, (pg_url, ["m00"], "latte", 8)) for w in range(PROCESSES)])
    assert sum(r["placed"] for r in got.values()) == 10
    assert scalar(pg_url, select(func.count()).select_from(orders_table)) == 10
    assert verified(pg_url) == []


def test_each_code_is_issued_once(pg_url: str) -> None:
    buyers = [f"m{i:02d}" for i in range(8)]
    seed(pg_url, buyers, 1000)
    put_reward(pg_url, "voucher", kind="digital", uses_codes=True)
    engine = connect(pg_url)
    with engine.begin() as conn:
        mall.upload_codes(
            conn, programs.active(conn, "coffee").program_id, "voucher", [f"V{i}" for i in range(12)], now=NOW
        )
    engine.dispose()
    got = run_together(
        [(f"w{w}", order_worker, (pg_url, buyers[w::PROCESSES], "voucher", 6)) for w in range(PROCESSES)]
    )
    issued = [code for r in got.values() for codes in r["codes"] for code in codes]
    assert sorted(issued) == sorted(f"V{i}" for i in range(12))
    assert scalar(pg_url, select(func.count()).select_from(reward_codes).where(reward_codes.c.order_id.is_(None))) == 0


def test_two_captures_of_one_hold_capture_once(pg_url: str) -> None:
    seed(pg_url, ["m00"], 100)
    engine = connect(pg_url)
    with engine.begin() as conn:
        hold = holds.create(conn, programs.active(conn, "coffee"), "m00", "beans", 60, now=utcnow())
    engine.dispose()
    got = run_together([(f"w{w}", capture_worker, (pg_url, hold.row.id)) for w in range(PROCESSES)])
    assert sorted(got.values()) == ["done"] + ["repeat"] * (PROCESSES - 1)
    assert scalar(pg_url, select(func.count()).select_from(entries).where(entries.c.kind == "capture")) == 1
    assert verified(pg_url) == []
