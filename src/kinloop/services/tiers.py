"""Tiers: the realtime upgrade in ingest, the periodic review, paid and manual tiers, history,
progress, and ladder changes (preview, re-evaluation with grandfathering).

The decisions are in `domain/tiers.py`; this module loads what they need in bulk (one query per
kind of data, never one per member) and writes back only what changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Connection, any_, bindparam, case, func, literal, select, update

from kinloop.domain.errors import NotPurchasable, UnknownTier
from kinloop.domain.events import Event
from kinloop.domain.program import Ladder, Program, Tier
from kinloop.domain.rules import Award
from kinloop.domain.tiers import (
    Keep,
    Qualification,
    Standing,
    effective,
    next_review,
    progress,
    review,
    review_due,
    tier_for,
    to_keep,
    upgrade,
    window_start,
)
from kinloop.services import members as member_svc
from kinloop.services import outbox
from kinloop.services.book import Book, chunks
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, insert_rows, part_in, read_parts, select_in, upsert_rows
from kinloop.store.tables import (
    audit_log,
    members,
    tier_changes,
    tier_purchases,
    tier_qualification,
    tier_runs,
    tier_status,
)

# Rows older than this are never inside a window a review looks at (a year back, plus a year
# of window, plus grace).
_HORIZON_DAYS = 800


def track(book: Book, program: Program) -> None:
    """Have the book record qualification for the program's ladder (nothing without one)."""
    if program.ladder is not None:
        book.track_qualification(program.ladder.currency, program.timezone)


# --- loading, in bulk -----------------------------------------------------------------------


def _ord(d: int | None) -> date | None:
    return date.fromordinal(d) if d else None


def _standing(values: Sequence[Any] | None, tier: str | None) -> Standing:
    """A standing from the stored status columns (`_STATUS_COLUMNS` order), or None: the member
    earned `tier` and has nothing else."""
    if values is None or values[7] is None:  # `locked` is never NULL in a stored row
        return Standing(earned=tier)
    earned, reached, grace, paid, paid_until, manual, manual_until, locked, kept, kept_until = values
    if grace is None and paid is None and manual is None and kept is None:
        # The common case, built with two fields: the review reads a million of these.
        return Standing(earned, date.fromordinal(reached) if reached else None)
    return Standing(
        earned=earned,
        reached_on=_ord(reached),
        grace_until=_ord(grace),
        paid=paid,
        paid_until=paid_until,
        manual=manual,
        manual_until=manual_until,
        locked=bool(locked),
        kept=kept,
        kept_until=kept_until,
    )


def _status_row(pk: int, s: Standing) -> dict[str, Any]:
    return {
        "member_pk": pk,
        "earned": s.earned,
        "reached_on": s.reached_on.toordinal() if s.reached_on else None,
        "grace_until": s.grace_until.toordinal() if s.grace_until else None,
        "paid": s.paid,
        "paid_until": s.paid_until,
        "manual": s.manual,
        "manual_until": s.manual_until,
        "locked": s.locked,
        "kept": s.kept,
        "kept_until": s.kept_until,
    }


_STATUS_COLUMNS = [c for c in tier_status.c if c.name != "member_pk"]
STATUS_COLUMNS = tuple(c.name for c in _STATUS_COLUMNS)


def load_standings(conn: Connection, tiers: Mapping[int, str | None]) -> dict[int, Standing]:
    """The standing of these members (keyed by pk, with their current tier)."""
    out = {pk: Standing(earned=t) for pk, t in tiers.items()}
    statement = _STANDINGS[conn.dialect.name == "postgresql"]
    for part in chunks(sorted(tiers)):
        for row in conn.execute(statement, {"pks": part}):
            out[row[0]] = _standing(row[1:], tiers[row[0]])
    return out


def _among(column: Any, name: str) -> Any:
    """`column IN :name` as (SQLite, PostgreSQL) forms: on PostgreSQL one array parameter, since
    a long IN list costs to compile."""
    return column.in_(bindparam(name, expanding=True)), column == any_(bindparam(name, type_=ARRAY(BigInteger)))


# Statements built once, per dialect: building them cost as much as running them for one member.
_STANDINGS = tuple(
    select(tier_status.c.member_pk, *_STATUS_COLUMNS).where(where) for where in _among(tier_status.c.member_pk, "pks")
)
_LIFETIME_SUMS = tuple(
    select(tier_qualification.c.member_pk, func.sum(tier_qualification.c.amount))
    .where(where, tier_qualification.c.currency == bindparam("currency"))
    .group_by(tier_qualification.c.member_pk)
    for where in _among(tier_qualification.c.member_pk, "pks")
)


def save_standings(conn: Connection, standings: Mapping[int, Standing]) -> None:
    upsert_rows(conn, tier_status, [_status_row(pk, s) for pk, s in sorted(standings.items())], ("member_pk",))


def load_days(conn: Connection, ladder: Ladder, pks: list[int], since: date | None) -> dict[int, dict[int, int]]:
    """Qualification per member and day from `since` (lifetime windows: one sum, on day 0)."""
    out: dict[int, dict[int, int]] = {}
    for part in chunks(sorted(pks)):
        if ladder.window.kind == "lifetime":
            rows = conn.execute(
                _LIFETIME_SUMS[conn.dialect.name == "postgresql"], {"pks": part, "currency": ladder.currency}
            )
            for pk, total in rows:
                out[pk] = {0: int(total)}
            continue
        for pk, day, amount in select_in(
            conn,
            tier_qualification,
            ("member_pk", "day", "amount"),
            "member_pk",
            part,
            also=("currency", [ladder.currency]),
        ):
            if since is None or day >= since.toordinal():
                out.setdefault(pk, {})[day] = amount
    return out


def qualification(*sources: Mapping[int, int] | None) -> Qualification:
    """Sum of the day amounts of `sources` from `start` (None: since ever) to `end`."""

    def qual(start: date | None, end: date) -> int:
        lo = start.toordinal() if start is not None else 0
        hi = end.toordinal()
        return sum(a for days in sources if days for d, a in days.items() if lo <= d <= hi)

    return qual


def anniversary_of(profile: Mapping[str, Any], created_at: datetime | None, program: Program) -> date:
    """The member's anniversary: the join date of the profile, or the day they were first seen."""
    joined = profile.get("joined_at")
    if isinstance(joined, str):
        try:
            return date.fromisoformat(joined)
        except ValueError:
            pass
    return created_at.astimezone(program.timezone).date() if created_at else date(2000, 1, 1)


def _anniversaries(conn: Connection, program: Program, pks: list[int]) -> dict[int, date]:
    out: dict[int, date] = {}
    if program.ladder is None or program.ladder.window.kind != "anniversary_year":
        return out
    for part in chunks(sorted(pks)):
        for pk, profile, created in conn.execute(
            select(members.c.id, members.c.profile, members.c.created_at).where(members.c.id.in_(part))
        ):
            out[pk] = anniversary_of(_json(profile), created, program)
    return out


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # SQLite hands JSON back as text
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return value or {}


_NO_ANNIVERSARY = date(2000, 1, 1)


# --- realtime: in ingest ----------------------------------------------------------------------


@dataclass(slots=True)
class Realtime:
    """Tier upgrades (and paid purchases by event) for one ingested batch, in memory until `save`."""

    conn: Connection
    loaded: LoadedProgram
    book: Book
    now: datetime
    standings: dict[int, Standing]
    days: dict[int, dict[int, int]]
    anniversaries: dict[int, date]
    dirty: set[int] = field(default_factory=set)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    currency: str = ""
    paid_events: frozenset[str] = frozenset()

    @classmethod
    def start(
        cls,
        conn: Connection,
        loaded: LoadedProgram,
        book: Book,
        rows: Iterable[member_svc.MemberRow],
        events: list[Event],
        now: datetime,
    ) -> Realtime | None:
        """Load what the batch's members need (None when the program has no ladder)."""
        if loaded.program.ladder is None:
            return None
        rows = list(rows)
        found: tuple[list[tuple[Any, ...]], ...] = ([], [], [])
        for part in chunks(sorted(r.pk for r in rows)):
            for got, more in zip(found, read_parts(conn, cls.parts(conn, loaded.program, part)), strict=True):
                got += more
        return cls.start_from(conn, loaded, book, rows, events, now, *found)

    @staticmethod
    def parts(conn: Connection, program: Program, pks: list[int]) -> list[Part | None]:
        """The reads of `start` (at most `CHUNK` members): standings, qualification and, for
        anniversary windows, profiles; their rows go to `start_from`."""
        ladder = program.ladder
        if ladder is None:
            return [None, None, None]
        m = "%s" if conn.dialect.name == "postgresql" else "?"
        days = part_in(conn, tier_qualification, ("member_pk", "day", "amount"), "member_pk", pks)
        assert days is not None or not pks
        if days is not None:
            if ladder.window.kind == "lifetime":
                days = replace(
                    days,
                    columns=("member_pk", "sum(amount)"),
                    kinds=("", ""),
                    rest=days.rest + f" AND currency = {m} GROUP BY member_pk",
                )
            else:
                days = replace(days, rest=days.rest + f" AND currency = {m}")
            days = replace(days, params=(*days.params, ladder.currency))
        anniversaries = None
        if ladder.window.kind == "anniversary_year":
            anniversaries = part_in(conn, members, ("id", "profile", "created_at"), "id", pks)
        status = part_in(conn, tier_status, ("member_pk", *STATUS_COLUMNS), "member_pk", pks)
        return [status, days, anniversaries]

    @classmethod
    def start_from(
        cls,
        conn: Connection,
        loaded: LoadedProgram,
        book: Book,
        rows: Iterable[member_svc.MemberRow],
        events: list[Event],
        now: datetime,
        status_rows: Iterable[tuple[Any, ...]],
        day_rows: Iterable[tuple[Any, ...]],
        anniversary_rows: Iterable[tuple[Any, ...]],
    ) -> Realtime | None:
        """`start` from the rows of `parts`."""
        program = loaded.program
        ladder = program.ladder
        if ladder is None:
            return None
        by_pk = {r.pk: r.tier for r in rows}
        standings = {pk: Standing(earned=t) for pk, t in by_pk.items()}
        for row in status_rows:
            standings[row[0]] = _standing(row[1:], by_pk[row[0]])
        days: dict[int, dict[int, int]] = {}
        if ladder.window.kind == "lifetime":
            for pk, total in day_rows:
                days[pk] = {0: int(total)}
        else:
            first = min((e.occurred_at for e in events), default=now).astimezone(program.timezone).date()
            since = (first - timedelta(days=max(ladder.window.days, 366))).toordinal()
            for pk, day, amount in day_rows:
                if day >= since:
                    days.setdefault(pk, {})[day] = amount
        anniversaries = {
            pk: anniversary_of(_json(profile), created, program) for pk, profile, created in anniversary_rows
        }
        return cls(
            conn,
            loaded,
            book,
            now,
            standings,
            days,
            anniversaries,
            currency=ladder.currency,
            paid_events=frozenset(_paid_by_event(ladder)),
        )

    def concerns(self, ev: Event, awards: Sequence[Award], tier: str | None, *, releases: bool) -> bool:
        """Whether an event can move its member's tier: it earned the ladder's currency, released
        pending amounts, buys a paid tier, or the member has no tier yet (a threshold of 0 is
        reached on first sight)."""
        if tier is None or releases or ev.type in self.paid_events:
            return True
        currency = self.currency
        return any(a.currency == currency for a in awards)

    def after_event(self, pk: int, ev: Event) -> str | None:
        """The member's tier after this event: a paid purchase, then an upgrade if qualified."""
        program = self.loaded.program
        ladder = program.ladder
        assert ladder is not None
        s = self.standings[pk]
        if ev.type in self.paid_events:
            s = self._buy(pk, s, _paid_by_event(ladder)[ev.type], ev)
        day = ev.occurred_at.astimezone(program.timezone).date()
        if ladder.window.kind == "lifetime":  # the hot path of most programs: no dates to filter
            qual = sum((self.days.get(pk) or {}).values()) + sum((self.book.qualification.get(pk) or {}).values())
        else:
            start = window_start(ladder.window, day, self.anniversaries.get(pk, _NO_ANNIVERSARY))
            qual = qualification(self.days.get(pk), self.book.qualification.get(pk))(start, day)
        raised = upgrade(ladder, s, qual, day)
        if raised != self.standings[pk]:
            self.standings[pk] = raised
            self.dirty.add(pk)
        return effective(ladder, raised, self.now)[0]

    def _buy(self, pk: int, s: Standing, tier: Tier, ev: Event) -> Standing:
        assert tier.paid is not None
        starts, ends = _term(s, tier, ev.occurred_at)
        self.purchases.append(
            {
                "program_id": self.loaded.program_id,
                "member_pk": pk,
                "tier": tier.key,
                "starts_at": starts,
                "ends_at": ends,
                "idempotency_key": f"event:{ev.event_id}",
                "actor": None,
                "created_at": self.now,
            }
        )
        return replace(s, paid=tier.key, paid_until=ends)

    def save(self) -> None:
        save_standings(self.conn, {pk: self.standings[pk] for pk in self.dirty})
        insert_rows(self.conn, tier_purchases, self.purchases)


def _paid_by_event(ladder: Ladder) -> dict[str, Tier]:
    return {t.paid.event: t for t in ladder.tiers if t.paid is not None and t.paid.event is not None}


def _term(s: Standing, tier: Tier, at: datetime) -> tuple[datetime, datetime]:
    """A new term of a paid tier: it extends the current one of the same tier, else starts at `at`
    (and replaces a different paid tier)."""
    assert tier.paid is not None
    starts = at
    if s.paid == tier.key and s.paid_until is not None and s.paid_until > at:
        starts = s.paid_until
    return starts, starts + timedelta(days=tier.paid.term_days)


# --- one member, outside ingestion (adjustments, reversals, releases, manual changes) -------


def settle(
    conn: Connection, program: Program, member_pk: int, current: str | None, now: datetime, *, today: date | None = None
) -> str | None:
    """Re-evaluate one member after their qualification changed: upgrade at once and, under a
    realtime cadence, review at once (reversals can demote). Returns the effective tier."""
    ladder = program.ladder
    assert ladder is not None
    today = today or now.astimezone(program.timezone).date()
    s = load_standings(conn, {member_pk: current})[member_pk]
    anniversary = _anniversaries(conn, program, [member_pk]).get(member_pk, _NO_ANNIVERSARY)
    qual = qualification(load_days(conn, ladder, [member_pk], None).get(member_pk))
    if ladder.cadence == "realtime":
        new = review(ladder, s, qual, today=today, last_run=None, anniversary=anniversary).standing
    else:
        new = upgrade(ladder, s, qual(window_start(ladder.window, today, anniversary), today), today)
    if new != s:
        save_standings(conn, {member_pk: new})
    return effective(ladder, new, now)[0]


def record_change(
    conn: Connection,
    program_id: int,
    program: Program,
    member_pk: int,
    before: str | None,
    after: str | None,
    *,
    reason: str,
    now: datetime,
    event_pk: int | None = None,
) -> None:
    """Write a member's new effective tier, its history row and the `tier.changed` message."""
    conn.execute(update(members).where(members.c.id == member_pk).values(tier=after))
    change_id = conn.execute(
        tier_changes.insert()
        .values(member_pk=member_pk, from_tier=before, to_tier=after, reason=reason[:200], event_pk=event_pk, at=now)
        .returning(tier_changes.c.id)
    ).scalar_one()
    outbox.tier_change_recorded(
        conn,
        program_id,
        program,
        change_id=change_id,
        member_pk=member_pk,
        from_tier=before,
        to_tier=after,
        reason=reason,
        event_pk=event_pk,
        now=now,
    )


def _ladder(program: Program) -> Ladder:
    if program.ladder is None:
        raise UnknownTier(f"program {program.key!r} has no ladder", field="tier")
    return program.ladder


def _tier(ladder: Ladder, key: str) -> Tier:
    tier = ladder.get(key)
    if tier is None:
        known = ", ".join(t.key for t in ladder.tiers)
        raise UnknownTier(f"no tier {key!r} on the ladder ({known})", field="tier")
    return tier


@dataclass(frozen=True, slots=True)
class TierSet:
    member_id: str
    tier: str | None
    changed: bool

    def as_json(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "tier": self.tier, "changed": self.changed}


def set_manual(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    tier: str | None,
    *,
    reason: str,
    actor: str,
    until: datetime | None = None,
    lock: bool = False,
    now: datetime,
) -> TierSet:
    """Set an operator's tier for a member: a floor until `until` (or for good), or `lock`ed
    (the member has exactly this tier); `tier=None` clears it. Audited with actor and reason."""
    ladder = _ladder(loaded.program)
    if tier is not None:
        _tier(ladder, tier)
    if until is not None and until <= now:
        from kinloop.domain.errors import InvalidInput

        raise InvalidInput("until must be in the future", field="until")
    row = member_svc.ensure(conn, loaded.program_id, [member_id], now)[member_id]
    s = load_standings(conn, {row.pk: row.tier})[row.pk]
    new = replace(s, manual=tier, manual_until=until if tier else None, locked=bool(lock and tier))
    save_standings(conn, {row.pk: new})
    after = effective(ladder, new, now)[0]
    conn.execute(
        audit_log.insert().values(
            program_id=loaded.program_id,
            at=now,
            actor=actor,
            action="set_tier",
            target=member_id,
            reason=reason,
            details={"tier": tier, "until": until.isoformat() if until else None, "lock": bool(lock and tier)},
        )
    )
    if after != row.tier:
        record_change(
            conn,
            loaded.program_id,
            loaded.program,
            row.pk,
            row.tier,
            after,
            reason=f"set by {actor}: {reason}",
            now=now,
        )
    return TierSet(member_id, after, after != row.tier)


@dataclass(frozen=True, slots=True)
class Purchase:
    member_id: str
    tier: str
    starts_at: datetime
    ends_at: datetime
    created: bool  # False: the idempotency key was seen before; this is the first result

    def as_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "tier": self.tier,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created": self.created,
        }


def purchase(
    conn: Connection, loaded: LoadedProgram, member_id: str, tier: str, *, key: str, actor: str | None, now: datetime
) -> Purchase:
    """Buy one term of a paid tier, idempotent on `key` (a repeat returns the first purchase)."""
    from kinloop.domain.errors import IdempotencyConflict

    ladder = _ladder(loaded.program)
    paid = _tier(ladder, tier)
    if paid.paid is None:
        raise NotPurchasable(f"{paid.name} cannot be bought", field="tier")
    row = member_svc.ensure(conn, loaded.program_id, [member_id], now)[member_id]
    p = tier_purchases.c
    found = conn.execute(
        select(p.member_pk, p.tier, p.starts_at, p.ends_at).where(
            p.program_id == loaded.program_id, p.idempotency_key == key
        )
    ).first()
    if found is not None:
        if found.member_pk != row.pk or found.tier != tier:
            raise IdempotencyConflict("this idempotency key was already used for another purchase", field="key")
        return Purchase(member_id, tier, found.starts_at, found.ends_at, False)
    s = load_standings(conn, {row.pk: row.tier})[row.pk]
    starts, ends = _term(s, paid, now)
    conn.execute(
        tier_purchases.insert().values(
            program_id=loaded.program_id,
            member_pk=row.pk,
            tier=tier,
            starts_at=starts,
            ends_at=ends,
            idempotency_key=key,
            actor=actor,
            created_at=now,
        )
    )
    new = replace(s, paid=tier, paid_until=ends)
    save_standings(conn, {row.pk: new})
    after = effective(ladder, new, now)[0]
    if after != row.tier:
        record_change(
            conn, loaded.program_id, loaded.program, row.pk, row.tier, after, reason=f"bought {paid.name}", now=now
        )
    return Purchase(member_id, tier, starts, ends, True)


def history(conn: Connection, loaded: LoadedProgram, member_id: str) -> list[dict[str, Any]]:
    """A member's tier changes, newest first, with their reasons."""
    row = member_svc.get(conn, loaded.program_id, member_id)
    ladder = loaded.program.ladder
    names = {t.key: t.name for t in ladder.tiers} if ladder else {}

    def ref(key: str | None) -> dict[str, str] | None:
        return None if key is None else {"key": key, "name": names.get(key, key)}

    t = tier_changes.c
    return [
        {"from": ref(r.from_tier), "to": ref(r.to_tier), "reason": r.reason, "at": r.at.isoformat()}
        for r in conn.execute(
            select(t.from_tier, t.to_tier, t.reason, t.at)
            .where(t.member_pk == row.pk)
            .order_by(t.at.desc(), t.id.desc())
        )
    ]


# --- the member view --------------------------------------------------------------------------


def view(
    conn: Connection, loaded: LoadedProgram, row: member_svc.MemberRow, now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """`tier`, `next_tier` and `tier_status` of the member view, in the program's words."""
    ladder = loaded.program.ladder
    if ladder is None:
        return None, None, None
    s = load_standings(conn, {row.pk: row.tier})[row.pk]
    anniversary = _anniversaries(conn, loaded.program, [row.pk]).get(row.pk, _NO_ANNIVERSARY)
    return view_of(loaded, row, now, s, load_days(conn, ladder, [row.pk], None).get(row.pk), anniversary)


def standing_of(values: Sequence[Any] | None, tier: str | None) -> Standing:
    """A member's standing from their `tier_status` row (`STATUS_COLUMNS`; None: no row)."""
    return _standing(values, tier)


def view_of(
    loaded: LoadedProgram,
    row: member_svc.MemberRow,
    now: datetime,
    s: Standing,
    days: Mapping[int, int] | None,
    anniversary: date | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """`view` from what it reads: the standing, qualification per day (`load_days`' form) and
    the anniversary (None: the window does not use it)."""
    program = loaded.program
    ladder = program.ladder
    if ladder is None:
        return None, None, None
    anniversary = anniversary or _NO_ANNIVERSARY
    currency = program.currencies[ladder.currency]
    today = now.astimezone(program.timezone).date()
    qual = qualification(days)
    value = qual(window_start(ladder.window, today, anniversary), today)
    current_key, source = effective(ladder, s, now)
    current = ladder.get(row.tier) or ladder.get(current_key)
    tier = {"key": current.key, "name": current.name} if current else None
    next_tier = None
    prog = progress(ladder, value)
    nxt = prog.next
    if nxt is not None and ladder.index(nxt.key) > ladder.index(current.key if current else None):
        next_tier = {
            "key": nxt.key,
            "name": nxt.name,
            "missing": member_svc.json_amount(prog.missing, currency.decimals),
            "text": f"{currency.display(prog.missing)} to {nxt.name}",
        }
    keep: Keep | None = to_keep(ladder, s, qual, today, anniversary)
    status: dict[str, Any] = {
        "source": source if current else None,
        "earned": s.earned,
        "qualification": member_svc.json_amount(value, currency.decimals),
        "qualification_text": f"{currency.display(value)} in the current window",
        "window": ladder.window.kind if ladder.window.kind != "rolling" else f"rolling {ladder.window.days} days",
        "grace_until": s.grace_until.isoformat() if s.grace_until else None,
        "paid": _until(ladder, s.paid, s.paid_until, now),
        "manual": (
            {**(_until(ladder, s.manual, s.manual_until, now) or {}), "locked": s.locked}
            if s.manual and (s.locked or s.manual_until is None or s.manual_until > now)
            else None
        ),
        "kept": _until(ladder, s.kept, s.kept_until, now),
        "keep": None,
    }
    if keep is not None:
        text = (
            f"earn {currency.display(keep.missing)} by {keep.by.isoformat()} to keep {keep.tier.name}"
            if keep.missing
            else f"{keep.tier.name} kept until the review after {keep.by.isoformat()}"
        )
        status["keep"] = {
            "tier": keep.tier.key,
            "missing": member_svc.json_amount(keep.missing, currency.decimals),
            "by": keep.by.isoformat(),
            "text": text,
        }
    return tier, next_tier, status


def _until(ladder: Ladder, key: str | None, until: datetime | None, now: datetime) -> dict[str, Any] | None:
    if key is None or (until is not None and until <= now):
        return None
    tier = ladder.get(key)
    name = tier.name if tier else key
    return {
        "tier": key,
        "name": name,
        "until": until.isoformat() if until else None,
        "text": f"{name} until {until.date().isoformat()}" if until else name,
    }


# --- the periodic review: every member, set-based ---------------------------------------------


@dataclass(slots=True)
class Evaluated:
    members: int = 0
    changed: int = 0
    moves: dict[str, int] = field(default_factory=dict)  # "from→to": count
    warned: int = 0
    reminded: int = 0
    skipped: int = 0  # changed concurrently; left for the next run

    def as_json(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "changed": self.changed,
            "moves": dict(sorted(self.moves.items())),
            "will_change_messages": self.warned,
            "expiring_messages": self.reminded,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class _Member:
    pk: int
    member_id: str
    tier: str | None
    standing: Standing
    anniversary: date


def _members(conn: Connection, loaded: LoadedProgram, program: Program) -> Iterator[_Member]:
    """Every member of the program with their standing, in primary-key order, streamed."""
    m, s = members.c, tier_status.c
    anniversary = program.ladder is not None and program.ladder.window.kind == "anniversary_year"
    cols = [m.id, m.member_id, m.tier, *_STATUS_COLUMNS]
    if anniversary:
        cols += [m.profile, m.created_at]
    query = (
        select(*cols)
        .select_from(members.outerjoin(tier_status, s.member_pk == m.id))
        .where(m.program_id == loaded.program_id)
        .order_by(m.id)
    )
    for row in conn.execute(query, execution_options={"yield_per": 20000}):
        ann = anniversary_of(_json(row[13]), row[14], program) if anniversary else _NO_ANNIVERSARY
        yield _Member(row[0], row[1], row[2], _standing(row[3:13], row[2]), ann)


def _day_rows(conn: Connection, loaded: LoadedProgram, ladder: Ladder, since: date) -> Iterator[tuple[int, int, int]]:
    """(member, day, amount) of the program's qualification, in member order, streamed."""
    q, m = tier_qualification.c, members.c
    if ladder.window.kind == "lifetime":
        query: Any = (
            select(q.member_pk, literal(0), func.sum(q.amount))
            .join(members, m.id == q.member_pk)
            .where(m.program_id == loaded.program_id, q.currency == ladder.currency)
            .group_by(q.member_pk)
            .order_by(q.member_pk)
        )
    else:
        query = (
            select(q.member_pk, q.day, q.amount)
            .join(members, m.id == q.member_pk)
            .where(m.program_id == loaded.program_id, q.currency == ladder.currency, q.day >= since.toordinal())
            .order_by(q.member_pk, q.day)
        )
    for pk, day, amount in conn.execute(query, execution_options={"yield_per": 50000}):
        yield pk, int(day), int(amount)


def _with_days(
    people: Iterator[_Member], rows: Iterator[tuple[int, int, int]]
) -> Iterator[tuple[_Member, dict[int, int]]]:
    """Merge the two member-ordered streams."""
    pending = next(rows, None)
    for person in people:
        days: dict[int, int] = {}
        while pending is not None and pending[0] <= person.pk:
            if pending[0] == person.pk:
                days[pending[1]] = pending[2]
            pending = next(rows, None)
        yield person, days


def _last_run(conn: Connection, program_id: int) -> date | None:
    found = conn.execute(select(tier_runs.c.evaluated_on).where(tier_runs.c.program_id == program_id)).scalar()
    return date.fromordinal(found) if found else None


@dataclass(slots=True)
class _Changes:
    """What a run writes: new standings, new tiers (with history) and messages."""

    standings: dict[int, Standing] = field(default_factory=dict)
    before: dict[int, tuple[str | None, Standing]] = field(default_factory=dict)
    tiers: dict[int, tuple[str | None, str | None, str]] = field(default_factory=dict)  # from, to, reason
    ids: dict[int, str] = field(default_factory=dict)
    messages: list[outbox.Message] = field(default_factory=list)


def evaluate(
    conn: Connection,
    loaded: LoadedProgram,
    *,
    now: datetime,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluated:
    """Review every member of the program (see `_evaluate`)."""
    from kinloop.services.ingest import gc_paused

    # A run allocates a few small objects per member and keeps the changed ones: the cyclic
    # collector would scan them all again and again.
    with gc_paused():
        return _evaluate(conn, loaded, now=now, on_progress=on_progress)


def _evaluate(
    conn: Connection,
    loaded: LoadedProgram,
    *,
    now: datetime,
    on_progress: Callable[[int], None] | None,
) -> Evaluated:
    """Review every member of the program: upgrades, retention and demotion per the ladder's
    cadence, grace and one-level rule; paid terms that ended; `tier.will_change` and
    `tier.expiring` messages. One streamed query with the qualification sums the reviews need
    (members whose windows differ, such as those in grace, read their days in batches), then
    bulk writes of what changed."""
    program = loaded.program
    ladder = program.ladder
    result = Evaluated()
    if ladder is None:
        return result
    today = now.astimezone(program.timezone).date()
    last_run = _last_run(conn, loaded.program_id)
    subs = outbox.load_subscribers(conn, loaded.program_id)
    run = _Run(
        ladder,
        program,
        today,
        last_run,
        now,
        warn=bool(subs.of(outbox.TIER_WILL_CHANGE)),
        remind=bool(subs.of(outbox.TIER_EXPIRING)),
    )
    changes = _Changes()
    starts = _common_starts(ladder, today, last_run)
    later: list[_Member] = []
    if starts is None:
        # Anniversary windows or cadences: each member has windows of their own; read their days.
        later = list(_members(conn, loaded, program))
    else:
        for person, sums in _with_sums(conn, loaded, program, ladder, starts, today):
            result.members += 1
            if on_progress is not None and result.members % 10000 == 0:
                on_progress(result.members)
            try:
                run.member(person, _Sums(sums, today), changes)
            except _NeedDays:
                later.append(person)  # in grace: its own window; read below with the others
    since = today - timedelta(days=_HORIZON_DAYS + ladder.window.days + ladder.grace_days)
    for part in _batches(later, 5000):
        days = load_days(conn, ladder, [p.pk for p in part], since)
        for person in part:
            run.member(person, qualification(days.get(person.pk)), changes)
    if starts is None:
        result.members = len(later)
    if on_progress is not None:
        on_progress(result.members)
    _write(conn, loaded, changes, result, now, subs)
    upsert_rows(
        conn,
        tier_runs,
        [{"program_id": loaded.program_id, "evaluated_on": today.toordinal(), "evaluated_at": now}],
        ("program_id",),
    )
    return result


class _NeedDays(Exception):
    """A member whose review looks at a window the run did not sum in SQL."""


class _Sums:
    """Qualification sums from given window starts up to today, summed by the database."""

    __slots__ = ("sums", "today")

    def __init__(self, sums: dict[date | None, int], today: date) -> None:
        self.sums = sums
        self.today = today

    def __call__(self, start: date | None, end: date) -> int:
        if end != self.today or start not in self.sums:
            raise _NeedDays
        return self.sums[start]


def _common_starts(ladder: Ladder, today: date, last_run: date | None) -> list[date | None] | None:
    """The window starts every member's review reads this run (None: they differ per member)."""
    if ladder.window.kind == "anniversary_year" or ladder.cadence == "anniversary":
        return None
    refs = {today, next_review(ladder.cadence, today, today) - timedelta(days=1)}
    due = review_due(ladder.cadence, today, last_run, today)
    if due is not None:
        refs.add(due if ladder.cadence == "realtime" else due - timedelta(days=1))
    return sorted({window_start(ladder.window, ref, _NO_ANNIVERSARY) for ref in refs}, key=lambda d: d or date.min)


def _with_sums(
    conn: Connection, loaded: LoadedProgram, program: Program, ladder: Ladder, starts: list[date | None], today: date
) -> Iterator[tuple[_Member, dict[date | None, int]]]:
    """Every member with their standing and qualification sums from `starts` to today: one
    streamed query, the sums grouped by the database."""
    q, m = tier_qualification.c, members.c
    sums = [
        func.sum(q.amount if start is None else case((q.day >= start.toordinal(), q.amount), else_=0)).label(f"s{i}")
        for i, start in enumerate(starts)
    ]
    lo = min((s for s in starts if s is not None), default=None)
    where = [q.currency == ladder.currency, q.day <= today.toordinal()]
    if lo is not None and None not in starts:
        where.append(q.day >= lo.toordinal())
    mine = select(m.id).where(m.program_id == loaded.program_id)
    totals = select(q.member_pk, *sums).where(*where, q.member_pk.in_(mine)).group_by(q.member_pk).subquery()
    query = (
        select(m.id, m.member_id, m.tier, *_STATUS_COLUMNS, *[totals.c[f"s{i}"] for i in range(len(starts))])
        .select_from(
            members.outerjoin(tier_status, tier_status.c.member_pk == m.id).outerjoin(
                totals, totals.c.member_pk == m.id
            )
        )
        .where(m.program_id == loaded.program_id)
        .order_by(m.id)
    )
    for row in conn.execute(query, execution_options={"yield_per": 20000}):
        person = _Member(row[0], row[1], row[2], _standing(row[3:13], row[2]), _NO_ANNIVERSARY)
        yield person, {start: int(row[13 + i] or 0) for i, start in enumerate(starts)}


def _batches(items: list[_Member], size: int) -> Iterator[list[_Member]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True, slots=True)
class _Run:
    """One evaluation run: what it needs to review a member and record the changes."""

    ladder: Ladder
    program: Program
    today: date
    last_run: date | None
    now: datetime
    warn: bool
    remind: bool

    def member(self, person: _Member, qual: Qualification, changes: _Changes) -> None:
        """Review one member and note what changes (nothing is written here)."""
        ladder, now, program = self.ladder, self.now, self.program
        s = person.standing
        r = review(ladder, s, qual, today=self.today, last_run=self.last_run, anniversary=person.anniversary)
        new = r.standing
        if new.paid_until is not None and new.paid_until <= now:
            new = replace(new, paid=None, paid_until=None)
        if new.kept_until is not None and new.kept_until <= now:
            new = replace(new, kept=None, kept_until=None)
        after = effective(ladder, new, now)[0]
        if new != s or after != person.tier:
            changes.before[person.pk] = (person.tier, s)
            changes.standings[person.pk] = new
            changes.ids[person.pk] = person.member_id
            if after != person.tier:
                changes.tiers[person.pk] = (person.tier, after, _why(ladder, s, new, r.reason, now))
        if self.warn and r.warn is not None:
            on, to = r.warn
            changes.messages.append(
                outbox.tier_will_change(program, member_id=person.member_id, from_tier=s.earned, to_tier=to, on=on)
            )
        if self.remind and new.paid is not None and new.paid_until is not None:
            paid = ladder.get(new.paid)
            if (
                paid is not None
                and paid.paid is not None
                and new.paid_until <= now + timedelta(days=paid.paid.remind_days)
            ):
                changes.messages.append(
                    outbox.tier_expiring(program, member_id=person.member_id, tier=new.paid, ends_at=new.paid_until)
                )


def _why(ladder: Ladder, before: Standing, after: Standing, reason: str | None, now: datetime) -> str:
    if reason == "qualified":
        return "qualified"
    if before.paid is not None and after.paid is None:
        return "paid term ended"
    if before.kept is not None and after.kept is None:
        return "kept tier ended"
    if before.manual_until is not None and before.manual_until <= now:
        return "manual tier ended"
    return reason or "re-evaluated"


def _write(
    conn: Connection,
    loaded: LoadedProgram,
    changes: _Changes,
    result: Evaluated,
    now: datetime,
    subs: outbox.Subscribers,
) -> None:
    """Write a run's changes; members changed meanwhile (by ingestion) are left for the next run."""
    program = loaded.program
    pks = sorted(changes.standings)
    m = members.c
    for part in chunks(pks, 50_000):
        # Locked in primary-key order, like every writer of members, then compared with what
        # the review read: a member ingestion changed meanwhile waits for the next run.
        query = (
            select(m.id, m.tier, *_STATUS_COLUMNS)
            .select_from(members.outerjoin(tier_status, tier_status.c.member_pk == m.id))
            .where(_among(m.id, "pks")[conn.dialect.name == "postgresql"])
            .order_by(m.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=members)
        now_seen = {row[0]: (row[1], _standing(row[2:], row[1])) for row in conn.execute(query, {"pks": part})}
        for pk in part:
            if now_seen.get(pk) != changes.before[pk]:
                result.skipped += 1
                del changes.standings[pk]
                changes.tiers.pop(pk, None)
    save_standings(conn, changes.standings)
    moved = changes.tiers
    _set_tiers(conn, {pk: t[1] for pk, t in moved.items()})
    insert_rows(
        conn,
        tier_changes,
        [
            {"member_pk": pk, "from_tier": f, "to_tier": t, "reason": why, "event_pk": None, "at": now}
            for pk, (f, t, why) in sorted(moved.items())
        ],
    )
    day = now.astimezone(program.timezone).date().isoformat()
    messages = list(changes.messages)
    if subs.of(outbox.TIER_CHANGED):
        messages += [
            outbox.tier_changed(
                program,
                key=f"review:{changes.ids[pk]}:{day}:{f}:{t}",
                member_id=changes.ids[pk],
                from_tier=f,
                to_tier=t,
                reason=why,
                event_id=None,
                at=now,
            )
            for pk, (f, t, why) in sorted(moved.items())
        ]
    written = outbox.enqueue(conn, loaded.program_id, messages, now=now, subscribers=subs, skip_repeats=True)
    result.warned = sum(1 for m in changes.messages if m.kind == outbox.TIER_WILL_CHANGE)
    result.reminded = sum(1 for m in changes.messages if m.kind == outbox.TIER_EXPIRING)
    del written
    result.changed = len(moved)
    for f, t, _ in moved.values():
        k = f"{f or '-'}→{t or '-'}"
        result.moves[k] = result.moves.get(k, 0) + 1


def _set_tiers(conn: Connection, tiers: Mapping[int, str | None]) -> None:
    """Set `members.tier` of many members in one statement."""
    if not tiers:
        return
    items = sorted(tiers.items())
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "UPDATE members SET tier = v.tier FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::text[]) AS tier) v"
            " WHERE members.id = v.id",
            ([pk for pk, _ in items], [t for _, t in items]),
        )
        return
    conn.exec_driver_sql("UPDATE members SET tier = ? WHERE id = ?", [(t, pk) for pk, t in items])


# --- ladder changes ---------------------------------------------------------------------------


def _reassessed(new: Ladder, s: Standing, qual: Qualification, today: date, anniversary: date) -> Standing:
    """A standing under a new ladder: the earned tier recomputed from the qualification in the
    new window; paid, manual and kept tiers carried over when the new ladder still has them."""
    reached = tier_for(new, qual(window_start(new.window, today, anniversary), today))
    earned = reached.key if reached else None

    def keep(key: str | None) -> str | None:
        return key if new.get(key) is not None else None

    return replace(
        s,
        earned=earned,
        reached_on=s.reached_on if earned == s.earned else today,
        grace_until=None,
        paid=keep(s.paid),
        manual=keep(s.manual),
        locked=s.locked and keep(s.manual) is not None,
        kept=keep(s.kept),
    )


def preview(conn: Connection, loaded: LoadedProgram, new: Program, *, now: datetime) -> dict[str, dict[str, int]]:
    """Who would move where if `new` were activated: counts by current tier, then new tier."""
    ladder = new.ladder
    matrix: dict[str, dict[str, int]] = {}
    today = now.astimezone(new.timezone).date()
    if ladder is None:
        for person in _members(conn, loaded, loaded.program):
            row = matrix.setdefault(person.tier or "-", {})
            row["-"] = row.get("-", 0) + 1
        return matrix
    since = today - timedelta(days=_HORIZON_DAYS + ladder.window.days)
    for person, days in _with_days(_members(conn, loaded, new), _day_rows(conn, loaded, ladder, since)):
        s = _reassessed(ladder, person.standing, qualification(days), today, person.anniversary)
        to = effective(ladder, s, now)[0]
        row = matrix.setdefault(person.tier or "-", {})
        row[to or "-"] = row.get(to or "-", 0) + 1
    return matrix


def active_program(conn: Connection, key: str) -> Program | None:
    """The active version of a program, if it is loaded (to compare ladders on activation)."""
    from kinloop.domain.errors import UnknownProgram
    from kinloop.services import programs

    try:
        return programs.active(conn, key).program
    except UnknownProgram:
        return None


def on_activation(
    conn: Connection,
    before: Program | None,
    loaded: LoadedProgram,
    *,
    now: datetime,
    keep_until: datetime | None = None,
) -> Evaluated | None:
    """Re-evaluate every member when an activation changed the ladder (None when it did not)."""
    if before is None or before.ladder == loaded.program.ladder:
        return None
    return reevaluate(conn, loaded, now=now, keep_until=keep_until)


def reevaluate(
    conn: Connection, loaded: LoadedProgram, *, now: datetime, keep_until: datetime | None = None
) -> Evaluated:
    """After a new version is activated: every member's standing under its ladder; with
    `keep_until`, members keep their current tier (as a floor) until then (grandfathering)."""
    program = loaded.program
    ladder = program.ladder
    result = Evaluated()
    if ladder is None:
        return result
    today = now.astimezone(program.timezone).date()
    changes = _Changes()
    since = today - timedelta(days=_HORIZON_DAYS + ladder.window.days)
    for person, days in _with_days(_members(conn, loaded, program), _day_rows(conn, loaded, ladder, since)):
        result.members += 1
        s = person.standing
        new = _reassessed(ladder, s, qualification(days), today, person.anniversary)
        if keep_until is not None and keep_until > now and ladder.get(person.tier) is not None:
            new = replace(new, kept=person.tier, kept_until=keep_until)
        after = effective(ladder, new, now)[0]
        if new != s or after != person.tier:
            changes.before[person.pk] = (person.tier, s)
            changes.standings[person.pk] = new
            changes.ids[person.pk] = person.member_id
            if after != person.tier:
                changes.tiers[person.pk] = (person.tier, after, "ladder changed")
    _write(conn, loaded, changes, result, now, outbox.load_subscribers(conn, loaded.program_id))
    return result
