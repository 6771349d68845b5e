"""Shared goals: members donate points to a target; reaching it records a milestone with its
donors (and a `goal.reached` message) and, for repeating goals, starts the next round.

Donations are final (an immutable `donate` entry: available -> donation) and public: a goal
lists its donors. Locks: the member first, then the goal's row.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from kinloop.domain import ledger as L
from kinloop.domain.errors import IdempotencyConflict, InvalidInput, NotFound, OutletClosed, Refused
from kinloop.domain.goals import donate as land
from kinloop.services import members as member_svc
from kinloop.services import outbox
from kinloop.services.book import Book
from kinloop.services.ledger import _audit, currency_of, positive_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import goal_donations, goal_milestones, goals, members


def create(
    conn: Connection,
    loaded: LoadedProgram,
    *,
    key: str,
    name: str,
    currency_key: str,
    target: Decimal | int | str,
    repeat: bool,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """A new goal, open to donations at once."""
    currency = currency_of(loaded.program, currency_key)
    if not currency.spendable:
        raise InvalidInput(f"{currency.name} is a growth currency; members donate points", field="currency")
    minor = positive_amount(target, currency)
    if _row(conn, loaded.program_id, key) is not None:
        raise Refused(f"a goal {key!r} already exists", field="key")
    conn.execute(
        goals.insert().values(
            program_id=loaded.program_id,
            key=key,
            name=name,
            currency=currency.key,
            target=minor,
            repeat=repeat,
            round=1,
            raised=0,
            status="open",
            created_at=now,
        )
    )
    _audit(conn, loaded.program_id, now, actor, "goal.create", key, None, {"target": minor, "repeat": repeat})
    return show(conn, loaded, key)


def _row(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> Row[Any] | None:
    stmt = select(goals).where(goals.c.program_id == program_id, goals.c.key == key)
    return conn.execute(stmt.with_for_update() if lock else stmt).first()


def _goal(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> Row[Any]:
    row = _row(conn, program_id, key, lock=lock)
    if row is None:
        raise NotFound(f"no goal {key!r} in this program", field="goal")
    return row


def donate(
    conn: Connection,
    loaded: LoadedProgram,
    key: str,
    member_id: str,
    *,
    amount: Decimal | int | str,
    donation_key: str,
    now: datetime,
    actor: str = "api",
) -> dict[str, Any]:
    """Give points to a goal (at most what its round still misses); idempotent on `donation_key`."""
    program = loaded.program
    member = member_svc.get(conn, loaded.program_id, member_id, lock=True)
    row = _goal(conn, loaded.program_id, key, lock=True)
    currency = program.currencies[row.currency]
    minor = positive_amount(amount, currency)
    previous = conn.execute(
        select(goal_donations).where(goal_donations.c.goal_id == row.id, goal_donations.c.donation_key == donation_key)
    ).first()
    if previous is not None:
        if previous.member_pk != member.pk:
            raise IdempotencyConflict(f"donation key {donation_key!r} was used by another member", field="key")
        return {
            "goal": key,
            "donated": previous.amount,
            "round": previous.round,
            "replayed": True,
            **_progress(conn, loaded, _goal(conn, loaded.program_id, key)),
        }
    if row.status != "open":
        raise OutletClosed(f"{row.name!r} has reached its target and takes no more donations", field="goal")
    landed = land(target=row.target, raised=row.raised, amount=minor)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    entry_id = book.debit(
        member.pk,
        currency,
        landed.accepted,
        kind="donate",
        dst=L.DONATION,
        effective_at=now,
        idempotency_key=f"goal:{row.id}:{donation_key}",
        reason=f"donation to {row.key}",
        actor=actor,
    )
    book.flush()
    conn.execute(
        goal_donations.insert().values(
            goal_id=row.id,
            round=row.round,
            member_pk=member.pk,
            amount=landed.accepted,
            entry_id=entry_id,
            donation_key=donation_key,
            at=now,
        )
    )
    values: dict[str, Any] = {"raised": landed.raised}
    if landed.reached:
        _milestone(conn, loaded, row, landed.raised, now)
        values = {"round": row.round + 1, "raised": 0} if row.repeat else {"raised": landed.raised, "status": "reached"}
    conn.execute(update(goals).where(goals.c.id == row.id).values(**values))
    return {
        "goal": key,
        "donated": landed.accepted,
        "round": row.round,
        "reached": landed.reached,
        "replayed": False,
        "text": f"you gave {currency.display(landed.accepted)} to {row.name}",
        **_progress(conn, loaded, _goal(conn, loaded.program_id, key)),
    }


def _donors(conn: Connection, goal_id: int, round_: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(members.c.member_id, func.sum(goal_donations.c.amount))
        .join(members, members.c.id == goal_donations.c.member_pk)
        .where(goal_donations.c.goal_id == goal_id, goal_donations.c.round == round_)
        .group_by(members.c.member_id)
        .order_by(func.sum(goal_donations.c.amount).desc(), members.c.member_id)
    ).all()
    return [{"member_id": m, "amount": int(a)} for m, a in rows]


def _milestone(conn: Connection, loaded: LoadedProgram, row: Row[Any], raised: int, now: datetime) -> None:
    donors = _donors(conn, row.id, row.round)
    conn.execute(
        goal_milestones.insert().values(goal_id=row.id, round=row.round, raised=raised, donors=donors, reached_at=now)
    )
    message = outbox.goal_reached(
        loaded.program,
        goal=row.key,
        name=row.name,
        round_=row.round,
        currency_key=row.currency,
        raised=raised,
        donors=donors,
    )
    outbox.enqueue(conn, loaded.program_id, [message], now=now)


def _progress(conn: Connection, loaded: LoadedProgram, row: Row[Any]) -> dict[str, Any]:
    currency = loaded.program.currencies[row.currency]
    missing = max(row.target - row.raised, 0)
    text = (
        f"{row.name} reached"
        if row.status == "reached"
        else f"{currency.display(missing)} to {row.name} (round {row.round})"
    )
    return {
        "status": row.status,
        "current_round": row.round,
        "raised": row.raised,
        "target": row.target,
        "missing": missing,
        "progress_text": text,
    }


def show(conn: Connection, loaded: LoadedProgram, key: str) -> dict[str, Any]:
    """A goal, its current round's donors, and every milestone reached."""
    row = _goal(conn, loaded.program_id, key)
    milestones = conn.execute(
        select(goal_milestones).where(goal_milestones.c.goal_id == row.id).order_by(goal_milestones.c.round)
    ).all()
    return {
        "key": row.key,
        "name": row.name,
        "currency": row.currency,
        "repeat": row.repeat,
        **_progress(conn, loaded, row),
        "donors": _donors(conn, row.id, row.round),
        "milestones": [
            {
                "round": m.round,
                "raised": m.raised,
                "reached_at": m.reached_at.isoformat(),
                "donors": json.loads(m.donors) if isinstance(m.donors, str) else m.donors,
            }
            for m in milestones
        ],
    }


def listing(conn: Connection, loaded: LoadedProgram) -> list[dict[str, Any]]:
    keys = conn.execute(select(goals.c.key).where(goals.c.program_id == loaded.program_id).order_by(goals.c.id))
    return [show(conn, loaded, k) for k in keys.scalars()]


def stats(conn: Connection, loaded: LoadedProgram) -> list[dict[str, Any]]:
    """Per goal: rounds reached, donations, donors, points given, the current round's progress."""
    out = []
    for row in conn.execute(select(goals).where(goals.c.program_id == loaded.program_id).order_by(goals.c.id)):
        n, donors, given = conn.execute(
            select(
                func.count(), func.count(func.distinct(goal_donations.c.member_pk)), func.sum(goal_donations.c.amount)
            ).where(goal_donations.c.goal_id == row.id)
        ).one()
        reached = conn.execute(
            select(func.count()).select_from(goal_milestones).where(goal_milestones.c.goal_id == row.id)
        ).scalar_one()
        out.append(
            {
                "goal": row.key,
                "name": row.name,
                "rounds_reached": reached,
                "donations": n,
                "donors": donors,
                "donated": int(given or 0),
                **_progress(conn, loaded, row),
            }
        )
    return out
