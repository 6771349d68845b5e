"""Calendar arithmetic in the program's time zone: periods, expiry dates, streaks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kinloop.domain.periods import (
    add_months,
    expires_at,
    local_day,
    next_streak,
    pending_until,
    period_key,
    streak_on,
)
from kinloop.domain.program import Expiry, Pending

PARIS = ZoneInfo("Europe/Paris")
SHANGHAI = ZoneInfo("Asia/Shanghai")


# --- local days and period keys -------------------------------------------------------------


def test_local_day_is_the_day_where_the_program_lives() -> None:
    # given 23:30 UTC on 4 January, which is already 5 January in Paris and Shanghai
    ts = datetime(2026, 1, 4, 23, 30, tzinfo=UTC)
    # then
    assert local_day(ts, ZoneInfo("UTC")) == date(2026, 1, 4)
    assert local_day(ts, PARIS) == date(2026, 1, 5)
    assert local_day(ts, SHANGHAI) == date(2026, 1, 5)
    assert local_day(ts, ZoneInfo("America/New_York")) == date(2026, 1, 4)


@pytest.mark.parametrize(
    ("period", "day", "key"),
    [
        ("day", date(2026, 1, 5), "d2026-01-05"),
        ("month", date(2026, 1, 31), "m2026-01"),
        ("month", date(2026, 12, 1), "m2026-12"),
        ("lifetime", date(2026, 1, 5), "all"),
        ("week", date(2026, 1, 5), "w2026-02"),
        # ISO weeks across a year boundary: the week belongs to the year of its Thursday.
        ("week", date(2025, 12, 29), "w2026-01"),
        ("week", date(2026, 1, 1), "w2026-01"),
        ("week", date(2026, 12, 31), "w2026-53"),
        ("week", date(2027, 1, 1), "w2026-53"),
        ("week", date(2027, 1, 3), "w2026-53"),
        ("week", date(2027, 1, 4), "w2027-01"),
        ("week", date(2021, 1, 3), "w2020-53"),
    ],
)
def test_period_key(period: str, day: date, key: str) -> None:
    assert period_key(period, day) == key  # type: ignore[arg-type]


def test_days_of_one_iso_week_share_a_key_across_new_year() -> None:
    keys = {period_key("week", date(2025, 12, 29) + timedelta(days=i)) for i in range(7)}
    assert keys == {"w2026-01"}
    assert period_key("week", date(2025, 12, 28)) == "w2025-52"


# --- months -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 1, 15), 12, date(2027, 1, 15)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 12, 31), 1, date(2027, 1, 31)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
    ],
)
def test_add_months_clamps_to_the_end_of_a_shorter_month(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


# --- expiry -----------------------------------------------------------------------------------


def test_never_expires() -> None:
    assert expires_at(Expiry(), datetime(2026, 1, 31, 10, 0, tzinfo=UTC), PARIS) is None
    assert expires_at(Expiry("never"), datetime(2026, 1, 31, 10, 0, tzinfo=UTC), PARIS) is None


def test_days_count_from_the_instant_of_earning() -> None:
    earned = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert expires_at(Expiry("days", 30), earned, PARIS) == datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    assert expires_at(Expiry("days", 1), earned, PARIS) == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_months_from_jan_31_end_on_the_last_day_of_february_at_the_same_local_time() -> None:
    # given 31 January 10:00 UTC, 11:00 in Paris
    earned = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    # when
    at = expires_at(Expiry("months", 1), earned, PARIS)
    # then 28 February 11:00 in Paris
    assert at == datetime(2026, 2, 28, 11, 0, tzinfo=PARIS)
    assert at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)


def test_months_from_jan_31_in_a_leap_year_end_on_feb_29() -> None:
    at = expires_at(Expiry("months", 1), datetime(2028, 1, 31, 10, 0, tzinfo=UTC), PARIS)
    assert at == datetime(2028, 2, 29, 10, 0, tzinfo=UTC)


def test_months_keep_the_local_clock_time_across_a_daylight_saving_change() -> None:
    # given noon in Paris in winter (UTC+1)
    earned = datetime(2026, 3, 15, 11, 0, tzinfo=UTC)
    # when one month later, in summer time (UTC+2)
    at = expires_at(Expiry("months", 1), earned, PARIS)
    # then still noon in Paris, which is 10:00 UTC
    assert at == datetime(2026, 4, 15, 10, 0, tzinfo=UTC)


def test_months_use_the_local_date_not_the_utc_date() -> None:
    # given 31 January 20:00 UTC, already 1 February 04:00 in Shanghai
    earned = datetime(2026, 1, 31, 20, 0, tzinfo=UTC)
    # then one month later is 1 March in Shanghai, not the end of February
    assert expires_at(Expiry("months", 1), earned, SHANGHAI) == datetime(2026, 3, 1, 4, 0, tzinfo=SHANGHAI)


def test_end_of_month_is_the_first_local_midnight_of_the_next_month() -> None:
    # given 31 January 17:00 UTC, which is 1 February 01:00 in Shanghai
    earned = datetime(2026, 1, 31, 17, 0, tzinfo=UTC)
    # when it expires at the end of the month of earning
    at = expires_at(Expiry("end_of_month", 0), earned, SHANGHAI)
    # then the month of earning is February (local), so it ends at 1 March 00:00 Shanghai
    assert at == datetime(2026, 3, 1, 0, 0, tzinfo=SHANGHAI)
    assert at == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    # and in UTC the same instant belongs to January
    assert expires_at(Expiry("end_of_month", 0), earned, ZoneInfo("UTC")) == datetime(2026, 2, 1, tzinfo=UTC)


def test_end_of_month_n_counts_whole_months_after_the_month_of_earning() -> None:
    earned = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert expires_at(Expiry("end_of_month", 1), earned, PARIS) == datetime(2026, 3, 1, tzinfo=PARIS)
    assert expires_at(Expiry("end_of_month", 11), earned, PARIS) == datetime(2027, 1, 1, tzinfo=PARIS)
    assert expires_at(Expiry("end_of_month", 11), earned, PARIS) == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)


def test_end_of_year_is_new_year_midnight_in_the_program_zone() -> None:
    # given 31 December 2026 23:30 UTC, already 1 January 2027 00:30 in Paris
    earned = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    # then the year of earning is 2027 in Paris, which ends on 1 January 2028 00:00 Paris time
    assert expires_at(Expiry("end_of_year", 0), earned, PARIS) == datetime(2027, 12, 31, 23, 0, tzinfo=UTC)
    assert expires_at(Expiry("end_of_year", 0), earned, ZoneInfo("UTC")) == datetime(2027, 1, 1, tzinfo=UTC)
    assert expires_at(Expiry("end_of_year", 1), earned, PARIS) == datetime(2029, 1, 1, tzinfo=PARIS)


def test_pending_until_is_n_days_after_earning_or_none_for_release_by_event() -> None:
    earned = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert pending_until(Pending(days=14), earned) == datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    assert pending_until(Pending(until_event="delivered", key="order_id"), earned) is None


# --- streaks ----------------------------------------------------------------------------------


def test_first_activity_starts_a_streak_of_one() -> None:
    assert next_streak(None, 0, date(2026, 3, 1)) == 1


def test_consecutive_days_extend_the_streak() -> None:
    assert next_streak(date(2026, 3, 1), 4, date(2026, 3, 2)) == 5


def test_consecutive_days_across_a_month_and_year_end() -> None:
    assert next_streak(date(2026, 2, 28), 2, date(2026, 3, 1)) == 3
    assert next_streak(date(2026, 12, 31), 9, date(2027, 1, 1)) == 10


def test_same_day_keeps_the_streak() -> None:
    assert next_streak(date(2026, 3, 1), 4, date(2026, 3, 1)) == 4


def test_a_missed_day_restarts_the_streak() -> None:
    assert next_streak(date(2026, 3, 1), 4, date(2026, 3, 3)) == 1


def test_a_late_event_for_an_earlier_day_does_not_rewrite_the_streak() -> None:
    assert next_streak(date(2026, 3, 5), 4, date(2026, 3, 4)) == 4
    assert next_streak(date(2026, 3, 5), 4, date(2026, 2, 1)) == 4


@pytest.mark.parametrize(
    ("day", "streak"),
    [
        (date(2026, 3, 6), 4),  # the next day extends the run
        (date(2026, 3, 5), 3),  # the last day itself
        (date(2026, 3, 4), 2),  # a late event inside the run: its place in the run
        (date(2026, 3, 3), 1),  # the run's first day
        (date(2026, 3, 1), 1),  # before the run: unknown, so 1
        (date(2026, 3, 9), 1),  # after a gap
    ],
)
def test_streak_on_is_the_streak_as_it_stood_on_that_day(day: date, streak: int) -> None:
    # given a run of 3 days ending on 5 March
    assert streak_on(date(2026, 3, 5), 3, day) == streak


def test_streak_on_without_history_is_one() -> None:
    assert streak_on(None, 0, date(2026, 3, 5)) == 1
