"""Event ingestion: validate, evaluate and book a batch of events in one transaction.

The flow of an event (DESIGN.md): record it (a repeated `event_id` returns the first result
and awards nothing), evaluate the rules (pure), write entries and lots, update balances,
activity, usage and tier, and the outbox messages subscribers want — all in the caller's
transaction.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from kinloop.domain.checkin import CheckinResult, in_words
from kinloop.domain.errors import KinloopError
from kinloop.domain.events import Event, parse_event
from kinloop.domain.periods import period_key
from kinloop.domain.program import PERIODS, Program
from kinloop.domain.rules import Evaluation, apply, evaluate
from kinloop.services import campaigns as campaign_svc
from kinloop.services import checkin as checkin_svc
from kinloop.services import growth_badges, outbox
from kinloop.services import leaderboards as leaderboard_svc
from kinloop.services import members as member_svc
from kinloop.services import tiers as tier_svc
from kinloop.services.book import Book, _Ids, chunks
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import (
    TOGETHER_UP_TO,
    Reads,
    deferred,
    flush_deferred,
    insert_rows,
    part_in,
    select_in,
    update_rows,
)
from kinloop.store.db import is_sqlite
from kinloop.store.tables import entries, events, members, tier_changes


@dataclass(slots=True)
class IngestResult:
    """What happened to one submitted event, in submission order."""

    index: int
    event_id: str | None
    status: str  # accepted | duplicate | rejected
    outcome: dict[str, Any] = field(default_factory=dict)
    error: KinloopError | None = None

    def as_json(self, program: Program) -> dict[str, Any]:
        if self.error is not None:
            return {
                "index": self.index,
                "event_id": self.event_id,
                "status": self.status,
                "error": {"code": self.error.code, "detail": self.error.detail, "field": self.error.field},
            }
        return {
            "index": self.index,
            "event_id": self.event_id,
            "status": self.status,
            **describe_outcome(program, self.outcome),
        }


def describe_outcome(program: Program, outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The stored outcome of an event, spelled out in the program's words."""
    awards = []
    for rule, currency, amount, kind, pending in outcome.get("awards", []):
        c = program.currencies.get(currency)
        text = c.display(amount) if c else str(amount)
        awards.append(
            {
                "rule": rule,
                "currency": currency,
                "amount": amount,
                "kind": kind,
                "pending": bool(pending),
                "text": text + (" (pending)" if pending else ""),
            }
        )
    out: dict[str, Any] = {"awards": awards}
    if "checkin" in outcome:
        out["checkin"] = outcome["checkin"]
    tier = outcome.get("tier")
    if tier:
        names = {t.key: t.name for t in program.ladder.tiers} if program.ladder else {}
        out["tier_changed"] = {"from": tier[0], "to": tier[1], "text": f"reached {names.get(tier[1], tier[1])}"}
    if "badges" in outcome or "tasks" in outcome:
        out.update(growth_badges.outcome_text(program, outcome))
    return out


def _period_keys(program: Program, evs: Sequence[Event]) -> set[str]:
    wanted = {p for r in program.rules for p in r.periods}
    if not wanted:
        return set()
    keys = set()
    tz = program.timezone
    for day in {e.occurred_at.astimezone(tz).date() for e in evs}:
        for p in PERIODS:
            if p in wanted:
                keys.add(period_key(p, day))
    return keys


def _release_points(program: Program) -> dict[str, list[str]]:
    """Event types that release pending awards, with the attribute that links them."""
    out: dict[str, list[str]] = {}
    pendings = [c.pending for c in program.currencies.values()] + [r.pending for r in program.rules]
    for p in pendings:
        if p is not None and p.until_event and p.key:
            out.setdefault(p.until_event, [])
            if p.key not in out[p.until_event]:
                out[p.until_event].append(p.key)
    return out


def ingest(
    conn: Connection,
    loaded: LoadedProgram,
    raws: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    text_values: bool = False,
) -> list[IngestResult]:
    """Ingest a batch of raw events; each succeeds or fails on its own."""
    program = loaded.program
    results: list[IngestResult | None] = [None] * len(raws)
    parsed: list[tuple[int, Event]] = []
    for i, raw in enumerate(raws):
        try:
            parsed.append((i, parse_event(program, raw, now=now, text_values=text_values)))
        except KinloopError as exc:
            event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
            results[i] = IngestResult(i, event_id if isinstance(event_id, str) else None, "rejected", error=exc)
    if parsed:
        with gc_paused():
            _book_events(conn, loaded, parsed, results, now)
    return [r for r in results if r is not None]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a stretch of short-lived work (a batch; a
    benchmark's load phase, whose own pauses would be charged to the server it measures).

    A batch allocates tens of thousands of short-lived, acyclic objects (reference counting
    frees them); the collector would repeatedly scan them all and took a fifth of the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _existing(conn: Connection, program_id: int, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(ids):
        for event_id, outcome in select_in(
            conn, events, ("event_id", "outcome"), "event_id", part, also=("program_id", [program_id])
        ):
            found[event_id] = json.loads(outcome) if isinstance(outcome, str) else outcome
    return found


def _book_events(
    conn: Connection,
    loaded: LoadedProgram,
    parsed: list[tuple[int, Event]],
    results: list[IngestResult | None],
    now: datetime,
) -> None:
    program = loaded.program
    pg = not is_sqlite(conn)
    everything = [e for _, e in parsed]
    rows: dict[str, member_svc.MemberRow] = {}
    existing: dict[str, dict[str, Any]] = {}
    locked = False
    if pg:
        # Usually every member exists: one statement finds and locks them all, and the events
        # are checked for duplicates only afterwards (below), in the joint read.
        rows, locked = member_svc.lock_found(conn, loaded.program_id, sorted({e.member_id for e in everything}))
    if not locked:
        # Events are never deleted, so one found now is a duplicate for good; it needs no member.
        existing = _existing(conn, loaded.program_id, sorted({e.event_id for e in everything}))
        needed = sorted({e.member_id for e in everything if e.event_id not in existing})
        if pg:  # `rows`: those found (none locked), some of which may be only duplicates' members
            rows = member_svc.create_missing(
                conn, loaded.program_id, needed, {m: rows[m] for m in needed if m in rows}, now
            )
        else:
            rows = member_svc.ensure(conn, loaded.program_id, needed, now)
    # What the batch needs of its members, in one statement per `CHUNK` members. On PostgreSQL it
    # checks the events again, now that the member locks are held: a concurrent copy of an event
    # waits for the lock and then finds the first one here. On SQLite the first check already
    # ran under the database's single write lock (BEGIN IMMEDIATE), so nothing can have changed.
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    tier_svc.track(book, program)
    event_ids = _Ids(conn, events)
    checkin = program.checkin
    checkins = checkin is not None and any(e.type == checkin.event_type for e in everything)
    days = growth_badges.events_days(program, everything)
    periods = _period_keys(program, everything)
    pks = sorted(r.pk for r in rows.values())
    loaded_rows: list[list[Any]] = [[] for _ in range(10)]
    subscribers: outbox.Subscribers | None = None
    for i, part in enumerate(chunks(pks) if pks else [[]]):
        reads = Reads(conn, together=len(part) <= TOGETHER_UP_TO)
        ask = [
            reads.add(book.balances_part(part)),
            *(reads.add(p) for p in member_svc.state_parts(conn, program, part, periods)),
            reads.add(checkin_svc.load_part(conn, part) if checkins else None),
            *(reads.add(p) for p in tier_svc.Realtime.parts(conn, program, part)),
            *(reads.add(p) for p in growth_badges.start_parts(conn, program, part, days)),
        ]
        if i == 0:
            recheck = None
            if pg and everything:
                ids = sorted({e.event_id for e in everything if e.event_id not in existing})
                recheck = part_in(
                    conn, events, ("event_id", "outcome"), "event_id", ids, also=("program_id", [loaded.program_id])
                )
            at_recheck = reads.add(recheck)
            at_subs = reads.add(outbox.subscribers_part(conn, loaded.program_id))
            fresh_n = len(everything)
            ids_part, ids_want = event_ids.reserve_part(fresh_n)
            at_ids = reads.add(ids_part)
            entries_part, entries_want = book.entry_ids.reserve_part(2 * fresh_n)
            at_entries = reads.add(entries_part)
        reads.run()
        book.use_balances(part, reads[ask[0]])
        for got, at in zip(loaded_rows, ask[1:], strict=True):
            got += reads[at]
        if i == 0:
            existing.update(reads[at_recheck])
            subscribers = outbox.subscribers_from(reads[at_subs])
            event_ids.reserved(reads[at_ids], ids_want)
            book.entry_ids.reserved(reads[at_entries], entries_want)
    activity_rows, usage_rows, first_rows, checkin_rows, status_rows, day_rows, anniversary_rows, *growth_rows = (
        loaded_rows
    )
    states = member_svc.states_from(program, rows.values(), book, activity_rows, usage_rows, first_rows)
    if checkins:
        checkin_svc.use(states, checkin_rows)
    checked_in: set[int] = set()
    fresh = [e for e in everything if e.event_id not in existing]
    # Budgets are locked after the members, in key order; None when the program has none.
    budgets = campaign_svc.reserve(conn, loaded.program_id, program) if fresh else None
    budgets_before = dict(budgets) if budgets is not None else {}
    realtime = tier_svc.Realtime.start_from(
        conn, loaded, book, rows.values(), everything, now, status_rows, day_rows, anniversary_rows
    )
    growth = growth_badges.start_from(program, *growth_rows)
    # The first submitted copy of an event id is the event; later copies are duplicates of it,
    # whatever time they claim.
    firsts: dict[str, int] = {}
    repeats: list[tuple[int, Event]] = []
    for index, ev in parsed:
        if ev.event_id in firsts:
            repeats.append((index, ev))
        else:
            firsts[ev.event_id] = index
    if repeats:
        parsed = [(i, ev) for i, ev in parsed if firsts[ev.event_id] == i]
    parsed.sort(key=lambda p: (p[1].occurred_at, p[1].event_id))
    seen: dict[str, dict[str, Any]] = {}
    event_rows: list[dict[str, Any]] = []
    tier_rows: list[dict[str, Any]] = []
    usage_keys: set[tuple[int, str, str]] = set()
    first_keys: set[tuple[int, str]] = set()
    activity_keys: set[tuple[int, str]] = set()
    tier_updates: dict[int, str | None] = {}
    releases = _release_points(program)
    bonus_moves: list[tuple[int, Evaluation, int]] = []
    tz = program.timezone
    scores = leaderboard_svc.Scores.of(program, loaded.program_id)
    for index, ev in parsed:
        prior = existing.get(ev.event_id) or seen.get(ev.event_id)
        if prior is not None:
            results[index] = IngestResult(index, ev.event_id, "duplicate", prior)
            continue
        member = rows[ev.member_id]
        pk = member.pk
        state = states[pk]
        evaluation = evaluate(program, state, ev, now, budgets)
        apply(state, evaluation)
        ev_pk = event_ids.take()
        award_rows = []
        for award in evaluation.awards:
            currency = program.currencies[award.currency]
            release_key = None
            if award.pending and award.pending.until_event and award.pending.key:
                release_key = f"{award.pending.until_event}|{ev.attributes.get(award.pending.key)}"
            book.earn(
                pk,
                currency,
                award.amount,
                earned_at=ev.occurred_at,
                pending=award.pending,
                release_key=release_key,
                tz=tz,
                event_pk=ev_pk,
                rule=award.rule,
                award_kind=award.kind,
                qualifies=award.qualifies,
            )
            award_rows.append([award.rule, award.currency, award.amount, award.kind, award.pending is not None])
        grown = growth.on_event(book, pk, state, evaluation, ev_pk) if growth is not None else None
        awards = evaluation.awards
        if grown is not None:
            award_rows += grown.awards
            awards = (*awards, *grown.rewards)  # badge and task rewards move tiers and scores too
        if scores is not None:
            scores.add(member, ev, awards)
        if ev.type in releases:
            _release_by_event(book, program, pk, ev, releases[ev.type])
        for key in evaluation.usage:
            usage_keys.add((pk, key[0], key[1]))
        for rule in evaluation.firsts:
            first_keys.add((pk, rule))
        if evaluation.bonus_moves:
            bonus_moves.append((pk, evaluation, ev_pk))
        activity_keys.add((pk, ev.type))
        tier_change = None
        if realtime is not None and realtime.concerns(ev, awards, state.tier, releases=ev.type in releases):
            new_tier = realtime.after_event(pk, ev)
            if new_tier != state.tier:
                tier_change = [state.tier, new_tier]
                tier_rows.append(
                    {
                        "member_pk": pk,
                        "from_tier": state.tier,
                        "to_tier": new_tier,
                        "reason": f"event {ev.event_id}",
                        "event_pk": ev_pk,
                        "at": ev.occurred_at,
                    }
                )
                state.tier = new_tier
                tier_updates[pk] = new_tier
        outcome: dict[str, Any] = {
            "awards": award_rows,
            "rules": [o.as_row() for o in evaluation.outcomes],
        }
        if tier_change:
            outcome["tier"] = tier_change
        if grown is not None:
            if grown.badges:
                outcome["badges"] = grown.badges
            if grown.tasks:
                outcome["tasks"] = grown.tasks
        if evaluation.checkin is not None:
            checked_in.add(pk)
            outcome["checkin"] = _checkin_outcome(program, evaluation.checkin)
        event_rows.append(
            {
                "id": ev_pk,
                "program_id": loaded.program_id,
                "event_id": ev.event_id,
                "member_pk": pk,
                "type": ev.type,
                "occurred_at": ev.occurred_at,
                "received_at": now,
                "attributes": _jsonable(ev.attributes),
                "program_version_id": loaded.version_id,
                "outcome": outcome,
                "refunded": None,
            }
        )
        seen[ev.event_id] = outcome
        results[index] = IngestResult(index, ev.event_id, "accepted", outcome)
    for index, ev in repeats:
        results[index] = IngestResult(index, ev.event_id, "duplicate", existing.get(ev.event_id) or seen[ev.event_id])
    # The writes, in foreign-key order; on PostgreSQL sent together as one statement.
    with deferred(conn):
        insert_rows(conn, events, event_rows)
        if bonus_moves:
            flush_deferred(conn)  # what follows reads the events
            for pk, evaluation, ev_pk in bonus_moves:
                _move_bonuses(conn, book, program, pk, evaluation, ev_pk, now, scores, rows[evaluation.event.member_id])
        book.flush()
        member_svc.save_states(conn, states, activity_keys, usage_keys, first_keys)
        if growth is not None:
            growth.save(conn)
        if checked_in:
            checkin_svc.save(conn, states, checked_in)
        if budgets is not None:
            campaign_svc.settle(conn, loaded.program_id, program, budgets_before, budgets)
        if realtime is not None:
            realtime.save()
        if scores is not None:
            scores.flush(conn)
        insert_rows(conn, tier_changes, tier_rows)
        update_rows(conn, members, [{"id": pk, "tier": t} for pk, t in sorted(tier_updates.items())], "id")
        if event_rows:
            outbox.events_booked(
                conn, loaded.program_id, program, event_rows, tier_rows, rows.values(), now=now, subscribers=subscribers
            )
            if growth is not None and growth.badge_rows:
                outbox.badges_awarded(
                    conn,
                    loaded.program_id,
                    program,
                    growth.badge_rows,
                    event_rows,
                    rows.values(),
                    now=now,
                    subscribers=subscribers,
                )


def _checkin_outcome(program: Program, result: CheckinResult) -> dict[str, Any]:
    """A check-in's result as stored with its event (words included: check-ins are few)."""
    assert program.checkin is not None  # a check-in result comes only from a program with check-in
    return {
        "status": result.status,
        "day": result.day.isoformat(),
        "streak": result.state.streak,
        "reason": result.reason,
        "text": in_words(program, program.checkin, result),
    }


def _jsonable(attributes: Mapping[str, Any]) -> dict[str, Any]:
    from decimal import Decimal

    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if isinstance(v, Decimal):
            out[k] = int(v) if v == v.to_integral_value() and abs(v) < 2**53 else str(v)
        elif isinstance(v, datetime):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out


def _release_by_event(book: Book, program: Program, pk: int, ev: Event, keys: list[str]) -> None:
    wanted = {f"{ev.type}|{ev.attributes.get(k)}" for k in keys if ev.attributes.get(k) is not None}
    if not wanted:
        return
    held = {r.currency for r in program.rules if r.pending} | {c.key for c in program.currencies.values() if c.pending}
    for key in sorted(held):
        book.release_matching(pk, program.currencies[key], wanted, ev.occurred_at)


def _move_bonuses(
    conn: Connection,
    book: Book,
    program: Program,
    pk: int,
    evaluation: Evaluation,
    ev_pk: int,
    now: datetime,
    scores: leaderboard_svc.Scores | None,
    member: member_svc.MemberRow,
) -> None:
    """A late event that happened first takes the first-time bonus from the event that held it."""
    for move in evaluation.bonus_moves:
        found = conn.execute(
            select(events.c.id, events.c.occurred_at).where(
                events.c.program_id == book.program_id, events.c.event_id == move.from_event_id
            )
        ).first()
        if found is None:
            continue
        holder, held_at = found
        for entry_id, currency, amount in conn.execute(
            select(entries.c.id, entries.c.currency, entries.c.amount).where(
                entries.c.event_pk == holder,
                entries.c.rule == move.rule,
                entries.c.award_kind == "first_time_bonus",
                entries.c.kind == "earn",
            )
        ):
            book.claw_back(
                pk,
                program.currencies[currency],
                amount,
                own_lot_ids=[entry_id],
                effective_at=evaluation.event.occurred_at,
                event_pk=holder,
                rule=move.rule,
                award_kind="first_time_bonus",
                reverses=entry_id,
                reason=f"first-time bonus moved to earlier event {evaluation.event.event_id}",
            )
            if scores is not None:
                scores.take(member, held_at, currency, amount)
