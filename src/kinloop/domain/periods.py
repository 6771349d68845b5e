"""Calendar arithmetic in the program's time zone: cap periods, expiry dates, streak days."""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kinloop.domain.program import Expiry, Pending, Period


def local_day(ts: datetime, tz: ZoneInfo) -> date:
    """The calendar day of `ts` where the program lives."""
    return ts.astimezone(tz).date()


def period_key(period: Period, day: date) -> str:
    """A stable key naming the period that contains `day`: `d2026-01-05`, `w2026-02`, ..."""
    if period == "day":
        return f"d{day.isoformat()}"
    if period == "week":
        iso = day.isocalendar()
        return f"w{iso.year}-{iso.week:02d}"
    if period == "month":
        return f"m{day.year}-{day.month:02d}"
    return "all"


def _start_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


def add_months(day: date, months: int) -> date:
    """The same day `months` calendar months later, clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def expires_at(expiry: Expiry, earned_at: datetime, tz: ZoneInfo) -> datetime | None:
    """When an amount earned at `earned_at` expires (the first instant it is no longer valid)."""
    if expiry.kind == "never":
        return None
    if expiry.kind == "days":
        return earned_at + timedelta(days=expiry.n)
    local = earned_at.astimezone(tz)
    if expiry.kind == "months":
        day = add_months(local.date(), expiry.n)
        return datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=tz)
    if expiry.kind == "end_of_month":
        first_after = add_months(local.date().replace(day=1), expiry.n + 1)
        return _start_of_day(first_after, tz)
    return _start_of_day(date(local.year + expiry.n + 1, 1, 1), tz)


def pending_until(pending: Pending, earned_at: datetime) -> datetime | None:
    """When a pending amount is released by time alone (None: only by a release event)."""
    if pending.days is None:
        return None
    return earned_at + timedelta(days=pending.days)


def streak_on(last_day: date | None, streak: int, day: date) -> int:
    """The streak as it stood on `day` itself: the same as `next_streak` for today or later,
    and for a late event, its place in the run it belongs to (1 when that run is unknown)."""
    if last_day is None or day >= last_day:
        return next_streak(last_day, streak, day)
    behind = (last_day - day).days
    return streak - behind if behind < streak else 1


def next_streak(last_day: date | None, streak: int, day: date) -> int:
    """The streak after an activity on `day`, given the last active day before it."""
    if last_day is None:
        return 1
    if day == last_day:
        return streak
    if day == last_day + timedelta(days=1):
        return streak + 1
    if day < last_day:
        # A late event for an earlier day does not rewrite the current streak.
        return streak
    return 1
