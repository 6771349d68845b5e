"""The rollups against the ledger they sum, on SQLite and PostgreSQL: exact after every
refresh, whatever order rows arrive in, and never counting a row twice."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from kinloop.domain import dashboard as D
from kinloop.services import dashboard, ingest, ledger, summary
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import balances, dashboard_daily, entries, events, members
from tests.conftest import NOW

DAY = NOW.astimezone(D.ZoneInfo("Europe/Paris")).date()
ALL = D.Period(DAY - timedelta(days=400), DAY + timedelta(days=1))


def event(n: int, member: str, kind: str, days_ago: int, amount: int = 0) -> dict[str, Any]:
    at = (NOW - timedelta(days=days_ago, minutes=n)).isoformat()
    attributes = {"amount": str(amount)} if kind == "purchase" else {}
    return {"event_id": f"e{n}", "member_id": member, "type": kind, "occurred_at": at, "attributes": attributes}


def feed(engine: Engine, loaded: LoadedProgram, raws: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        results = ingest.ingest(conn, loaded, raws, now=NOW)
    assert all(r.status == "accepted" for r in results), [r.error for r in results if r.error]


def a_month(engine: Engine, loaded: LoadedProgram) -> None:
    raws = []
    for i in range(60):
        member = f"m{i % 7}"
        raws.append(event(i, member, "purchase" if i % 3 else "check_in", days_ago=i % 30, amount=40 + i))
    feed(engine, loaded, raws)
    with engine.begin() as conn:
        ledger.spend(conn, loaded, "m1", "beans", 5, reason="a pastry", key="s1", now=NOW)
        ledger.adjust(conn, loaded, "m2", "beans", 7, reason="sorry", actor="console:owner", key="a1", now=NOW)


def board(engine: Engine, loaded: LoadedProgram, period: D.Period = ALL) -> dashboard.Board:
    with engine.connect() as conn:
        return dashboard.read(conn, loaded, period)


def ledger_figures(engine: Engine, loaded: LoadedProgram) -> dict[str, int]:
    with engine.connect() as conn:
        held = dict(
            conn.execute(
                select(balances.c.currency, func.sum(balances.c.available + balances.c.pending))
                .join(members, members.c.id == balances.c.member_pk)
                .where(members.c.program_id == loaded.program_id)
                .group_by(balances.c.currency)
            ).all()
        )
    return {k: int(v) for k, v in held.items()}


def test_the_rollups_equal_the_ledger(engine: Engine, coffee: LoadedProgram) -> None:
    a_month(engine, coffee)
    done = dashboard.refresh(engine, coffee, now=NOW)
    assert done.final_rows["entries"] + done.open_rows["entries"] > 0
    b = board(engine, coffee)
    with engine.connect() as conn:
        s = summary.summarise(conn, coffee)
        n_entries = conn.execute(select(func.count()).select_from(entries)).scalar()
    held = ledger_figures(engine, coffee)
    for cur in ("beans", "stars"):
        assert b.owned_now[cur] == (held[cur], 0)
        total = b.currencies[cur].total()
        assert total.issued == s.currencies[cur].issued
        assert total.redeemed == s.currencies[cur].spent
        assert b.currencies[cur].opening == 0
        assert b.currencies[cur].closing == held[cur]
    assert sum(n for n, _ in b.earned.values()) > 0
    with engine.connect() as conn:
        rolled = conn.execute(
            select(func.sum(dashboard_daily.c.n)).where(dashboard_daily.c.source == "entries")
        ).scalar()
    assert rolled == n_entries
    assert sum(b.events.values()) == 60
    assert sum(b.new_members.values()) == 7
    assert b.members == 7
    assert sum(b.tiers_now.values()) == 7


def test_a_second_refresh_counts_nothing_twice(engine: Engine, coffee: LoadedProgram) -> None:
    a_month(engine, coffee)
    dashboard.refresh(engine, coffee, now=NOW)
    first = board(engine, coffee)
    again = dashboard.refresh(engine, coffee, now=NOW)
    assert sum(again.final_rows.values()) == 0
    second = board(engine, coffee)
    assert second.owned_now == first.owned_now
    assert second.events == first.events
    assert {k: v.total() for k, v in second.currencies.items()} == {k: v.total() for k, v in first.currencies.items()}


def test_a_back_dated_event_lands_on_its_own_day(engine: Engine, coffee: LoadedProgram) -> None:
    a_month(engine, coffee)
    dashboard.refresh(engine, coffee, now=NOW)
    with engine.connect() as conn:
        assert dashboard.freshness(conn, coffee.program_id).behind == 0
    feed(engine, coffee, [event(500, "m9", "purchase", days_ago=200, amount=100)])
    with engine.connect() as conn:
        assert dashboard.freshness(conn, coffee.program_id).behind > 0
    dashboard.refresh(engine, coffee, now=NOW)
    then = (NOW - timedelta(days=200, minutes=500)).astimezone(coffee.program.timezone).date()
    b = board(engine, coffee, D.Period(then, then))
    with engine.connect() as conn:
        earned = dict(
            conn.execute(
                select(entries.c.currency, func.sum(entries.c.amount))
                .join(events, events.c.id == entries.c.event_pk)
                .where(events.c.event_id == "e500")
                .group_by(entries.c.currency)
            ).all()
        )
    assert earned["beans"] >= 10  # one Bean per 10 spent (doubled on member day)
    assert b.currencies["beans"].total().issued == earned["beans"]
    assert b.currencies["stars"].total().issued == earned["stars"] == 2
    assert b.owned_now["beans"][0] == ledger_figures(engine, coffee)["beans"]
    assert sum(b.new_members.values()) == 0  # the member joined now, not then


def test_a_row_that_commits_late_is_counted_once_it_is_visible(engine: Engine, coffee: LoadedProgram) -> None:
    a_month(engine, coffee)
    if engine.dialect.name == "sqlite":
        # One writer at a time: a refresh cannot run while another transaction writes, so
        # every id up to the largest one it sees is final; the rollups are exact at once.
        dashboard.refresh(engine, coffee, now=NOW)
        assert board(engine, coffee).owned_now["beans"][0] == ledger_figures(engine, coffee)["beans"]
        return
    # PostgreSQL: a writer draws ids, a later writer commits first, the first commits last.
    slow = engine.connect()
    slow.begin()
    ingest.ingest(slow, coffee, [event(700, "m1", "purchase", days_ago=1, amount=90)], now=NOW)
    feed(engine, coffee, [event(701, "m2", "purchase", days_ago=1, amount=50)])
    done = dashboard.refresh(engine, coffee, now=NOW, wait=0.1)
    assert not done.settled  # the slow writer still runs: its ids cannot be final yet
    b = board(engine, coffee)
    assert b.owned_now["beans"][0] == ledger_figures(engine, coffee)["beans"]
    threading.Timer(0.3, slow.commit).start()
    done = dashboard.refresh(engine, coffee, now=NOW, wait=5)
    slow.close()
    assert done.settled
    b = board(engine, coffee)
    assert b.owned_now["beans"][0] == ledger_figures(engine, coffee)["beans"]
    with engine.connect() as conn:
        n_entries = conn.execute(select(func.count()).select_from(entries)).scalar()
        rolled = conn.execute(
            select(func.sum(dashboard_daily.c.n)).where(dashboard_daily.c.source == "entries")
        ).scalar()
        open_rows = conn.execute(
            select(func.count())
            .select_from(dashboard_daily)
            .where(dashboard_daily.c.source == "entries", dashboard_daily.c.layer == "open")
        ).scalar()
    assert rolled == n_entries
    assert open_rows == 0  # all final now


def test_tier_moves_and_check_ins_are_counted(engine: Engine, coffee: LoadedProgram) -> None:
    a_month(engine, coffee)
    dashboard.refresh(engine, coffee, now=NOW)
    b = board(engine, coffee)
    ups = sum(up for up, _ in b.tier_moves.values())
    assert ups > 0
    assert all(down == 0 for _, down in b.tier_moves.values())
    assert dashboard.checkin_type(coffee) == "check_in"
    assert sum(n for (_, t), n in b.events.items() if t == "check_in") == 20
