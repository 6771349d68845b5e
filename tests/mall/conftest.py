"""Helpers for the mall, order and hold tests: a coffee program with members who have Beans."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from kinloop.services import ingest, ledger, mall, member_view
from kinloop.services import verify as verify_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import entries, holds, lots, orders, rewards
from tests.conftest import NOW


def earn(engine: Engine, coffee: LoadedProgram, member_id: str, beans: int, *, at: datetime = NOW, n: int = 0) -> None:
    """Give a member `beans` Beans (a purchase of 10 times that), earned at `at`."""
    event = {
        "event_id": f"earn-{member_id}-{beans}-{at.isoformat()}-{n}",
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": at.isoformat(),
        "attributes": {"amount": beans * 10},
    }
    with engine.begin() as conn:
        (result,) = ingest.ingest(conn, coffee, [event], now=max(at, NOW))
    assert result.status == "accepted", result


def put_reward(engine: Engine, coffee: LoadedProgram, key: str, **fields: Any) -> mall.StoredReward:
    spec: dict[str, Any] = {"name": key.title(), "currency": "beans", "price": 100, **fields}
    with engine.begin() as conn:
        stored, _ = mall.put(conn, coffee, key, spec, now=NOW)
    return stored


def beans(engine: Engine, coffee: LoadedProgram, member_id: str, now: datetime = NOW) -> int:
    with engine.connect() as conn:
        return int(member_view.show(conn, coffee, member_id, now=now).balances["beans"])


def lot_state(engine: Engine) -> list[tuple[int, int, datetime | None]]:
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(lots.c.id, lots.c.remaining, lots.c.expires_at).order_by(lots.c.id))
        ]  # type: ignore[misc]


def assert_verified(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.connect() as conn:
        report = verify_svc.verify(conn, coffee)
    assert report.mismatches == []


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        out = {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (orders, holds, entries)
        }
        out["sold"] = int(conn.execute(select(func.coalesce(func.sum(rewards.c.sold), 0))).scalar_one())
    return out


def spend(engine: Engine, coffee: LoadedProgram, member_id: str, amount: int) -> None:
    with engine.begin() as conn:
        ledger.spend(
            conn, coffee, member_id, "beans", amount, reason="coffee", key=None, now=NOW + timedelta(seconds=1)
        )
