"""Envelope arithmetic, pure: splits, fees, limits and birthdays."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.envelopes import EnvelopePolicy, birthday_on, check_send, fee, split
from kinloop.domain.errors import InvalidInput, LimitReached, SelfTransfer


@given(
    shares=st.integers(1, 50),
    minimum=st.integers(1, 20),
    extra=st.integers(0, 10_000),
    mode=st.sampled_from(["equal", "random"]),
    seed=st.integers(0, 2**32),
)
def test_shares_sum_to_the_total_and_respect_the_minimum(
    shares: int, minimum: int, extra: int, mode: str, seed: int
) -> None:
    total = shares * minimum + extra
    parts = split(total, shares, mode, minimum=minimum, rng=random.Random(seed))  # type: ignore[arg-type]
    assert len(parts) == shares
    assert sum(parts) == total
    assert min(parts) >= minimum
    if mode == "equal":
        assert max(parts) - min(parts) <= 1


def test_a_total_too_small_for_the_shares_is_refused() -> None:
    with pytest.raises(InvalidInput, match="10 cannot be split into 3 shares of at least 4"):
        split(10, 3, "equal", minimum=4)


def test_fees_round_up() -> None:
    assert [fee(a, Decimal(1)) for a in (0, 1, 100, 150)] == [0, 1, 1, 2]
    assert fee(100, Decimal(0)) == 0


def test_limits_and_self_transfer() -> None:
    policy = EnvelopePolicy("beans", daily_limit=200, daily_count=2)
    check_send(policy, sender="a", recipient="b", amount=150, sent_today=50, count_today=1)
    with pytest.raises(SelfTransfer):
        check_send(policy, sender="a", recipient="a", amount=1, sent_today=0, count_today=0)
    with pytest.raises(LimitReached, match="the daily sending limit is 200; 150 already sent today"):
        check_send(policy, sender="a", recipient="b", amount=51, sent_today=150, count_today=0)
    with pytest.raises(LimitReached, match="at most 2 envelopes a day"):
        check_send(policy, sender="a", recipient=None, amount=1, sent_today=0, count_today=2)


def test_leap_day_birthdays_fall_on_28_february_in_other_years() -> None:
    born = date(2000, 2, 29)
    assert birthday_on(born, date(2027, 2, 28))
    assert not birthday_on(born, date(2028, 2, 28))
    assert birthday_on(born, date(2028, 2, 29))
    assert birthday_on(date(1990, 6, 1), date(2026, 6, 1))
