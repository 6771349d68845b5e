"""The member view: a member as members and operators see them, in the program's words.

`GET /v1/members/{member_id}` and `kinloop member show --json` return this object; each part of
the growth system and the mall contributes its key here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select

from kinloop.domain.errors import InvalidInput, UnknownMember
from kinloop.domain.program import Program
from kinloop.domain.rules import Activity
from kinloop.services import campaigns as campaign_svc
from kinloop.services import checkin as checkin_svc
from kinloop.services import growth_badges, members, privileges
from kinloop.services import tiers as tier_svc
from kinloop.services.holds import holds_json
from kinloop.services.members import json_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, UnionRead, kinds_of, read_union, sqlite_datetime, union_of
from kinloop.store.tables import (
    activity,
    balances,
    checkin_states,
    holds,
    lots,
    member_badges,
    member_counters,
    privilege_uses,
    task_progress,
    tier_qualification,
    tier_status,
)
from kinloop.store.tables import members as members_table


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


class ProgramChanged(Exception):
    """`show(..., active=...)` found another version of the program active than the one given."""


def show(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    *,
    now: datetime,
    expiring_days: int = 30,
    active: tuple[int, str] | None = None,
) -> MemberView:
    """Balances, tier, progress to the next tier and soon-expiring amounts of one member.

    With `active` (the version id and digest `loaded` was compiled from), the same statement
    checks that this version is still the active one, and raises ProgramChanged if not: a
    caller that remembers the version spares a statement of its own."""
    program = loaded.program
    pg = conn.dialect.name == "postgresql"
    showcase = growth_badges.showcase_periods(program, now) if program.badges and program.counters is not None else []
    tasks = growth_badges.task_periods(program, now) if program.tasks else []
    plan = _plan(program, pg, active is not None, len(showcase), len(tasks))
    horizon = now + timedelta(days=expiring_days)
    filled = {
        _PROGRAM: loaded.program_id,
        _MEMBER: member_id,
        _HORIZON: horizon if pg else sqlite_datetime(horizon),
        _SHOWCASE: showcase,
        _TASKS: tasks,
    }
    got = dict(zip(plan.names, read_union(conn, plan.union, plan.params_with(filled)), strict=True))
    if active is not None and got["active"] != [active]:
        raise ProgramChanged
    if not got["member"]:
        raise UnknownMember(f"no member {member_id!r} in this program", field="member_id")
    pk, _, tier_key, profile, created_at = got["member"][0]
    row = members.MemberRow(pk, member_id, tier_key, profile or {})
    amounts = dict.fromkeys(program.currencies, (0, 0))
    for cur, avail, pend in got["balances"]:
        amounts[cur] = (avail, pend)
    bal_json = {}
    pend_json = {}
    display = {}
    for key, currency in program.currencies.items():
        avail, pend = amounts.get(key, (0, 0))
        bal_json[key] = json_amount(avail, currency.decimals)
        pend_json[key] = json_amount(pend, currency.decimals)
        display[key] = currency.display(avail) + (f" (+{currency.display(pend)} pending)" if pend else "")
    tier, next_tier, tier_status = _tier_view(loaded, row, now, got, created_at)
    available = {key: avail for key, (avail, _) in amounts.items()}
    checkin = got["checkin"]
    return MemberView(
        row.member_id,
        tier,
        bal_json,
        pend_json,
        display,
        next_tier,
        _expiring_of(program, got["expiring"]),
        row.profile,
        badges=growth_badges.showcase_of(
            program,
            now,
            got["badges"],
            got["counters"],
            {t: Activity(n, date.fromordinal(d) if d else None, k) for t, n, d, k in got["activity"]},
        ),
        tasks=growth_badges.task_board_of(program, row.profile, now, got["tasks"]),
        privileges=privileges.held_of(program, row, now, got["uses"]) if program.privileges else [],
        tier_status=tier_status,
        checkin=checkin_svc.view_of(program, row, now, checkin_svc.state_of(checkin[0] if checkin else None))
        if program.checkin
        else None,
        campaigns=campaign_svc.view_of(program, row, now, available, dict(got["budgets"]))
        if program.campaigns
        else None,
        holds=holds_json(program, sorted(got["holds"]), now),
    )


def _tier_view(
    loaded: LoadedProgram, row: members.MemberRow, now: datetime, got: dict[str, list[Any]], created_at: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    program = loaded.program
    ladder = program.ladder
    if ladder is None:
        return None, None, None
    status = got["status"]
    standing = tier_svc.standing_of(status[0] if status else None, row.tier)
    if ladder.window.kind == "lifetime":
        total = got["days"][0][0] if got["days"] else None
        days = None if total is None else {0: int(total)}
    else:
        days = dict(got["days"]) or None
    anniversary = (
        tier_svc.anniversary_of(row.profile, created_at, program) if ladder.window.kind == "anniversary_year" else None
    )
    return tier_svc.view_of(loaded, row, now, standing, days, anniversary)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A parameter of the member view's statement filled in per read: a value, or the
    `index`th of a list (a list of values stays one parameter on PostgreSQL)."""

    name: str
    index: int | None = None


_PROGRAM, _MEMBER, _HORIZON = _Slot("program"), _Slot("member"), _Slot("horizon")
_SHOWCASE, _TASKS = _Slot("showcase"), _Slot("tasks")


def _items(slot: _Slot, n: int) -> list[_Slot]:
    """The first `n` items of a list slot, one parameter each."""
    return [_Slot(slot.name, i) for i in range(n)]


@dataclass(frozen=True, slots=True)
class _Plan:
    program: Program  # held, so that the id it is cached under stays its own
    names: tuple[str, ...]
    union: UnionRead

    def params_with(self, filled: Mapping[_Slot, Any]) -> list[Any]:
        out = []
        for p in self.union.params:
            if type(p) is _Slot:
                p = filled[p] if p.index is None else filled[_Slot(p.name)][p.index]
            out.append(p)
        return out


# Built once per program version, store and shape: building the statement was 8% of a read.
_plans: dict[tuple[int, bool, bool, int, int], _Plan] = {}


def _plan(program: Program, pg: bool, active: bool, showcase: int, tasks: int) -> _Plan:
    key = (id(program), pg, active, showcase, tasks)
    found = _plans.get(key)
    if found is None or found.program is not program:
        reads = _Reads(pg)
        reads.add_parts(program, showcase, tasks)
        if active:
            reads.add_active()
        found = _plans[key] = _Plan(program, tuple(reads.names), union_of(reads.parts, pg, with_=reads.found))
    return found


class _Reads:
    """The reads of the member view, as parts of ONE statement (`union_of`): each finds the
    member through `found`, the member's id looked up once (one lookup in each part instead
    was 45% of the statement's time on SQLite), so none waits for another's result. Their
    parameters are slots, filled in per read (`_Plan.params_with`)."""

    def __init__(self, pg: bool) -> None:
        self.pg = pg
        self.mark = m = "%s" if self.pg else "?"
        self.member = (_PROGRAM, _MEMBER)
        self.found = (f"found AS (SELECT id FROM members WHERE program_id = {m} AND member_id = {m})", self.member)
        self.names: list[str] = []
        self.parts: list[Part | None] = []

    def among(self, column: str, whole: Any, each: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` in a list: one parameter on PostgreSQL (`whole`), one per item on SQLite (`each`)."""
        if self.pg:
            return f"{column} = ANY(%s)", [whole]
        return f"{column} IN ({', '.join('?' * len(each))})", list(each)

    def add(self, name: str, table: Table, columns: tuple[str, ...], where: str = "", *params: Any) -> None:
        """Rows of the member in `table`, with more conditions in `where` (and their parameters)."""
        sql = f"FROM {table.name} WHERE member_pk = (SELECT id FROM found)"
        self.names.append(name)
        self.parts.append(Part(columns, sql + where, params, kinds_of(table, columns)))

    def skip(self, name: str) -> None:
        self.names.append(name)
        self.parts.append(None)

    def add_parts(self, program: Program, showcase: int, tasks: int) -> None:
        """Every part, for `showcase` counter periods and `tasks` task periods."""
        m = self.mark
        columns = ("id", "member_id", "tier", "profile", "created_at")
        self.names.append("member")
        self.parts.append(
            Part(
                columns,
                f"FROM members WHERE program_id = {m} AND member_id = {m}",
                self.member,
                kinds_of(members_table, columns),
            )
        )
        self.add("balances", balances, ("currency", "available", "pending"))
        ladder = program.ladder
        if ladder is None:
            self.skip("status")
            self.skip("days")
        else:
            self.add("status", tier_status, tier_svc.STATUS_COLUMNS)
            if ladder.window.kind == "lifetime":
                self.add("days", tier_qualification, ("sum(amount)",), f" AND currency = {m}", ladder.currency)
            else:
                self.add("days", tier_qualification, ("day", "amount"), f" AND currency = {m}", ladder.currency)
        if all(c.expiry.kind == "never" for c in program.currencies.values()):
            self.skip("expiring")  # nothing can expire: spare the read
        else:
            self.add(
                "expiring",
                lots,
                ("currency", "remaining", "expires_at"),
                f" AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= {m} AND status = 'available'",
                _HORIZON,
            )
        if program.badges and program.counters is not None:
            self.add("badges", member_badges, ("badge", "level", "awarded_at"))
            where, params = self.among("period", _SHOWCASE, _items(_SHOWCASE, showcase))
            self.add("counters", member_counters, ("period", "event_type", "count", "totals"), " AND " + where, *params)
            self.add("activity", activity, ("event_type", "count", "last_day", "streak"))
        else:
            for name in ("badges", "counters", "activity"):
                self.skip(name)
        if program.tasks:
            where, params = self.among("period", _TASKS, _items(_TASKS, tasks))
            self.add("tasks", task_progress, ("task", "period", "count", "completed_at"), " AND " + where, *params)
        else:
            self.skip("tasks")
        if program.privileges:
            keys = sorted({p.key for p in program.privileges})
            where, params = self.among("privilege", keys, keys)
            self.add("uses", privilege_uses, ("privilege", "used_at"), " AND " + where, *params)
        else:
            self.skip("uses")
        if program.checkin is not None:
            self.add("checkin", checkin_states, checkin_svc.COLUMNS)
        else:
            self.skip("checkin")
        if program.campaigns and program.budget_keys:
            self.names.append("budgets")
            self.parts.append(Part(("key", "spent"), f"FROM campaign_budgets WHERE program_id = {m}", (_PROGRAM,)))
        else:
            self.skip("budgets")
        self.add("holds", holds, ("id", "currency", "amount", "expires_at", "reference"), " AND status = 'active'")

    def add_active(self) -> None:
        """The program's active version (id, digest)."""
        self.names.append("active")
        self.parts.append(
            Part(
                ("id", "digest"),
                f"FROM program_versions WHERE program_id = {self.mark} AND active = {'true' if self.pg else '1'}",
                (_PROGRAM,),
            )
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
    return _expiring_of(program, conn.execute(_EXPIRING, {"member_pk": member_pk, "horizon": horizon}).all())


def _expiring_of(program: Program, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """`_expiring` from the (currency, remaining, expires_at) rows of the lots due by the horizon."""
    soon: dict[tuple[str, date], int] = {}
    for cur, remaining, at in rows:
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
