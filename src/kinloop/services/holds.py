"""Holds: points as payment. Reserving moves points from available to the member's `held`
account (taking lots like a spend); capturing spends them (held -> redemption); releasing or
timing out puts them back into the lots they came from.

Every change locks the member first, then reads the hold again: two captures of one hold, or
a capture racing the expiry job, see each other's result and never move the points twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, Row, bindparam, select, update

from kinloop.domain import ledger as L
from kinloop.domain.errors import IdempotencyConflict, InvalidInput, UnknownHold
from kinloop.domain.holds import capture_outcome, release_outcome, status_at, timeout_of
from kinloop.domain.program import Program
from kinloop.services import members as member_svc
from kinloop.services.book import Book, lock_members
from kinloop.services.ledger import currency_of, positive_amount
from kinloop.services.members import json_amount
from kinloop.services.orders import give_back
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import holds, members

Done = Literal["done", "repeat", "expired"]


@dataclass(frozen=True, slots=True)
class Hold:
    row: Row[Any]
    member_id: str
    outcome: Done = "done"  # what the call did: changed it, found it already so, or found it expired

    def as_json(self, program: Program, now: datetime) -> dict[str, Any]:
        h = self.row
        currency = program.currencies.get(h.currency)
        status = status_at(h.status, h.expires_at, now)
        amount = currency.display(h.amount) if currency else str(h.amount)
        return {
            "hold_id": h.id,
            "member_id": self.member_id,
            "currency": h.currency,
            "amount": json_amount(h.amount, currency.decimals if currency else 0),
            "status": status,
            "reference": h.reference,
            "expires_at": h.expires_at.isoformat(),
            "created_at": h.created_at.isoformat(),
            "closed_at": h.closed_at.isoformat() if h.closed_at else None,
            "replayed": self.outcome == "repeat",
            "text": f"{amount} {status if status != 'active' else 'held'}",
        }


def _load(conn: Connection, program_id: int, hold_id: int, outcome: Done = "done") -> Hold:
    row = conn.execute(
        select(holds, members.c.member_id)
        .join(members, members.c.id == holds.c.member_pk)
        .where(holds.c.program_id == program_id, holds.c.id == hold_id)
    ).first()
    if row is None:
        raise UnknownHold(f"no hold {hold_id} in this program", field="hold_id")
    return Hold(row, row.member_id, outcome)


def get(conn: Connection, loaded: LoadedProgram, hold_id: int) -> Hold:
    """One hold; an active one past its time-out shows as expired (the job records it later)."""
    return _load(conn, loaded.program_id, hold_id)


def create(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    currency_key: str,
    amount: Decimal | str | int,
    *,
    timeout_seconds: int | None = None,
    reference: str | None = None,
    key: str | None = None,
    now: datetime,
    actor: str = "api",
) -> Hold:
    """Reserve a member's points for a checkout; idempotent on `key`."""
    currency = currency_of(loaded.program, currency_key)
    minor = positive_amount(amount, currency)
    timeout = timeout_of(timeout_seconds)
    pid = loaded.program_id
    member = member_svc.get(conn, pid, member_id, lock=True)
    if key:
        hold_id = conn.execute(
            select(holds.c.id).where(holds.c.program_id == pid, holds.c.idempotency_key == key)
        ).scalar()
        if hold_id is not None:
            found = _load(conn, pid, hold_id, "repeat")
            if (found.member_id, found.row.currency, found.row.amount) != (member_id, currency.key, minor):
                raise IdempotencyConflict(f"key {key!r} was already used for a different hold", field="idempotency_key")
            return found
    book = Book(conn, pid, loaded.version_id, now)
    entry_id = book.debit(
        member.pk, currency, minor, kind="hold", dst=L.HELD, effective_at=now, reason=reference or "hold", actor=actor
    )
    book.flush()
    hold_id = conn.execute(
        holds.insert()
        .values(
            program_id=pid,
            member_pk=member.pk,
            currency=currency.key,
            amount=minor,
            status="active",
            reference=reference,
            idempotency_key=key,
            expires_at=now + timeout,
            hold_entry_id=entry_id,
            created_at=now,
        )
        .returning(holds.c.id)
    ).scalar_one()
    return _load(conn, pid, hold_id)


def _locked(conn: Connection, loaded: LoadedProgram, hold_id: int) -> Hold:
    """The hold, read again after locking its member (so its state is current)."""
    member_pk = conn.execute(
        select(holds.c.member_pk).where(holds.c.program_id == loaded.program_id, holds.c.id == hold_id)
    ).scalar()
    if member_pk is None:
        raise UnknownHold(f"no hold {hold_id} in this program", field="hold_id")
    lock_members(conn, [member_pk])
    return _load(conn, loaded.program_id, hold_id)


def capture(conn: Connection, loaded: LoadedProgram, hold_id: int, *, now: datetime, actor: str = "api") -> Hold:
    """Spend the held points. Capturing again returns the hold unchanged; a hold past its
    time-out is released as expired (outcome `expired`: the caller commits, then refuses)."""
    hold = _locked(conn, loaded, hold_id)
    h = hold.row
    outcome = capture_outcome(h.status, h.expires_at, now)
    if outcome == "repeat":
        return _load(conn, loaded.program_id, hold_id, "repeat")
    if outcome == "expire":
        _give_back(conn, loaded, h, "expired", now, actor)
        return _load(conn, loaded.program_id, hold_id, "expired")
    currency = currency_of(loaded.program, h.currency)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    entry_id = book.capture(
        h.member_pk, currency, h.amount, effective_at=now, reason=h.reference or f"hold {h.id}", actor=actor
    )
    book.flush()
    conn.execute(
        update(holds).where(holds.c.id == h.id).values(status="captured", close_entry_id=entry_id, closed_at=now)
    )
    return _load(conn, loaded.program_id, hold_id)


def release(conn: Connection, loaded: LoadedProgram, hold_id: int, *, now: datetime, actor: str = "api") -> Hold:
    """Put the held points back into their lots; releasing again (or after expiry) changes nothing."""
    hold = _locked(conn, loaded, hold_id)
    h = hold.row
    outcome = release_outcome(h.status, h.expires_at, now)
    if outcome == "repeat":
        return _load(conn, loaded.program_id, hold_id, "repeat")
    _give_back(conn, loaded, h, "expired" if outcome == "expire" else "released", now, actor)
    return _load(conn, loaded.program_id, hold_id, "expired" if outcome == "expire" else "done")


def _give_back(conn: Connection, loaded: LoadedProgram, h: Row[Any], status: str, now: datetime, actor: str) -> None:
    # An expired hold gives back as of its time-out: lots that expired after it stay restored.
    at = min(now, h.expires_at) if status == "expired" else now
    currency = currency_of(loaded.program, h.currency)
    reason = f"hold {h.id} {status}"
    entry_id = give_back(
        conn, loaded, h.member_pk, currency, h.hold_entry_id, src=L.HELD, at=at, now=now, reason=reason, actor=actor
    )
    conn.execute(update(holds).where(holds.c.id == h.id).values(status=status, close_entry_id=entry_id, closed_at=now))


def expire_due(conn: Connection, loaded: LoadedProgram, *, now: datetime, limit: int = 1000) -> dict[str, int]:
    """Release holds past their time-out, each exactly once however often or concurrently this runs."""
    due = list(
        conn.execute(
            select(holds.c.id, holds.c.member_pk)
            .where(holds.c.program_id == loaded.program_id, holds.c.status == "active", holds.c.expires_at <= now)
            .order_by(holds.c.id)
            .limit(limit)
        )
    )
    if not due:
        return {}
    lock_members(conn, (pk for _, pk in due))
    released: dict[str, int] = {}
    for hold_id, _ in due:
        h = _load(conn, loaded.program_id, hold_id).row
        if h.status != "active":
            continue  # another run (or a capture) got there first
        _give_back(conn, loaded, h, "expired", now, "holds expire")
        released[h.currency] = released.get(h.currency, 0) + h.amount
    return released


# Built once: building the statement cost as much as running it.
_ACTIVE_HOLDS = (
    select(holds.c.id, holds.c.currency, holds.c.amount, holds.c.expires_at, holds.c.reference)
    .where(holds.c.member_pk == bindparam("member_pk"), holds.c.status == "active")
    .order_by(holds.c.id)
)


def held_of(conn: Connection, program: Program, member_pk: int, now: datetime) -> dict[str, Any]:
    """The member view's `holds` part: points held per currency, with the active holds."""
    return holds_json(program, conn.execute(_ACTIVE_HOLDS, {"member_pk": member_pk}).all(), now)


def holds_json(program: Program, rows: Sequence[Sequence[Any]], now: datetime) -> dict[str, Any]:
    """`held_of` from the member's active holds: (id, currency, amount, expires_at, reference) by id."""
    totals: dict[str, int] = {}
    active = []
    for hold_id, cur, amount, expires_at, reference in rows:
        currency = program.currencies.get(cur)
        if currency is None:
            continue
        # A hold past its time-out still holds its points until the job (or a capture or
        # release) records the expiry, so that balances and held amounts always add up.
        totals[cur] = totals.get(cur, 0) + amount
        active.append(
            {
                "hold_id": hold_id,
                "currency": cur,
                "amount": json_amount(amount, currency.decimals),
                "reference": reference,
                "expires_at": expires_at.isoformat(),
                "timed_out": expires_at <= now,
            }
        )
    return {
        "held": {k: json_amount(v, program.currencies[k].decimals) for k, v in totals.items()},
        "text": {k: f"{program.currencies[k].display(v)} held" for k, v in totals.items()},
        "active": active,
    }


def check_reference(reference: str | None) -> str | None:
    if reference is not None and (len(reference) > 200 or "\x00" in reference):
        raise InvalidInput("a reference is at most 200 characters, without NUL", field="reference")
    return reference
