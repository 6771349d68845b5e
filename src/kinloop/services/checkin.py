"""Check-in: the members' check-in records in storage, the check-in endpoint, and the member view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from kinloop.domain.checkin import (
    NO_CHECKINS,
    CheckinState,
    cards_left,
    current_streak,
    ladder_amount,
    local_day,
    member_zone,
    next_milestone,
)
from kinloop.domain.errors import CheckinNotOffered, MakeupRefused
from kinloop.domain.program import Program
from kinloop.domain.rules import MemberState
from kinloop.services import members as member_svc
from kinloop.services.book import chunks
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, part_in, select_in, upsert_rows
from kinloop.store.tables import checkin_states

COLUMNS = _COLUMNS = ("member_pk", "streak", "last_day", "days", "best", "cards_month", "cards_used", "milestones")


def _state(row: tuple[Any, ...]) -> CheckinState:
    _, streak, last_day, days, best, month, used, milestones = row
    given = tuple(int(m) for m in milestones.split(",") if m)
    return CheckinState(streak, date.fromordinal(last_day) if last_day else None, days, best, month, used, given)


def load(conn: Connection, states: Mapping[int, MemberState]) -> None:
    """Give each member state its check-in record (members who never checked in get an empty one)."""
    for part in chunks(sorted(states)):
        use(states, select_in(conn, checkin_states, _COLUMNS, "member_pk", part))


def load_part(conn: Connection, pks: list[int]) -> Part | None:
    """`load` as a part of a joint read (at most `CHUNK` members); its rows go to `use`."""
    return part_in(conn, checkin_states, _COLUMNS, "member_pk", pks)


def use(states: Mapping[int, MemberState], rows: Iterable[tuple[Any, ...]]) -> None:
    """Give each member state its check-in record from these rows (no row: an empty record)."""
    for state in states.values():
        if state.checkin is None:
            state.checkin = NO_CHECKINS
    for row in rows:
        states[row[0]].checkin = _state(row)


def load_one(conn: Connection, member_pk: int) -> CheckinState:
    rows = select_in(conn, checkin_states, _COLUMNS, "member_pk", [member_pk])
    return _state(rows[0]) if rows else NO_CHECKINS


def save(conn: Connection, states: Mapping[int, MemberState], pks: Iterable[int]) -> None:
    """Write back the check-in records of the members `pks` (one statement for the batch)."""
    rows = []
    for pk in sorted(set(pks)):
        s = states[pk].checkin
        if s is None:
            continue
        rows.append(
            {
                "member_pk": pk,
                "streak": s.streak,
                "last_day": s.last_day.toordinal() if s.last_day else None,
                "days": s.days,
                "best": s.best,
                "cards_month": s.cards_month,
                "cards_used": s.cards_used,
                "milestones": ",".join(str(m) for m in s.milestones),
            }
        )
    upsert_rows(conn, checkin_states, rows, ("member_pk",))


def check_in(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    *,
    at: datetime,
    now: datetime,
    makeup_for: date | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a member in (or use a make-up card for `makeup_for`) as an event of the check-in type.

    Idempotent per member and local day: the event id is derived from them, so a repeat returns
    the first result. A refused make-up raises (the caller's transaction writes nothing).
    """
    from kinloop.services.ingest import ingest

    program = loaded.program
    config = program.checkin
    if config is None:
        raise CheckinNotOffered("this program has no daily check-in")
    row = member_svc.ensure(conn, loaded.program_id, [member_id], now)[member_id]
    day = local_day(at, member_zone(program, row.profile))
    event_id = f"check-in:{member_id}:{day.isoformat()}"
    attrs = dict(attributes or {})
    if makeup_for is not None:
        event_id = f"check-in:{member_id}:make-up:{makeup_for.isoformat()}"
        attrs["makeup_for"] = makeup_for.isoformat()
    raw = {
        "event_id": event_id,
        "member_id": member_id,
        "type": config.event_type,
        "occurred_at": at,
        "attributes": attrs,
    }
    [result] = ingest(conn, loaded, [raw], now=now)
    if result.error is not None:
        raise result.error
    outcome = result.as_json(program)
    checkin = outcome.get("checkin") or {}
    if checkin.get("status") == "makeup_refused":
        raise MakeupRefused(checkin.get("reason") or "make-up refused", field="makeup_for")
    return outcome


def view(conn: Connection, program: Program, row: member_svc.MemberRow, now: datetime) -> dict[str, Any] | None:
    """The member view's `checkin` key: streak, today, next reward and milestone, cards left."""
    if program.checkin is None:
        return None
    return view_of(program, row, now, load_one(conn, row.pk))


def state_of(row: tuple[Any, ...] | None) -> CheckinState:
    """A check-in record from its row (in `COLUMNS` order; None: never checked in)."""
    return NO_CHECKINS if row is None else _state(row)


def view_of(program: Program, row: member_svc.MemberRow, now: datetime, state: CheckinState) -> dict[str, Any] | None:
    """`view` from the member's check-in record."""
    config = program.checkin
    if config is None:
        return None
    today = local_day(now, member_zone(program, row.profile))
    streak = current_streak(state, today)
    checked_today = state.last_day == today
    # Tomorrow's reward after checking in today, or today's reward (continuing the streak if alive).
    upcoming = streak + 1
    currency = program.currencies[config.currency]
    amount = ladder_amount(config, upcoming)
    next_reward = {
        "day": upcoming,
        "on": (today + timedelta(days=1) if checked_today else today).isoformat(),
        "currency": currency.key,
        "amount": amount,
        "text": f"day {upcoming}: {currency.display(amount)}",
    }
    milestone = next_milestone(config, state, streak)
    ahead = None
    if milestone is not None:
        m_currency = program.currencies[milestone.grant.currency]
        left = milestone.days - streak
        ahead = {
            "days": milestone.days,
            "days_left": left,
            "currency": m_currency.key,
            "amount": milestone.grant.amount,
            "text": f"{left} day{'s' if left != 1 else ''} to the {milestone.days}-day bonus "
            f"({m_currency.display(milestone.grant.amount)})",
        }
    cards = cards_left(config, state, today)
    words = f"day {streak} in a row" if streak else "no streak yet"
    words += "; checked in today" if checked_today else "; not checked in today"
    return {
        "streak": streak,
        "best": state.best,
        "days": state.days,
        "checked_in_today": checked_today,
        "last_day": state.last_day.isoformat() if state.last_day else None,
        "next_reward": next_reward,
        "next_milestone": ahead,
        "makeup_cards_left": cards,
        "text": words,
    }
