"""Outlets under concurrency on PostgreSQL, with real processes: prize stock under concurrent
entries, one balance entered twice at once, one envelope claimed twice at once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from kinloop.clock import utcnow
from kinloop.domain.errors import InsufficientBalance, OutOfStock
from kinloop.services import draws, envelopes, ledger, programs
from kinloop.services import verify as verify_svc
from kinloop.store.db import connect
from kinloop.store.tables import draw_entries, draw_prizes, envelope_claims
from tests.conftest import load_example
from tests.test_concurrency_pg import pg_url as emptied_after
from tests.test_concurrency_pg import run_together

pytestmark = pytest.mark.postgres
pg = emptied_after  # the session's PostgreSQL database, emptied after each test


def enter_worker(url: str, worker: int, attempts: int) -> dict[str, int]:
    engine = connect(url)
    won = refused = broke = 0
    try:
        for n in range(attempts):
            try:
                with engine.begin() as conn:
                    loaded = programs.active(conn, "coffee")
                    draws.enter(conn, loaded, "wheel", f"m{worker % 2}", entry_key=f"w{worker}-{n}", now=utcnow())
                won += 1
            except OutOfStock:
                refused += 1
            except InsufficientBalance:
                broke += 1
        return {"won": won, "refused": refused, "broke": broke}
    finally:
        engine.dispose()


def claim_worker(url: str, member_id: str) -> int:
    engine = connect(url)
    try:
        with engine.begin() as conn:
            loaded = programs.active(conn, "coffee")
            return envelopes.claim(conn, loaded, "g", member_id, now=utcnow()).amount
    finally:
        engine.dispose()


def setup(url: str, funds: dict[str, int]) -> Any:
    engine = connect(url)
    coffee = load_example(engine, "coffee", now=utcnow())
    with engine.begin() as conn:
        for m, amount in funds.items():
            ledger.adjust(conn, coffee, m, "beans", amount, reason="t", actor="t", key=None, now=utcnow())
    return engine, coffee


def wheel(conn: Any, coffee: Any, stock: int) -> None:
    now = utcnow()
    spec = draws.DrawIn(
        key="wheel",
        name="Wheel",
        currency="beans",
        cost=Decimal(1),
        opens_at=now - timedelta(hours=1),
        closes_at=now + timedelta(hours=1),
        prizes=[draws.PrizeIn("mug", "Mug", "reward", Decimal(1), stock=stock, reward="mug")],
    )
    draws.create(conn, coffee, spec, now=now, actor="t")


def test_prize_stock_is_never_oversold_under_concurrent_entries(pg: str) -> None:
    engine, coffee = setup(pg, {"m0": 1000, "m1": 1000})
    with engine.begin() as conn:
        wheel(conn, coffee, stock=25)
    out = run_together([(f"w{i}", enter_worker, (pg, i, 15)) for i in range(4)])
    assert sum(r["won"] for r in out.values()) == 25
    assert sum(r["refused"] for r in out.values()) == 60 - 25
    with engine.connect() as conn:
        assert conn.execute(select(draw_prizes.c.stock)).scalar_one() == 0
        seqs = conn.execute(select(draw_entries.c.seq).order_by(draw_entries.c.seq)).scalars().all()
        assert seqs == list(range(1, 26))
        assert verify_svc.verify(conn, coffee).ok
        draws.close(conn, coffee, "wheel", now=utcnow(), actor="t")
        assert draws.verify_record(draws.record(conn, coffee, "wheel", now=utcnow())) == []
    engine.dispose()


def test_one_balance_entered_from_several_processes_is_spent_once(pg: str) -> None:
    engine, coffee = setup(pg, {"m0": 5, "m1": 5})
    with engine.begin() as conn:
        wheel(conn, coffee, stock=1000)
    out = run_together([(f"w{i}", enter_worker, (pg, i, 5)) for i in range(4)])
    assert sum(r["won"] for r in out.values()) == 10  # 5 Beans each, 1 per entry
    assert sum(r["broke"] for r in out.values()) == 10
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(draw_entries)).scalar_one() == 10
        assert verify_svc.verify(conn, coffee).ok
    engine.dispose()


def test_an_envelope_claimed_twice_at_once_is_claimed_once(pg: str) -> None:
    engine, coffee = setup(pg, {"m1": 100, "m2": 1})
    with engine.begin() as conn:
        envelopes.send(conn, coffee, "m1", key="g", amount=90, shares=3, now=utcnow())
    out = run_together([(f"c{i}", claim_worker, (pg, "m2")) for i in range(4)])
    assert len(set(out.values())) == 1  # every process got the one claim
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(envelope_claims)).scalar_one() == 1
        assert verify_svc.verify(conn, coffee).ok
    engine.dispose()
