"""The dashboard's arithmetic: local days, what each ledger flow means, and the figures behind
the charts (issued, redeemed, expired, outstanding, burn rate, liability, tier moves, rates).

Pure: rows in, figures out. Days are date ordinals in the program's time zone. A ledger flow
is the sum of the entries of one day that moved one currency from one account to another with
one kind; what members own is what sits in their accounts (available, pending) plus what is
reserved for them (held by a checkout, in flight in a red envelope).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from kinloop.domain import ledger as L
from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Currency

# Every time zone in use today is a whole number of quarter hours from UTC and changes offset on
# a quarter hour, so a quarter hour falls on one local day: SQLite, which has no time zones,
# groups rows by quarter hour and this module places the quarters on days.
QUARTER = 900
OWNED = (L.AVAILABLE, L.PENDING, L.HELD, L.TRANSFER)
RESERVED = (L.HELD, L.TRANSFER)
MONEY = Decimal("0.01")
Choice = Literal["7", "30", "90", "custom"]
CHOICES: tuple[Choice, ...] = ("7", "30", "90", "custom")
MAX_DAYS = 3 * 366


def local_day(at: datetime, tz: ZoneInfo) -> int:
    """The date ordinal of an instant, where the program lives."""
    return at.astimezone(tz).date().toordinal()


def quarter_day(quarter: int, tz: ZoneInfo) -> int:
    """The local date ordinal of the quarter hour that starts `quarter * 900` s after the epoch."""
    return local_day(datetime.fromtimestamp(quarter * QUARTER, UTC), tz)


# --- the period -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Period:
    """Days from `first` to `last`, both included."""

    first: date
    last: date
    choice: Choice = "custom"

    @property
    def ordinals(self) -> range:
        return range(self.first.toordinal(), self.last.toordinal() + 1)

    @property
    def days(self) -> list[date]:
        return [date.fromordinal(d) for d in self.ordinals]

    def __contains__(self, day: object) -> bool:
        return isinstance(day, int) and self.first.toordinal() <= day <= self.last.toordinal()


def _parse_day(text: str | None, name: str) -> date:
    if not text:
        raise InvalidInput(f"give the {name} day of the period (YYYY-MM-DD)", field=name)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a day (use YYYY-MM-DD)", field=name) from None


def choose_period(choice: str | None, today: date, first: str | None = None, last: str | None = None) -> Period:
    """The period an operator chose: the last 7, 30 or 90 days up to `today`, or from-to."""
    picked = choice or "30"
    if picked == "custom":
        start, end = _parse_day(first, "from"), _parse_day(last, "to")
        if end < start:
            raise InvalidInput("the last day comes before the first", field="to")
        if (end - start).days + 1 > MAX_DAYS:
            raise InvalidInput(f"a period is at most {MAX_DAYS} days", field="from")
        return Period(start, end, "custom")
    if picked not in ("7", "30", "90"):
        raise InvalidInput(f"unknown period {picked!r} (7, 30, 90 or custom)", field="period")
    return Period(today - timedelta(days=int(picked) - 1), today, picked)  # type: ignore[arg-type]


# --- ledger flows ---------------------------------------------------------------------------
class Flow(NamedTuple):
    """The entries of one day that moved `currency` from `src` to `dst` as `kind`.

    `award` is `<award kind>:<rule>` for earnings (`task:complete_profile`), else ''."""

    day: int
    currency: str
    kind: str
    src: str
    dst: str
    award: str
    entries: int
    amount: int


@dataclass(slots=True)
class Movement:
    """What happened to one currency over some days, in minor units."""

    issued: int = 0  # earned, or credited by hand
    reversed: int = 0  # earnings taken back
    adjusted_out: int = 0  # debited by hand
    redeemed: int = 0  # spent (net of cancelled orders' points returned)
    expired: int = 0
    donated: int = 0
    fees: int = 0
    change: int = 0  # the change of what members own
    reserved_change: int = 0  # the change of the part of it held or in flight

    def add(self, src: str, dst: str, amount: int) -> None:
        """Count one flow of `amount` from `src` to `dst`."""
        into, out = dst in OWNED, src in OWNED
        self.change += amount * (into - out)
        self.reserved_change += amount * ((dst in RESERVED) - (src in RESERVED))
        if into and src in (L.ISSUANCE, L.ADJUSTMENT):
            self.issued += amount
        if out and dst == L.ISSUANCE:
            self.reversed += amount
        if out and dst == L.ADJUSTMENT:
            self.adjusted_out += amount
        self.redeemed += amount * ((dst == L.REDEMPTION) - (src == L.REDEMPTION))
        self.expired += amount * ((dst == L.EXPIRY) - (src == L.EXPIRY))
        self.donated += amount * ((dst == L.DONATION) - (src == L.DONATION))
        self.fees += amount * ((dst == L.FEES) - (src == L.FEES))

    def merge(self, other: Movement) -> None:
        for name in Movement.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def other(self) -> int:
        """The part of the change no named flow explains (0 for every kind of entry known)."""
        explained = self.issued - self.reversed - self.adjusted_out - self.redeemed - self.expired
        return self.change - (explained - self.donated - self.fees)


@dataclass(slots=True)
class CurrencyDays:
    """One currency over a period: the movement of each day, and what members owned before."""

    currency: str
    period: Period
    opening: int = 0  # owned at the start of the first day
    opening_reserved: int = 0
    days: dict[int, Movement] = field(default_factory=dict)

    def day(self, ordinal: int) -> Movement:
        return self.days.get(ordinal) or Movement()

    def series(self, name: str) -> list[int]:
        """One figure of every day of the period (0 on days without flows)."""
        return [getattr(self.day(d), name) for d in self.period.ordinals]

    def outstanding(self) -> list[int]:
        """What members owned at the end of each day."""
        out, level = [], self.opening
        for d in self.period.ordinals:
            level += self.day(d).change
            out.append(level)
        return out

    def total(self) -> Movement:
        whole = Movement()
        for m in self.days.values():
            whole.merge(m)
        return whole

    @property
    def closing(self) -> int:
        return self.opening + self.total().change


def by_currency(flows: Iterable[Flow], period: Period) -> dict[str, CurrencyDays]:
    """Flows gathered per currency and day; flows before the period make its opening balance
    (flows after it are left out)."""
    out: dict[str, CurrencyDays] = {}
    first = period.first.toordinal()
    for f in flows:
        cd = out.get(f.currency)
        if cd is None:
            cd = out[f.currency] = CurrencyDays(f.currency, period)
        if f.day < first:
            before = Movement()
            before.add(f.src, f.dst, f.amount)
            cd.opening += before.change
            cd.opening_reserved += before.reserved_change
        elif f.day in period:
            m = cd.days.get(f.day)
            if m is None:
                m = cd.days[f.day] = Movement()
            m.add(f.src, f.dst, f.amount)
    return out


def owned(flows: Iterable[Flow]) -> dict[str, tuple[int, int]]:
    """What members own of each currency after all these flows: (total, reserved part)."""
    out: dict[str, Movement] = {}
    for f in flows:
        out.setdefault(f.currency, Movement()).add(f.src, f.dst, f.amount)
    return {c: (m.change, m.reserved_change) for c, m in out.items()}


def earned_by(flows: Iterable[Flow], period: Period, award_kind: str | None = None) -> dict[str, tuple[int, int]]:
    """Earnings in the period per rule (or task, badge...): (entries, amount), by award key.

    With `award_kind` (`task`), only those awards, keyed by their key alone."""
    out: dict[str, tuple[int, int]] = {}
    for f in flows:
        if f.kind != "earn" or not f.award or f.day not in period:
            continue
        kind, _, key = f.award.partition(":")
        if award_kind is not None:
            if kind != award_kind:
                continue
        else:
            key = f.award
        n, amount = out.get(key, (0, 0))
        out[key] = (n + f.entries, amount + f.amount)
    return out


# --- derived figures ------------------------------------------------------------------------
def burn_rate(movement: Movement) -> Decimal | None:
    """(redeemed + expired) / issued over the same days; None when nothing was issued."""
    if movement.issued <= 0:
        return None
    return Decimal(movement.redeemed + movement.expired) / Decimal(movement.issued)


def percent(ratio: Decimal | None) -> str:
    """A ratio as operators read it: `42.5 %` (half-even to one decimal), a dash for none."""
    if ratio is None:
        return "–"
    return f"{(ratio * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN)} %"


def liability(owned_minor: int, currency: Currency) -> Decimal | None:
    """What members' holdings of a currency are worth in money (to the cent, half-even)."""
    if currency.money_value is None:
        return None
    value = from_minor(owned_minor, currency.decimals) * currency.money_value
    return value.quantize(MONEY, rounding=ROUND_HALF_EVEN)


def rate(count: int, base: int) -> Decimal | None:
    """`count` per member of `base` (two decimals); None when there is no one to count."""
    if base <= 0:
        return None
    return (Decimal(count) / Decimal(base)).quantize(MONEY, rounding=ROUND_HALF_EVEN)


def direction(ladder: Sequence[str], before: str | None, after: str | None) -> int:
    """+1 for a move up the ladder, -1 down, 0 sideways (no tier or an unknown one is lowest)."""
    rank = {key: i for i, key in enumerate(ladder)}
    a, b = rank.get(before or "", -1), rank.get(after or "", -1)
    return (b > a) - (b < a)


def tier_moves(rows: Iterable[tuple[int, str, str, int]], ladder: Sequence[str]) -> dict[int, tuple[int, int]]:
    """Per day, how many members moved up and down: rows are (day, from tier, to tier, count)."""
    out: dict[int, tuple[int, int]] = {}
    for day, before, after, n in rows:
        step = direction(ladder, before or None, after or None)
        if step == 0:
            continue
        up, down = out.get(day, (0, 0))
        out[day] = (up + n, down) if step > 0 else (up, down + n)
    return out


def daily(values: Mapping[int, int], period: Period) -> list[int]:
    """A value for every day of the period, 0 where there is none."""
    return [values.get(d, 0) for d in period.ordinals]
