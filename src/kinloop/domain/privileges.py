"""Privileges: who holds one, when it may be used, and what is left of its quota, in words.

A privilege is held through the member's current tier: it is granted on entering a tier that
lists it and withdrawn on leaving, because holding is decided from the tier at the moment of
use, never from a stored grant.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kinloop.domain.errors import OutsideWindow, PrivilegeNotGranted, QuotaExhausted
from kinloop.domain.periods import add_months
from kinloop.domain.program import Privilege, Program, QuotaPeriod

_THIS = {"day": "today", "week": "this week", "month": "this month", "year": "this year"}


def held(privilege: Privilege, tier: str | None) -> bool:
    """Whether a member in `tier` holds the privilege."""
    return tier is not None and tier in privilege.tiers


def held_by(program: Program, tier: str | None) -> tuple[Privilege, ...]:
    """The privileges a member in `tier` holds, in catalogue order."""
    return tuple(p for p in program.privileges if held(p, tier))


def period_start(per: QuotaPeriod, day: date) -> date:
    """The first day of the period (ISO weeks start on Monday) that contains `day`."""
    if per == "day":
        return day
    if per == "week":
        return day - timedelta(days=day.weekday())
    if per == "month":
        return day.replace(day=1)
    return date(day.year, 1, 1)


def next_period_start(per: QuotaPeriod, day: date) -> date:
    """The first day of the period after the one that contains `day`."""
    start = period_start(per, day)
    if per == "day":
        return start + timedelta(days=1)
    if per == "week":
        return start + timedelta(days=7)
    if per == "month":
        return add_months(start, 1)
    return date(start.year + 1, 1, 1)


def period_bounds(per: QuotaPeriod | None, at: datetime, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The instants [start, end) of the period containing `at` in `tz`; (None, None) for ever."""
    if per is None:
        return None, None
    return bounds(per, at, tz)


def bounds(per: QuotaPeriod, at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants [start, end) of the `per` period containing `at` in `tz`."""
    day = at.astimezone(tz).date()
    return (
        datetime.combine(period_start(per, day), time(), tzinfo=tz),
        datetime.combine(next_period_start(per, day), time(), tzinfo=tz),
    )


def used_in_period(privilege: Privilege, used_at: Iterable[datetime], at: datetime, tz: ZoneInfo) -> int:
    """How many of the uses at `used_at` fall in the quota's period containing `at` (or ever)."""
    start, end = period_bounds(privilege.quota.per if privilege.quota else None, at, tz)
    if start is None or end is None:
        return sum(1 for _ in used_at)
    return sum(1 for t in used_at if start <= t < end)


def birthday_of(profile_birthday: object) -> date | None:
    """The birthday stored in a profile (YYYY-MM-DD), or None when absent or unreadable."""
    if not isinstance(profile_birthday, str):
        return None
    try:
        return date.fromisoformat(profile_birthday)
    except ValueError:
        return None


def in_window(privilege: Privilege, birthday: date | None, at: datetime, tz: ZoneInfo) -> bool:
    """Whether `at` falls in the privilege's usable window for a member with this birthday."""
    if privilege.window == "always":
        return True
    return birthday is not None and at.astimezone(tz).month == birthday.month


def remaining(privilege: Privilege, used: int) -> int | None:
    """Uses left in the current period (None: unlimited)."""
    if privilege.quota is None:
        return None
    return max(0, privilege.quota.uses - used)


def check_use(
    privilege: Privilege,
    *,
    tier: str | None,
    tier_name: str,
    birthday: date | None,
    used: int,
    at: datetime,
    tz: ZoneInfo,
) -> int | None:
    """Refuse a use that is not allowed now, or return the uses left after it (None: unlimited).

    `used` counts the member's uses in the quota's current period (or ever, for a quota
    without a period)."""
    if not held(privilege, tier):
        raise PrivilegeNotGranted(f"{privilege.name} is not a privilege of {tier_name}", field="privilege_key")
    if not in_window(privilege, birthday, at, tz):
        when = f"in {calendar.month_name[birthday.month]}" if birthday else "once the member's birthday is known"
        raise OutsideWindow(f"{privilege.name} can be used in the member's birthday month ({when})")
    left = remaining(privilege, used)
    if left is not None and left <= 0:
        raise QuotaExhausted(f"{privilege.name}: {quota_text(privilege, used)}")
    return None if left is None else left - 1


def quota_text(privilege: Privilege, used: int) -> str:
    """What is left, in words: `1 of 2 left this month`, `single use, used`, `unlimited`."""
    quota = privilege.quota
    if quota is None:
        return "unlimited"
    left = max(0, quota.uses - used)
    if quota.per is None:
        if quota.uses == 1:
            return "single use, used" if left == 0 else "single use, not used yet"
        return f"{left} of {quota.uses} left"
    if left == 0:
        return f"none of {quota.uses} left {_THIS[quota.per]}"
    return f"{left} of {quota.uses} left {_THIS[quota.per]}"


def window_text(privilege: Privilege, birthday: date | None, at: datetime, tz: ZoneInfo) -> str | None:
    """When a windowed privilege can be used, in words (None for privileges usable any time)."""
    if privilege.window == "always":
        return None
    if birthday is None:
        return "usable in your birthday month; add your birthday to your profile"
    if in_window(privilege, birthday, at, tz):
        return "usable this month: it is your birthday month"
    return f"usable in your birthday month ({calendar.month_name[birthday.month]})"


@dataclass(frozen=True, slots=True)
class Holding:
    """A privilege a member holds now, with what is left of it."""

    privilege: Privilege
    used: int
    remaining: int | None
    usable_now: bool
    text: str


def holding(privilege: Privilege, *, used: int, birthday: date | None, at: datetime, tz: ZoneInfo) -> Holding:
    """How a held privilege stands for a member at `at`."""
    left = remaining(privilege, used)
    window = window_text(privilege, birthday, at, tz)
    usable = in_window(privilege, birthday, at, tz) and (left is None or left > 0)
    text = quota_text(privilege, used) + (f"; {window}" if window else "")
    return Holding(privilege, used, left, usable, text)
