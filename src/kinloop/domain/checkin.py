"""Daily check-in: streaks in the member's own day, the reward ladder, milestones and make-up cards.

Pure: the caller says which local day a check-in falls on (the member's time zone, else the
program's) and gets back what to award and the member's new check-in state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kinloop.domain.program import Checkin, Currency, Grant, Milestone, Program

CheckinStatus = Literal["checked_in", "already_checked_in", "late", "made_up", "makeup_refused"]
CheckinAwardKind = Literal["checkin", "checkin_gift", "checkin_milestone"]


@dataclass(frozen=True, slots=True)
class CheckinState:
    """A member's check-in record: the current run of consecutive days and the cards used."""

    streak: int = 0
    last_day: date | None = None
    days: int = 0  # days checked in, ever (make-up days excluded)
    best: int = 0
    cards_month: str = ""  # the month (`2026-01`) `cards_used` counts in
    cards_used: int = 0
    milestones: tuple[int, ...] = ()  # `once` milestones already given


NO_CHECKINS = CheckinState()


@dataclass(frozen=True, slots=True)
class CheckinAward:
    kind: CheckinAwardKind
    grant: Grant
    milestone: int | None = None


@dataclass(frozen=True, slots=True)
class CheckinResult:
    """What one check-in (or make-up) did."""

    status: CheckinStatus
    day: date
    state: CheckinState
    awards: tuple[CheckinAward, ...] = ()
    reason: str = ""


def member_zone(program: Program, profile: Mapping[str, Any]) -> ZoneInfo:
    """The member's time zone (profile `timezone`), else the program's."""
    name = profile.get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # profiles are checked when set; an old bad one falls back to the program's zone
    return program.timezone


def local_day(at: datetime, zone: ZoneInfo) -> date:
    """The member's calendar day at `at`."""
    return at.astimezone(zone).date()


def ladder_amount(config: Checkin, day_of_streak: int) -> int:
    """The ladder reward for the nth consecutive day: cycling through the ladder, or holding its last step."""
    n = len(config.ladder)
    if day_of_streak <= n:
        return config.ladder[day_of_streak - 1]
    if config.after_ladder == "hold":
        return config.ladder[-1]
    return config.ladder[(day_of_streak - 1) % n]


def _month(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


def cards_left(config: Checkin, state: CheckinState, day: date) -> int:
    """Make-up cards the member may still use in the month of `day`."""
    used = state.cards_used if state.cards_month == _month(day) else 0
    return max(config.makeup_cards_per_month - used, 0)


def current_streak(state: CheckinState, today: date) -> int:
    """The streak as it stands today: still alive if the member checked in today or yesterday."""
    if state.last_day is None or state.last_day < today - timedelta(days=1):
        return 0
    return state.streak


def _milestones(config: Checkin, state: CheckinState, streak: int) -> tuple[list[CheckinAward], tuple[int, ...]]:
    awards = []
    given = state.milestones
    for m in config.milestones:
        if m.days != streak or (m.once and m.days in given):
            continue
        awards.append(CheckinAward("checkin_milestone", m.grant, m.days))
        if m.once:
            given = (*given, m.days)
    return awards, given


def check_in(config: Checkin, state: CheckinState, day: date, *, makeup_for: date | None = None) -> CheckinResult:
    """A check-in on the member's local `day`, or with `makeup_for` a make-up card for a missed day."""
    if makeup_for is not None:
        return _make_up(config, state, day, makeup_for)
    if state.last_day is not None and day <= state.last_day:
        # One check-in a day; a late one for an earlier day does not rewrite the streak.
        status: CheckinStatus = "already_checked_in" if day == state.last_day else "late"
        return CheckinResult(status, day, state)
    follows = state.last_day is not None and day == state.last_day + timedelta(days=1)
    streak = state.streak + 1 if follows else 1
    awards = [CheckinAward("checkin", Grant(config.currency, ladder_amount(config, streak)))]
    if state.days == 0 and config.first_day_gift is not None:
        awards.append(CheckinAward("checkin_gift", config.first_day_gift))
    won, given = _milestones(config, state, streak)
    best = max(state.best, streak)
    new = replace(state, streak=streak, last_day=day, days=state.days + 1, best=best, milestones=given)
    return CheckinResult("checked_in", day, new, tuple(a for a in awards + won if a.grant.amount > 0))


def _make_up(config: Checkin, state: CheckinState, day: date, missed: date) -> CheckinResult:
    def refuse(reason: str) -> CheckinResult:
        return CheckinResult("makeup_refused", missed, state, reason=reason)

    if config.makeup_cards_per_month <= 0:
        return refuse("this program has no make-up cards")
    if state.last_day is None:
        return refuse("there is no streak to continue")
    if missed >= day:
        return refuse(f"{missed.isoformat()} is not a past day")
    if missed <= state.last_day:
        return refuse(f"{missed.isoformat()} is not a missed day")
    if missed != state.last_day + timedelta(days=1):
        first = state.last_day + timedelta(days=1)
        return refuse(f"fill the first missed day first ({first.isoformat()})")
    if cards_left(config, state, day) <= 0:
        return refuse(f"no make-up cards left in {_month(day)}")
    streak = state.streak + 1
    won, given = _milestones(config, state, streak)
    used = state.cards_used + 1 if state.cards_month == _month(day) else 1
    new = replace(
        state,
        streak=streak,
        last_day=missed,
        best=max(state.best, streak),
        cards_month=_month(day),
        cards_used=used,
        milestones=given,
    )
    return CheckinResult("made_up", missed, new, tuple(won))


def next_milestone(config: Checkin, state: CheckinState, streak: int) -> Milestone | None:
    """The next milestone the current streak can still reach."""
    ahead = [m for m in config.milestones if m.days > streak and not (m.once and m.days in state.milestones)]
    return min(ahead, key=lambda m: m.days, default=None)


def in_words(program: Program, config: Checkin, result: CheckinResult) -> str:
    """What a check-in did, in the program's words: `day 5 in a row: 3 Beans; 95 days to the 100-day bonus`."""
    if result.status == "makeup_refused":
        return f"make-up refused: {result.reason}"
    if result.status in ("already_checked_in", "late"):
        return f"already checked in on {result.day.isoformat()}; day {result.state.streak} in a row"
    given = ", ".join(_display(program, a.grant) for a in result.awards) or "nothing"
    lead = f"made up {result.day.isoformat()}" if result.status == "made_up" else "checked in"
    text = f"{lead}: day {result.state.streak} in a row: {given}"
    ahead = next_milestone(config, result.state, result.state.streak)
    if ahead is not None:
        left = ahead.days - result.state.streak
        text += f"; {left} day{'s' if left != 1 else ''} to the {ahead.days}-day bonus"
    return text


def _display(program: Program, grant: Grant) -> str:
    currency: Currency | None = program.currencies.get(grant.currency)
    return currency.display(grant.amount) if currency else str(grant.amount)
