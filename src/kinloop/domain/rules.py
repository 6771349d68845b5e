"""The rule engine: (program, member state, event, now) -> evaluation. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import cel

from kinloop.domain.amounts import round_minor, scale
from kinloop.domain.events import Event
from kinloop.domain.periods import local_day, next_streak, period_key, streak_on
from kinloop.domain.program import Currency, Pending, Program, Rule

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
]
AwardKind = Literal["rule", "first_time_bonus"]


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

    def as_row(self) -> list[Any]:
        row: list[Any] = [self.rule, self.status, self.amount, self.bonus, list(self.info)]
        if self.note:
            row.append(self.note)
        return row

    @classmethod
    def from_row(cls, row: list[Any]) -> RuleOutcome:
        rule, status, amount, bonus, info, *rest = row
        return cls(rule, status, amount, bonus, tuple(info), rest[0] if rest else "")


def describe(program: Program, outcome: RuleOutcome) -> str:
    """The outcome of a rule in the program's words."""
    rule = program.rule(outcome.rule)
    currency = program.currencies.get(rule.currency) if rule else None

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
    else:
        text = "amount rounds to 0"
    if outcome.bonus:
        text += f"; first-time bonus {amount(outcome.bonus)}"
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
        for t in program.event_types:
            counters.setdefault(t, 0)
            streaks.setdefault(t, 0)
        balances = {k: float(state.balances.get(k, 0) / scale(c.decimals)) for k, c in program.currencies.items()}
        ctx["member"] = {
            "id": state.member_id,
            "tier": state.tier or "",
            "profile": {k: _cel_value(v) for k, v in state.profile.items()},
            "counters": counters,
            "streaks": streaks,
            "balances": balances,
        }
    return ctx


def observe(state: MemberState, event: Event, day: date) -> Activity:
    """The member's activity record for this event's type once the event is counted."""
    before = state.activity.get(event.type)
    if before is None:
        return Activity(1, day, 1)
    streak = next_streak(before.last_day, before.streak, day)
    last = day if before.last_day is None or day > before.last_day else before.last_day
    return Activity(before.count + 1, last, streak)


def evaluate(program: Program, state: MemberState, event: Event, now: datetime) -> Evaluation:
    """Decide what every rule for this event's type awards; `now` is when it is processed."""
    del now  # Rules judge an event by when it happened; `now` is kept for rules that will need it.
    day = local_day(event.occurred_at, program.timezone)
    activity = observe(state, event, day)
    rules = program.rules_by_type.get(event.type, ())
    ctx: Any = None
    awards: list[Award] = []
    outcomes: list[RuleOutcome] = []
    usage: dict[tuple[str, str], Usage] = {}
    firsts: dict[str, FirstAward] = {}
    moves: list[BonusMove] = []
    for rule in rules:
        if rule.condition is not None and ctx is None:
            with_member = any(r.condition is not None and r.condition.uses_member for r in rules)
            # One CEL context per event: converting the variables costs more than evaluating.
            ctx = cel.Context(cel_context(program, state, event, activity, with_member))
        outcome, award = _apply_rule(program, rule, state, event, day, ctx, usage)
        if outcome.status in ("awarded", "capped", "cap_reached", "limit_reached", "zero") and (rule.first_time_bonus):
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
    return Evaluation(event, day, tuple(awards), tuple(outcomes), activity, usage, firsts, tuple(moves))


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
    """Record an evaluated event in the member's state (counters, usage, first-time holders)."""
    state.activity[evaluation.event.type] = evaluation.activity
    state.usage.update(evaluation.usage)
    state.firsts.update(evaluation.firsts)
