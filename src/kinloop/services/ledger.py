"""Ledger operations outside ingestion: spend, adjust, reverse, expire and release."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select, update

from kinloop.domain import ledger as L
from kinloop.domain.amounts import to_minor
from kinloop.domain.campaigns import scaled
from kinloop.domain.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InvalidAmount,
    InvalidInput,
    Refused,
    UnknownCurrency,
    UnknownEvent,
)
from kinloop.domain.program import Currency, Program
from kinloop.domain.rules import RuleOutcome, base_amount
from kinloop.services import leaderboards as leaderboard_svc
from kinloop.services import members as member_svc
from kinloop.services import tiers as tier_svc
from kinloop.services.book import Book, lock_members
from kinloop.services.programs import LoadedProgram, version_program
from kinloop.store.tables import audit_log, entries, events, lots, members


def currency_of(program: Program, key: str) -> Currency:
    currency = program.currencies.get(key)
    if currency is None:
        known = ", ".join(program.currencies)
        raise UnknownCurrency(f"unknown currency {key!r} (this program has: {known})", field="currency")
    return currency


def positive_amount(value: Decimal | int | str, currency: Currency) -> int:
    minor = to_minor(value, currency.decimals)
    if minor <= 0:
        raise InvalidAmount(f"amount must be greater than 0, got {value}", field="amount")
    return minor


@dataclass(frozen=True, slots=True)
class Movement:
    """The result of a spend or an adjustment."""

    entry_id: int
    member_id: str
    currency: str
    amount: int
    balance: int
    replayed: bool = False

    def as_json(self, program: Program) -> dict[str, Any]:
        c = program.currencies[self.currency]
        return {
            "entry_id": self.entry_id,
            "member_id": self.member_id,
            "currency": self.currency,
            "amount": self.amount,
            "balance": self.balance,
            "replayed": self.replayed,
            "text": f"{c.display(self.amount)}; balance {c.display(self.balance)}",
        }


def _replay(conn: Connection, program_id: int, key: str, expect: dict[str, Any]) -> Movement | None:
    row = conn.execute(
        select(
            entries.c.id,
            entries.c.member_pk,
            entries.c.currency,
            entries.c.amount,
            entries.c.kind,
            entries.c.from_account,
            members.c.member_id,
        )
        .join(members, members.c.id == entries.c.member_pk)
        .where(entries.c.program_id == program_id, entries.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    given = {"member_id": row.member_id, "currency": row.currency, "amount": row.amount, "kind": row.kind}
    if {k: given[k] for k in expect} != expect:
        raise IdempotencyConflict(f"key {key!r} was already used for a different request", field="id")
    return Movement(
        row.id, row.member_id, row.currency, row.amount, _balance(conn, row.member_pk, row.currency), replayed=True
    )


def _balance(conn: Connection, member_pk: int, currency: str) -> int:
    from kinloop.store.tables import balances

    value = conn.execute(
        select(balances.c.available).where(balances.c.member_pk == member_pk, balances.c.currency == currency)
    ).scalar()
    return int(value or 0)


def spend(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    currency_key: str,
    amount: Decimal | str | int,
    *,
    reason: str,
    key: str | None,
    now: datetime,
    actor: str = "api",
) -> Movement:
    """Debit a member's available balance (soonest-expiring lots first); idempotent on `key`."""
    program = loaded.program
    currency = currency_of(program, currency_key)
    minor = positive_amount(amount, currency)
    if not reason.strip():
        raise InvalidInput("a reason is required", field="reason")
    member = member_svc.get(conn, loaded.program_id, member_id, lock=True)
    if key:
        found = _replay(
            conn,
            loaded.program_id,
            key,
            {"member_id": member_id, "currency": currency.key, "amount": minor, "kind": "spend"},
        )
        if found:
            return found
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    tier_svc.track(book, program)
    entry_id = book.debit(
        member.pk,
        currency,
        minor,
        kind="spend",
        dst=L.REDEMPTION,
        effective_at=now,
        idempotency_key=key,
        reason=reason,
        actor=actor,
    )
    balance = book.balance(member.pk, currency.key).available
    book.flush()
    return Movement(entry_id, member_id, currency.key, minor, balance)


def adjust(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    currency_key: str,
    amount: Decimal | str | int,
    *,
    reason: str,
    actor: str,
    key: str | None,
    now: datetime,
) -> Movement:
    """A manual credit (positive) or debit (negative), with actor and reason, audited."""
    program = loaded.program
    currency = currency_of(program, currency_key)
    signed = to_minor(amount, currency.decimals)
    if signed == 0:
        raise InvalidAmount("amount must not be 0", field="amount")
    if not reason.strip():
        raise InvalidInput("a reason is required for a manual adjustment", field="reason")
    if not actor.strip():
        raise InvalidInput("an actor is required for a manual adjustment", field="actor")
    member = member_svc.ensure(conn, loaded.program_id, [member_id], now)[member_id]
    if key:
        found = _replay(
            conn,
            loaded.program_id,
            key,
            {"member_id": member_id, "currency": currency.key, "amount": abs(signed), "kind": "adjustment"},
        )
        if found:
            return found
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    tier_svc.track(book, program)
    extra: dict[str, Any] = {"idempotency_key": key, "reason": reason, "actor": actor}
    if signed > 0:
        entry_id = book.earn(
            member.pk,
            currency,
            signed,
            earned_at=now,
            tz=program.timezone,
            kind="adjustment",
            src=L.ADJUSTMENT,
            **extra,
        )
    elif currency.spendable:
        entry_id = book.debit(
            member.pk, currency, -signed, kind="adjustment", dst=L.ADJUSTMENT, effective_at=now, **extra
        )
    else:
        entry_id = book.lower_growth(member.pk, currency, -signed, effective_at=now, **extra)
    balance = book.balance(member.pk, currency.key).available
    book.flush()
    _retier(conn, program, member.pk, member.tier, book, now, reason=f"adjustment by {actor}")
    _audit(
        conn,
        loaded.program_id,
        now,
        actor,
        "adjust",
        member_id,
        reason,
        {"currency": currency.key, "amount": signed, "entry_id": entry_id},
    )
    return Movement(entry_id, member_id, currency.key, abs(signed), balance)


def _audit(
    conn: Connection,
    program_id: int,
    now: datetime,
    actor: str,
    action: str,
    target: str,
    reason: str | None,
    details: dict[str, Any],
) -> None:
    conn.execute(
        audit_log.insert().values(
            program_id=program_id, at=now, actor=actor, action=action, target=target, reason=reason, details=details
        )
    )


def _retier(
    conn: Connection,
    program: Program,
    member_pk: int,
    current: str | None,
    book: Book,
    now: datetime,
    *,
    reason: str,
    event_pk: int | None = None,
) -> tuple[str | None, str | None] | None:
    """Re-evaluate a member's tier after the growth balance changed."""
    if program.ladder is None:
        return None
    new = tier_svc.settle(conn, program, member_pk, current, now)
    if new == current:
        return None
    tier_svc.record_change(
        conn, book.program_id, program, member_pk, current, new, reason=reason, now=now, event_pk=event_pk
    )
    return current, new


@dataclass(frozen=True, slots=True)
class Reversal:
    event_id: str
    clawed: dict[str, int]
    unrecovered: dict[str, int]
    tier: tuple[str | None, str | None] | None

    def as_json(self, program: Program) -> dict[str, Any]:
        def words(d: dict[str, int]) -> dict[str, str]:
            return {k: program.currencies[k].display(v) for k, v in d.items()}

        out: dict[str, Any] = {
            "event_id": self.event_id,
            "clawed_back": self.clawed,
            "unrecovered": self.unrecovered,
            "text": words(self.clawed),
            "unrecovered_text": words(self.unrecovered),
        }
        if self.tier:
            out["tier_changed"] = {"from": self.tier[0], "to": self.tier[1]}
        return out


def reverse(
    conn: Connection,
    loaded: LoadedProgram,
    event_id: str,
    *,
    amount: Decimal | str | None,
    reason: str,
    actor: str,
    now: datetime,
) -> Reversal:
    """Claw back what an event awarded: all of it, or (with `amount`) what a refund of that
    much of the event's amount takes away from its proportional awards."""
    ev = conn.execute(
        select(
            events.c.id,
            events.c.member_pk,
            events.c.attributes,
            events.c.program_version_id,
            events.c.refunded,
            events.c.type,
            events.c.outcome,
            events.c.occurred_at,
        ).where(events.c.program_id == loaded.program_id, events.c.event_id == event_id)
    ).first()
    if ev is None:
        raise UnknownEvent(f"no event {event_id!r} in this program", field="event_id")
    lock_members(conn, [ev.member_pk])
    program = loaded.program
    rules_program = version_program(conn, ev.program_version_id)
    earned = conn.execute(
        select(entries.c.id, entries.c.currency, entries.c.amount, entries.c.rule, entries.c.award_kind)
        .where(entries.c.event_pk == ev.id, entries.c.kind == "earn")
        .order_by(entries.c.id)
    ).all()
    taken: dict[int, int] = {}
    for reverses, amt in conn.execute(
        select(entries.c.reverses, func.sum(entries.c.amount))
        .where(
            entries.c.event_pk == ev.id,
            entries.c.kind.in_(("reversal", "write_off")),
            entries.c.reverses.is_not(None),
        )
        .group_by(entries.c.reverses)
    ):
        taken[reverses] = int(amt)
    refunded_before = Decimal(conn.execute(select(events.c.refunded).where(events.c.id == ev.id)).scalar() or 0)
    if all(row.amount - taken.get(row.id, 0) <= 0 for row in earned):
        raise AlreadyReversed(f"event {event_id!r} has nothing left to reverse")
    multipliers = _multipliers(ev.outcome)
    targets, refunded_after = _targets(rules_program, ev.attributes, earned, amount, refunded_before, multipliers)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    tier_svc.track(book, program)
    clawed: dict[str, int] = {}
    clawed_total: dict[str, int] = {}  # recovered or written off: what the event no longer earned
    lost: dict[str, int] = {}
    for row in earned:
        net = row.amount - taken.get(row.id, 0)
        claw = net - targets.get(row.id, 0)
        if claw <= 0:
            continue
        currency = program.currencies.get(row.currency) or rules_program.currencies[row.currency]
        got, missing = book.claw_back(
            ev.member_pk,
            currency,
            claw,
            own_lot_ids=[row.id],
            effective_at=now,
            event_pk=ev.id,
            rule=row.rule,
            award_kind=row.award_kind,
            reverses=row.id,
            reason=reason,
            actor=actor,
        )
        clawed[row.currency] = clawed.get(row.currency, 0) + got
        clawed_total[row.currency] = clawed_total.get(row.currency, 0) + claw
        if missing:
            lost[row.currency] = lost.get(row.currency, 0) + missing
    book.flush()
    leaderboard_svc.lower_for_reversal(
        conn,
        loaded.program_id,
        rules_program,
        member_pk=ev.member_pk,
        event_type=ev.type,
        occurred_at=ev.occurred_at,
        clawed=clawed_total,
        whole=all(targets.get(row.id, 0) == 0 for row in earned),
    )
    conn.execute(update(events).where(events.c.id == ev.id).values(refunded=str(refunded_after)))
    member_tier = conn.execute(select(members.c.tier).where(members.c.id == ev.member_pk)).scalar()
    tier = _retier(
        conn, program, ev.member_pk, member_tier, book, now, reason=f"reversal of {event_id}", event_pk=ev.id
    )
    _audit(
        conn,
        loaded.program_id,
        now,
        actor,
        "reverse",
        event_id,
        reason,
        {"amount": None if amount is None else str(amount), "clawed": clawed, "unrecovered": lost},
    )
    return Reversal(event_id, clawed, lost, tier)


def _multipliers(outcome: Any) -> dict[str, Decimal]:
    """The total multiplier each rule's award was given with (tier and campaigns), by rule."""
    if isinstance(outcome, str):
        outcome = json.loads(outcome)
    out = {}
    for row in (outcome or {}).get("rules", []):
        o = RuleOutcome.from_row(row)
        if o.multiplier:
            out[o.rule] = Decimal(o.multiplier)
    return out


def _targets(
    program: Program,
    attributes: dict[str, Any],
    earned: Sequence[Any],
    amount: Decimal | str | None,
    refunded_before: Decimal,
    multipliers: dict[str, Decimal] | None = None,
) -> tuple[dict[int, int], Decimal]:
    """What each award of the event should be worth after this reversal (multiplied as it was)."""
    rules = {r.key: r for r in program.rules}
    rate_attrs = {
        rate.attribute
        for r in earned
        if r.award_kind == "rule" and r.rule in rules and (rate := rules[r.rule].rate) is not None
    }
    if amount is None:
        attr = next(iter(rate_attrs), None)
        total = Decimal(str(attributes.get(attr, 0))) if attr else Decimal(0)
        return {}, total
    try:
        refund = Decimal(str(amount))
    except ArithmeticError as exc:
        raise InvalidAmount(f"{amount!r} is not a number", field="amount") from exc
    if not refund.is_finite() or refund <= 0:
        raise InvalidAmount("a refund amount must be greater than 0", field="amount")
    if len(rate_attrs) != 1:
        raise Refused(
            "this event has no proportional award to refund by amount; reverse it in full instead", field="amount"
        )
    attr = rate_attrs.pop()
    base = Decimal(str(attributes.get(attr, 0)))
    left = base - refunded_before - refund
    if left < 0:
        raise InvalidAmount(
            f"refund of {refund} exceeds what is left of {attr} ({base - refunded_before})", field="amount"
        )
    targets: dict[int, int] = {}
    for r in earned:
        rule = rules.get(r.rule)
        if left == 0 or rule is None:
            targets[r.id] = 0
        elif r.award_kind == "rule" and rule.rate is not None:
            currency = program.currencies[r.currency]
            kept = base_amount(rule, currency, {attr: left}) or 0
            if multipliers and r.rule in multipliers:
                kept = scaled(kept, multipliers[r.rule])
            targets[r.id] = min(r.amount, kept)
        else:
            targets[r.id] = r.amount
    return targets, base - left


def expire(conn: Connection, loaded: LoadedProgram, *, now: datetime, limit: int = 5000) -> dict[str, int]:
    """Expire lots that are due, each exactly once however often or concurrently this runs."""
    program = loaded.program
    due = (
        conn.execute(
            select(lots.c.member_pk)
            .where(lots.c.expires_at <= now, lots.c.remaining > 0)
            .join(members, members.c.id == lots.c.member_pk)
            .where(members.c.program_id == loaded.program_id)
            .group_by(lots.c.member_pk)
            .order_by(lots.c.member_pk)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    expired: dict[str, int] = {}
    if not due:
        return expired
    lock_members(conn, due)
    book = Book(conn, loaded.program_id, None, now)
    tier_svc.track(book, program)
    # Re-read under the lock: another run may have expired these lots in the meantime.
    rows = conn.execute(
        select(lots.c.id, lots.c.member_pk, lots.c.currency)
        .where(lots.c.member_pk.in_(due), lots.c.expires_at <= now, lots.c.remaining > 0)
        .order_by(lots.c.member_pk, lots.c.id)
    ).all()
    for lot_id, pk, cur in rows:
        currency = program.currencies.get(cur)
        if currency is None:
            continue
        lot = next(x for x in book.lots(pk, cur) if x.id == lot_id)
        amount = lot.remaining
        if lot.expires_at is not None and book.expire_lot(pk, currency, lot, lot.expires_at):
            expired[cur] = expired.get(cur, 0) + amount
    book.flush()
    return expired


def release(conn: Connection, loaded: LoadedProgram, *, now: datetime, limit: int = 5000) -> dict[str, int]:
    """Release pending amounts whose holding period is over."""
    program = loaded.program
    due = (
        conn.execute(
            select(lots.c.member_pk)
            .where(lots.c.status == "pending", lots.c.pending_until <= now)
            .join(members, members.c.id == lots.c.member_pk)
            .where(members.c.program_id == loaded.program_id)
            .group_by(lots.c.member_pk)
            .order_by(lots.c.member_pk)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    released: dict[str, int] = {}
    if not due:
        return released
    lock_members(conn, due)
    book = Book(conn, loaded.program_id, None, now)
    tier_svc.track(book, program)
    rows = conn.execute(
        select(lots.c.id, lots.c.member_pk, lots.c.currency, lots.c.pending_until)
        .where(lots.c.member_pk.in_(due), lots.c.status == "pending", lots.c.pending_until <= now)
        .order_by(lots.c.member_pk, lots.c.id)
    ).all()
    touched: set[int] = set()
    for lot_id, pk, cur, until in rows:
        lot = next((x for x in book.lots(pk, cur) if x.id == lot_id), None)
        if lot is None:
            # A pending lot fully cancelled by a reversal has nothing left; just close it.
            conn.execute(update(lots).where(lots.c.id == lot_id).values(status="available"))
            continue
        amount = lot.remaining
        book.release_lot(pk, program.currencies[cur], lot, until)
        released[cur] = released.get(cur, 0) + amount
        touched.add(pk)
    book.flush()
    if program.ladder is not None:
        tiers = dict(conn.execute(select(members.c.id, members.c.tier).where(members.c.id.in_(sorted(touched)))).all())
        for pk in sorted(touched):
            _retier(conn, program, pk, tiers.get(pk), book, now, reason="pending amount released")
    return released
