"""The audit log: who changed what by hand, when and why.

Every manual change (an adjustment, an order moved on, a reward repriced, a key created, an
operator disabled...) writes one row in the caller's transaction, so the change and its
record commit together. Changes of no single program (operator accounts) have no program id
and show in every program's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from kinloop.store.tables import audit_log

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    reason: str | None
    details: dict[str, Any]
    program_id: int | None


def record(
    conn: Connection,
    program_id: int | None,
    *,
    actor: str,
    action: str,
    target: str | None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime,
) -> None:
    """Write one audit entry (in the caller's transaction, with the change it records)."""
    conn.execute(
        audit_log.insert().values(
            program_id=program_id,
            at=now,
            actor=actor,
            action=action,
            target=target,
            reason=reason or None,
            details=details or {},
        )
    )


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def listing(
    conn: Connection,
    program_id: int | None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[Entry], int | None]:
    """A page of the program's log (and of changes to no program), newest first; `actor` and
    `target` match anywhere in the text, `action` exactly. Returns the page and the cursor of
    the next (older) one."""
    limit = max(1, min(limit, MAX_PAGE))
    a = audit_log.c
    query = select(audit_log).order_by(a.id.desc()).limit(limit + 1)
    query = query.where(or_(a.program_id == program_id, a.program_id.is_(None)))
    if actor:
        query = query.where(a.actor.like(_like(actor), escape="\\"))
    if action:
        query = query.where(a.action == action)
    if target:
        query = query.where(a.target.like(_like(target), escape="\\"))
    if before is not None:
        query = query.where(a.id < before)
    rows = conn.execute(query).all()
    page = [
        Entry(r.id, r.at, r.actor, r.action, r.target, r.reason, dict(r.details or {}), r.program_id)
        for r in rows[:limit]
    ]
    return page, (page[-1].id if len(rows) > limit else None)


def actions(conn: Connection, program_id: int | None) -> list[str]:
    """The actions that occur in the program's log, by name (for a filter)."""
    a = audit_log.c
    query = (
        select(a.action)
        .where(or_(a.program_id == program_id, a.program_id.is_(None)))
        .group_by(a.action)
        .order_by(a.action)
    )
    return list(conn.execute(query).scalars())
