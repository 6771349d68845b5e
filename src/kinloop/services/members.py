"""Members: creation on first sight, their state for the engine, and how they are shown."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, outerjoin, select, update

from kinloop.domain import ledger as L
from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput, UnknownMember
from kinloop.domain.program import Program
from kinloop.domain.rules import Activity, FirstAward, MemberState, Usage
from kinloop.services.book import CHUNK, Book, chunks
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, part_in, read_parts, select_in, upsert_rows
from kinloop.store.db import driver_cursor, insert_ignore, is_sqlite
from kinloop.store.tables import activity, entries, events, first_awards, members, rule_usage


@dataclass(slots=True)
class MemberRow:
    pk: int
    member_id: str
    tier: str | None
    profile: Mapping[str, Any]


def ensure(conn: Connection, program_id: int, member_ids: Iterable[str], now: datetime) -> dict[str, MemberRow]:
    """The members with these ids, created if new, locked for this transaction."""
    ids = sorted(set(member_ids))
    found, locked = lock_found(conn, program_id, ids)
    if locked:
        return found
    return create_missing(conn, program_id, ids, found, now)


def create_missing(
    conn: Connection, program_id: int, ids: list[str], found: dict[str, MemberRow], now: datetime
) -> dict[str, MemberRow]:
    """`ensure` after `lock_found` said not all of `ids` are locked (`found`: those that exist)."""
    missing = [m for m in ids if m not in found]
    if missing:
        insert_ignore(
            conn,
            members,
            [
                {"program_id": program_id, "member_id": m, "tier": None, "profile": {}, "created_at": now}
                for m in missing
            ],
            ("program_id", "member_id"),
        )
    if is_sqlite(conn):
        found.update(_fetch(conn, program_id, missing))
        return found
    # Locked only now, after the inserts and in key order, as if none had been found locked:
    # a transaction never waits for a new member's insert while holding other members' locks.
    return _fetch(conn, program_id, ids, lock=True)


def lock_found(conn: Connection, program_id: int, ids: list[str]) -> tuple[dict[str, MemberRow], bool]:
    """The members of `ids` that exist, and whether they are locked: on PostgreSQL they are (in
    key order, read after the lock) when ALL exist, in the one statement that finds them; when
    some are missing, none is locked (see `ensure`). SQLite needs no row locks (BEGIN IMMEDIATE)."""
    if is_sqlite(conn) or not ids or len(ids) > CHUNK:
        # (More than one statement's worth is never locked here: one part locked and the next
        # not would leave locks held while `ensure` inserts.)
        found = _fetch(conn, program_id, ids)
        return found, is_sqlite(conn) and len(found) == len(ids)
    with driver_cursor(conn, _LOCK_FOUND) as cur:
        cur.execute(_LOCK_FOUND, {"program_id": program_id, "ids": ids, "n": len(ids)})
        rows = cur.fetchall()
    found = {member_id: MemberRow(pk, member_id, tier, profile or {}) for _, pk, member_id, tier, profile in rows}
    return found, bool(rows) and rows[0][0] and len(found) == len(ids)


# Lock all the members asked for when all exist, else lock none and say which exist.
_LOCK_FOUND = """
WITH found AS (
    SELECT id, member_id, tier, profile FROM members
    WHERE program_id = %(program_id)s AND member_id = ANY(%(ids)s)
), locked AS (
    SELECT id, member_id, tier, profile FROM members
    WHERE id IN (SELECT id FROM found) AND (SELECT count(*) FROM found) = %(n)s
    ORDER BY id FOR UPDATE
)
SELECT true, * FROM locked
UNION ALL
SELECT false, * FROM found WHERE (SELECT count(*) FROM found) < %(n)s
"""


def _fetch(conn: Connection, program_id: int, ids: list[str], *, lock: bool = False) -> dict[str, MemberRow]:
    out: dict[str, MemberRow] = {}
    for part in chunks(ids):
        if lock:
            sql = (
                "SELECT id, member_id, tier, profile FROM members WHERE program_id = %s AND member_id = ANY(%s)"
                " ORDER BY id FOR UPDATE"
            )
            with driver_cursor(conn, sql) as cur:
                cur.execute(sql, (program_id, part))
                rows = cur.fetchall()
        else:
            rows = select_in(
                conn,
                members,
                ("id", "member_id", "tier", "profile"),
                "member_id",
                part,
                also=("program_id", [program_id]),
            )
        for pk, member_id, tier, profile in rows:
            if isinstance(profile, str):  # SQLite hands JSON back as text
                profile = json.loads(profile)
            out[member_id] = MemberRow(pk, member_id, tier, profile or {})
    return out


def get(conn: Connection, program_id: int, member_id: str, *, lock: bool = False) -> MemberRow:
    """One member, or UnknownMember."""
    # On PostgreSQL a lock is taken in the statement that finds the member (SQLite needs none).
    found = _fetch(conn, program_id, [member_id], lock=lock and not is_sqlite(conn))
    if member_id not in found:
        raise UnknownMember(f"no member {member_id!r} in this program", field="member_id")
    return found[member_id]


def load_states(
    conn: Connection, program: Program, rows: Iterable[MemberRow], book: Book, periods: set[str]
) -> dict[int, MemberState]:
    """What the engine needs of each member: tier, profile, activity, usage in `periods`."""
    rows = list(rows)
    pks = sorted(r.pk for r in rows)
    book.load_balances(pks)
    found: tuple[list[tuple[Any, ...]], ...] = ([], [], [])
    for part in chunks(pks):
        for got, more in zip(found, read_parts(conn, state_parts(conn, program, part, periods)), strict=True):
            got += more
    return states_from(program, rows, book, *found)


def state_parts(conn: Connection, program: Program, pks: list[int], periods: set[str]) -> list[Part | None]:
    """The reads of `load_states` (at most `CHUNK` members, balances apart): activity, usage and
    first-time holders; their rows go to `states_from`."""
    wanted = sorted(periods)
    usage = None
    if wanted and any(r.periods for r in program.rules):
        usage = part_in(
            conn,
            rule_usage,
            ("member_pk", "rule", "period", "amount", "times"),
            "member_pk",
            pks,
            also=("period", wanted),
        )
    firsts = None
    if any(r.first_time_bonus for r in program.rules):
        firsts = part_in(conn, first_awards, ("member_pk", "rule", "occurred_at", "event_id"), "member_pk", pks)
    return [
        part_in(conn, activity, ("member_pk", "event_type", "count", "last_day", "streak"), "member_pk", pks),
        usage,
        firsts,
    ]


def states_from(
    program: Program,
    rows: Iterable[MemberRow],
    book: Book,
    activity_rows: Iterable[tuple[Any, ...]],
    usage_rows: Iterable[tuple[Any, ...]],
    first_rows: Iterable[tuple[Any, ...]],
) -> dict[int, MemberState]:
    """Member states from the rows of `state_parts` (the book has their balances)."""
    states: dict[int, MemberState] = {}
    for r in rows:
        states[r.pk] = MemberState(r.member_id, r.tier, r.profile, book.available(r.pk))
    for pk, etype, count, last_day, streak in activity_rows:
        states[pk].activity[etype] = Activity(count, date.fromordinal(last_day) if last_day else None, streak)
    for pk, rule, period, amount, times in usage_rows:
        states[pk].usage[(rule, period)] = Usage(amount, times)
    for pk, rule, at, event_id in first_rows:
        states[pk].firsts[rule] = FirstAward(at, event_id)
    return states


def load_activity(conn: Connection, member_pk: int) -> dict[str, Activity]:
    """One member's activity record per event type."""
    return {
        etype: Activity(count, date.fromordinal(last_day) if last_day else None, streak)
        for etype, count, last_day, streak in select_in(
            conn, activity, ("event_type", "count", "last_day", "streak"), "member_pk", [member_pk]
        )
    }


def save_states(
    conn: Connection,
    states: Mapping[int, MemberState],
    activity_keys: set[tuple[int, str]],
    usage_keys: set[tuple[int, str, str]],
    first_keys: set[tuple[int, str]],
) -> None:
    """Write back the activity, usage and first-time holders the batch changed."""
    act_rows = []
    for pk, t in sorted(activity_keys):
        a = states[pk].activity[t]
        last = a.last_day.toordinal() if a.last_day else None
        act_rows.append({"member_pk": pk, "event_type": t, "count": a.count, "last_day": last, "streak": a.streak})
    upsert_rows(conn, activity, act_rows, ("member_pk", "event_type"))
    upsert_rows(
        conn,
        rule_usage,
        [
            {
                "member_pk": pk,
                "rule": rule,
                "period": period,
                "amount": states[pk].usage[(rule, period)].amount,
                "times": states[pk].usage[(rule, period)].times,
            }
            for pk, rule, period in sorted(usage_keys)
        ],
        ("member_pk", "rule", "period"),
    )
    upsert_rows(
        conn,
        first_awards,
        [
            {
                "member_pk": pk,
                "rule": rule,
                "occurred_at": states[pk].firsts[rule].occurred_at,
                "event_id": states[pk].firsts[rule].event_id,
            }
            for pk, rule in sorted(first_keys)
        ],
        ("member_pk", "rule"),
    )


def json_amount(minor: int, decimals: int) -> int | str:
    """JSON numbers for whole-unit currencies, exact decimal strings otherwise."""
    if decimals == 0:
        return minor
    return str(from_minor(minor, decimals))


def by_pks(conn: Connection, pks: list[int]) -> dict[int, str]:
    out = {}
    for part in chunks(sorted(pks)):
        for pk, mid in conn.execute(select(members.c.id, members.c.member_id).where(members.c.id.in_(part))):
            out[pk] = mid
    return out


PROFILE_FIELDS = ("display_name", "birthday", "timezone", "joined_at")


def profile_from(given: Mapping[str, Any]) -> dict[str, Any]:
    """A stored profile: the known fields, and free attributes beside them (known fields win)."""
    tz = given.get("timezone")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"unknown time zone {tz!r}", field="timezone") from None
    for name in ("birthday", "joined_at"):
        if given.get(name) is not None:
            try:
                date.fromisoformat(given[name])
            except ValueError:
                raise InvalidInput(f"{given[name]!r} is not a date (YYYY-MM-DD)", field=name) from None
    profile: dict[str, Any] = dict(given.get("attributes") or {})
    profile.update({k: given[k] for k in PROFILE_FIELDS if given.get(k) is not None})
    return profile


def set_profile(conn: Connection, program_id: int, member_id: str, profile: dict[str, Any], *, now: datetime) -> None:
    """Replace a member's profile, creating the member if new."""
    row = ensure(conn, program_id, [member_id], now)[member_id]
    conn.execute(update(members).where(members.c.id == row.pk).values(profile=profile))


def history(
    conn: Connection, loaded: LoadedProgram, member_id: str, *, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a member's ledger entries, newest first, and the cursor of the next page."""
    row = get(conn, loaded.program_id, member_id)
    query = (
        select(entries, events.c.event_id.label("event_ref"))
        .select_from(outerjoin(entries, events, events.c.id == entries.c.event_pk))
        .where(entries.c.member_pk == row.pk)
        .order_by(entries.c.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(entries.c.id < before)
    rows = conn.execute(query).all()
    out = []
    for e in rows[:limit]:
        currency = loaded.program.currencies.get(e.currency)
        decimals = currency.decimals if currency else 0
        sign = (e.to_account in L.MEMBER_ACCOUNTS) - (e.from_account in L.MEMBER_ACCOUNTS)
        if e.from_account in L.MEMBER_ACCOUNTS and e.to_account in L.MEMBER_ACCOUNTS:
            sign = 0  # pending -> available moves nothing in or out
        out.append(
            {
                "entry_id": e.id,
                "kind": e.kind,
                "currency": e.currency,
                "amount": json_amount(e.amount, decimals),
                "signed": json_amount(sign * e.amount, decimals),
                "from": e.from_account,
                "to": e.to_account,
                "event_id": e.event_ref,
                "rule": e.rule,
                "reason": e.reason,
                "actor": e.actor,
                "effective_at": e.effective_at.isoformat(),
                "created_at": e.created_at.isoformat(),
                "text": currency.display(e.amount) if currency else str(e.amount),
            }
        )
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return out, next_cursor
