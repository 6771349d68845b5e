"""A program in its compiled form: what the engine runs, built from a validated program file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from kinloop.domain.amounts import Rounding, from_minor

if TYPE_CHECKING:
    from kinloop.domain.badges import Badge
    from kinloop.domain.counters import CounterNeeds
    from kinloop.domain.envelopes import EnvelopePolicy
    from kinloop.domain.tasks import Task

CurrencyKind = Literal["growth", "points"]
ExpiryKind = Literal["never", "days", "months", "end_of_month", "end_of_year"]
AttributeType = Literal["integer", "decimal", "string", "boolean", "timestamp"]
Period = Literal["day", "week", "month", "lifetime"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "lifetime")


@dataclass(frozen=True, slots=True)
class Expiry:
    """When earned amounts expire: never; N days or N calendar months after earning; or at the
    end of the Nth calendar month or year after the one they were earned in."""

    kind: ExpiryKind = "never"
    n: int = 0


@dataclass(frozen=True, slots=True)
class Pending:
    """Earned amounts are held for `days`, or until an event of type `until_event` arrives
    whose attribute `key` equals the earning event's, whichever comes first."""

    days: int | None = None
    until_event: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Currency:
    key: str
    name: str
    unit: str
    decimals: int
    kind: CurrencyKind
    expiry: Expiry = Expiry()
    allow_negative: bool = False
    transferable: bool = False
    pending: Pending | None = None
    money_value: Decimal | None = None  # one whole unit's worth in the program's money currency

    @property
    def spendable(self) -> bool:
        return self.kind == "points"

    def display(self, minor: int) -> str:
        """An amount in the program's words: `12 Beans`, `3 ★`."""
        return f"{from_minor(minor, self.decimals):,} {self.unit}"


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    name: str
    type: AttributeType
    required: bool = True


@dataclass(frozen=True, slots=True)
class EventType:
    key: str
    attributes: Mapping[str, AttributeSpec]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportional award: `amount` for every `per` of the event's `attribute`."""

    attribute: str
    per: Decimal
    amount: Decimal
    rounding: Rounding = "full"


@dataclass(frozen=True, slots=True)
class Limits:
    """Maxima per member and period; amounts in minor units, or counts of awards."""

    day: int | None = None
    week: int | None = None
    month: int | None = None
    lifetime: int | None = None

    pairs: tuple[tuple[Period, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: the engine asks for these for every rule of every event.
        given: list[tuple[Period, int | None]] = [
            ("day", self.day),
            ("week", self.week),
            ("month", self.month),
            ("lifetime", self.lifetime),
        ]
        object.__setattr__(self, "pairs", tuple((p, v) for p, v in given if v is not None))

    def items(self) -> tuple[tuple[Period, int], ...]:
        return self.pairs


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Condition:
    """A CEL expression compiled once per program version."""

    source: str
    compiled: Any
    uses_member: bool


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    name: str
    event_type: str
    currency: str
    amount: int = 0  # fixed award in minor units
    rate: Rate | None = None
    condition: Condition | None = None
    cap: Limits = NO_LIMITS  # amounts, in minor units of `currency`
    limit: Limits = NO_LIMITS  # number of awards
    first_time_bonus: int = 0
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    pending: Pending | None = None
    budget: int | None = None  # the most this rule gives all members together, in minor units

    periods: tuple[Period, ...] = field(init=False, repr=False, compare=False)
    """The periods whose usage this rule must track."""

    def __post_init__(self) -> None:
        used = {p for p, _ in self.cap.pairs} | {p for p, _ in self.limit.pairs}
        object.__setattr__(self, "periods", tuple(p for p in PERIODS if p in used))


WindowKind = Literal["lifetime", "rolling", "calendar_year", "anniversary_year"]
Cadence = Literal["realtime", "monthly", "yearly", "anniversary"]


@dataclass(frozen=True, slots=True)
class PaidTerm:
    """A tier that can be bought: for `term_days`, through events of type `event` or the API."""

    term_days: int
    event: str | None = None
    remind_days: int = 7


@dataclass(frozen=True, slots=True)
class Reward:
    """A fixed amount of a currency given for a badge level or a completed task."""

    currency: str
    amount: int  # minor units


@dataclass(frozen=True, slots=True)
class Tier:
    key: str
    name: str
    threshold: int | None  # minor units of the ladder's currency; None: never reached by earning
    invitation_only: bool = False
    paid: PaidTerm | None = None
    # Multiplies what earning rules give its members in points currencies (not growth: a
    # tier that multiplied its own qualification would feed on itself).
    multiplier: Decimal = Decimal(1)

    @property
    def earnable(self) -> bool:
        return self.threshold is not None and not self.invitation_only


@dataclass(frozen=True, slots=True)
class Window:
    """Where qualification is counted: all time, the last `days` days, the calendar year, or the
    year from the member's anniversary (join date)."""

    kind: WindowKind = "lifetime"
    days: int = 0


LIFETIME = Window()


@dataclass(frozen=True, slots=True)
class Ladder:
    """Tiers ordered from lowest to highest, qualified by a growth currency.

    Upgrades happen at once; demotions only at a review (`cadence`), after `grace_days`, by at
    most one level when `one_level_drop`; `warn_days` before a scheduled demotion a
    `tier.will_change` message is written."""

    currency: str
    window: Window
    tiers: tuple[Tier, ...]
    cadence: Cadence = "realtime"
    grace_days: int = 0
    one_level_drop: bool = False
    warn_days: int = 0

    def index(self, key: str | None) -> int:
        """Position of a tier on the ladder; -1 for none or an unknown key."""
        for i, t in enumerate(self.tiers):
            if t.key == key:
                return i
        return -1

    def get(self, key: str | None) -> Tier | None:
        i = self.index(key)
        return self.tiers[i] if i >= 0 else None


PrivilegeKind = Literal["preferential", "function", "care", "service"]
QuotaPeriod = Literal["day", "week", "month", "year"]
PrivilegeWindow = Literal["always", "birthday_month"]


@dataclass(frozen=True, slots=True)
class Quota:
    """At most `uses` uses per `per` period (in the program's time zone); `per=None`: ever."""

    uses: int
    per: QuotaPeriod | None = None


@dataclass(frozen=True, slots=True)
class Privilege:
    """A benefit held by members of some tiers; `quota=None` means unlimited use."""

    key: str
    name: str
    kind: PrivilegeKind
    tiers: tuple[str, ...]
    quota: Quota | None = None
    window: PrivilegeWindow = "always"
    description: str = ""


BoardPeriod = Literal["day", "week", "month", "all_time"]


@dataclass(frozen=True, slots=True)
class Leaderboard:
    """Members ranked per period by what they earned of `currency`, or how many `event`s they had;
    with `group_by`, separately for each value of that profile attribute (a city, a club)."""

    key: str
    name: str
    period: BoardPeriod
    currency: str | None = None
    event: str | None = None
    unit: str = ""  # for event counts; `unit_one` for a count of 1
    unit_one: str = ""
    group_by: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A fixed amount of a currency, in minor units."""

    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class Milestone:
    """A bonus for reaching `days` consecutive check-in days; `once`: only the first time ever."""

    days: int
    grant: Grant
    once: bool = False


@dataclass(frozen=True, slots=True)
class Checkin:
    """Daily check-in: which event type it is, the reward ladder and what else it gives."""

    event_type: str
    currency: str
    ladder: tuple[int, ...]  # minor units for day 1, 2, ... of a streak
    after_ladder: Literal["cycle", "hold"] = "cycle"
    milestones: tuple[Milestone, ...] = ()
    first_day_gift: Grant | None = None
    makeup_cards_per_month: int = 0
    counts_toward_tiers: bool = True


@dataclass(frozen=True, slots=True)
class MemberDay:
    """A recurring day in the program's time zone: a weekday (0 = Monday) or a day of the month."""

    weekday: int | None = None
    day_of_month: int | None = None


@dataclass(frozen=True, slots=True)
class CampaignBonus:
    """A fixed award for an event type while the campaign runs (`condition` over event and member)."""

    event_type: str
    grant: Grant
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A time-boxed change to earning: a multiplier on rules' awards and/or a bonus for a behaviour."""

    key: str
    name: str
    starts_at: datetime | None = None  # inclusive
    ends_at: datetime | None = None  # exclusive
    member_day: MemberDay | None = None
    multiplier: Decimal | None = None
    bonus: CampaignBonus | None = None
    tiers: frozenset[str] = frozenset()  # empty: members of any tier, or none
    condition: Condition | None = None  # over `member`
    rules: frozenset[str] = frozenset()  # empty: every rule
    currencies: frozenset[str] = frozenset()  # empty: every currency
    budget: int | None = None  # minor units of its one currency
    budget_currency: str | None = None


Stacking = Literal["multiply", "add", "highest"]


@dataclass(frozen=True, slots=True)
class Multipliers:
    """How tier and campaign multipliers combine, and the most they may multiply by together."""

    stacking: Stacking = "multiply"
    cap: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Program:
    key: str
    name: str
    timezone: ZoneInfo
    currencies: Mapping[str, Currency]
    event_types: Mapping[str, EventType]
    rules: tuple[Rule, ...]
    ladder: Ladder | None
    rules_by_type: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    badges: tuple[Badge, ...] = ()
    tasks: tuple[Task, ...] = ()
    counters: CounterNeeds | None = None  # the counters badges read; None when no badge needs any
    envelopes: EnvelopePolicy | None = None  # None: the program sends no red envelopes
    privileges: tuple[Privilege, ...] = ()
    leaderboards: tuple[Leaderboard, ...] = ()
    checkin: Checkin | None = None
    campaigns: tuple[Campaign, ...] = ()
    multipliers: Multipliers = Multipliers()
    money_currency: str | None = None  # ISO 4217 code that currencies' `money_value` is in

    boosted: bool = field(init=False, repr=False, compare=False)
    """Whether any award can be multiplied or budgeted: when not, earning costs nothing more."""
    budget_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tiers = self.ladder.tiers if self.ladder else ()
        boosted = any(t.multiplier != 1 for t in tiers) or any(c.multiplier is not None for c in self.campaigns)
        budgets = [budget_key("rule", r.key) for r in self.rules if r.budget is not None]
        budgets += [budget_key("campaign", c.key) for c in self.campaigns if c.budget is not None]
        object.__setattr__(self, "boosted", boosted or bool(budgets))
        object.__setattr__(self, "budget_keys", tuple(sorted(budgets)))

    def rule(self, key: str) -> Rule | None:
        for r in self.rules:
            if r.key == key:
                return r
        return None

    def campaign(self, key: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.key == key), None)

    def tier(self, key: str | None) -> Tier | None:
        if key is None or self.ladder is None:
            return None
        return next((t for t in self.ladder.tiers if t.key == key), None)


def budget_key(kind: Literal["rule", "campaign"], key: str) -> str:
    """The name of a budget row: `rule:<key>` or `campaign:<key>`."""
    return f"{kind}:{key}"
