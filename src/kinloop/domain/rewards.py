"""Rewards of the points mall: their definition, checks, price at a moment and who may redeem.

Rewards live in the database, not in the program file: operators change stock and prices
daily, and a program version per price change would bury the program's real history. They
are still checked against the active program (the currency must be a spendable one, tier
gates must name tiers of its ladder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from kinloop.domain.amounts import MAX_MINOR, to_minor
from kinloop.domain.errors import InvalidInput, Issue
from kinloop.domain.program import PERIODS, Period, Program

RewardKind = Literal["physical", "digital", "service"]
REWARD_KINDS: tuple[RewardKind, ...] = ("physical", "digital", "service")
MAX_QUANTITY = 100  # per order: a mall order is a basket of a few items, not a bulk transfer


@dataclass(frozen=True, slots=True)
class Promo:
    """A promotional price in force from `starts_at` (inclusive) to `ends_at` (exclusive)."""

    starts_at: datetime
    ends_at: datetime
    price: int  # minor units of the reward's currency

    def covers(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` units per member per `period`."""

    count: int
    period: Period


@dataclass(frozen=True, slots=True)
class Reward:
    key: str
    name: str
    currency: str
    price: int  # minor units of `currency`
    kind: RewardKind = "physical"
    supplier: str | None = None  # None: the program's own; else the external supplier's name
    cash: Decimal | None = None  # points + cash: the cash part, collected by the brand
    cash_currency: str | None = None
    stock: int | None = None  # None: unlimited
    sold: int = 0
    limit: Limit | None = None
    tiers: tuple[str, ...] = ()  # empty: every member; else only members in one of these tiers
    promos: tuple[Promo, ...] = ()
    category: str | None = None
    image_url: str | None = None
    description: str | None = None
    active: bool = True
    hidden: bool = False  # not listed to members, but orderable (a link, a campaign page)
    uses_codes: bool = False  # digital: each unit issues one code of the uploaded pool

    @property
    def left(self) -> int | None:
        """Units still for sale; None when unlimited."""
        return None if self.stock is None else max(self.stock - self.sold, 0)


@dataclass(frozen=True, slots=True)
class Price:
    """What one unit costs at a moment: points, optional cash, and whether a promo set it."""

    points: int
    cash: Decimal | None
    promo: Promo | None

    @property
    def on_sale(self) -> bool:
        return self.promo is not None


def price_at(reward: Reward, now: datetime) -> Price:
    """The unit price at `now`: the lowest promotional price in force, else the regular one."""
    running = [p for p in reward.promos if p.covers(now)]
    best = min(running, key=lambda p: (p.price, p.starts_at), default=None)
    if best is None or best.price >= reward.price:
        return Price(reward.price, reward.cash, None)
    return Price(best.price, reward.cash, best)


def check_reward(reward: Reward, program: Program) -> list[Issue]:
    """Every problem of a reward against the program, each with its field and reason."""
    issues: list[Issue] = []
    currency = program.currencies.get(reward.currency)
    if currency is None:
        known = ", ".join(program.currencies)
        issues.append(Issue("currency", f"unknown currency {reward.currency!r} (this program has: {known})"))
    elif not currency.spendable:
        issues.append(
            Issue("currency", f"{currency.name} is a growth currency: it qualifies for tiers and is never spent")
        )
    if not 0 < reward.price <= MAX_MINOR:
        issues.append(Issue("price", f"must be greater than 0, got {reward.price}"))
    issues += _check_cash(reward)
    if reward.stock is not None and not 0 <= reward.stock <= MAX_MINOR:
        issues.append(Issue("stock", f"must be 0 or more (leave it out for unlimited), got {reward.stock}"))
    if reward.limit is not None:
        if reward.limit.count < 1:
            issues.append(Issue("limit.count", f"must be 1 or more, got {reward.limit.count}"))
        if reward.limit.period not in PERIODS:
            issues.append(Issue("limit.period", f"must be one of {', '.join(PERIODS)}, got {reward.limit.period!r}"))
    issues += _check_tiers(reward.tiers, program)
    for i, promo in enumerate(reward.promos):
        if not 0 < promo.price <= MAX_MINOR:
            issues.append(Issue(f"promos[{i}].price", f"must be greater than 0, got {promo.price}"))
        if promo.ends_at <= promo.starts_at:
            issues.append(Issue(f"promos[{i}].ends_at", "must be after starts_at"))
    if reward.kind not in REWARD_KINDS:
        issues.append(Issue("kind", f"must be one of {', '.join(REWARD_KINDS)}, got {reward.kind!r}"))
    if reward.uses_codes and reward.kind != "digital":
        issues.append(Issue("uses_codes", "only digital rewards issue codes"))
    return issues


def _check_cash(reward: Reward) -> list[Issue]:
    if reward.cash is None:
        if reward.cash_currency is not None:
            return [Issue("cash", "cash_currency is given but cash is not")]
        return []
    issues = []
    if not reward.cash.is_finite() or reward.cash <= 0:
        issues.append(Issue("cash", f"must be greater than 0 (leave it out for points only), got {reward.cash}"))
    code = reward.cash_currency or ""
    if not (len(code) == 3 and code.isalpha() and code.isupper()):
        issues.append(Issue("cash_currency", f"an ISO 4217 code such as EUR is required with cash, got {code!r}"))
    return issues


def _check_tiers(tiers: Sequence[str], program: Program) -> list[Issue]:
    if not tiers:
        return []
    if program.ladder is None:
        return [Issue("tiers", "this program has no tiers to gate a reward by")]
    known = [t.key for t in program.ladder.tiers]
    return [
        Issue(f"tiers[{i}]", f"unknown tier {key!r} (this program has: {', '.join(known)})")
        for i, key in enumerate(tiers)
        if key not in known
    ]


def may_redeem(reward: Reward, tier: str | None) -> bool:
    """Whether a member in `tier` passes the reward's tier gate."""
    return not reward.tiers or tier in reward.tiers


def tier_names(program: Program, keys: Sequence[str]) -> list[str]:
    names: Mapping[str, str] = {t.key: t.name for t in program.ladder.tiers} if program.ladder else {}
    return [names.get(k, k) for k in keys]


def period_start(period: Period, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The start of the limit period containing `now`, where the program lives (None: lifetime)."""
    day = now.astimezone(tz).date()
    if period == "lifetime":
        return None
    if period == "week":
        day = day - timedelta(days=day.weekday())
    elif period == "month":
        day = date(day.year, day.month, 1)
    return datetime.combine(day, time(), tzinfo=tz)


def parse_reward(key: str, fields: Mapping[str, Any], program: Program) -> tuple[Reward | None, list[Issue]]:
    """A reward from plain fields (amounts in the currency's units, times as ISO 8601 with an
    offset), checked against the program; every problem is returned, each with its field."""
    issues: list[Issue] = []
    currency = program.currencies.get(str(fields.get("currency", "")))
    decimals = currency.decimals if currency else 0

    def minor(value: Any, path: str) -> int:
        try:
            return to_minor(value, decimals, field=path)
        except InvalidInput as exc:
            issues.append(Issue(path, exc.detail))
            return 0

    def stamp(value: Any, path: str) -> datetime:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            issues.append(Issue(path, f"{value!r} is not an ISO 8601 date-time"))
            return datetime.min.replace(tzinfo=UTC)
        if parsed.tzinfo is None:
            issues.append(Issue(path, f"{value!r} has no UTC offset"))
            return parsed.replace(tzinfo=UTC)
        return parsed

    promos = []
    for i, p in enumerate(fields.get("promos") or ()):
        if not isinstance(p, Mapping):
            issues.append(Issue(f"promos[{i}]", "expected starts_at, ends_at and price"))
            continue
        starts = stamp(p.get("starts_at"), f"promos[{i}].starts_at")
        ends = stamp(p.get("ends_at"), f"promos[{i}].ends_at")
        promos.append(Promo(starts, ends, minor(p.get("price"), f"promos[{i}].price")))
    limit = _limit(fields.get("limit"), issues)
    stock = fields.get("stock")
    if stock is not None and (isinstance(stock, bool) or not isinstance(stock, int)):
        issues.append(Issue("stock", f"must be a whole number (leave it out for unlimited), got {stock!r}"))
        stock = None
    cash = fields.get("cash")
    cash_value: Decimal | None = None
    if cash is not None:
        try:
            cash_value = Decimal(str(cash))
        except ArithmeticError:
            issues.append(Issue("cash", f"{cash!r} is not a number"))
    reward = Reward(
        key=key,
        name=str(fields.get("name") or key),
        currency=str(fields.get("currency", "")),
        price=minor(fields.get("price"), "price"),
        kind=fields.get("kind") or "physical",
        supplier=fields.get("supplier"),
        cash=cash_value,
        cash_currency=fields.get("cash_currency"),
        stock=stock,
        limit=limit,
        tiers=tuple(fields.get("tiers") or ()),
        promos=tuple(promos),
        category=fields.get("category"),
        image_url=fields.get("image_url"),
        description=fields.get("description"),
        active=bool(fields.get("active", True)),
        hidden=bool(fields.get("hidden", False)),
        uses_codes=bool(fields.get("uses_codes", False)),
    )
    issues += check_reward(reward, program)
    return (None if issues else reward), issues


def _limit(given: Any, issues: list[Issue]) -> Limit | None:
    if given is None:
        return None
    count = given.get("count") if isinstance(given, Mapping) else None
    if isinstance(count, bool) or not isinstance(count, int):
        issues.append(Issue("limit.count", f"must be a whole number, got {count!r}"))
        return None
    return Limit(count, given.get("period", "lifetime"))
