"""Campaigns: budgets held exactly under concurrency, the listing, and the member view."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import cel
from sqlalchemy import Connection, and_, select, update

from kinloop.domain.campaigns import WEEKDAYS, budget_totals, describe_schedule, is_active, next_start, status, targets
from kinloop.domain.program import Campaign, Program, budget_key
from kinloop.domain.rules import MemberState, member_context
from kinloop.services import members as member_svc
from kinloop.store.db import insert_ignore
from kinloop.store.tables import campaign_budgets


class BudgetOverspent(RuntimeError):
    """A budget row changed under a lock this transaction holds: a bug, never a user error."""


def reserve(conn: Connection, program_id: int, program: Program) -> dict[str, int] | None:
    """Lock the program's budget rows and return what is left of each (None: nothing is budgeted).

    Called after the batch's members are locked, and always in key order, so two writers take
    the same locks in the same order and cannot deadlock. The lock is held to commit: whatever
    this transaction takes from a budget, no other can take too.
    """
    totals = budget_totals(program)
    if not totals:
        return None
    insert_ignore(
        conn,
        campaign_budgets,
        [{"program_id": program_id, "key": k, "total": t, "spent": 0} for k, t in sorted(totals.items())],
        ("program_id", "key"),
    )
    rows = conn.execute(
        select(campaign_budgets.c.key, campaign_budgets.c.spent)
        .where(campaign_budgets.c.program_id == program_id, campaign_budgets.c.key.in_(sorted(totals)))
        .order_by(campaign_budgets.c.key)
        .with_for_update()
    ).all()
    return {key: max(totals[key] - spent, 0) for key, spent in rows}


def settle(
    conn: Connection, program_id: int, program: Program, before: Mapping[str, int], after: Mapping[str, int]
) -> None:
    """Record what the batch took from each budget (`before` minus `after`), with a conditional
    update that refuses to overspend: the backstop behind the lock taken by `reserve`."""
    totals = budget_totals(program)
    t = campaign_budgets.c
    for key in sorted(before):
        used = before[key] - after.get(key, before[key])
        if used <= 0:
            continue
        done = conn.execute(
            update(campaign_budgets)
            .where(and_(t.program_id == program_id, t.key == key, t.spent + used <= totals[key]))
            .values(spent=t.spent + used, total=totals[key])
        )
        if done.rowcount != 1:
            raise BudgetOverspent(f"budget {key} would be overspent")


def spent(conn: Connection, program_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(campaign_budgets.c.key, campaign_budgets.c.spent).where(campaign_budgets.c.program_id == program_id)
    )
    return {str(k): int(s) for k, s in rows}


def _campaign_json(program: Program, c: Campaign, now: datetime, used: Mapping[str, int]) -> dict[str, Any]:
    tz = program.timezone
    upcoming = next_start(c, now, tz)
    out: dict[str, Any] = {
        "key": c.key,
        "name": c.name,
        "status": status(c, now, tz),
        "schedule": describe_schedule(c),
        "starts_at": c.starts_at.isoformat() if c.starts_at else None,
        "ends_at": c.ends_at.isoformat() if c.ends_at else None,
        "member_day": None,
        "next_start": upcoming.isoformat() if upcoming else None,
        "multiplier": str(c.multiplier.normalize()) if c.multiplier is not None else None,
        "bonus": None,
        "tiers": sorted(c.tiers),
        "condition": c.condition.source if c.condition else None,
        "rules": sorted(c.rules),
        "currencies": sorted(c.currencies),
        "budget": None,
    }
    if c.member_day is not None:
        weekday = c.member_day.weekday
        out["member_day"] = {
            "weekday": WEEKDAYS[weekday] if weekday is not None else None,
            "day_of_month": c.member_day.day_of_month,
        }
    if c.bonus is not None:
        bc = program.currencies[c.bonus.grant.currency]
        out["bonus"] = {
            "event": c.bonus.event_type,
            "currency": bc.key,
            "amount": c.bonus.grant.amount,
            "condition": c.bonus.condition.source if c.bonus.condition else None,
            "text": f"{bc.display(c.bonus.grant.amount)} per {c.bonus.event_type}",
        }
    if c.budget is not None and c.budget_currency is not None:
        cur = program.currencies[c.budget_currency]
        taken = used.get(budget_key("campaign", c.key), 0)
        out["budget"] = {
            "currency": cur.key,
            "total": c.budget,
            "spent": taken,
            "left": max(c.budget - taken, 0),
            "text": f"{cur.display(max(c.budget - taken, 0))} of {cur.display(c.budget)} left",
        }
    effect = []
    if c.multiplier is not None:
        effect.append(f"×{c.multiplier.normalize():f}")
    if out["bonus"] is not None:
        effect.append(f"+{out['bonus']['text']}")
    out["text"] = f"{c.name}: {' and '.join(effect)} {out['schedule']}".strip()
    return out


def listing(conn: Connection, program_id: int, program: Program, now: datetime) -> list[dict[str, Any]]:
    """Every campaign of the program, past, active and upcoming, with its budget as spent so far."""
    used = spent(conn, program_id) if program.budget_keys else {}
    return [_campaign_json(program, c, now, used) for c in program.campaigns]


def view(
    conn: Connection,
    program_id: int,
    program: Program,
    row: member_svc.MemberRow,
    now: datetime,
    available: Mapping[str, int],
) -> dict[str, Any] | None:
    """The member view's `campaigns` key: the campaigns running now for this member, and the next one."""
    if not program.campaigns:
        return None
    used = spent(conn, program_id) if program.budget_keys else {}
    return view_of(program, row, now, available, used)


def view_of(
    program: Program,
    row: member_svc.MemberRow,
    now: datetime,
    available: Mapping[str, int],
    used: Mapping[str, int],
) -> dict[str, Any] | None:
    """`view` from what the program's budgets have given so far (`spent`)."""
    if not program.campaigns:
        return None
    ctx = None
    if any(c.condition is not None for c in program.campaigns):
        state = MemberState(row.member_id, row.tier, row.profile, available)
        ctx = cel.Context(member_context(program, state))
    mine = [c for c in program.campaigns if targets(c, row.tier, ctx)]
    active = [_campaign_json(program, c, now, used) for c in mine if is_active(c, now, program.timezone)]
    starts = [(s, c) for c in mine if (s := next_start(c, now, program.timezone)) is not None]
    following = min(starts, key=lambda p: (p[0], p[1].key), default=None)
    upcoming = _campaign_json(program, following[1], now, used) if following else None
    return {"active": active, "next": upcoming}
