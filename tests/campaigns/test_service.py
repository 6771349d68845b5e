"""Campaigns through storage: the coffee member day, budgets that are never overspent (one
writer, then concurrent PostgreSQL processes), the listing, and the member view."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from kinloop.cli.app import app
from kinloop.program.loader import parse_program
from kinloop.services import campaigns as campaign_svc
from kinloop.services import explain, ledger, member_view, programs
from kinloop.services.ingest import ingest
from kinloop.services.programs import LoadedProgram
from kinloop.store.db import connect
from kinloop.store.tables import campaign_budgets, entries
from tests.conftest import EXAMPLES, NOW
from tests.test_concurrency_pg import pg_url, run_together  # noqa: F401  (pg_url is a fixture)

BUDGETED = """
key: fair
name: Fair
timezone: UTC
currencies:
  - {key: tokens, name: Tokens, kind: points}
event_types:
  - key: visit
  - key: purchase
    attributes: {amount: integer}
rules:
  - {key: visit_tokens, event: visit, currency: tokens, amount: 1}
campaigns:
  - key: opening
    name: Opening week
    starts_at: 2026-01-01T00:00:00Z
    ends_at: 2027-01-01T00:00:00Z
    bonus: {event: visit, currency: tokens, amount: 7}
    budget: 100
  - key: summer
    name: Summer
    starts_at: 2026-06-01T00:00:00Z
    ends_at: 2026-09-01T00:00:00Z
    multiplier: 2
  - key: spring
    name: Spring
    starts_at: 2025-03-01T00:00:00Z
    ends_at: 2025-06-01T00:00:00Z
    multiplier: 2
"""


def load(engine: Engine, text: str = BUDGETED) -> LoadedProgram:
    with engine.begin() as conn:
        return programs.load(conn, parse_program(text), text, now=NOW).loaded


def visit(event_id: str, member: str) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member, "type": "visit", "occurred_at": "2026-02-01T10:00:00Z"}


def purchase(event_id: str, at: str, amount: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "member_id": "m1",
        "type": "purchase",
        "occurred_at": at,
        "attributes": {"amount": amount},
    }


# --- coffee: the member day ------------------------------------------------------------------


def test_coffee_member_day_doubles_purchase_beans_and_explains_why(engine: Engine, coffee: LoadedProgram) -> None:
    # Wednesday 7 January 2026 in Paris; the Monday before earns the issue-2 numbers.
    with engine.begin() as conn:
        ingest(conn, coffee, [purchase("mon", "2026-01-05T10:00:00Z", 120)], now=NOW)
        ingest(conn, coffee, [purchase("wed", "2026-01-07T10:00:00Z", 120)], now=NOW)
    with engine.connect() as conn:
        assert member_view.show(conn, coffee, "m1", now=NOW).balances == {"stars": 4, "beans": 12 + 24}
        rules = {r["rule"]: r["detail"] for r in explain.explain(conn, coffee, "wed").rules}
    assert rules == {"purchase_stars": "2 ★", "purchase_beans": "24 Beans (×2 Member day)"}


def test_a_partial_refund_of_a_member_day_purchase_keeps_the_multiplier(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        ingest(conn, coffee, [purchase("wed", "2026-01-07T10:00:00Z", 120)], now=NOW)  # 2 ★, 24 Beans
        ledger.reverse(conn, coffee, "wed", amount=Decimal(60), reason="refund", actor="test", now=NOW)
    with engine.connect() as conn:
        # What is kept is what 60 would have earned on the member day: 1 ★ and 2 x 6 Beans.
        assert member_view.show(conn, coffee, "m1", now=NOW).balances == {"stars": 1, "beans": 12}


def test_a_gold_multiplier_stacks_with_the_member_day_in_words(engine: Engine) -> None:
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    gold = source.replace(
        "{key: gold, name: Gold, threshold: 16}", "{key: gold, name: Gold, threshold: 16, multiplier: 1.2}"
    )
    assert gold != source
    coffee = load(engine, gold)
    with engine.begin() as conn:
        ingest(conn, coffee, [purchase("big", "2026-01-05T10:00:00Z", 800)], now=NOW)  # 16 ★: Gold
        ingest(conn, coffee, [purchase("tue", "2026-01-06T10:00:00Z", 120)], now=NOW)
        ingest(conn, coffee, [purchase("wed", "2026-01-07T10:00:00Z", 120)], now=NOW)
    with engine.connect() as conn:
        tue = {r["rule"]: r["detail"] for r in explain.explain(conn, coffee, "tue").rules}
        wed = {r["rule"]: r["detail"] for r in explain.explain(conn, coffee, "wed").rules}
    assert tue == {"purchase_stars": "2 ★", "purchase_beans": "14 Beans (×1.2 Gold)"}  # 14.4 rounds down
    assert wed["purchase_beans"] == "28 Beans (×2 Member day, ×1.2 Gold)"  # 12 x 2.4 = 28.8


# --- budgets -----------------------------------------------------------------------------------


def test_a_budget_gives_what_is_left_then_nothing_and_is_recorded(engine: Engine) -> None:
    fair = load(engine)
    with engine.begin() as conn:
        first = ingest(conn, fair, [visit(f"v{i:02d}", f"m{i:02d}") for i in range(15)], now=NOW)
    with engine.begin() as conn:
        results = ingest(conn, fair, [visit("late", "m99")], now=NOW)
    # 14 x 7 = 98, then the 2 left (events are booked in order of time, then id), then nothing.
    assert [a[2] for r in first for a in r.outcome["awards"] if a[0] == "opening"] == [7] * 14 + [2]
    assert [a for a in results[0].outcome["awards"] if a[0] == "opening"] == []
    assert ["opening", "budget_spent", 0, 0, ["Opening week"]] in results[0].outcome["rules"]
    with engine.connect() as conn:
        given = conn.execute(select(func.sum(entries.c.amount)).where(entries.c.rule == "opening")).scalar()
        spent = conn.execute(select(campaign_budgets.c.spent, campaign_budgets.c.total)).one()
    assert given == 100
    assert tuple(spent) == (100, 100)


def test_the_listing_shows_past_active_and_upcoming_campaigns(engine: Engine) -> None:
    fair = load(engine)
    with engine.begin() as conn:
        ingest(conn, fair, [visit("v1", "m1")], now=NOW)
    with engine.connect() as conn:
        rows = campaign_svc.listing(conn, fair.program_id, fair.program, NOW)
    assert [(r["key"], r["status"]) for r in rows] == [
        ("opening", "active"),
        ("summer", "upcoming"),
        ("spring", "past"),
    ]
    assert rows[0]["budget"] == {
        "currency": "tokens",
        "total": 100,
        "spent": 7,
        "left": 93,
        "text": "93 Tokens of 100 Tokens left",
    }
    assert rows[1]["next_start"] == "2026-06-01T00:00:00+00:00"
    with engine.connect() as conn:
        view = member_view.show(conn, fair, "m1", now=NOW)
    assert view.campaigns is not None
    assert [c["key"] for c in view.campaigns["active"]] == ["opening"]
    assert view.campaigns["next"]["key"] == "summer"


def test_campaigns_list_on_the_command_line(engine: Engine, db_url: str) -> None:
    load(engine)
    result = CliRunner().invoke(app, ["campaigns", "list", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    import json

    keys = [c["key"] for c in json.loads(result.output)["campaigns"]]
    assert keys == ["opening", "summer", "spring"]
    table = CliRunner().invoke(app, ["campaigns", "list", "--db", db_url])
    assert table.exit_code == 0, table.output
    assert "Opening week" in table.output


# --- budgets under concurrent PostgreSQL writers --------------------------------------------------


def visit_worker(url: str, worker: int, n: int) -> int:
    """Ingest n visits of distinct members, one event per transaction; the Tokens of the bonus given."""
    engine = connect(url)
    given = 0
    try:
        for i in range(n):
            with engine.begin() as conn:
                fair = programs.active(conn, "fair")
                [r] = ingest(conn, fair, [visit(f"w{worker}-{i}", f"w{worker}-m{i}")], now=NOW)
            given += sum(a[2] for a in r.outcome["awards"] if a[0] == "opening")
        return given
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_budget_is_never_overspent_by_concurrent_writers(pg_url: str) -> None:  # noqa: F811
    engine = connect(pg_url)
    from kinloop.store import migrate

    migrate.upgrade(engine)
    load(engine)
    # 4 writers x 10 visits ask for 280 Tokens of a 100-Token budget.
    out = run_together([(f"w{w}", visit_worker, (pg_url, w, 10)) for w in range(4)])
    with engine.connect() as conn:
        given = conn.execute(select(func.sum(entries.c.amount)).where(entries.c.rule == "opening")).scalar()
        spent = conn.execute(select(campaign_budgets.c.spent)).scalar()
    engine.dispose()
    assert sum(out.values()) == given == spent == 100


def test_utc_is_utc() -> None:
    assert NOW.tzinfo is UTC
    assert datetime(2026, 1, 1, tzinfo=UTC) < NOW
