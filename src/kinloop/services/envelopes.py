"""Red envelopes: member to member transfers, group envelopes with claims, and envelopes the
program sends itself (birthdays, compensation, daily while a condition holds).

Ledger: a member's envelope leaves `available` for the `transfer` account (`transfer_out`);
each claim moves a share from `transfer` to the claimer (`transfer_in`); what nobody claimed
goes back to the sender when the envelope closes (`transfer_return`). The `transfer` account
therefore always holds exactly the unclaimed part of open envelopes, which `kinloop verify`
checks. Envelopes from the program are issued (`earn`, award kind `envelope`).

Locks: members first (in primary-key order), then the envelope row.
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import cel
from sqlalchemy import Connection, Row, and_, func, select, update

from kinloop.domain import ledger as L
from kinloop.domain.amounts import scale
from kinloop.domain.envelopes import EnvelopePolicy, Split, birthday_on, check_send, fee, split
from kinloop.domain.errors import (
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    NotTransferable,
    OutletClosed,
    Refused,
)
from kinloop.domain.program import Currency, Program
from kinloop.services import members as member_svc
from kinloop.services.book import Book, chunks, lock_members
from kinloop.services.ledger import _audit, currency_of, positive_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import select_in
from kinloop.store.tables import activity, balances, envelope_claims, envelopes, members

MAX_WINDOW = timedelta(days=30)


def policy_of(program: Program) -> EnvelopePolicy:
    if program.envelopes is None:
        raise Refused("this program sends no red envelopes (its program file has no `envelopes` section)")
    return program.envelopes


def transferable(program: Program, key: str | None) -> Currency:
    """The envelope's currency: the policy's by default; any other must be marked transferable."""
    policy = policy_of(program)
    currency = currency_of(program, key or policy.currency)
    if not currency.transferable or not currency.spendable:
        raise NotTransferable(
            f"{currency.name} cannot be sent between members (the program does not mark it transferable)",
            field="currency",
        )
    return currency


def _day(program: Program, now: datetime) -> int:
    return now.astimezone(program.timezone).date().toordinal()


@dataclass(frozen=True, slots=True)
class Claim:
    envelope: str
    member_id: str
    amount: int
    currency: str
    replayed: bool = False

    def as_json(self, program: Program) -> dict[str, Any]:
        c = program.currencies[self.currency]
        return {
            "envelope": self.envelope,
            "member_id": self.member_id,
            "amount": self.amount,
            "replayed": self.replayed,
            "text": f"you received {c.display(self.amount)}",
        }


def send(
    conn: Connection,
    loaded: LoadedProgram,
    sender_id: str,
    *,
    key: str,
    amount: Any,
    to: str | None = None,
    shares: int | None = None,
    mode: Split = "equal",
    window: timedelta = timedelta(hours=24),
    currency_key: str | None = None,
    message: str | None = None,
    now: datetime,
    actor: str = "api",
) -> dict[str, Any]:
    """A member's envelope: to one member (credited at once) or `shares` claims; idempotent on `key`."""
    program = loaded.program
    policy = policy_of(program)
    currency = transferable(program, currency_key)
    total = positive_amount(amount, currency)
    if (to is None) == (shares is None):
        raise InvalidInput("give either `to` (one member) or `shares` (a group envelope)", field="to")
    if shares is not None and not 1 <= shares <= policy.max_shares:
        raise InvalidInput(f"shares must be between 1 and {policy.max_shares}", field="shares")
    if not timedelta(minutes=1) <= window <= MAX_WINDOW:
        raise InvalidInput("the claim window must be between a minute and 30 days", field="window_hours")
    if to is not None:
        check_send(policy, sender=sender_id, recipient=to, amount=0, sent_today=0, count_today=0)
        recipient = member_svc.get(conn, loaded.program_id, to)
    sender = member_svc.get(conn, loaded.program_id, sender_id)
    lock_members(conn, [sender.pk] + ([recipient.pk] if to is not None else []))
    found = _by_key(conn, loaded.program_id, key)
    if found is not None:
        if found.sender_pk != sender.pk or found.total != total:
            raise IdempotencyConflict(f"key {key!r} was already used for a different envelope", field="key")
        return view(conn, loaded, key, now=now)
    day = _day(program, now)
    sent, count = conn.execute(
        select(func.coalesce(func.sum(envelopes.c.total), 0), func.count()).where(
            envelopes.c.sender_pk == sender.pk, envelopes.c.day == day
        )
    ).one()
    check_send(policy, sender=sender_id, recipient=to, amount=total, sent_today=int(sent), count_today=int(count))
    parts = (
        [total]
        if shares is None
        else split(total, shares, mode, minimum=policy.min_share, rng=random.Random(secrets.randbits(64)))
    )
    charge = fee(total, policy.fee_percent)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    extra = {"idempotency_key": f"envelope:{key}", "reason": message or "red envelope", "actor": actor}
    out_id = book.debit(sender.pk, currency, total, kind="transfer_out", dst=L.TRANSFER, effective_at=now, **extra)
    expires = book.soonest_expiry(out_id, sender.pk, currency.key)
    if charge:
        book.debit(
            sender.pk, currency, charge, kind="fee", dst=L.FEES, effective_at=now, reason=f"fee on envelope {key}"
        )
    envelope_id = conn.execute(
        envelopes.insert()
        .values(
            program_id=loaded.program_id,
            key=key,
            kind="transfer" if to is not None else "group",
            sender_pk=sender.pk,
            recipient_pk=recipient.pk if to is not None else None,
            currency=currency.key,
            total=total,
            fee=charge,
            shares=parts,
            split="direct" if to is not None else mode,
            points_expire_at=expires,
            claimed=0,
            claims=0,
            returned=0,
            status="open",
            message=message,
            actor=actor,
            day=day,
            created_at=now,
            expires_at=now + window if to is None else None,
        )
        .returning(envelopes.c.id)
    ).scalar_one()
    if to is not None:
        _credit(conn, book, loaded, envelope_id, recipient.pk, currency, total, now, expires, claims=0, claimed=0)
        conn.execute(update(envelopes).where(envelopes.c.id == envelope_id).values(status="closed", closed_at=now))
    book.flush()
    return view(conn, loaded, key, now=now)


def _credit(
    conn: Connection,
    book: Book,
    loaded: LoadedProgram,
    envelope_id: int,
    member_pk: int,
    currency: Currency,
    amount: int,
    now: datetime,
    expires: datetime | None,
    *,
    claims: int,
    claimed: int,
) -> None:
    entry_id = book.earn(
        member_pk,
        currency,
        amount,
        earned_at=now,
        tz=loaded.program.timezone,
        kind="transfer_in",
        src=L.TRANSFER,
        expires_at=expires,
        reason=f"red envelope {envelope_id}",
    )
    conn.execute(
        envelope_claims.insert().values(
            envelope_id=envelope_id, member_pk=member_pk, amount=amount, entry_id=entry_id, at=now
        )
    )
    conn.execute(
        update(envelopes).where(envelopes.c.id == envelope_id).values(claims=claims + 1, claimed=claimed + amount)
    )


def _by_key(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> Row[Any] | None:
    stmt = select(envelopes).where(envelopes.c.program_id == program_id, envelopes.c.key == key)
    return conn.execute(stmt.with_for_update() if lock else stmt).first()


def _envelope(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> Row[Any]:
    row = _by_key(conn, program_id, key, lock=lock)
    if row is None:
        raise NotFound(f"no envelope {key!r} in this program", field="envelope")
    return row


def claim(conn: Connection, loaded: LoadedProgram, key: str, member_id: str, *, now: datetime) -> Claim:
    """The next share of a group envelope; a member claims an envelope once (a repeat returns that claim).

    An envelope past its window is closed here (its rest returned) and the claim refused:
    the caller commits the close, see `ClosedOnClaim`."""
    program = loaded.program
    member = member_svc.get(conn, loaded.program_id, member_id)
    sender = _envelope(conn, loaded.program_id, key).sender_pk
    # The sender too, before the envelope: closing returns the rest to them (members first).
    lock_members(conn, [member.pk] + ([sender] if sender is not None else []))
    row = _envelope(conn, loaded.program_id, key, lock=True)
    mine = conn.execute(
        select(envelope_claims.c.amount).where(
            envelope_claims.c.envelope_id == row.id, envelope_claims.c.member_pk == member.pk
        )
    ).first()
    if mine is not None:
        return Claim(key, member_id, int(mine.amount), row.currency, replayed=True)
    if row.kind != "group":
        raise Refused("only group envelopes are claimed; this one went to its recipient", field="envelope")
    if row.sender_pk == member.pk:
        raise Refused("the sender cannot claim their own envelope", field="member_id")
    if row.status == "open" and row.expires_at <= now:
        _close(conn, loaded, row, now)
        raise ClosedOnClaim(f"this envelope's claim window ended at {row.expires_at.isoformat()}")
    parts = _json(row.shares)
    if row.status != "open" or row.claims >= len(parts):
        raise OutletClosed("this envelope has been fully claimed or has closed", field="envelope")
    amount = int(parts[row.claims])
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    _credit(
        conn,
        book,
        loaded,
        row.id,
        member.pk,
        program.currencies[row.currency],
        amount,
        now,
        row.points_expire_at,
        claims=row.claims,
        claimed=row.claimed,
    )
    if row.claims + 1 == len(parts):
        conn.execute(update(envelopes).where(envelopes.c.id == row.id).values(status="closed", closed_at=now))
    book.flush()
    return Claim(key, member_id, amount, row.currency)


class ClosedOnClaim(OutletClosed):
    """The claim came after the window: the envelope was closed (keep that change) and the claim refused."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _close(conn: Connection, loaded: LoadedProgram, row: Row[Any], now: datetime) -> int:
    """Close an open envelope and return what is left to its sender; returns that amount."""
    rest = int(row.total - row.claimed - row.returned)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    if rest > 0 and row.sender_pk is not None:
        book.earn(
            row.sender_pk,
            loaded.program.currencies[row.currency],
            rest,
            earned_at=now,
            tz=loaded.program.timezone,
            kind="transfer_return",
            src=L.TRANSFER,
            expires_at=row.points_expire_at,
            idempotency_key=f"envelope-return:{row.key}",
            reason=f"unclaimed rest of envelope {row.key}",
        )
        book.flush()
    conn.execute(
        update(envelopes)
        .where(envelopes.c.id == row.id, envelopes.c.status == "open")
        .values(status="closed", closed_at=now, returned=row.returned + rest)
    )
    return rest


def close_due(conn: Connection, loaded: LoadedProgram, *, now: datetime, limit: int = 1000) -> dict[str, int]:
    """Close envelopes whose window has ended; their rests go back to the senders."""
    due = conn.execute(
        select(envelopes.c.key, envelopes.c.sender_pk)
        .where(
            envelopes.c.program_id == loaded.program_id,
            envelopes.c.status == "open",
            envelopes.c.expires_at <= now,
        )
        .order_by(envelopes.c.id)
        .limit(limit)
    ).all()
    lock_members(conn, [r.sender_pk for r in due if r.sender_pk is not None])
    closed = returned = 0
    for r in due:
        row = _envelope(conn, loaded.program_id, r.key, lock=True)
        if row.status != "open":
            continue  # closed meanwhile by a claim
        returned += _close(conn, loaded, row, now)
        closed += 1
    return {"closed": closed, "returned": returned}


def view(conn: Connection, loaded: LoadedProgram, key: str, *, now: datetime) -> dict[str, Any]:
    """An envelope with its claims (member ids and amounts), in the program's words."""
    program = loaded.program
    row = _envelope(conn, loaded.program_id, key)
    c = program.currencies[row.currency]
    names = member_svc.by_pks(conn, [pk for pk in (row.sender_pk, row.recipient_pk) if pk is not None])
    claims = conn.execute(
        select(members.c.member_id, envelope_claims.c.amount, envelope_claims.c.at)
        .join(members, members.c.id == envelope_claims.c.member_pk)
        .where(envelope_claims.c.envelope_id == row.id)
        .order_by(envelope_claims.c.id)
    ).all()
    parts = _json(row.shares)
    status = "expired" if row.status == "open" and row.expires_at and row.expires_at <= now else row.status
    return {
        "key": row.key,
        "kind": row.kind,
        "from": names.get(row.sender_pk) if row.sender_pk else None,
        "to": names.get(row.recipient_pk) if row.recipient_pk else None,
        "currency": row.currency,
        "total": row.total,
        "fee": row.fee,
        "split": row.split,
        "shares": len(parts),
        "claimed": row.claimed,
        "returned": row.returned,
        "status": status,
        "message": row.message,
        "reason": row.reason,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "claims": [{"member_id": m, "amount": a, "at": at.isoformat()} for m, a, at in claims],
        "text": f"{c.display(row.total)}: {c.display(row.claimed)} claimed by {row.claims} of {len(parts)}",
    }


# --- envelopes in the program's name ----------------------------------------------------------


def from_program(
    conn: Connection,
    loaded: LoadedProgram,
    member_pk: int,
    *,
    kind: str,
    key: str,
    amount: int,
    now: datetime,
    reason: str,
    actor: str,
    currency: Currency | None = None,
) -> bool:
    """Issue an envelope to a member in the program's name, once per `key`; False when already sent."""
    program = loaded.program
    if _by_key(conn, loaded.program_id, key) is not None:
        return False
    cur = currency or program.currencies[policy_of(program).currency]
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    envelope_id = conn.execute(
        envelopes.insert()
        .values(
            program_id=loaded.program_id,
            key=key,
            kind=kind,
            sender_pk=None,
            recipient_pk=member_pk,
            currency=cur.key,
            total=amount,
            fee=0,
            shares=[amount],
            split="direct",
            claimed=amount,
            claims=1,
            returned=0,
            status="closed",
            reason=reason,
            actor=actor,
            day=_day(program, now),
            created_at=now,
            closed_at=now,
        )
        .returning(envelopes.c.id)
    ).scalar_one()
    entry_id = book.earn(
        member_pk,
        cur,
        amount,
        earned_at=now,
        tz=program.timezone,
        award_kind="envelope",
        idempotency_key=f"envelope:{key}",
        reason=reason,
        actor=actor,
    )
    book.flush()
    conn.execute(
        envelope_claims.insert().values(
            envelope_id=envelope_id, member_pk=member_pk, amount=amount, entry_id=entry_id, at=now
        )
    )
    return True


def compensate(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    *,
    amount: Any,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    currency_key: str | None = None,
) -> dict[str, Any]:
    """A compensation envelope (admin): with a reason, audited, once per key."""
    if not reason.strip():
        raise InvalidInput("a reason is required for a compensation", field="reason")
    program = loaded.program
    currency = currency_of(program, currency_key or policy_of(program).currency)
    if not currency.spendable:
        raise InvalidInput(f"{currency.name} is a growth currency; envelopes hold points", field="currency")
    minor = positive_amount(amount, currency)
    member = member_svc.get(conn, loaded.program_id, member_id, lock=True)
    full_key = f"compensation:{key}"
    found = _by_key(conn, loaded.program_id, full_key)
    if found is not None and (found.recipient_pk != member.pk or found.total != minor):
        raise IdempotencyConflict(f"key {key!r} was already used for a different compensation", field="key")
    if found is None:
        from_program(
            conn,
            loaded,
            member.pk,
            kind="compensation",
            key=full_key,
            amount=minor,
            now=now,
            reason=reason,
            actor=actor,
            currency=currency,
        )
        _audit(
            conn,
            loaded.program_id,
            now,
            actor,
            "envelope.compensation",
            member_id,
            reason,
            {"currency": currency.key, "amount": minor, "key": key},
        )
    return view(conn, loaded, full_key, now=now)


def birthdays(conn: Connection, loaded: LoadedProgram, *, now: datetime) -> dict[str, int]:
    """Send the birthday envelope to every member whose birthday is today (program time), once a year."""
    program = loaded.program
    policy = policy_of(program)
    if not policy.birthday:
        return {"sent": 0}
    today = now.astimezone(program.timezone).date()
    due: list[tuple[int, str]] = []
    rows = conn.execute(
        select(members.c.id, members.c.member_id, members.c.profile).where(members.c.program_id == loaded.program_id)
    )
    for pk, member_id, profile in rows:
        born = _json(profile or {}).get("birthday")
        try:
            if born and birthday_on(date.fromisoformat(born), today):
                due.append((pk, member_id))
        except (TypeError, ValueError):
            continue  # profiles are checked on write; an old malformed one is skipped, not fatal
    sent = 0
    for part in chunks(due):
        lock_members(conn, [pk for pk, _ in part])
        for pk, member_id in part:
            sent += from_program(
                conn,
                loaded,
                pk,
                kind="birthday",
                key=f"birthday:{member_id}:{today.year}",
                amount=policy.birthday,
                now=now,
                reason=f"happy birthday {today.year}",
                actor="birthdays",
            )
    return {"sent": sent}


def daily(conn: Connection, loaded: LoadedProgram, *, now: datetime) -> dict[str, int]:
    """Send each daily envelope to the members whose condition holds today, once a day each."""
    program = loaded.program
    policy = policy_of(program)
    if not policy.daily:
        return {"sent": 0}
    today = now.astimezone(program.timezone).date()
    sent = 0
    rows = list(
        conn.execute(
            select(members.c.id, members.c.member_id, members.c.tier, members.c.profile).where(
                members.c.program_id == loaded.program_id
            )
        ).all()
    )
    for part in chunks(rows):
        contexts = _member_contexts(conn, program, part)
        for d in policy.daily:
            for r in part:
                if not _holds(d.condition.compiled, contexts[r.id]):
                    continue
                lock_members(conn, [r.id])
                sent += from_program(
                    conn,
                    loaded,
                    r.id,
                    kind="daily",
                    key=f"daily:{d.key}:{r.member_id}:{today.isoformat()}",
                    amount=d.amount,
                    now=now,
                    reason=d.name,
                    actor="daily envelopes",
                )
    return {"sent": sent}


def _holds(compiled: Any, context: dict[str, Any]) -> bool:
    try:
        return compiled.execute(context) is True
    except Exception:  # a condition that cannot be evaluated for a member (a missing profile field) is false
        return False


def _member_contexts(conn: Connection, program: Program, rows: list[Row[Any]]) -> dict[int, Any]:
    """What a daily condition sees of each member: id, tier, profile, balances, counters and streaks."""
    pks = [r.id for r in rows]
    bal: dict[int, dict[str, float]] = {pk: dict.fromkeys(program.currencies, 0.0) for pk in pks}
    for pk, cur, avail in select_in(conn, balances, ("member_pk", "currency", "available"), "member_pk", pks):
        if cur in program.currencies:
            bal[pk][cur] = float(avail / scale(program.currencies[cur].decimals))
    counters: dict[int, dict[str, int]] = {pk: dict.fromkeys(program.event_types, 0) for pk in pks}
    streaks: dict[int, dict[str, int]] = {pk: dict.fromkeys(program.event_types, 0) for pk in pks}
    for pk, et, count, streak in select_in(
        conn, activity, ("member_pk", "event_type", "count", "streak"), "member_pk", pks
    ):
        counters[pk][et] = count
        streaks[pk][et] = streak
    return {
        r.id: cel.Context(
            {
                "member": {
                    "id": r.member_id,
                    "tier": r.tier or "",
                    "profile": _json(r.profile or {}),
                    "counters": counters[r.id],
                    "streaks": streaks[r.id],
                    "balances": bal[r.id],
                }
            }
        )
        for r in rows
    }


def stats(conn: Connection, loaded: LoadedProgram) -> dict[str, Any]:
    """Volumes and claim rates, per kind of envelope."""
    out: dict[str, Any] = {}
    rows = conn.execute(
        select(
            envelopes.c.kind,
            envelopes.c.currency,
            func.count(),
            func.sum(envelopes.c.total),
            func.sum(envelopes.c.claimed),
            func.sum(envelopes.c.returned),
            func.sum(envelopes.c.fee),
            func.sum(envelopes.c.claims),
        )
        .where(envelopes.c.program_id == loaded.program_id)
        .group_by(envelopes.c.kind, envelopes.c.currency)
    ).all()
    slots: dict[str, int] = {}
    for cur, parts in conn.execute(
        select(envelopes.c.currency, envelopes.c.shares).where(
            envelopes.c.program_id == loaded.program_id, envelopes.c.kind == "group"
        )
    ):
        slots[cur] = slots.get(cur, 0) + len(_json(parts))
    for kind, cur, n, total, claimed, returned, fees, claims in rows:
        c = loaded.program.currencies[cur]
        total, claimed = int(total or 0), int(claimed or 0)
        out.setdefault(kind, {})[cur] = {
            "envelopes": n,
            "volume": total,
            "claimed": claimed,
            "returned": int(returned or 0),
            "fees": int(fees or 0),
            "claims": int(claims or 0),
            "claim_rate": f"{claimed / total:.4f}" if total else "0",
            **({"shares": slots.get(cur, 0)} if kind == "group" else {}),
            "text": f"{n} envelopes, {c.display(total)} sent, {c.display(claimed)} claimed",
        }
    return out


def held_in_transfer(conn: Connection, program_id: int) -> dict[str, int]:
    """Per currency, what open envelopes still hold: what the `transfer` account must hold."""
    rows = conn.execute(
        select(envelopes.c.currency, func.sum(envelopes.c.total - envelopes.c.claimed - envelopes.c.returned))
        .where(and_(envelopes.c.program_id == program_id, envelopes.c.sender_pk.is_not(None)))
        .group_by(envelopes.c.currency)
    ).all()
    return {cur: int(v or 0) for cur, v in rows}
