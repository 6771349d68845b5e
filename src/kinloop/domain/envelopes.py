"""Red envelopes: how a total is split among claimers, fees, limits and birthdays. No I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal
from typing import Literal

from kinloop.domain.errors import InvalidInput, LimitReached, SelfTransfer
from kinloop.domain.program import Condition

Split = Literal["equal", "random"]


@dataclass(frozen=True, slots=True)
class DailyEnvelope:
    """An envelope the program sends every day while `condition` (CEL over `member`) holds."""

    key: str
    name: str
    amount: int
    condition: Condition


@dataclass(frozen=True, slots=True)
class EnvelopePolicy:
    """What a program allows: the currency envelopes use, limits, fee, and automatic envelopes."""

    currency: str
    daily_limit: int | None = None  # most a member sends per local day, minor units
    daily_count: int | None = None  # most envelopes a member sends per local day
    fee_percent: Decimal = Decimal(0)
    min_share: int = 1
    max_shares: int = 100
    birthday: int = 0  # amount sent on a member's birthday (0: none)
    daily: tuple[DailyEnvelope, ...] = ()


def split(total: int, shares: int, mode: Split, *, minimum: int = 1, rng: random.Random | None = None) -> list[int]:
    """`shares` amounts summing exactly to `total`, each at least `minimum`.

    equal: the remainder goes one unit each to the first shares. random: every share gets the
    minimum, and the rest is cut at `shares - 1` uniform points (a uniform split of the rest)."""
    if shares < 1:
        raise InvalidInput("an envelope needs at least one share", field="shares")
    if minimum < 1:
        raise InvalidInput("the minimum share must be at least 1", field="min_share")
    if total < shares * minimum:
        raise InvalidInput(f"{total} cannot be split into {shares} shares of at least {minimum}", field="amount")
    if mode == "equal":
        base, extra = divmod(total, shares)
        return [base + (1 if i < extra else 0) for i in range(shares)]
    if rng is None:
        raise InvalidInput("a random split needs a random source")
    rest = total - shares * minimum
    cuts = sorted(rng.randint(0, rest) for _ in range(shares - 1))
    bounds = [0, *cuts, rest]
    return [minimum + bounds[i + 1] - bounds[i] for i in range(shares)]


def fee(amount: int, percent: Decimal) -> int:
    """The fee on a transfer, in minor units, rounded up (a fee is never rounded away)."""
    if percent <= 0:
        return 0
    return int((Decimal(amount) * percent / 100).to_integral_value(rounding=ROUND_CEILING))


def check_send(
    policy: EnvelopePolicy, *, sender: str, recipient: str | None, amount: int, sent_today: int, count_today: int
) -> None:
    """Refuse a transfer the policy does not allow (self-transfer, daily limits)."""
    if recipient is not None and recipient == sender:
        raise SelfTransfer("a member cannot send an envelope to themselves", field="to")
    if policy.daily_limit is not None and sent_today + amount > policy.daily_limit:
        raise LimitReached(
            f"the daily sending limit is {policy.daily_limit}; {sent_today} already sent today", field="amount"
        )
    if policy.daily_count is not None and count_today + 1 > policy.daily_count:
        raise LimitReached(f"at most {policy.daily_count} envelopes a day; {count_today} already sent", field="amount")


def birthday_on(birthday: date, day: date) -> bool:
    """Whether `day` is the birthday; 29 February is celebrated on 28 February in other years."""
    if (birthday.month, birthday.day) == (day.month, day.day):
        return True
    leap = day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)
    return (birthday.month, birthday.day) == (2, 29) and not leap and (day.month, day.day) == (2, 28)
