"""Privileges in the pure core: periods at their edges (program time zone), the birthday window,
holding through the tier, and the quota in words."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain import privileges as D
from kinloop.domain.errors import OutsideWindow, PrivilegeNotGranted, QuotaExhausted
from kinloop.domain.program import Privilege, Quota

PARIS = ZoneInfo("Europe/Paris")
FREE = Privilege("free_drink", "Free drink", "preferential", ("gold",), Quota(2, "month"))
BIRTHDAY = Privilege("birthday", "Birthday drink", "care", ("jade", "gold"), Quota(1, "year"), "birthday_month")
ONCE = Privilege("welcome", "Welcome gift", "care", ("gold",), Quota(1))
PRIORITY = Privilege("priority", "Priority pickup", "function", ("gold",))


def check(
    p: Privilege,
    *,
    tier: str | None = "gold",
    used: int = 0,
    birthday: date | None = None,
    at: datetime = datetime(2026, 3, 10, 12, tzinfo=UTC),
) -> int | None:
    return D.check_use(p, tier=tier, tier_name=str(tier), birthday=birthday, used=used, at=at, tz=PARIS)


def test_month_quota_period_ends_at_midnight_in_the_program_time_zone() -> None:
    # 31 March 2026, 23:59:59 in Paris (summer time, UTC+2) is still March; a second later is April.
    last = datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC)
    first = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    assert D.bounds("month", last, PARIS) == (
        datetime(2026, 3, 1, tzinfo=PARIS),
        datetime(2026, 4, 1, tzinfo=PARIS),
    )
    assert D.bounds("month", first, PARIS)[0] == datetime(2026, 4, 1, tzinfo=PARIS)
    assert D.bounds("month", first, PARIS)[0] == first


def test_week_day_and_year_periods() -> None:
    sunday_night = datetime(2026, 3, 8, 22, 59, tzinfo=UTC)  # 23:59 on Sunday in Paris (UTC+1)
    assert D.bounds("week", sunday_night, PARIS) == (
        datetime(2026, 3, 2, tzinfo=PARIS),
        datetime(2026, 3, 9, tzinfo=PARIS),
    )
    assert D.bounds("week", sunday_night + timedelta(minutes=1), PARIS)[0] == datetime(2026, 3, 9, tzinfo=PARIS)
    assert D.bounds("day", sunday_night, PARIS) == (
        datetime(2026, 3, 8, tzinfo=PARIS),
        datetime(2026, 3, 9, tzinfo=PARIS),
    )
    new_year = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)  # already 2026 in Paris
    assert D.bounds("year", new_year, PARIS) == (datetime(2026, 1, 1, tzinfo=PARIS), datetime(2027, 1, 1, tzinfo=PARIS))
    assert D.period_bounds(None, new_year, PARIS) == (None, None)


@given(
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    per=st.sampled_from(["day", "week", "month", "year"]),
    zone=st.sampled_from(["Europe/Paris", "Asia/Shanghai", "America/New_York", "Pacific/Auckland", "UTC"]),
)
def test_periods_contain_the_instant_and_tile_time(at: datetime, per: D.QuotaPeriod, zone: str) -> None:
    tz = ZoneInfo(zone)
    start, end = D.bounds(per, at, tz)
    assert start <= at < end
    # The next period starts exactly where this one ends; the previous one ends where it starts.
    assert D.bounds(per, end, tz)[0] == end
    assert D.bounds(per, start - timedelta(microseconds=1), tz)[1] == start


def test_a_quota_allows_its_uses_then_refuses() -> None:
    assert check(FREE, used=0) == 1
    assert check(FREE, used=1) == 0
    with pytest.raises(QuotaExhausted, match="none of 2 left this month"):
        check(FREE, used=2)


def test_single_use_and_unlimited() -> None:
    assert check(ONCE, used=0) == 0
    with pytest.raises(QuotaExhausted, match="single use, used"):
        check(ONCE, used=1)
    assert check(PRIORITY, used=10_000) is None


def test_held_only_through_a_tier_that_lists_it() -> None:
    with pytest.raises(PrivilegeNotGranted, match="Free drink is not a privilege of jade"):
        check(FREE, tier="jade")
    with pytest.raises(PrivilegeNotGranted):
        check(FREE, tier=None)
    assert [D.held(BIRTHDAY, t) for t in ("green", "jade", "gold")] == [False, True, True]


def test_birthday_window_is_the_birthday_month_in_the_given_time_zone() -> None:
    born = date(1990, 4, 17)
    assert check(BIRTHDAY, birthday=born, at=datetime(2026, 3, 31, 22, 0, tzinfo=UTC)) == 0  # 1 April in Paris
    with pytest.raises(OutsideWindow, match=r"birthday month \(in April\)"):
        check(BIRTHDAY, birthday=born, at=datetime(2026, 3, 31, 21, 59, tzinfo=UTC))
    with pytest.raises(OutsideWindow, match="once the member's birthday is known"):
        check(BIRTHDAY, birthday=None)
    # Refused for the window before the quota: the reason a member can act on.
    with pytest.raises(OutsideWindow):
        check(BIRTHDAY, birthday=born, used=1)


def test_quota_and_window_in_words() -> None:
    assert D.quota_text(FREE, 1) == "1 of 2 left this month"
    assert D.quota_text(FREE, 0) == "2 of 2 left this month"
    assert D.quota_text(Privilege("x", "X", "service", ("gold",), Quota(3, "week")), 3) == "none of 3 left this week"
    assert D.quota_text(Privilege("x", "X", "service", ("gold",), Quota(3)), 1) == "2 of 3 left"
    assert D.quota_text(ONCE, 0) == "single use, not used yet"
    assert D.quota_text(PRIORITY, 5) == "unlimited"
    at = datetime(2026, 3, 10, 12, tzinfo=UTC)
    h = D.holding(BIRTHDAY, used=0, birthday=date(1990, 4, 17), at=at, tz=PARIS)
    assert (h.remaining, h.usable_now, h.text) == (
        1,
        False,
        "1 of 1 left this year; usable in your birthday month (April)",
    )
    h = D.holding(BIRTHDAY, used=0, birthday=date(1990, 3, 1), at=at, tz=PARIS)
    assert (h.usable_now, h.text) == (True, "1 of 1 left this year; usable this month: it is your birthday month")
    assert D.birthday_of("1990-03-01") == date(1990, 3, 1)
    assert D.birthday_of("not a date") is None
    assert D.birthday_of(None) is None


def test_uses_count_in_the_quota_period_only() -> None:
    times = [datetime(2026, 2, 28, 22, 59, tzinfo=UTC), datetime(2026, 2, 28, 23, 0, tzinfo=UTC)]  # 23:59 / 00:00 Paris
    at = datetime(2026, 3, 15, tzinfo=UTC)
    assert D.used_in_period(FREE, times, at, PARIS) == 1  # only the one on 1 March in Paris
    assert D.used_in_period(ONCE, times, at, PARIS) == 2  # a quota without a period counts every use


@given(
    hours=st.lists(st.integers(0, 24 * 120), min_size=1, max_size=40),
    per=st.sampled_from(["day", "week", "month", "year", None]),
    uses=st.integers(1, 3),
)
def test_accepted_uses_never_exceed_the_quota_of_any_period(
    hours: list[int], per: D.QuotaPeriod | None, uses: int
) -> None:
    """Attempts in time order, each checked against the uses accepted before it: every period
    ends up with exactly min(attempts, quota) accepted uses."""
    p = Privilege("p", "P", "preferential", ("gold",), Quota(uses, per))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    accepted: list[datetime] = []
    for at in sorted(start + timedelta(hours=h) for h in hours):
        try:
            check(p, used=D.used_in_period(p, accepted, at, PARIS), at=at)
        except QuotaExhausted:
            continue
        accepted.append(at)
    attempts_by_period: dict[object, int] = {}
    accepted_by_period: dict[object, int] = {}
    for at in sorted(start + timedelta(hours=h) for h in hours):
        key = D.period_bounds(per, at, PARIS)
        attempts_by_period[key] = attempts_by_period.get(key, 0) + 1
    for at in accepted:
        key = D.period_bounds(per, at, PARIS)
        accepted_by_period[key] = accepted_by_period.get(key, 0) + 1
    assert accepted_by_period == {k: min(n, uses) for k, n in attempts_by_period.items()}
