"""The program file format, as Pydantic models (its JSON Schema is `kinloop schema`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Positive = Annotated[Decimal, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpirySpec(Strict):
    """Exactly one of: `never: true`, `days`, `months`, `end_of_month`, `end_of_year`."""

    never: bool | None = None
    days: Annotated[int, Field(gt=0)] | None = Field(None, description="N days after earning")
    months: Annotated[int, Field(gt=0)] | None = Field(None, description="N calendar months after earning")
    end_of_month: Annotated[int, Field(ge=0)] | None = Field(
        None, description="at the end of the Nth calendar month after the month of earning"
    )
    end_of_year: Annotated[int, Field(ge=0)] | None = Field(
        None, description="at the end of the Nth calendar year after the year of earning"
    )

    @model_validator(mode="before")
    @classmethod
    def _never_shorthand(cls, data: object) -> object:
        return {"never": True} if data == "never" else data

    @model_validator(mode="after")
    def _exactly_one(self) -> ExpirySpec:
        chosen = [k for k, v in self.model_dump().items() if v not in (None, False)]
        if len(chosen) != 1:
            raise ValueError("give exactly one of never, days, months, end_of_month, end_of_year")
        return self


class PendingSpec(Strict):
    """Hold earned amounts (visible, not spendable) for `days`, or until a release event."""

    days: Annotated[int, Field(gt=0)] | None = None
    until_event: Key | None = Field(None, description="event type that releases the amount")
    key: str | None = Field(None, description="attribute shared by the earning and release events")

    @model_validator(mode="after")
    def _something(self) -> PendingSpec:
        if self.days is None and self.until_event is None:
            raise ValueError("give days, until_event, or both")
        if self.until_event is not None and not self.key:
            raise ValueError("until_event needs key: the attribute that links the two events")
        return self


class CurrencySpec(Strict):
    key: Key
    name: str = Field(min_length=1, max_length=200, description="display name, e.g. Stars")
    unit: str | None = Field(
        None, max_length=32, description="symbol or unit shown after amounts, e.g. ★; defaults to name"
    )
    decimals: Annotated[int, Field(ge=0, le=6)] = 0
    kind: Literal["growth", "points"]
    expiry: ExpirySpec | None = None
    allow_negative: bool = False
    transferable: bool = False
    pending: PendingSpec | None = None
    money_value: Positive | None = Field(
        None,
        description='what one whole unit is worth in the program\'s `money_currency` (e.g. "0.01"), for the '
        "outstanding liability on the dashboard; points currencies only",
    )


AttributeTypeName = Literal["integer", "decimal", "string", "boolean", "timestamp"]


class AttributeSpecModel(Strict):
    type: AttributeTypeName
    required: bool = True


_TYPE_NAMES = ("integer", "decimal", "string", "boolean", "timestamp")


def _attribute_shorthand(value: object) -> object:
    # `amount: decimal` is short for `amount: {type: decimal}`; checked here so that a wrong
    # name is one problem at the attribute, not one per way of writing it.
    if isinstance(value, str):
        if value not in _TYPE_NAMES:
            raise ValueError(f"unknown type {value!r}: use one of {', '.join(_TYPE_NAMES)}")
        return {"type": value}
    return value


AttributeDeclaration = Annotated[AttributeSpecModel, BeforeValidator(_attribute_shorthand)]


class EventTypeSpec(Strict):
    key: Key
    description: str = ""
    attributes: dict[Key, AttributeDeclaration] = Field(
        default_factory=dict, description="name: type, or name: {type, required}"
    )


class RateSpec(Strict):
    """`amount` for every `per` of the event attribute `attribute`."""

    attribute: str = "amount"
    per: Positive = Decimal(1)
    amount: Positive = Decimal(1)
    rounding: Literal["full", "down", "up", "half_up", "half_even"] = Field(
        "full",
        description="full: only whole blocks of `per` count; the others round the product",
    )


class PeriodLimits(Strict):
    per_day: Positive | None = None
    per_week: Positive | None = None
    per_month: Positive | None = None
    lifetime: Positive | None = None


class RuleSpec(Strict):
    key: Key
    name: str | None = Field(None, max_length=200)
    event: Key = Field(description="event type this rule listens to")
    currency: Key
    amount: Positive | None = Field(None, description="fixed award")
    rate: RateSpec | None = Field(None, description="proportional award")
    condition: str | None = Field(None, description="CEL over `event` and `member`")
    cap: PeriodLimits | None = Field(None, description="most this rule gives a member per period")
    limit: PeriodLimits | None = Field(None, description="most awards of this rule per member and period")
    first_time_bonus: Positive | None = None
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    pending: PendingSpec | None = None
    budget: Positive | None = Field(None, description="the most this rule gives all members together")

    @model_validator(mode="after")
    def _amount_or_rate(self) -> RuleSpec:
        if (self.amount is None) == (self.rate is None):
            raise ValueError("give exactly one of amount (fixed) or rate (proportional)")
        if self.valid_from and self.valid_to and self.valid_from >= self.valid_to:
            raise ValueError("valid_from must be before valid_to")
        return self


class PaidSpec(Strict):
    """A tier members can buy for a term (the "399 membership")."""

    term_days: Annotated[int, Field(gt=0, le=3660)] = Field(description="length of one purchase")
    event: Key | None = Field(None, description="event type whose events buy one term")
    remind_days: Annotated[int, Field(ge=0, le=365)] = Field(
        7, description="`tier.expiring` message this many days before the term ends (0: none)"
    )


class TierSpec(Strict):
    key: Key
    name: str = Field(min_length=1, max_length=200)
    threshold: Annotated[Decimal, Field(ge=0)] | None = Field(
        None, description="qualification value that earns the tier; omit for paid-only or invitation-only tiers"
    )
    invitation_only: bool = Field(False, description="never reached by threshold, only set by an operator")
    paid: PaidSpec | None = None
    multiplier: Annotated[Decimal, Field(gt=0, le=100)] | None = Field(
        None, description="multiplies earning rules' awards in points currencies for members of this tier (e.g. 1.2)"
    )


class RollingWindowSpec(Strict):
    rolling_days: Annotated[int, Field(gt=0, le=3660)] = Field(description="the last N days, today included")


WindowName = Literal["lifetime", "calendar_year", "anniversary_year"]


class LadderSpec(Strict):
    currency: Key = Field(description="growth currency that qualifies members")
    window: WindowName | RollingWindowSpec = Field(
        "lifetime",
        description="qualification window: lifetime, calendar_year, anniversary_year (from the member's "
        "join date) or {rolling_days: N}",
    )
    cadence: Literal["realtime", "monthly", "yearly", "anniversary"] = Field(
        "realtime",
        description="when members who fell below their tier are reviewed: at once, on the 1st of each month, "
        "on 1 January, or on the anniversary of reaching the tier",
    )
    grace_days: Annotated[int, Field(ge=0, le=3660)] = Field(
        0, description="days after a failed review before demotion"
    )
    one_level_drop: bool = Field(False, description="drop at most one tier per review")
    warn_days: Annotated[int, Field(ge=0, le=365)] = Field(
        0, description="`tier.will_change` message this many days before a scheduled demotion (0: none)"
    )
    tiers: list[TierSpec] = Field(min_length=1, description="lowest first")


class DailyEnvelopeSpec(Strict):
    """An envelope sent every day while a condition over the member holds."""

    key: Key
    name: str = Field(min_length=1, max_length=200, description="shown to the member, e.g. Waiting for delivery")
    amount: Positive
    condition: str = Field(description="CEL over `member`, e.g. member.profile.waiting_for_delivery == true")


class EnvelopesSpec(Strict):
    """Red envelopes: members send a transferable currency to each other; the program sends some itself."""

    currency: Key = Field(description="a points currency marked transferable")
    daily_limit: Positive | None = Field(None, description="most a member sends per day")
    daily_count: Annotated[int, Field(gt=0)] | None = Field(None, description="most envelopes a member sends per day")
    fee_percent: Annotated[Decimal, Field(ge=0, lt=100)] = Field(
        Decimal(0), description="charged to the sender on top of the amount, rounded up"
    )
    min_share: Positive = Field(Decimal(1), description="smallest share of a group envelope")
    max_shares: Annotated[int, Field(gt=0, le=10000)] = 100
    birthday: Positive | None = Field(None, description="sent in the program's name on a member's birthday")
    daily: list[DailyEnvelopeSpec] = Field(default_factory=list)


class RewardSpec(Strict):
    """A fixed amount of a currency."""

    currency: Key
    amount: Positive


class GrantSpec(Strict):
    currency: Key
    amount: Positive


class BadgeLevelSpec(Strict):
    """One level of a badge: its own `criterion`, or a `threshold` of the badge's `counter`."""

    key: Key = Field(description="e.g. bronze, silver, gold")
    name: str | None = Field(None, max_length=200, description="shown as `Helpful (Silver)`; defaults to the key")
    criterion: str | None = Field(None, description="CEL over `member` counters")
    threshold: Annotated[Decimal, Field(gt=0)] | None = Field(None, description="the badge's counter reaches this")
    reward: RewardSpec | None = None

    @model_validator(mode="after")
    def _criterion_or_threshold(self) -> BadgeLevelSpec:
        if (self.criterion is None) == (self.threshold is None):
            raise ValueError("give exactly one of criterion or threshold")
        return self


class BadgeSpec(Strict):
    """A medal for a criterion over the member's counters: one-time (`criterion`) or with `levels`
    earned in order. Criteria read member.counters.<type>.<day|week|month|lifetime>,
    member.totals.<type>.<attribute>.<period>, member.streaks.<type> and member.firsts.<type>."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=1000)
    criterion: str | None = Field(None, description="CEL over `member`, for a one-time badge")
    reward: RewardSpec | None = Field(None, description="for a one-time badge")
    counter: str | None = Field(
        None, description="what level thresholds count, e.g. counters.answer.lifetime or streaks.check_in"
    )
    levels: list[BadgeLevelSpec] | None = Field(None, min_length=1, description="in order, lowest first")

    @model_validator(mode="after")
    def _one_time_or_levels(self) -> BadgeSpec:
        if (self.criterion is None) == (self.levels is None):
            raise ValueError("give exactly one of criterion (a one-time badge) or levels")
        if self.levels is not None and self.reward is not None:
            raise ValueError("a badge with levels has a reward per level, not one for the badge")
        return self


class TaskSpec(Strict):
    """Something to do for a reward: `event` (a count of events of a type, optionally matching a
    condition, within each `every` period) or `profile` (profile fields set, once)."""

    key: Key
    name: str = Field(min_length=1, max_length=200, description='in the member\'s words: "Comment 3 times today"')
    every: Literal["once", "day", "week", "month"] = "once"
    event: Key | None = Field(None, description="event type counted")
    target: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    condition: str | None = Field(None, description="CEL over `event` and `member`: which events count")
    profile: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, min_length=1, description="profile fields (or attributes) that must all be set"
    )
    reward: RewardSpec | None = None

    @model_validator(mode="after")
    def _event_or_profile(self) -> TaskSpec:
        if (self.event is None) == (self.profile is None):
            raise ValueError("give exactly one of event or profile")
        if self.profile is not None:
            if self.every != "once":
                raise ValueError("a profile task is done once")
            if self.condition is not None or self.target != 1:
                raise ValueError("condition and target belong to event tasks")
        return self


class MilestoneSpec(Strict):
    """A bonus for reaching `days` consecutive check-in days (each time a streak reaches it, or `once`)."""

    days: Annotated[int, Field(gt=0, le=100_000)]
    currency: Key
    amount: Positive
    once: bool = False


class CheckinSpec(Strict):
    """Daily check-in, counted in the member's time zone (profile `timezone`, else the program's)."""

    event: Key = Field(description="the event type that is a check-in")
    currency: Key = Field(description="currency of the reward ladder")
    ladder: list[Positive] = Field(min_length=1, max_length=366, description="reward on day 1, 2, ... of a streak")
    after_ladder: Literal["cycle", "hold"] = Field(
        "cycle", description="past the ladder's end: start it again, or keep giving its last step"
    )
    milestones: list[MilestoneSpec] = Field(default_factory=list)
    first_day_gift: GrantSpec | None = Field(None, description="given with the member's first check-in ever")
    makeup_cards_per_month: Annotated[int, Field(ge=0, le=31)] = Field(
        0, description="cards a member may use each month, each filling one missed day"
    )
    counts_toward_tiers: bool = Field(True, description="whether check-in awards qualify for tiers")


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class MemberDaySpec(Strict):
    """Exactly one of: `weekday` (every week) or `day_of_month` (every month), in the program's time zone."""

    weekday: Weekday | None = None
    day_of_month: Annotated[int, Field(ge=1, le=31)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MemberDaySpec:
        if (self.weekday is None) == (self.day_of_month is None):
            raise ValueError("give exactly one of weekday or day_of_month")
        return self


class BonusSpec(Strict):
    """A fixed award for an event type while the campaign runs."""

    event: Key
    currency: Key
    amount: Positive
    condition: str | None = Field(None, description="CEL over `event` and `member`")


class CampaignSpec(Strict):
    """A time-boxed change to earning: a window (`starts_at`..`ends_at`) and/or a member day."""

    key: Key
    name: str | None = Field(None, max_length=200)
    starts_at: AwareDatetime | None = Field(None, description="inclusive")
    ends_at: AwareDatetime | None = Field(None, description="exclusive")
    member_day: MemberDaySpec | None = None
    multiplier: Annotated[Decimal, Field(gt=0, le=100)] | None = Field(
        None, description="multiplies the awards of the rules (or currencies) it applies to"
    )
    bonus: BonusSpec | None = None
    tiers: list[Key] = Field(default_factory=list, description="only members of these tiers (default: all)")
    condition: str | None = Field(None, description="CEL over `member`: which members it targets")
    rules: list[Key] = Field(default_factory=list, description="rules it multiplies (default: all)")
    currencies: list[Key] = Field(default_factory=list, description="currencies it multiplies (default: all)")
    budget: Positive | None = Field(None, description="the most it gives all members together")

    @model_validator(mode="after")
    def _shape(self) -> CampaignSpec:
        if self.multiplier is None and self.bonus is None:
            raise ValueError("give a multiplier, a bonus, or both")
        if self.member_day is None and (self.starts_at is None or self.ends_at is None):
            raise ValueError("give starts_at and ends_at, or a member_day")
        if self.starts_at and self.ends_at and self.starts_at >= self.ends_at:
            raise ValueError("starts_at must be before ends_at")
        return self


class MultipliersSpec(Strict):
    """How tier and campaign multipliers combine: multiply them, add their extras, or keep the highest."""

    stacking: Literal["multiply", "add", "highest"] = "multiply"
    cap: Annotated[Decimal, Field(ge=1, le=100)] | None = Field(None, description="the most they multiply by in all")


class QuotaSpec(Strict):
    """At most `uses` uses per `per` (day, week, month, year in the program's time zone), or ever."""

    uses: Annotated[int, Field(gt=0)]
    per: Literal["day", "week", "month", "year"] | None = Field(None, description="omit: `uses` in all")


class PrivilegeSpec(Strict):
    """A benefit of some tiers: granted on entering one, withdrawn on leaving it."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    kind: Literal["preferential", "function", "care", "service"] = Field(
        description="preferential: coupon, discount, multiplier; function: a flag the app reads;"
        " care: e.g. a birthday gift; service: e.g. a VIP channel"
    )
    tiers: list[Key] = Field(min_length=1, description="keys of the tiers that hold it")
    single_use: bool = Field(False, description="usable once, ever")
    quota: QuotaSpec | None = Field(None, description="uses per period; omit both this and single_use: unlimited")
    window: Literal["always", "birthday_month"] = Field(
        "always", description="birthday_month: usable only in the month of the member's profile `birthday`"
    )

    @model_validator(mode="after")
    def _one_limit(self) -> PrivilegeSpec:
        if self.single_use and self.quota is not None:
            raise ValueError("give single_use or quota, not both")
        return self


class MeasureSpec(Strict):
    """Exactly one of: `currency` (amount earned of it) or `event` (number of events of that type)."""

    currency: Key | None = None
    event: Key | None = None
    unit: str | None = Field(None, max_length=32, description="for event counts, e.g. answers")
    unit_one: str | None = Field(None, max_length=32, description="the unit for a count of 1, e.g. answer")

    @model_validator(mode="after")
    def _exactly_one(self) -> MeasureSpec:
        if (self.currency is None) == (self.event is None):
            raise ValueError("give exactly one of currency or event")
        if self.currency is not None and (self.unit is not None or self.unit_one is not None):
            raise ValueError("unit is for event counts; currencies show their own unit")
        return self


class LeaderboardSpec(Strict):
    """Members ranked per period by a measure, over the whole program or per profile attribute."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    period: Literal["day", "week", "month", "all_time"]
    measure: MeasureSpec
    group_by: str | None = Field(
        None, min_length=1, max_length=64, description="profile attribute to rank within, e.g. city"
    )


class ProgramFile(Strict):
    """A kinloop program: currencies, event types, rules and the tier ladder."""

    key: Key
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field("UTC", description="IANA zone for days, weeks and months")
    money_currency: str | None = Field(
        None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of the money that currencies' `money_value` is in (e.g. EUR)",
    )
    currencies: list[CurrencySpec] = Field(min_length=1)
    event_types: list[EventTypeSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list)
    ladder: LadderSpec | None = None
    badges: list[BadgeSpec] = Field(default_factory=list)
    tasks: list[TaskSpec] = Field(default_factory=list)
    envelopes: EnvelopesSpec | None = None
    checkin: CheckinSpec | None = None
    campaigns: list[CampaignSpec] | None = None
    multipliers: MultipliersSpec | None = None
    privileges: list[PrivilegeSpec] = Field(default_factory=list)
    leaderboards: list[LeaderboardSpec] = Field(default_factory=list)
