"""Concurrent uses on PostgreSQL, from separate processes: never more than the quota."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from kinloop.domain.errors import QuotaExhausted
from kinloop.services import ingest, privileges, programs
from kinloop.store.db import connect
from kinloop.store.tables import privilege_uses
from tests.conftest import load_example
from tests.test_concurrency_pg import pg_url, run_together

pytestmark = pytest.mark.postgres
__all__ = ["pg_url"]  # the fixture, used by name

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PROCESSES = 4
MONTHS = 12
ATTEMPTS = 3  # per month and process, against a quota of 2 a month


def use_worker(url: str, worker: int) -> dict[str, int]:
    """Try to use ada's free drink ATTEMPTS times in each month of 2027, each with a key of its own."""
    engine = connect(url)
    used = refused = 0
    try:
        with engine.connect() as conn:
            lp = programs.active(conn, "coffee")
        for month in range(1, MONTHS + 1):
            at = datetime(2027, month, 10, 12, 0, tzinfo=UTC)
            for n in range(ATTEMPTS):
                try:
                    with engine.begin() as conn:
                        privileges.use(conn, lp, "ada", "free_drink", key=f"w{worker}-{month}-{n}", now=at)
                    used += 1
                except QuotaExhausted:
                    refused += 1
        return {"used": used, "refused": refused}
    finally:
        engine.dispose()


def test_concurrent_uses_never_exceed_the_quota(pg_url: str) -> None:
    engine = connect(pg_url)
    lp = load_example(engine, "coffee")
    raw = {
        "event_id": "p1",
        "member_id": "ada",
        "type": "purchase",
        "occurred_at": "2026-03-01T09:00:00Z",
        "attributes": {"amount": 1000},
    }
    with engine.begin() as conn:
        ingest.ingest(conn, lp, [raw], now=NOW)
    results = run_together([(f"w{i}", use_worker, (pg_url, i)) for i in range(PROCESSES)])
    assert sum(r["used"] for r in results.values()) == 2 * MONTHS  # the monthly quota, exactly
    assert sum(r["refused"] for r in results.values()) == PROCESSES * ATTEMPTS * MONTHS - 2 * MONTHS
    with engine.connect() as conn:
        per_month = (
            conn.execute(
                select(func.count())
                .select_from(privilege_uses)
                .group_by(func.date_trunc("month", privilege_uses.c.used_at))
            )
            .scalars()
            .all()
        )
    assert per_month == [2] * MONTHS
    engine.dispose()
