"""Privileges: using one (idempotent, within its quota under the member's row lock), the ones a
member holds with what is left, and utilisation per privilege and tier for operators."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from kinloop.domain import privileges as D
from kinloop.domain.errors import IdempotencyConflict, InvalidInput, UnknownPrivilege
from kinloop.domain.program import Privilege, Program, QuotaPeriod
from kinloop.services import members as member_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.db import is_sqlite
from kinloop.store.tables import members, privilege_uses


def privilege_of(program: Program, key: str) -> Privilege:
    """The program's privilege with this key, or UnknownPrivilege naming the ones it has."""
    for p in program.privileges:
        if p.key == key:
            return p
    known = ", ".join(p.key for p in program.privileges) or "none"
    raise UnknownPrivilege(f"no privilege {key!r} in this program (privileges: {known})", field="privilege_key")


def _member_tz(program: Program, profile: Mapping[str, Any]) -> ZoneInfo:
    """The member's own time zone for the birthday month, else the program's."""
    name = profile.get("timezone")
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return program.timezone


def _tier_name(program: Program, tier: str | None) -> str:
    """A tier in the program's words ("Gold")."""
    if tier is None:
        return "members without a tier"
    names = {t.key: t.name for t in program.ladder.tiers} if program.ladder else {}
    return names.get(tier, tier)


def _used(conn: Connection, member_pk: int, privilege: Privilege, at: datetime, tz: ZoneInfo) -> int:
    """The member's uses of the privilege in the quota's period containing `at` (or ever)."""
    start, end = D.period_bounds(privilege.quota.per if privilege.quota else None, at, tz)
    query = select(func.count()).where(
        privilege_uses.c.member_pk == member_pk, privilege_uses.c.privilege == privilege.key
    )
    if start is not None and end is not None:
        query = query.where(privilege_uses.c.used_at >= start, privilege_uses.c.used_at < end)
    return int(conn.execute(query).scalar_one())


def _replay(conn: Connection, program_id: int, key: str, member_pk: int, privilege: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(privilege_uses.c.member_pk, privilege_uses.c.privilege, privilege_uses.c.result).where(
            privilege_uses.c.program_id == program_id, privilege_uses.c.idempotency_key == key
        )
    ).first()
    if row is None:
        return None
    if (row.member_pk, row.privilege) != (member_pk, privilege):
        raise IdempotencyConflict(f"key {key!r} was already used for a different request", field="idempotency_key")
    return {**row.result, "replayed": True}


def use(
    conn: Connection, loaded: LoadedProgram, member_id: str, privilege_key: str, *, key: str, now: datetime
) -> dict[str, Any]:
    """Use a privilege now: refused unless the member's current tier holds it, it is in its
    window and quota is left. Idempotent on `key`: a replay returns the first reply."""
    program = loaded.program
    privilege = privilege_of(program, privilege_key)
    if not key.strip():
        raise InvalidInput("an idempotency key is required", field="idempotency_key")
    # The row lock serialises uses of one member, so the count below cannot go stale.
    member = member_svc.get(conn, loaded.program_id, member_id, lock=True)
    found = _replay(conn, loaded.program_id, key, member.pk, privilege.key)
    if found is not None:
        return found
    used = _used(conn, member.pk, privilege, now, program.timezone)
    D.check_use(
        privilege,
        tier=member.tier,
        tier_name=_tier_name(program, member.tier),
        birthday=D.birthday_of(member.profile.get("birthday")),
        used=used,
        at=now,
        tz=_member_tz(program, member.profile),
    )
    result = {
        "member_id": member_id,
        "privilege": privilege.key,
        "name": privilege.name,
        "kind": privilege.kind,
        "tier": member.tier,
        "used_at": now.isoformat(),
        "remaining": D.remaining(privilege, used + 1),
        "text": f"{privilege.name} used; {D.quota_text(privilege, used + 1)}",
        "replayed": False,
    }
    row = {
        "program_id": loaded.program_id,
        "member_pk": member.pk,
        "privilege": privilege.key,
        "tier": member.tier,
        "used_at": now,
        "idempotency_key": key,
        "result": result,
    }
    dialect_insert = sqlite.insert if is_sqlite(conn) else postgresql.insert
    stmt = dialect_insert(privilege_uses).on_conflict_do_nothing(index_elements=["program_id", "idempotency_key"])
    if conn.execute(stmt, row).rowcount == 0:
        # The same key was committed meanwhile by a request for another member.
        return _replay(conn, loaded.program_id, key, member.pk, privilege.key) or result
    return result


# Built once: building the statement cost as much as running it.
_USES = select(privilege_uses.c.privilege, privilege_uses.c.used_at).where(
    privilege_uses.c.member_pk == bindparam("member_pk"),
    privilege_uses.c.privilege.in_(bindparam("keys", expanding=True)),
)


def held(conn: Connection, program: Program, row: member_svc.MemberRow, *, now: datetime) -> list[dict[str, Any]]:
    """The privileges a member holds now (through the current tier), with what is left of each."""
    holdings = D.held_by(program, row.tier)
    if not holdings:
        return []
    uses = conn.execute(_USES, {"member_pk": row.pk, "keys": [p.key for p in holdings]}).all()
    return held_of(program, row, now, uses)


def held_of(
    program: Program, row: member_svc.MemberRow, now: datetime, uses: Iterable[tuple[str, datetime]]
) -> list[dict[str, Any]]:
    """`held` from the member's (privilege, used_at) rows (rows of other privileges are ignored)."""
    holdings = D.held_by(program, row.tier)
    if not holdings:
        return []
    birthday = D.birthday_of(row.profile.get("birthday"))
    tz = _member_tz(program, row.profile)
    times: dict[str, list[datetime]] = {p.key: [] for p in holdings}
    for key, at in uses:
        if key in times:
            times[key].append(at)
    out = []
    for p in holdings:
        used = D.used_in_period(p, times[p.key], now, program.timezone)
        h = D.holding(p, used=used, birthday=birthday, at=now, tz=tz)
        quota = None if p.quota is None else {"uses": p.quota.uses, "per": p.quota.per}
        out.append(
            {
                "key": p.key,
                "name": p.name,
                "kind": p.kind,
                "description": p.description,
                "quota": quota,
                "window": p.window,
                "used": h.used,
                "remaining": h.remaining,
                "usable_now": h.usable_now,
                "text": h.text,
            }
        )
    return out


def usage(
    conn: Connection, loaded: LoadedProgram, *, per: QuotaPeriod = "month", on: date | None = None, now: datetime
) -> dict[str, Any]:
    """Use rate per privilege and tier in one period: uses / members now in the tier."""
    program = loaded.program
    at = now if on is None else datetime.combine(on, datetime.min.time(), tzinfo=program.timezone)
    start, end = D.bounds(per, at, program.timezone)
    holders: dict[str | None, int] = dict(
        conn.execute(
            select(members.c.tier, func.count())
            .where(members.c.program_id == loaded.program_id, members.c.tier.is_not(None))
            .group_by(members.c.tier)
        ).all()
    )
    counted: dict[tuple[str, str | None], tuple[int, int]] = {}
    for privilege, tier, uses, users in conn.execute(
        select(
            privilege_uses.c.privilege,
            privilege_uses.c.tier,
            func.count(),
            func.count(func.distinct(privilege_uses.c.member_pk)),
        )
        .where(
            privilege_uses.c.program_id == loaded.program_id,
            privilege_uses.c.used_at >= start,
            privilege_uses.c.used_at < end,
        )
        .group_by(privilege_uses.c.privilege, privilege_uses.c.tier)
    ):
        counted[(privilege, tier)] = (int(uses), int(users))
    rows = []
    for p in program.privileges:
        for tier in p.tiers:
            uses, users = counted.get((p.key, tier), (0, 0))
            members_in_tier = int(holders.get(tier, 0))
            rate = (Decimal(uses) / members_in_tier).quantize(Decimal("0.0001")) if members_in_tier else None
            rows.append(
                {
                    "privilege": p.key,
                    "name": p.name,
                    "tier": tier,
                    "tier_name": _tier_name(program, tier),
                    "members": members_in_tier,
                    "uses": uses,
                    "users": users,
                    "use_rate": None if rate is None else str(rate),
                    "text": _usage_text(
                        p, tier_name=_tier_name(program, tier), uses=uses, users=users, holders=members_in_tier, per=per
                    ),
                }
            )
    first = start.astimezone(program.timezone).date()
    last = end.astimezone(program.timezone).date() - timedelta(days=1)
    return {"period": per, "from": first.isoformat(), "to": last.isoformat(), "rows": rows}


def _usage_text(p: Privilege, *, tier_name: str, uses: int, users: int, holders: int, per: QuotaPeriod) -> str:
    if holders == 0:
        return f"{p.name}: no {tier_name} members"
    times = "use" if uses == 1 else "uses"
    return f"{p.name}: {uses} {times} by {users} of {holders} {tier_name} members ({uses / holders:.0%} use rate)"
