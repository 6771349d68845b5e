"""Members: creation on first sight, their state for the engine, and how they are shown."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Text, and_, cast, func, or_, outerjoin, select, update

from kinloop.domain import ledger as L
from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput, UnknownMember
from kinloop.domain.program import Currency, Program
from kinloop.domain.rules import Activity, FirstAward, MemberState, Usage
from kinloop.services.book import CHUNK, Book, chunks
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, part_in, read_parts, select_in, upsert_rows
from kinloop.store.db import driver_cursor, insert_ignore, is_sqlite
from kinloop.store.tables import activity, balances, entries, events, first_awards, members, rule_usage


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
    out = [_entry_json(loaded.program, e) for e in rows[:limit]]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return out, next_cursor


def _entry_json(program: Program, e: Any) -> dict[str, Any]:
    """One ledger entry as a member's history shows it (a row of entries and `event_ref`)."""
    currency = program.currencies.get(e.currency)
    decimals = currency.decimals if currency else 0
    sign = (e.to_account in L.MEMBER_ACCOUNTS) - (e.from_account in L.MEMBER_ACCOUNTS)
    if e.from_account in L.MEMBER_ACCOUNTS and e.to_account in L.MEMBER_ACCOUNTS:
        sign = 0  # pending -> available moves nothing in or out
    return {
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


# --- finding members, and one member's timeline (the console's member pages) ---------------


def main_currency(program: Program) -> Currency:
    """The currency a list of members shows: the first that is spent, else the first."""
    spendable = [c for c in program.currencies.values() if c.spendable]
    return spendable[0] if spendable else next(iter(program.currencies.values()))


@dataclass(frozen=True, slots=True)
class Found:
    """A member in search results: id, tier key, profile and main balance (minor units)."""

    member_id: str
    tier: str | None
    profile: Mapping[str, Any]
    balance: int


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (code point order)."""
    while prefix and ord(prefix[-1]) == 0x10FFFF:
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


def _in_values(needle: str, value: Any) -> bool:
    """Whether `needle` (casefolded) is inside one of the values of a profile."""
    if isinstance(value, Mapping):
        return any(_in_values(needle, v) for v in value.values())
    if isinstance(value, list):
        return any(_in_values(needle, v) for v in value)
    return value is not None and needle in str(value).casefold()


# Rows the database narrowed almost always match, so a chunk asks for little more than a page.
SEARCH_CHUNK = 64


def _json_text(c: str) -> str:
    """How a character appears in a stored profile's JSON text (non-ASCII as `\\uXXXX`)."""
    return json.dumps(c)[1:-1].lower()


def _profile_narrowing(q: str) -> list[Any]:
    """Conditions on a profile's JSON text that every profile containing `q` (in any case)
    meets: runs of ASCII or caseless characters as they are stored, and each other letter in
    either case. They let the database skip most rows; Python then checks the values."""
    text = func.lower(cast(members.c.profile, Text))
    conds: list[Any] = []
    run = ""
    for c in q:
        if c.isascii() or c.lower() == c.upper():
            run += _json_text(c)
            continue
        if run:
            conds.append(text.contains(run, autoescape=True))
            run = ""
        forms = sorted({_json_text(v) for v in (c, c.lower(), c.upper()) if len(v) == 1})
        conds.append(or_(*(text.contains(f, autoescape=True) for f in forms)))
    if run:
        conds.append(text.contains(run, autoescape=True))
    return conds


def search(
    conn: Connection,
    program_id: int,
    query: str,
    *,
    currency: str,
    after: str | None = None,
    limit: int = 25,
) -> tuple[list[Found], str | None]:
    """A page of the members whose id starts with `query`, or whose profile (display name or
    any free attribute) contains it in any case; by member id, after `after`. Returns the page
    and the cursor of the next one.

    Ids are found through the (program, member_id) index. "Contains" has no index: the
    profiles are read once, narrowed by the database on their JSON text, and the values
    checked here (so a word that is only a field's name does not match).
    """
    if not 1 <= limit <= 500:
        raise InvalidInput("limit is from 1 to 500", field="limit")
    q = query.strip()
    m = members.c
    base = select(m.member_id).where(m.program_id == program_id).order_by(m.member_id)
    if after is not None:
        base = base.where(m.member_id > after)
    ids: set[str] = set()
    if not q:
        ids.update(conn.execute(base.limit(limit + 1)).scalars())
    else:
        upper = _successor(q)
        by_id = base.where(m.member_id >= q) if upper is None else base.where(m.member_id >= q, m.member_id < upper)
        ids.update(conn.execute(by_id.limit(limit + 1)).scalars())
        ids.update(_profile_matches(conn, program_id, q, after, limit + 1))
    page = sorted(ids)[: limit + 1]
    rows = {}
    if page[:limit]:
        for member_id, tier, profile, balance in conn.execute(
            select(m.member_id, m.tier, m.profile, balances.c.available)
            .select_from(
                members.outerjoin(balances, and_(balances.c.member_pk == m.id, balances.c.currency == currency))
            )
            .where(m.program_id == program_id, m.member_id.in_(page[:limit]))
        ):
            if isinstance(profile, str):  # SQLite hands JSON back as text
                profile = json.loads(profile)
            rows[member_id] = Found(member_id, tier, profile or {}, int(balance or 0))
    found = [rows[i] for i in page[:limit] if i in rows]
    return found, (page[limit - 1] if len(page) > limit else None)


def _profile_matches(conn: Connection, program_id: int, q: str, after: str | None, wanted: int) -> list[str]:
    """The first `wanted` member ids after `after` whose profile values contain `q`."""
    m = members.c
    needle = q.casefold()
    stmt = select(m.member_id, m.profile).where(m.program_id == program_id, *_profile_narrowing(q))
    out: list[str] = []
    cursor = after
    while len(out) < wanted:
        chunk = stmt.where(m.member_id > cursor) if cursor is not None else stmt
        size = max(wanted, SEARCH_CHUNK)
        rows = conn.execute(chunk.order_by(m.member_id).limit(size)).all()
        for member_id, profile in rows:
            if isinstance(profile, str):
                profile = json.loads(profile)
            if _in_values(needle, profile or {}):
                out.append(member_id)
        if len(rows) < size:
            break
        cursor = rows[-1].member_id
    return out[:wanted]


def _parse_cursor(cursor: str) -> tuple[datetime, int, int]:
    """`2026-05-01T10:00:00+00:00~1~42`: the time, 1 for an event or 0 for an entry, the id."""
    try:
        at, rank, ident = cursor.split("~")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or rank not in ("0", "1"):
            raise ValueError(cursor)
        return moment, int(rank), int(ident)
    except ValueError:
        raise InvalidInput(f"{cursor!r} is not a timeline cursor", field="cursor") from None


def timeline(
    conn: Connection, loaded: LoadedProgram, member_id: str, *, before: str | None, limit: int = 20
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of one member's timeline, newest first: their events (`item: event`), each with
    the entries it wrote, and the entries of no event of theirs (`item: entry`: adjustments,
    spends, expiries, orders, gifts). Returns the page and the cursor of the next one."""
    if not 1 <= limit <= 200:
        raise InvalidInput("limit is from 1 to 200", field="limit")
    row = get(conn, loaded.program_id, member_id)
    program = loaded.program
    ev, en = events.c, entries.c
    # A total order, newest first: time, then events before entries, then id.
    ev_query = (
        select(ev.id, ev.event_id, ev.type, ev.occurred_at, ev.attributes, ev.refunded)
        .where(ev.member_pk == row.pk)
        .order_by(ev.occurred_at.desc(), ev.id.desc())
        .limit(limit + 1)
    )
    own = select(ev.id).where(ev.member_pk == row.pk)
    en_query = (
        select(entries, events.c.event_id.label("event_ref"))
        .select_from(outerjoin(entries, events, events.c.id == en.event_pk))
        .where(en.member_pk == row.pk, or_(en.event_pk.is_(None), en.event_pk.not_in(own)))
        .order_by(en.effective_at.desc(), en.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        at, rank, ident = _parse_cursor(before)
        if rank == 1:
            ev_query = ev_query.where(or_(ev.occurred_at < at, and_(ev.occurred_at == at, ev.id < ident)))
            en_query = en_query.where(en.effective_at <= at)
        else:
            ev_query = ev_query.where(ev.occurred_at < at)
            en_query = en_query.where(or_(en.effective_at < at, and_(en.effective_at == at, en.id < ident)))
    items: list[tuple[tuple[datetime, int, int], dict[str, Any]]] = []
    for e in conn.execute(ev_query):
        attributes = json.loads(e.attributes) if isinstance(e.attributes, str) else e.attributes
        item = {
            "item": "event",
            "at": e.occurred_at.isoformat(),
            "event_id": e.event_id,
            "type": e.type,
            "attributes": attributes or {},
            "refunded": e.refunded,
            "entries": [],
            "pk": e.id,
        }
        items.append(((e.occurred_at, 1, e.id), item))
    for e in conn.execute(en_query):
        items.append(
            ((e.effective_at, 0, e.id), {"item": "entry", "at": e.effective_at.isoformat(), **_shown(program, e)})
        )
    items.sort(key=lambda kv: kv[0], reverse=True)
    page = items[:limit]
    event_items = {item["pk"]: item for _, item in page if item["item"] == "event"}
    if event_items:
        wrote = (
            select(entries, events.c.event_id.label("event_ref"))
            .select_from(outerjoin(entries, events, events.c.id == en.event_pk))
            .where(en.event_pk.in_(sorted(event_items)), en.member_pk == row.pk)
            .order_by(en.id)
        )
        for e in conn.execute(wrote):
            event_items[e.event_pk]["entries"].append(_shown(program, e))
    for item in event_items.values():
        del item["pk"]
    next_cursor = None
    if len(items) > limit:
        at, rank, ident = page[-1][0]
        next_cursor = f"{at.isoformat()}~{rank}~{ident}"
    return [item for _, item in page], next_cursor


def entry_of(conn: Connection, loaded: LoadedProgram, member_id: str, entry_id: int) -> dict[str, Any] | None:
    """One of a member's ledger entries as the timeline shows it, or None if not theirs."""
    row = get(conn, loaded.program_id, member_id)
    e = conn.execute(
        select(entries, events.c.event_id.label("event_ref"))
        .select_from(outerjoin(entries, events, events.c.id == entries.c.event_pk))
        .where(entries.c.id == entry_id, entries.c.member_pk == row.pk)
    ).first()
    return _shown(loaded.program, e) if e is not None else None


def _shown(program: Program, e: Any) -> dict[str, Any]:
    """An entry of the timeline: the history's fields and its signed amount in words."""
    out = _entry_json(program, e)
    currency = program.currencies.get(e.currency)
    signed = (Decimal(str(out["signed"])) > 0) - (Decimal(str(out["signed"])) < 0)
    words = currency.display(e.amount) if currency else str(e.amount)
    out["signed_text"] = {1: f"+{words}", -1: f"−{words}", 0: words}[signed]
    return out
