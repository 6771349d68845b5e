"""Tier logic: qualification windows, reviews (retention and demotion), and the effective tier.

A member's tier is the highest of four sources (a locked manual tier overrides them all):

- earned: reached at once when the qualification value (awards of the ladder's growth currency
  inside the window) crosses a threshold; lost only at a review of the ladder's cadence, after
  the grace period, by at most one level when the ladder says so;
- paid: bought for a term, until the term ends;
- manual floor: set by an operator, until a date or for good;
- kept: the tier a member had when a new ladder was activated with grandfathering, until a date.

Everything here is pure: days are local calendar days of the program, `now` is passed in.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import lru_cache

from kinloop.domain.program import Cadence, Ladder, Tier, Window

# The qualification value earned on the days from `start` (None: since ever) to `end`, inclusive.
Qualification = Callable[[date | None, date], int]


def tier_for(ladder: Ladder, growth: int) -> Tier | None:
    """The highest tier that can be earned whose threshold the qualification value reaches."""
    reached: Tier | None = None
    for tier in ladder.tiers:
        if tier.earnable and tier.threshold is not None and growth >= tier.threshold:
            reached = tier
    return reached


@dataclass(frozen=True, slots=True)
class Progress:
    tier: Tier | None
    next: Tier | None
    missing: int  # minor units of the ladder currency still needed for `next`


def progress(ladder: Ladder, growth: int) -> Progress:
    """Where a member stands on the ladder and how much is missing for the next tier."""
    current = tier_for(ladder, growth)
    for tier in ladder.tiers:
        if tier.earnable and tier.threshold is not None and tier.threshold > growth:
            return Progress(current, tier, tier.threshold - growth)
    return Progress(current, None, 0)


# --- windows --------------------------------------------------------------------------------


def anniversary_in(year: int, day: date) -> date:
    """`day`'s month and day in `year` (29 February becomes the 28th in common years)."""
    last = calendar.monthrange(year, day.month)[1]
    return date(year, day.month, min(day.day, last))


def last_anniversary(anchor: date, day: date) -> date:
    """The latest anniversary of `anchor` on or before `day` (`anchor` itself in its first year)."""
    if day < anchor:
        return anchor
    this_year = anniversary_in(day.year, anchor)
    return this_year if this_year <= day else anniversary_in(day.year - 1, anchor)


@lru_cache(maxsize=4096)
def window_start(window: Window, day: date, anniversary: date) -> date | None:
    """First day of the qualification window that contains `day` (None: lifetime)."""
    if window.kind == "lifetime":
        return None
    if window.kind == "rolling":
        return day - timedelta(days=window.days - 1)
    if window.kind == "calendar_year":
        return date(day.year, 1, 1)
    return last_anniversary(anniversary, day)


@lru_cache(maxsize=4096)
def window_end(window: Window, day: date, anniversary: date) -> date | None:
    """Last day of the window that contains `day`, for windows that close (None otherwise)."""
    if window.kind == "calendar_year":
        return date(day.year, 12, 31)
    if window.kind == "anniversary_year":
        start = last_anniversary(anniversary, day)
        return anniversary_in(start.year + 1, anniversary) - timedelta(days=1)
    return None


# --- reviews --------------------------------------------------------------------------------


def _review_dates(cadence: Cadence, reached_on: date, after: date, upto: date) -> list[date]:
    """Review dates of a cadence in (after, upto], oldest first (realtime reviews every day)."""
    if cadence == "realtime":
        return [upto] if upto > after else []
    out: list[date] = []
    if cadence == "monthly":
        d = date(after.year, after.month, 1)
        while d <= upto:
            if d > after:
                out.append(d)
            d = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    elif cadence == "yearly":
        out = [date(y, 1, 1) for y in range(after.year, upto.year + 1) if after < date(y, 1, 1) <= upto]
    else:
        out = [
            d
            for y in range(max(after.year, reached_on.year + 1), upto.year + 1)
            if after < (d := anniversary_in(y, reached_on)) <= upto
        ]
    return out


@lru_cache(maxsize=4096)
def review_due(cadence: Cadence, reached_on: date, last_run: date | None, today: date) -> date | None:
    """The latest review date since the last evaluation run, if one fell in that span."""
    after = last_run if last_run is not None else today - timedelta(days=1)
    dates = _review_dates(cadence, reached_on, min(after, today - timedelta(days=1)), today)
    return dates[-1] if dates else None


@lru_cache(maxsize=4096)
def next_review(cadence: Cadence, reached_on: date, today: date) -> date:
    """The first review date after `today` (tomorrow for realtime)."""
    if cadence == "realtime":
        return today + timedelta(days=1)
    if cadence == "monthly":
        return date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    if cadence == "yearly":
        return date(today.year + 1, 1, 1)
    year = max(today.year, reached_on.year + 1)
    d = anniversary_in(year, reached_on)
    return d if d > today else anniversary_in(year + 1, reached_on)


def measured(ladder: Ladder, review_on: date, today: date, qual: Qualification, anniversary: date) -> int:
    """Qualification a review on `review_on` looks at: the window that closes at the review (the
    one containing today for realtime), counted up to today so that grace days still count."""
    ref = review_on if ladder.cadence == "realtime" else review_on - timedelta(days=1)
    return qual(window_start(ladder.window, ref, anniversary), today)


# --- a member's standing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Standing:
    """What is stored about a member's tier besides the effective tier itself."""

    earned: str | None = None
    reached_on: date | None = None
    grace_until: date | None = None
    paid: str | None = None
    paid_until: datetime | None = None
    manual: str | None = None
    manual_until: datetime | None = None
    locked: bool = False
    kept: str | None = None
    kept_until: datetime | None = None


def effective(ladder: Ladder, s: Standing, now: datetime) -> tuple[str | None, str]:
    """The member's tier and where it comes from: `manual` (locked), or the highest of earned,
    paid, manual floor and kept; ties go to the source listed first."""
    if s.locked and s.manual is not None:
        return s.manual, "manual"
    candidates: list[tuple[str | None, str]] = [(s.earned, "earned")]
    if s.paid is not None and s.paid_until is not None and s.paid_until > now:
        candidates.append((s.paid, "paid"))
    if s.manual is not None and (s.manual_until is None or s.manual_until > now):
        candidates.append((s.manual, "manual"))
    if s.kept is not None and s.kept_until is not None and s.kept_until > now:
        candidates.append((s.kept, "kept"))
    best = candidates[0]
    for c in candidates[1:]:
        if ladder.index(c[0]) > ladder.index(best[0]):
            best = c
    if ladder.index(best[0]) < 0:
        return None, "earned"
    return best


@dataclass(frozen=True, slots=True)
class Review:
    """The outcome of evaluating one member: the new standing, why it changed, and a warning of a
    scheduled demotion (the date and the tier it would go to) when one is due."""

    standing: Standing
    reason: str | None = None
    warn: tuple[date, str | None] | None = None


def upgrade(ladder: Ladder, s: Standing, qual: int, today: date) -> Standing:
    """Raise the earned tier at once when the qualification value crosses a higher threshold."""
    reached = tier_for(ladder, qual)
    if reached is None or ladder.index(reached.key) <= ladder.index(s.earned):
        return s
    return replace(s, earned=reached.key, reached_on=today, grace_until=None)


def review(
    ladder: Ladder,
    s: Standing,
    qual: Qualification,
    *,
    today: date,
    last_run: date | None,
    anniversary: date,
) -> Review:
    """Evaluate one member: upgrade at once; at a due review keep the earned tier, start the
    grace period, or demote (at most one level when the ladder says so)."""
    raised = upgrade(ladder, s, qual(window_start(ladder.window, today, anniversary), today), today)
    if raised != s:
        return Review(raised, "qualified")
    current = ladder.get(s.earned)
    if current is None or current.threshold is None:
        return Review(replace(s, earned=None) if s.earned is not None else s)
    reached_on = s.reached_on or today
    if s.grace_until is not None:
        review_on: date | None = s.grace_until if s.grace_until <= today else None
        if review_on is None:
            return _maybe_warn(ladder, s, qual, today, anniversary, s.grace_until)
    else:
        review_on = review_due(ladder.cadence, reached_on, last_run, today)
    if review_on is None:
        return _maybe_warn(ladder, s, qual, today, anniversary, next_review(ladder.cadence, reached_on, today))
    opened = s.grace_until - timedelta(days=ladder.grace_days) if s.grace_until is not None else review_on
    value = measured(ladder, opened, today, qual, anniversary)
    if value >= current.threshold:
        return Review(replace(s, grace_until=None)) if s.grace_until is not None else Review(s)
    if ladder.grace_days and s.grace_until is None:
        until = review_on + timedelta(days=ladder.grace_days)
        if until > today:
            graced = replace(s, grace_until=until)
            return Review(graced, None, _warning(ladder, s, value, until, today))
    target = _demoted(ladder, s.earned, value)
    return Review(replace(s, earned=target, reached_on=today, grace_until=None), "retention review")


def _demoted(ladder: Ladder, earned: str | None, value: int) -> str | None:
    reached = tier_for(ladder, value)
    target = ladder.index(reached.key) if reached else -1
    if ladder.one_level_drop:
        target = max(target, ladder.index(earned) - 1)
        while target >= 0 and not ladder.tiers[target].earnable:
            target -= 1  # skip invitation-only and paid-only tiers on the way down
    return ladder.tiers[target].key if target >= 0 else None


def _warning(ladder: Ladder, s: Standing, value: int, on: date, today: date) -> tuple[date, str | None] | None:
    if ladder.warn_days <= 0 or not (on - timedelta(days=ladder.warn_days) <= today < on):
        return None
    return on, _demoted(ladder, s.earned, value)


def _maybe_warn(ladder: Ladder, s: Standing, qual: Qualification, today: date, anniversary: date, on: date) -> Review:
    """No review today; a `tier.will_change` warning if the review on `on` would demote."""
    if ladder.warn_days <= 0 or (ladder.cadence == "realtime" and s.grace_until is None):
        return Review(s)
    current = ladder.get(s.earned)
    opened = s.grace_until - timedelta(days=ladder.grace_days) if s.grace_until is not None else on
    value = measured(ladder, opened, today, qual, anniversary)
    if current is None or current.threshold is None or value >= current.threshold:
        return Review(s)
    if ladder.grace_days and s.grace_until is None:
        return Review(s)  # the review would only open a grace period
    return Review(s, None, _warning(ladder, s, value, on, today))


@dataclass(frozen=True, slots=True)
class Keep:
    """What a member must still earn to keep the earned tier at its next review, and by when."""

    tier: Tier
    missing: int
    by: date


def to_keep(ladder: Ladder, s: Standing, qual: Qualification, today: date, anniversary: date) -> Keep | None:
    """The amount still missing to keep the earned tier, and the last day to earn it."""
    current = ladder.get(s.earned)
    if current is None or current.threshold is None or ladder.window.kind == "lifetime":
        return None
    on = s.grace_until or next_review(ladder.cadence, s.reached_on or today, today)
    opened = s.grace_until - timedelta(days=ladder.grace_days) if s.grace_until is not None else on
    ref = opened if ladder.cadence == "realtime" else opened - timedelta(days=1)
    value = qual(window_start(ladder.window, ref, anniversary), today)
    return Keep(current, max(current.threshold - value, 0), on - timedelta(days=1))
