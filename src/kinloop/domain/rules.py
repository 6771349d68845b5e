"""The rule engine: (program, member state, event, now) -> evaluation. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import cel

from kinloop.domain.amounts import round_minor, scale
from kinloop.domain.campaigns import Factor, active_campaigns, combine, covers, is_active, scaled, take, targets
from kinloop.domain.checkin import NO_CHECKINS, CheckinResult, CheckinState, check_in, member_zone
from kinloop.domain.events import Event
from kinloop.domain.periods import local_day, next_streak, period_key, streak_on
from kinloop.domain.program import Campaign, Currency, Multipliers, Pending, Program, Rule, budget_key

Status = Literal[
    "awarded",
    "capped",
    "cap_reached",
    "limit_reached",
    "condition_false",
    "condition_error",
    "not_yet_valid",
    "no_longer_valid",
    "zero",
    "missing_attribute",
    "budget_spent",
]
AwardKind = Literal[
    "rule", "first_time_bonus", "campaign_bonus", "checkin", "checkin_gift", "checkin_milestone", "badge", "task"
]


@dataclass(slots=True)
class Usage:
    """What a rule has given one member in one period."""

    amount: int = 0
    times: int = 0


@dataclass(slots=True)
class Activity:
    """A member's record of one event type: how many, the last local day, the day streak."""

    count: int = 0
    last_day: date | None = None
    streak: int = 0


@dataclass(frozen=True, slots=True)
class FirstAward:
    """The event that holds a rule's first-time bonus: the earliest by `occurred_at`."""

    occurred_at: datetime
    event_id: str

    def precedes(self, other: FirstAward) -> bool:
        return (self.occurred_at, self.event_id) < (other.occurred_at, other.event_id)


@dataclass(slots=True)
class MemberState:
    """What the engine knows of a member when an event arrives."""

    member_id: str
    tier: str | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)
    balances: Mapping[str, int] = field(default_factory=dict)
    activity: dict[str, Activity] = field(default_factory=dict)
    usage: dict[tuple[str, str], Usage] = field(default_factory=dict)
    firsts: dict[str, FirstAward] = field(default_factory=dict)
    checkin: CheckinState | None = None  # loaded only when the batch has check-ins


@dataclass(frozen=True, slots=True)
class Award:
    """What one rule gives for one event, before it becomes ledger entries."""

    rule: str
    currency: str
    amount: int
    kind: AwardKind = "rule"
    pending: Pending | None = None
    qualifies: bool = True  # False: a growth award that does not count towards tiers


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """Why a rule did or did not award: the answer to "why did I get these points?".

    `info` holds the facts behind the status (the cap and its period, the condition's error);
    `describe()` turns them into words only when someone asks, not on the ingestion path.
    """

    rule: str
    status: Status
    amount: int = 0
    bonus: int = 0
    info: tuple[Any, ...] = ()
    note: str = ""
    factors: tuple[str, ...] = ()  # why the amount was multiplied, e.g. "x2 Member day"
    multiplier: str = ""  # the total multiplier applied, as a decimal string ("" when none)

    def as_row(self) -> list[Any]:
        row: list[Any] = [self.rule, self.status, self.amount, self.bonus, list(self.info)]
        if self.note or self.factors:
            row.append(self.note)
        if self.factors:
            row += [list(self.factors), self.multiplier]
        return row

    @classmethod
    def from_row(cls, row: list[Any]) -> RuleOutcome:
        rule, status, amount, bonus, info, *rest = row
        note = rest[0] if rest else ""
        factors = tuple(rest[1]) if len(rest) > 1 else ()
        multiplier = rest[2] if len(rest) > 2 else ""
        return cls(rule, status, amount, bonus, tuple(info), note, factors, multiplier)


def describe(program: Program, outcome: RuleOutcome) -> str:
    """The outcome of a rule in the program's words."""
    rule = program.rule(outcome.rule)
    campaign = program.campaign(outcome.rule) if rule is None else None
    currency_key = rule.currency if rule else campaign.bonus.grant.currency if campaign and campaign.bonus else ""
    currency = program.currencies.get(currency_key)

    def amount(minor: int) -> str:
        return currency.display(minor) if currency else str(minor)

    s, info = outcome.status, outcome.info
    if s == "awarded":
        text = amount(outcome.amount) if outcome.amount else "nothing from the rule itself"
    elif s == "capped":
        base, period, cap = info
        text = f"{amount(outcome.amount)} of {amount(base)} ({period} cap of {amount(cap)})"
    elif s == "cap_reached":
        period, cap = info
        text = f"{period} cap of {amount(cap)} already reached"
    elif s == "limit_reached":
        period, limit = info
        text = f"at most {limit} award{'s' if limit != 1 else ''} per {period}; already given"
    elif s == "condition_false":
        text = f"condition is false: {rule.condition.source if rule and rule.condition else '?'}"
    elif s == "condition_error":
        text = f"condition could not be evaluated: {info[0]}"
    elif s == "not_yet_valid":
        text = f"valid from {info[0]}"
    elif s == "no_longer_valid":
        text = f"valid until {info[0]}"
    elif s == "missing_attribute":
        text = f"event has no {info[0]!r}"
    elif s == "budget_spent":
        text = f"the budget of {info[0]} is spent"
    else:
        text = "amount rounds to 0"
    if outcome.bonus:
        text += f"; first-time bonus {amount(outcome.bonus)}"
    if outcome.factors:
        text += f" ({', '.join(outcome.factors)})"
    if outcome.note:
        text += f" ({outcome.note})"
    return text


@dataclass(frozen=True, slots=True)
class BonusMove:
    """A late, earlier event takes a first-time bonus from the event that held it."""

    rule: str
    from_event_id: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    event: Event
    day: date
    awards: tuple[Award, ...]
    outcomes: tuple[RuleOutcome, ...]
    activity: Activity
    usage: Mapping[tuple[str, str], Usage]
    firsts: Mapping[str, FirstAward]
    bonus_moves: tuple[BonusMove, ...] = ()
    checkin: CheckinResult | None = None


def base_amount(rule: Rule, currency: Currency, attributes: Mapping[str, Any]) -> int | None:
    """The rule's award before caps, in minor units; None when the rate's attribute is absent."""
    rate = rule.rate
    if rate is None:
        return rule.amount
    value = attributes.get(rate.attribute)
    if value is None:
        return None
    base = value if isinstance(value, Decimal) else Decimal(value)
    if base <= 0:
        return 0
    if rate.rounding == "full":
        blocks = int(base // rate.per)
        return round_minor(blocks * rate.amount, currency.decimals, "down")
    return round_minor(base / rate.per * rate.amount, currency.decimals, rate.rounding)


def _cel_value(value: Any) -> Any:
    # CEL compares int with double; it has no decimal type, so conditions see decimals as doubles.
    if isinstance(value, Decimal):
        return float(value)
    return value


def cel_context(
    program: Program, state: MemberState, event: Event, activity: Activity, with_member: bool
) -> dict[str, Any]:
    """The variables a condition sees: `event` (attributes, type) and `member` (state).

    Counters and streaks include this event; the streak is the one on the event's own day,
    so a late event for an earlier day cannot pass a milestone the member passed since.
    """
    ev = {k: _cel_value(v) for k, v in event.attributes.items()}
    ev["type"] = event.type
    ctx: dict[str, Any] = {"event": ev}
    if with_member:
        counters = {t: a.count for t, a in state.activity.items()}
        streaks = {t: a.streak for t, a in state.activity.items()}
        counters[event.type] = activity.count
        before = state.activity.get(event.type)
        streaks[event.type] = (
            streak_on(before.last_day, before.streak, local_day(event.occurred_at, program.timezone))
            if before is not None
            else 1
        )
        ctx["member"] = _member_vars(program, state, counters, streaks)
    return ctx


def _member_vars(
    program: Program, state: MemberState, counters: dict[str, int], streaks: dict[str, int]
) -> dict[str, Any]:
    for t in program.event_types:
        counters.setdefault(t, 0)
        streaks.setdefault(t, 0)
    balances = {k: float(state.balances.get(k, 0) / scale(c.decimals)) for k, c in program.currencies.items()}
    return {
        "id": state.member_id,
        "tier": state.tier or "",
        "profile": {k: _cel_value(v) for k, v in state.profile.items()},
        "counters": counters,
        "streaks": streaks,
        "balances": balances,
    }


def member_context(program: Program, state: MemberState) -> dict[str, Any]:
    """The `member` variables alone, outside any event (which campaigns target a member now)."""
    counters = {t: a.count for t, a in state.activity.items()}
    streaks = {t: a.streak for t, a in state.activity.items()}
    return {"member": _member_vars(program, state, counters, streaks)}


def observe(state: MemberState, event: Event, day: date) -> Activity:
    """The member's activity record for this event's type once the event is counted."""
    before = state.activity.get(event.type)
    if before is None:
        return Activity(1, day, 1)
    streak = next_streak(before.last_day, before.streak, day)
    last = day if before.last_day is None or day > before.last_day else before.last_day
    return Activity(before.count + 1, last, streak)


def evaluate(
    program: Program,
    state: MemberState,
    event: Event,
    now: datetime,
    budgets: MutableMapping[str, int] | None = None,
) -> Evaluation:
    """Decide what every rule for this event's type awards; `now` is when it is processed.

    `budgets` holds what is left of each rule and campaign budget (taken from as awards are
    decided); None when nothing is budgeted, or to ignore budgets (a simulation).
    """
    del now  # Rules judge an event by when it happened; `now` is kept for rules that will need it.
    day = local_day(event.occurred_at, program.timezone)
    makeup = _is_makeup(program, event)
    activity = (state.activity.get(event.type) or Activity()) if makeup else observe(state, event, day)
    # A make-up card only mends a streak: the rules do not see it as the behaviour itself.
    rules = () if makeup else program.rules_by_type.get(event.type, ())
    ctx: Any = None
    awards: list[Award] = []
    outcomes: list[RuleOutcome] = []
    usage: dict[tuple[str, str], Usage] = {}
    firsts: dict[str, FirstAward] = {}
    moves: list[BonusMove] = []
    boost: _Boost | None = None
    for rule in rules:
        if rule.condition is not None and ctx is None:
            with_member = any(r.condition is not None and r.condition.uses_member for r in rules)
            # One CEL context per event: converting the variables costs more than evaluating.
            ctx = cel.Context(cel_context(program, state, event, activity, with_member))
        outcome, award = _apply_rule(program, rule, state, event, day, ctx, usage)
        if award is not None and program.boosted:
            if boost is None:
                boost = _boost_for(program, state, event, activity)
            outcome, award = _multiply(program, rule, outcome, award, boost, budgets)
        if outcome.status in ("awarded", "capped", "cap_reached", "limit_reached", "zero", "budget_spent") and (
            rule.first_time_bonus
        ):
            outcome, bonus, move = _first_time_bonus(program, rule, state, event, outcome)
            if bonus is not None:
                firsts[rule.key] = FirstAward(event.occurred_at, event.event_id)
                if award is not None:
                    awards.append(award)
                    award = None
                awards.append(bonus)
                if move is not None:
                    moves.append(move)
        if award is not None:
            awards.append(award)
        outcomes.append(outcome)
    if program.campaigns and not makeup:
        for outcome, award in _campaign_bonuses(program, state, event, activity, budgets):
            outcomes.append(outcome)
            if award is not None:
                awards.append(award)
    checkin = None
    if program.checkin is not None and event.type == program.checkin.event_type:
        checkin = _check_in(program, state, event)
        awards.extend(_checkin_awards(program, checkin))
    return Evaluation(event, day, tuple(awards), tuple(outcomes), activity, usage, firsts, tuple(moves), checkin)


# --- multipliers and campaign bonuses ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Boost:
    """The multipliers that may apply to an event's awards: the member's tier's and the active,
    targeted multiplier campaigns'. Found once per event, only in programs that have any."""

    tier: Factor | None
    campaigns: tuple[Campaign, ...]


def _member_ctx(program: Program, state: MemberState, event: Event, activity: Activity) -> Any:
    return cel.Context(cel_context(program, state, event, activity, True))


def _boost_for(program: Program, state: MemberState, event: Event, activity: Activity) -> _Boost:
    tier = program.tier(state.tier)
    factor = Factor("tier", tier.key, tier.name, tier.multiplier) if tier and tier.multiplier != 1 else None
    active = [c for c in active_campaigns(program, event.occurred_at) if c.multiplier is not None]
    ctx = _member_ctx(program, state, event, activity) if any(c.condition for c in active) else None
    return _Boost(factor, tuple(c for c in active if targets(c, state.tier, ctx)))


def _multiply(
    program: Program,
    rule: Rule,
    outcome: RuleOutcome,
    award: Award,
    boost: _Boost,
    budgets: MutableMapping[str, int] | None,
) -> tuple[RuleOutcome, Award | None]:
    """Scale a rule's award by its multipliers, then hold it to the campaign and rule budgets."""
    factors: list[tuple[Factor, Campaign | None]] = []
    for c in boost.campaigns:
        if c.multiplier is not None and covers(c, rule):
            factors.append((Factor("campaign", c.key, c.name, c.multiplier), c))
    if boost.tier is not None and program.currencies[rule.currency].kind == "points":
        factors.append((boost.tier, None))
    if not factors and rule.budget is None:
        return outcome, award  # nothing multiplies or limits it
    base = award.amount
    policy = program.multipliers
    total = combine((f.value for f, _ in factors), policy)
    amount = scaled(base, total) if factors else base
    notes = []
    for i, (_, campaign) in enumerate(factors):
        if campaign is None or campaign.budget is None:
            continue
        without = scaled(base, combine((f.value for j, (f, _) in enumerate(factors) if j != i), policy))
        extra = max(amount - without, 0)
        granted = take(budgets, budget_key("campaign", campaign.key), extra)
        if granted < extra:
            notes.append(f"{campaign.name} budget spent")
            amount -= extra - granted
    if rule.budget is not None:
        granted = take(budgets, budget_key("rule", rule.key), amount)
        if granted == 0:
            return RuleOutcome(rule.key, "budget_spent", info=(rule.name,)), None
        if granted < amount:
            notes.append("rule budget spent")
        amount = granted
    words = tuple(f.words() for f, _ in factors)
    uncapped = Multipliers(policy.stacking)
    if factors and policy.cap is not None and combine((f.value for f, _ in factors), uncapped) > policy.cap:
        words += (f"at most ×{policy.cap.normalize():f} in all",)
    note = "; ".join([outcome.note, *notes]) if outcome.note else "; ".join(notes)
    multiplier = f"{total.normalize():f}" if factors else ""
    changed = replace(outcome, amount=amount, factors=words, note=note, multiplier=multiplier)
    return changed, replace(award, amount=amount)


def _campaign_bonuses(
    program: Program,
    state: MemberState,
    event: Event,
    activity: Activity,
    budgets: MutableMapping[str, int] | None,
) -> list[tuple[RuleOutcome, Award | None]]:
    """The bonuses of running campaigns for this behaviour, for the members they target."""
    out: list[tuple[RuleOutcome, Award | None]] = []
    ctx: Any = None
    for c in program.campaigns:
        bonus = c.bonus
        if bonus is None or bonus.event_type != event.type or not is_active(c, event.occurred_at, program.timezone):
            continue
        if ctx is None and (c.condition is not None or bonus.condition is not None):
            ctx = _member_ctx(program, state, event, activity)
        if not targets(c, state.tier, ctx):
            continue
        if bonus.condition is not None:
            try:
                result = bonus.condition.compiled.execute(ctx)
            except Exception as exc:  # as for rules: CEL raises several kinds
                reason = str(exc.args[0]) if exc.args else type(exc).__name__
                out.append((RuleOutcome(c.key, "condition_error", info=(reason,)), None))
                continue
            if result is not True:
                out.append((RuleOutcome(c.key, "condition_false"), None))
                continue
        amount = bonus.grant.amount
        if c.budget is not None:
            amount = take(budgets, budget_key("campaign", c.key), amount)
            if amount == 0:
                out.append((RuleOutcome(c.key, "budget_spent", info=(c.name,)), None))
                continue
        currency = program.currencies[bonus.grant.currency]
        award = Award(c.key, currency.key, amount, "campaign_bonus", currency.pending)
        out.append((RuleOutcome(c.key, "awarded", amount, note=c.name), award))
    return out


# --- check-in --------------------------------------------------------------------------------


def _is_makeup(program: Program, event: Event) -> bool:
    config = program.checkin
    return config is not None and event.type == config.event_type and event.attributes.get("makeup_for") is not None


def _check_in(program: Program, state: MemberState, event: Event) -> CheckinResult:
    assert program.checkin is not None  # the caller checked
    zone = member_zone(program, state.profile)
    day = event.occurred_at.astimezone(zone).date()
    current = state.checkin or NO_CHECKINS
    raw = event.attributes.get("makeup_for")
    if raw is None:
        return check_in(program.checkin, current, day)
    try:
        missed = raw if isinstance(raw, date) else date.fromisoformat(str(raw)[:10])
    except ValueError:
        return CheckinResult("makeup_refused", day, current, reason=f"{raw!r} is not a date (YYYY-MM-DD)")
    return check_in(program.checkin, current, day, makeup_for=missed)


def _checkin_awards(program: Program, result: CheckinResult) -> list[Award]:
    config = program.checkin
    assert config is not None  # the caller checked
    out = []
    for a in result.awards:
        currency = program.currencies[a.grant.currency]
        out.append(Award("checkin", currency.key, a.grant.amount, a.kind, currency.pending, config.counts_toward_tiers))
    return out


def _apply_rule(
    program: Program,
    rule: Rule,
    state: MemberState,
    event: Event,
    day: date,
    ctx: Any,
    usage: dict[tuple[str, str], Usage],
) -> tuple[RuleOutcome, Award | None]:
    at = event.occurred_at
    if rule.valid_from is not None and at < rule.valid_from:
        return RuleOutcome(rule.key, "not_yet_valid", info=(rule.valid_from.isoformat(),)), None
    if rule.valid_to is not None and at >= rule.valid_to:
        return RuleOutcome(rule.key, "no_longer_valid", info=(rule.valid_to.isoformat(),)), None
    if rule.condition is not None:
        try:
            result = rule.condition.compiled.execute(ctx)
        except Exception as exc:  # CEL raises KeyError, TypeError, RuntimeError, ZeroDivisionError
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            return RuleOutcome(rule.key, "condition_error", info=(reason,)), None
        if result is not True:
            return RuleOutcome(rule.key, "condition_false"), None
    currency = program.currencies[rule.currency]
    base = base_amount(rule, currency, event.attributes)
    if base is None:
        attr = rule.rate.attribute if rule.rate else "amount"
        return RuleOutcome(rule.key, "missing_attribute", info=(attr,)), None
    periods = rule.periods
    if periods:
        keys = [(p, period_key(p, day)) for p in periods]
        current = {p: state.usage.get((rule.key, k)) or _NO_USAGE for p, k in keys}
        for period, limit in rule.limit.pairs:
            if current[period].times >= limit:
                return RuleOutcome(rule.key, "limit_reached", info=(period, limit)), None
    amount = base
    capped: tuple[str, int] | None = None
    for period, cap in rule.cap.pairs:
        room = cap - current[period].amount
        if room < amount:
            amount = max(room, 0)
            capped = (period, cap)
    if amount <= 0:
        if capped:
            return RuleOutcome(rule.key, "cap_reached", info=capped), None
        return RuleOutcome(rule.key, "zero"), None
    if periods:
        for period, key in keys:
            u = current[period]
            usage[(rule.key, key)] = Usage(u.amount + amount, u.times + 1)
    if capped:
        outcome = RuleOutcome(rule.key, "capped", amount, info=(base, *capped))
    else:
        outcome = RuleOutcome(rule.key, "awarded", amount)
    return outcome, Award(rule.key, rule.currency, amount, "rule", rule.pending or currency.pending)


_NO_USAGE = Usage()


def _first_time_bonus(
    program: Program, rule: Rule, state: MemberState, event: Event, outcome: RuleOutcome
) -> tuple[RuleOutcome, Award | None, BonusMove | None]:
    mine = FirstAward(event.occurred_at, event.event_id)
    holder = state.firsts.get(rule.key)
    if holder is not None and not mine.precedes(holder):
        return outcome, None, None
    currency = program.currencies[rule.currency]
    move = BonusMove(rule.key, holder.event_id) if holder is not None else None
    note = f"bonus moved from later event {holder.event_id}" if holder is not None else ""
    bonus = Award(rule.key, rule.currency, rule.first_time_bonus, "first_time_bonus", rule.pending or currency.pending)
    status: Status = "awarded" if outcome.status in ("zero", "cap_reached", "limit_reached") else outcome.status
    info = outcome.info if status == outcome.status else ()
    return RuleOutcome(rule.key, status, outcome.amount, rule.first_time_bonus, info, note), bonus, move


def apply(state: MemberState, evaluation: Evaluation) -> None:
    """Record an evaluated event in the member's state (counters, usage, first-time holders, check-in)."""
    state.activity[evaluation.event.type] = evaluation.activity
    state.usage.update(evaluation.usage)
    state.firsts.update(evaluation.firsts)
    if evaluation.checkin is not None:
        state.checkin = evaluation.checkin.state
