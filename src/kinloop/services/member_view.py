"""The member view: a member as members and operators see them, in the program's words.

`GET /v1/members/{member_id}` and `kinloop member show --json` return this object; each part of
the growth system and the mall contributes its key here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select

from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Program
from kinloop.services import campaigns as campaign_svc
from kinloop.services import checkin as checkin_svc
from kinloop.services import growth_badges, members, privileges
from kinloop.services import tiers as tier_svc
from kinloop.services.holds import held_of
from kinloop.services.members import json_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import select_in
from kinloop.store.tables import balances, lots


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member as members and operators see them, in the program's words."""

    member_id: str
    tier: dict[str, str] | None
    balances: dict[str, int | str]
    pending: dict[str, int | str]
    display: dict[str, str]
    next_tier: dict[str, Any] | None
    expiring: list[dict[str, Any]]
    profile: Mapping[str, Any]
    badges: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    privileges: list[dict[str, Any]] = field(default_factory=list)
    tier_status: dict[str, Any] | None = None
    checkin: dict[str, Any] | None = None
    campaigns: dict[str, Any] | None = None
    holds: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "balances": self.balances,
            "pending": self.pending,
            "tier": self.tier,
            "next_tier": self.next_tier,
            "tier_status": self.tier_status,
            "expiring": self.expiring,
            "display": self.display,
            "badges": self.badges,
            "tasks": self.tasks,
            "privileges": self.privileges,
            "checkin": self.checkin,
            "campaigns": self.campaigns,
            "profile": dict(self.profile),
            "holds": self.holds,
        }


def show(
    conn: Connection, loaded: LoadedProgram, member_id: str, *, now: datetime, expiring_days: int = 30
) -> MemberView:
    """Balances, tier, progress to the next tier and soon-expiring amounts of one member."""
    program = loaded.program
    row = members.get(conn, loaded.program_id, member_id)
    amounts = dict.fromkeys(program.currencies, (0, 0))
    for cur, avail, pend in select_in(conn, balances, ("currency", "available", "pending"), "member_pk", [row.pk]):
        amounts[cur] = (avail, pend)
    bal_json = {}
    pend_json = {}
    display = {}
    for key, currency in program.currencies.items():
        avail, pend = amounts.get(key, (0, 0))
        bal_json[key] = json_amount(avail, currency.decimals)
        pend_json[key] = json_amount(pend, currency.decimals)
        display[key] = currency.display(avail) + (f" (+{currency.display(pend)} pending)" if pend else "")
    tier, next_tier, tier_status = tier_svc.view(conn, loaded, row, now)
    expiring = _expiring(conn, program, row.pk, now + timedelta(days=expiring_days))
    available = {key: avail for key, (avail, _) in amounts.items()}
    return MemberView(
        row.member_id,
        tier,
        bal_json,
        pend_json,
        display,
        next_tier,
        expiring,
        row.profile,
        badges=growth_badges.showcase(conn, program, row.pk, now=now),
        tasks=growth_badges.task_board(conn, program, row.pk, row.profile, now=now),
        privileges=privileges.held(conn, program, row, now=now) if program.privileges else [],
        tier_status=tier_status,
        checkin=checkin_svc.view(conn, program, row, now) if program.checkin else None,
        campaigns=campaign_svc.view(conn, loaded.program_id, program, row, now, available)
        if program.campaigns
        else None,
        holds=held_of(conn, program, row.pk, now),
    )


# Built once: building the statement cost as much as running it.
_EXPIRING = select(lots.c.currency, lots.c.remaining, lots.c.expires_at).where(
    lots.c.member_pk == bindparam("member_pk"),
    lots.c.remaining > 0,
    lots.c.expires_at.is_not(None),
    lots.c.expires_at <= bindparam("horizon"),
    lots.c.status == "available",
)


def expiring(
    conn: Connection, loaded: LoadedProgram, member_id: str, *, now: datetime, days: int
) -> list[dict[str, Any]]:
    """What of a member's points expires within `days` of `now`, by currency and local day."""
    if not 1 <= days <= 3660:
        raise InvalidInput("days is from 1 to 3660", field="days")
    row = members.get(conn, loaded.program_id, member_id)
    return _expiring(conn, loaded.program, row.pk, now + timedelta(days=days))


def _expiring(conn: Connection, program: Program, member_pk: int, horizon: datetime) -> list[dict[str, Any]]:
    """What of a member's balances expires before `horizon`, by currency and local day."""
    if all(c.expiry.kind == "never" for c in program.currencies.values()):
        return []  # nothing can expire: spare the query
    soon: dict[tuple[str, date], int] = {}
    for cur, remaining, at in conn.execute(_EXPIRING, {"member_pk": member_pk, "horizon": horizon}):
        key = (cur, at.astimezone(program.timezone).date())
        soon[key] = soon.get(key, 0) + remaining
    return [
        {
            "currency": cur,
            "amount": json_amount(amt, program.currencies[cur].decimals),
            "on": day.isoformat(),
            "text": f"{program.currencies[cur].display(amt)} expire on {day.isoformat()}",
        }
        for (cur, day), amt in sorted(soon.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
