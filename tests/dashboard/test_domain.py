"""The dashboard's arithmetic: days, periods, what ledger flows mean, rates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain import dashboard as D
from kinloop.domain import ledger as L
from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Currency

PARIS = ZoneInfo("Europe/Paris")
ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns")]
TODAY = date(2026, 11, 30)

# Every flow the services write: (kind, from, to).
KINDS = [
    ("earn", L.ISSUANCE, L.AVAILABLE),
    ("earn", L.ISSUANCE, L.PENDING),
    ("release", L.PENDING, L.AVAILABLE),
    ("spend", L.AVAILABLE, L.REDEMPTION),
    ("expire", L.AVAILABLE, L.EXPIRY),
    ("expire", L.PENDING, L.EXPIRY),
    ("reversal", L.AVAILABLE, L.ISSUANCE),
    ("reversal", L.PENDING, L.ISSUANCE),
    ("adjustment", L.ADJUSTMENT, L.AVAILABLE),
    ("adjustment", L.AVAILABLE, L.ADJUSTMENT),
    ("write_off", L.WRITE_OFF, L.ISSUANCE),
    ("hold", L.AVAILABLE, L.HELD),
    ("capture", L.HELD, L.REDEMPTION),
    ("restore", L.REDEMPTION, L.AVAILABLE),
    ("restore", L.HELD, L.AVAILABLE),
    ("lapse", L.REDEMPTION, L.EXPIRY),
    ("lapse", L.HELD, L.EXPIRY),
    ("transfer_out", L.AVAILABLE, L.TRANSFER),
    ("transfer_in", L.TRANSFER, L.AVAILABLE),
    ("transfer_return", L.TRANSFER, L.AVAILABLE),
    ("fee", L.AVAILABLE, L.FEES),
    ("donate", L.AVAILABLE, L.DONATION),
]

flows = st.lists(
    st.builds(
        lambda k, day, cur, amount: D.Flow(day, cur, k[0], k[1], k[2], "", 1, amount),
        st.sampled_from(KINDS),
        st.integers(TODAY.toordinal() - 60, TODAY.toordinal()),
        st.sampled_from(["beans", "stars"]),
        st.integers(1, 10_000),
    ),
    max_size=200,
)


def test_a_quarter_hour_falls_on_its_local_day() -> None:
    # 23:30 UTC on 30 November is already 1 December in Paris (UTC+1).
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert D.quarter_day(int(at.timestamp()) // D.QUARTER, PARIS) == date(2026, 12, 1).toordinal()
    assert D.quarter_day(int(at.timestamp()) // D.QUARTER, ZoneInfo("UTC")) == date(2026, 11, 30).toordinal()


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)))
def test_every_instant_of_a_quarter_hour_has_the_quarters_day(at: datetime) -> None:
    for tz in ZONES:
        assert D.quarter_day(int(at.timestamp()) // D.QUARTER, tz) == D.local_day(at, tz)


def test_preset_periods_end_today() -> None:
    p = D.choose_period("7", TODAY)
    assert (p.first, p.last, p.choice) == (date(2026, 11, 24), TODAY, "7")
    assert len(p.days) == 7
    assert D.choose_period(None, TODAY).first == TODAY - timedelta(days=29)


def test_a_custom_period_is_checked_field_by_field() -> None:
    p = D.choose_period("custom", TODAY, "2026-01-01", "2026-01-31")
    assert (p.first, p.last, len(p.ordinals)) == (date(2026, 1, 1), date(2026, 1, 31), 31)
    for args, field in [
        (("custom", TODAY, "2026-02-01", "2026-01-01"), "to"),
        (("custom", TODAY, "yesterday", "2026-01-01"), "from"),
        (("custom", TODAY, "2026-01-01", None), "to"),
        (("custom", TODAY, "2020-01-01", "2026-01-01"), "from"),
        (("365", TODAY), "period"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            D.choose_period(*args)
        assert caught.value.field == field


def test_what_each_flow_means() -> None:
    m = D.Movement()
    m.add(L.ISSUANCE, L.AVAILABLE, 100)  # earned
    m.add(L.AVAILABLE, L.REDEMPTION, 30)  # spent
    m.add(L.REDEMPTION, L.AVAILABLE, 10)  # a cancelled order's points back
    m.add(L.AVAILABLE, L.EXPIRY, 5)
    m.add(L.AVAILABLE, L.HELD, 20)  # still the member's
    m.add(L.AVAILABLE, L.TRANSFER, 7)  # in flight
    m.add(L.AVAILABLE, L.FEES, 1)
    assert (m.issued, m.redeemed, m.expired, m.fees) == (100, 20, 5, 1)
    assert (m.change, m.reserved_change, m.other) == (74, 27, 0)


@given(flows)
def test_outstanding_is_issued_less_every_outflow(fs: list[D.Flow]) -> None:
    m = D.Movement()
    for f in fs:
        m.add(f.src, f.dst, f.amount)
    assert m.other == 0
    assert m.change == m.issued - m.reversed - m.adjusted_out - m.redeemed - m.expired - m.donated - m.fees


@given(flows, st.integers(0, 70), st.integers(0, 30))
def test_days_of_a_period_add_up(fs: list[D.Flow], back: int, length: int) -> None:
    first = TODAY - timedelta(days=back)
    period = D.Period(first, first + timedelta(days=length))
    per_currency = D.by_currency(fs, period)
    owned = D.owned(fs)
    for cur, cd in per_currency.items():
        inside = [f for f in fs if f.currency == cur and f.day in period]
        assert sum(cd.series("issued")) == sum(
            f.amount for f in inside if f.src in (L.ISSUANCE, L.ADJUSTMENT) and f.dst in D.OWNED
        )
        # The last day's outstanding is the opening plus every change of the period.
        assert cd.outstanding()[-1] == cd.closing
        after = sum(
            f.amount * ((f.dst in D.OWNED) - (f.src in D.OWNED))
            for f in fs
            if f.currency == cur and f.day > period.last.toordinal()
        )
        assert cd.closing + after == owned[cur][0]


def test_burn_rate_and_percent() -> None:
    assert D.burn_rate(D.Movement(issued=200, redeemed=50, expired=25)) == Decimal("0.375")
    assert D.percent(D.burn_rate(D.Movement(issued=3, redeemed=1))) == "33.3 %"
    assert D.burn_rate(D.Movement(redeemed=5)) is None
    assert D.percent(None) == "–"


def test_liability_is_exact_to_the_cent() -> None:
    beans = Currency("beans", "Beans", "Beans", 0, "points", money_value=Decimal("0.05"))
    assert D.liability(8279, beans) == Decimal("413.95")
    cents = Currency("credit", "Credit", "€", 2, "points", money_value=Decimal("1"))
    assert D.liability(12345, cents) == Decimal("123.45")
    assert D.liability(10, Currency("stars", "Stars", "★", 0, "growth")) is None


def test_tier_moves_up_and_down_the_ladder() -> None:
    ladder = ["green", "jade", "gold"]
    rows = [(1, "", "green", 4), (1, "green", "gold", 2), (2, "gold", "jade", 3), (2, "jade", "jade", 9)]
    assert D.tier_moves(rows, ladder) == {1: (6, 0), 2: (0, 3)}
    assert D.direction(ladder, "gold", None) == -1


def test_rates_and_daily_series() -> None:
    assert D.rate(3, 4) == Decimal("0.75")
    assert D.rate(3, 0) is None
    period = D.Period(date(2026, 1, 1), date(2026, 1, 3))
    assert D.daily({date(2026, 1, 2).toordinal(): 5}, period) == [0, 5, 0]


def test_earnings_per_rule_and_task() -> None:
    day = TODAY.toordinal()
    period = D.Period(TODAY, TODAY)
    fs = [
        D.Flow(day, "beans", "earn", L.ISSUANCE, L.AVAILABLE, "rule:purchase", 3, 30),
        D.Flow(day, "beans", "earn", L.ISSUANCE, L.AVAILABLE, "task:complete_profile", 2, 10),
        D.Flow(day - 1, "beans", "earn", L.ISSUANCE, L.AVAILABLE, "task:complete_profile", 5, 25),
    ]
    assert D.earned_by(fs, period) == {"rule:purchase": (3, 30), "task:complete_profile": (2, 10)}
    assert D.earned_by(fs, period, "task") == {"complete_profile": (2, 10)}
