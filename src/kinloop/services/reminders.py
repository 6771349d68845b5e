"""Reminders: `points.expiring` messages for points that expire soon.

One message per member, currency and expiry date (in the program's time zone), written once
however often the job runs: its id is derived from those three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, select

from kinloop.services import outbox
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import lots, members


@dataclass(frozen=True, slots=True)
class Reminded:
    written: int  # new messages
    already: int  # found again, written by an earlier run
    subscribed: bool  # whether any subscription wants `points.expiring` at all

    def as_json(self) -> dict[str, int | bool]:
        return {"written": self.written, "already_sent": self.already, "subscribed": self.subscribed}


def remind_expiring(conn: Connection, loaded: LoadedProgram, *, days: int, now: datetime) -> Reminded:
    """Write a `points.expiring` message for every member's available points that expire
    within `days` from `now` (nothing when no subscription wants them)."""
    subs = outbox.load_subscribers(conn, loaded.program_id)
    if not subs.of(outbox.POINTS_EXPIRING):
        return Reminded(0, 0, False)
    program = loaded.program
    horizon = now + timedelta(days=days)
    due: dict[tuple[str, str, date], int] = {}
    for member_id, currency, remaining, expires_at in conn.execute(
        select(members.c.member_id, lots.c.currency, lots.c.remaining, lots.c.expires_at)
        .join(members, members.c.id == lots.c.member_pk)
        .where(
            members.c.program_id == loaded.program_id,
            lots.c.status == "available",
            lots.c.remaining > 0,
            lots.c.expires_at > now,
            lots.c.expires_at <= horizon,
        )
    ):
        if currency not in program.currencies:
            continue
        key = (member_id, currency, expires_at.astimezone(program.timezone).date())
        due[key] = due.get(key, 0) + remaining
    messages = [
        outbox.points_expiring(program, member_id=member_id, currency_key=currency, amount=amount, on=day)
        for (member_id, currency, day), amount in sorted(due.items())
    ]
    written = outbox.enqueue(conn, loaded.program_id, messages, now=now, subscribers=subs, skip_repeats=True)
    return Reminded(written, len(messages) - written, True)
