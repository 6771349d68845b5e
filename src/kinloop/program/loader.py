"""Load a program file: YAML -> typed model -> semantic checks -> compiled domain Program.

Every problem is collected with its path, so a broken file reports them all at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
import yaml
from pydantic import ValidationError

from kinloop.domain.amounts import to_minor
from kinloop.domain.badges import Badge, BadgeLevel, Threshold
from kinloop.domain.campaigns import WEEKDAYS
from kinloop.domain.counters import SPELLING, CounterNeeds, sample_context
from kinloop.domain.envelopes import DailyEnvelope, EnvelopePolicy
from kinloop.domain.errors import InvalidAmount, Issue, ProgramInvalid
from kinloop.domain.program import (
    AttributeSpec,
    Campaign,
    CampaignBonus,
    Checkin,
    Condition,
    Currency,
    EventType,
    Expiry,
    Grant,
    Ladder,
    Leaderboard,
    Limits,
    MemberDay,
    Milestone,
    Multipliers,
    PaidTerm,
    Pending,
    Privilege,
    Program,
    Quota,
    Rate,
    Reward,
    Rule,
    Tier,
    Window,
)
from kinloop.domain.tasks import Task
from kinloop.program.schema import (
    BadgeSpec,
    BonusSpec,
    CampaignSpec,
    ExpirySpec,
    LadderSpec,
    PendingSpec,
    PeriodLimits,
    ProgramFile,
    RewardSpec,
)

_NUMERIC = ("integer", "decimal")
_SAMPLE = {
    "integer": 1,
    "decimal": 1.5,
    "string": "x",
    "boolean": True,
    "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
}


def program_schema() -> dict[str, Any]:
    """The JSON Schema of program files, for editor completion."""
    schema = ProgramFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kinloop program"
    return schema


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    msg = str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "string_pattern_mismatch":
        return "must be lower_snake_case (letters, digits, underscores; starting with a letter)"
    if kind == "timezone_aware":
        return "must include a time zone offset (Z or +hh:mm)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return "must not be empty" if error.get("ctx", {}).get("min_length") == 1 else msg.replace("should", "must")
    # Pydantic says "Input should be greater than 0"; a program author reads "must be ...".
    for lead in ("Input should ", "String should ", "List should ", "Value should "):
        if msg.startswith(lead):
            return "must " + msg[len(lead) :]
    return msg


def _issues_from(exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function"))))
        issues.append(Issue(_path(loc), _message(err)))
    return issues


def parse_program(text: str, *, source: str | None = None) -> ProgramFile:
    """Parse YAML text into the typed program model, or raise ProgramInvalid with every issue."""
    if "\x00" in text:
        raise ProgramInvalid([Issue("", "the file contains a NUL character")], source=source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProgramInvalid([Issue("", f"not valid YAML: {where}{problem}")], source=source) from exc
    if not isinstance(data, dict):
        raise ProgramInvalid([Issue("", "a program file must be a mapping at the top level")], source=source)
    try:
        return ProgramFile.model_validate(data)
    except ValidationError as exc:
        raise ProgramInvalid(_issues_from(exc), source=source) from exc


def load_program(path: str | Path) -> tuple[Program, str]:
    """Read, validate and compile a program file; returns the program and its source text."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramInvalid([Issue("", f"cannot read {p}: {exc}")], source=str(p)) from exc
    return compile_program(parse_program(text, source=str(p)), source=str(p)), text


def canonical_text(spec: ProgramFile) -> str:
    """A stable rendering of a program, used to tell versions apart."""
    data = spec.model_dump(mode="json", exclude_none=True)
    for optional in ("badges", "tasks"):
        if not data.get(optional):
            data.pop(optional, None)  # a program without them keeps the digest it always had
    return json.dumps(data, sort_keys=True)


class _Compiler:
    def __init__(self, spec: ProgramFile) -> None:
        self.spec = spec
        self.issues: list[Issue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def minor(self, value: Decimal | None, currency: Currency | None, path: str) -> int:
        if value is None:
            return 0
        if currency is None:
            return int(value)
        try:
            return to_minor(value, currency.decimals)
        except InvalidAmount:
            self.fail(path, f"{value} has more than {currency.decimals} decimal places for {currency.key}")
            return 0

    def unique(self, keys: list[str], path: str) -> None:
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key in seen:
                self.fail(f"{path}[{i}].key", f"duplicate key {key!r}")
            seen.add(key)

    def timezone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.spec.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail("timezone", f"unknown time zone {self.spec.timezone!r} (use an IANA name such as Europe/Paris)")
            return ZoneInfo("UTC")

    def expiry(self, spec: ExpirySpec | None, kind: str, path: str) -> Expiry:
        if spec is None or spec.never:
            return Expiry()
        if kind == "growth":
            self.fail(path, "growth currencies do not expire (only points currencies can)")
            return Expiry()
        if spec.days is not None:
            return Expiry("days", spec.days)
        if spec.months is not None:
            return Expiry("months", spec.months)
        if spec.end_of_month is not None:
            return Expiry("end_of_month", spec.end_of_month)
        return Expiry("end_of_year", spec.end_of_year or 0)

    def pending(self, spec: PendingSpec | None, path: str, earning_types: list[str]) -> Pending | None:
        if spec is None:
            return None
        if spec.until_event is not None:
            release = next((e for e in self.spec.event_types if e.key == spec.until_event), None)
            if release is None:
                self.fail(f"{path}.until_event", f"unknown event type {spec.until_event!r}")
            elif spec.key not in release.attributes:
                self.fail(f"{path}.key", f"event type {spec.until_event!r} has no attribute {spec.key!r}")
            for et in dict.fromkeys(earning_types):
                if et == spec.until_event:
                    continue  # already checked as the release event
                earning = next((e for e in self.spec.event_types if e.key == et), None)
                if earning is not None and spec.key not in earning.attributes:
                    self.fail(f"{path}.key", f"event type {et!r} has no attribute {spec.key!r}")
        return Pending(spec.days, spec.until_event, spec.key)

    def currencies(self) -> dict[str, Currency]:
        out: dict[str, Currency] = {}
        self.unique([c.key for c in self.spec.currencies], "currencies")
        for i, c in enumerate(self.spec.currencies):
            path = f"currencies[{i}]"
            pending = self.pending(
                c.pending, f"{path}.pending", [r.event for r in self.spec.rules if r.currency == c.key]
            )
            if c.kind == "growth" and c.transferable:
                self.fail(f"{path}.transferable", "growth currencies cannot be transferred")
            if c.money_value is not None and c.kind == "growth":
                self.fail(f"{path}.money_value", "growth currencies are never spent, so they are worth no money")
            elif c.money_value is not None and self.spec.money_currency is None:
                self.fail(f"{path}.money_value", "give the program's money_currency (e.g. EUR) to value currencies")
            out[c.key] = Currency(
                key=c.key,
                name=c.name,
                unit=c.unit or c.name,
                decimals=c.decimals,
                kind=c.kind,
                expiry=self.expiry(c.expiry, c.kind, f"{path}.expiry"),
                allow_negative=c.allow_negative,
                transferable=c.transferable,
                pending=pending,
                money_value=c.money_value,
            )
        return out

    def event_types(self) -> dict[str, EventType]:
        self.unique([e.key for e in self.spec.event_types], "event_types")
        out: dict[str, EventType] = {}
        for e in self.spec.event_types:
            attrs = {}
            for name, a in e.attributes.items():
                attrs[name] = AttributeSpec(name, a.type, a.required)
            out[e.key] = EventType(e.key, attrs, e.description)
        return out

    def limits(self, spec: PeriodLimits | None, currency: Currency | None, path: str) -> Limits:
        if spec is None:
            return Limits()

        def conv(v: Decimal | None, name: str) -> int | None:
            if v is None:
                return None
            if currency is None:
                if v != v.to_integral_value():
                    self.fail(f"{path}.{name}", "must be a whole number of awards")
                return int(v)
            return self.minor(v, currency, f"{path}.{name}")

        return Limits(
            conv(spec.per_day, "per_day"),
            conv(spec.per_week, "per_week"),
            conv(spec.per_month, "per_month"),
            conv(spec.lifetime, "lifetime"),
        )

    def condition(self, source: str, event_type: EventType | None, path: str) -> Condition | None:
        try:
            compiled = cel.compile(source)
        except ValueError as exc:
            self.fail(path, f"not a valid CEL expression: {str(exc).splitlines()[0]}")
            return None
        variables = set(compiled.variables())
        unknown = variables - {"event", "member"} - _comprehension_names(source)
        if unknown:
            self.fail(path, f"unknown variable(s) {', '.join(sorted(unknown))}: conditions see event and member")
            return None
        if event_type is not None:
            self.check_condition(compiled, source, event_type, path)
        return Condition(source, compiled, "member" in variables)

    def check_condition(self, compiled: Any, source: str, event_type: EventType, path: str) -> None:
        event = {n: _SAMPLE[a.type] for n, a in event_type.attributes.items()}
        event["type"] = event_type.key
        counters = {e.key: 1 for e in self.spec.event_types}
        member = {
            "id": "m",
            "tier": "",
            "profile": {},
            "counters": counters,
            "streaks": dict(counters),
            "balances": {c.key: 1.0 for c in self.spec.currencies},
        }
        try:
            result = compiled.execute({"event": event, "member": member})
        except KeyError as exc:
            if "profile" not in source:
                self.fail(path, f"refers to {exc.args[0]!r}, which {event_type.key!r} events and members do not have")
            return
        except TypeError as exc:
            self.fail(path, f"type error: {str(exc).split('.')[0]}")
            return
        except Exception:  # Runtime failures on sample values (a division by zero) are not type errors.
            return
        if not isinstance(result, bool):
            self.fail(path, f"must evaluate to true or false, not {type(result).__name__}")

    def rules(self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]) -> list[Rule]:
        self.unique([r.key for r in self.spec.rules], "rules")
        out: list[Rule] = []
        for i, r in enumerate(self.spec.rules):
            path = f"rules[{i}]"
            currency = currencies.get(r.currency)
            if currency is None:
                self.fail(f"{path}.currency", f"unknown currency {r.currency!r}")
            event_type = types.get(r.event)
            if event_type is None:
                self.fail(f"{path}.event", f"unknown event type {r.event!r}")
            rate = None
            if r.rate is not None:
                rate = Rate(r.rate.attribute, r.rate.per, r.rate.amount, r.rate.rounding)
                if event_type is not None:
                    attr = event_type.attributes.get(r.rate.attribute)
                    if attr is None:
                        self.fail(
                            f"{path}.rate.attribute", f"event type {r.event!r} has no attribute {r.rate.attribute!r}"
                        )
                    elif attr.type not in _NUMERIC:
                        self.fail(
                            f"{path}.rate.attribute", f"attribute {r.rate.attribute!r} is a {attr.type}, not a number"
                        )
            condition = self.condition(r.condition, event_type, f"{path}.condition") if r.condition else None
            out.append(
                Rule(
                    key=r.key,
                    name=r.name or r.key.replace("_", " ").capitalize(),
                    event_type=r.event,
                    currency=r.currency,
                    amount=self.minor(r.amount, currency, f"{path}.amount"),
                    rate=rate,
                    condition=condition,
                    cap=self.limits(r.cap, currency, f"{path}.cap") if currency else Limits(),
                    limit=self.limits(r.limit, None, f"{path}.limit"),
                    first_time_bonus=self.minor(r.first_time_bonus, currency, f"{path}.first_time_bonus"),
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                    pending=self.pending(r.pending, f"{path}.pending", [r.event]),
                    budget=self.minor(r.budget, currency, f"{path}.budget") if r.budget is not None else None,
                )
            )
        return out

    def ladder(self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]) -> Ladder | None:
        spec = self.spec.ladder
        if spec is None:
            return None
        currency = currencies.get(spec.currency)
        if currency is None:
            self.fail("ladder.currency", f"unknown currency {spec.currency!r}")
        elif currency.kind != "growth":
            self.fail("ladder.currency", f"{spec.currency!r} is a points currency; tiers qualify on a growth currency")
        self.unique([t.key for t in spec.tiers], "ladder.tiers")
        tiers = []
        previous: tuple[int, Decimal] | None = None
        buying: dict[str, int] = {}
        for i, t in enumerate(spec.tiers):
            path = f"ladder.tiers[{i}]"
            if t.invitation_only and t.threshold is not None:
                self.fail(f"{path}.threshold", "an invitation-only tier is never reached by threshold; remove it")
            elif t.threshold is None and not t.invitation_only and t.paid is None:
                self.fail(f"{path}.threshold", "unreachable tier: give a threshold, or make it paid or invitation_only")
            if t.threshold is not None and not t.invitation_only:
                if previous is not None and t.threshold <= previous[1]:
                    self.fail(f"{path}.threshold", f"must be greater than the tier before ({previous[1]})")
                previous = (i, t.threshold)
            paid = None
            if t.paid is not None:
                paid = PaidTerm(t.paid.term_days, t.paid.event, t.paid.remind_days)
                if t.paid.event is not None:
                    if t.paid.event not in types:
                        self.fail(f"{path}.paid.event", f"unknown event type {t.paid.event!r}")
                    elif t.paid.event in buying:
                        self.fail(f"{path}.paid.event", f"already buys ladder.tiers[{buying[t.paid.event]}]")
                    buying[t.paid.event] = i
            threshold = None if t.threshold is None else self.minor(t.threshold, currency, f"{path}.threshold")
            multiplier = t.multiplier if t.multiplier is not None else Decimal(1)
            tiers.append(Tier(t.key, t.name, threshold, t.invitation_only, paid, multiplier))
        return Ladder(
            spec.currency,
            _window(spec),
            tuple(tiers),
            cadence=spec.cadence,
            grace_days=spec.grace_days,
            one_level_drop=spec.one_level_drop,
            warn_days=spec.warn_days,
        )

    # --- badges and tasks -----------------------------------------------------------------
    def reward(self, spec: RewardSpec | None, currencies: Mapping[str, Currency], path: str) -> Reward | None:
        if spec is None:
            return None
        currency = currencies.get(spec.currency)
        if currency is None:
            self.fail(f"{path}.currency", f"unknown currency {spec.currency!r}")
        return Reward(spec.currency, self.minor(spec.amount, currency, f"{path}.amount"))

    def criterion(
        self, source: str, types: Mapping[str, EventType], path: str
    ) -> tuple[Condition, CounterNeeds] | None:
        """A badge criterion: CEL over `member`'s counters, checked against the event types."""
        try:
            compiled = cel.compile(source)
        except ValueError as exc:
            self.fail(path, f"not a valid CEL expression: {str(exc).splitlines()[0]}")
            return None
        unknown = set(compiled.variables()) - {"member"} - _comprehension_names(source)
        if unknown:
            self.fail(path, f"unknown variable(s) {', '.join(sorted(unknown))}: criteria see member")
            return None
        needs = CounterNeeds.scan([source])
        ok = True
        for t in sorted(needs.event_types):
            if t not in types:
                self.fail(path, f"unknown event type {t!r}")
                ok = False
        for t, attr, _ in sorted(needs.totals):
            spec = types[t].attributes.get(attr) if t in types else None
            if t in types and (spec is None or spec.type not in _NUMERIC):
                self.fail(path, f"totals need a number attribute; {t!r} has no number attribute {attr!r}")
                ok = False
        if not ok:
            return None
        try:
            result = compiled.execute({"member": sample_context(needs)})
        except KeyError as exc:
            self.fail(path, f"refers to {exc.args[0]!r}; criteria read {SPELLING}")
            return None
        except TypeError as exc:
            self.fail(path, f"type error: {str(exc).split('.')[0]}")
            return None
        except Exception:  # Runtime failures on sample values (a division by zero) are not type errors.
            result = True
        if not isinstance(result, bool):
            self.fail(path, f"must evaluate to true or false, not {type(result).__name__}")
            return None
        return Condition(source, compiled, True), needs

    def badge(
        self, spec: BadgeSpec, currencies: Mapping[str, Currency], types: Mapping[str, EventType], path: str
    ) -> tuple[Badge, CounterNeeds] | None:
        if spec.counter is not None and Threshold.of(f"member.{spec.counter} >= 1") is None:
            self.fail(
                f"{path}.counter",
                "not a counter; write counters.<type>.<period>, totals.<type>.<attribute>.<period> or streaks.<type>",
            )
            return None
        given: list[tuple[str, str, str | None, Decimal | None, RewardSpec | None, str]]
        given = [("", spec.name, spec.criterion, None, spec.reward, path)] if spec.criterion else []
        for j, lv in enumerate(spec.levels or []):
            given.append(
                (
                    lv.key,
                    lv.name or lv.key.replace("_", " ").capitalize(),
                    lv.criterion,
                    lv.threshold,
                    lv.reward,
                    f"{path}.levels[{j}]",
                )
            )
        self.unique([lv.key for lv in spec.levels or []], f"{path}.levels")
        levels: list[BadgeLevel] = []
        needs = CounterNeeds()
        for key, name, criterion, threshold, reward_spec, where in given:
            if criterion is None:
                if spec.counter is None:
                    self.fail(
                        f"{where}.threshold",
                        "a threshold needs the badge's counter (e.g. counter: counters.answer.lifetime)",
                    )
                    continue
                criterion, where_criterion = f"member.{spec.counter} >= {threshold}", f"{path}.counter"
            else:
                where_criterion = f"{where}.criterion"
            compiled = self.criterion(criterion, types, where_criterion)
            reward = self.reward(reward_spec, currencies, f"{where}.reward")
            if compiled is None:
                continue
            condition, found = compiled
            needs = needs | found
            levels.append(BadgeLevel(key, name, condition, Threshold.of(criterion), reward))
        if len(levels) != len(given):
            return None
        return Badge(spec.key, spec.name, spec.description, tuple(levels), needs.event_types, needs), needs

    def badges(
        self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]
    ) -> tuple[list[Badge], CounterNeeds | None]:
        self.unique([b.key for b in self.spec.badges], "badges")
        out: list[Badge] = []
        needs = CounterNeeds()
        for i, spec in enumerate(self.spec.badges):
            found = self.badge(spec, currencies, types, f"badges[{i}]")
            if found is not None:
                out.append(found[0])
                needs = needs | found[1]
        return out, needs if out else None

    def tasks(self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]) -> list[Task]:
        self.unique([t.key for t in self.spec.tasks], "tasks")
        out: list[Task] = []
        for i, t in enumerate(self.spec.tasks):
            path = f"tasks[{i}]"
            event_type = types.get(t.event) if t.event else None
            if t.event is not None and event_type is None:
                self.fail(f"{path}.event", f"unknown event type {t.event!r}")
            condition = self.condition(t.condition, event_type, f"{path}.condition") if t.condition else None
            out.append(
                Task(
                    key=t.key,
                    name=t.name,
                    every="lifetime" if t.every == "once" else t.every,
                    event_type=t.event,
                    target=t.target,
                    condition=condition,
                    fields=tuple(t.profile or ()),
                    reward=self.reward(t.reward, currencies, f"{path}.reward"),
                )
            )
        return out

    def grant(self, currency_key: str, amount: Decimal, currencies: Mapping[str, Currency], path: str) -> Grant:
        currency = currencies.get(currency_key)
        if currency is None:
            self.fail(f"{path}.currency", f"unknown currency {currency_key!r}")
        return Grant(currency_key, self.minor(amount, currency, f"{path}.amount"))

    def checkin(self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]) -> Checkin | None:
        spec = self.spec.checkin
        if spec is None:
            return None
        if spec.event not in types:
            self.fail("checkin.event", f"unknown event type {spec.event!r}")
        currency = currencies.get(spec.currency)
        if currency is None:
            self.fail("checkin.currency", f"unknown currency {spec.currency!r}")
        ladder = tuple(self.minor(a, currency, f"checkin.ladder[{i}]") for i, a in enumerate(spec.ladder))
        milestones = []
        seen: set[int] = set()
        for i, m in enumerate(spec.milestones):
            path = f"checkin.milestones[{i}]"
            if m.days in seen:
                self.fail(f"{path}.days", f"another milestone is at {m.days} days")
            seen.add(m.days)
            milestones.append(Milestone(m.days, self.grant(m.currency, m.amount, currencies, path), m.once))
        gift = spec.first_day_gift
        return Checkin(
            event_type=spec.event,
            currency=spec.currency,
            ladder=ladder,
            after_ladder=spec.after_ladder,
            milestones=tuple(milestones),
            first_day_gift=self.grant(gift.currency, gift.amount, currencies, "checkin.first_day_gift")
            if gift
            else None,
            makeup_cards_per_month=spec.makeup_cards_per_month,
            counts_toward_tiers=spec.counts_toward_tiers,
        )

    def member_condition(self, source: str, path: str) -> Condition | None:
        """A CEL condition over `member` only: whom a campaign targets."""
        condition = self.condition(source, None, path)
        if condition is not None and "event" in set(condition.compiled.variables()):
            self.fail(path, "a campaign's condition sees member only (put event conditions in its bonus)")
            return None
        return condition

    def campaigns(
        self,
        currencies: Mapping[str, Currency],
        types: Mapping[str, EventType],
        rules: list[Rule],
        ladder: Ladder | None,
    ) -> list[Campaign]:
        specs = self.spec.campaigns or []
        self.unique([c.key for c in specs], "campaigns")
        rule_keys = {r.key for r in rules}
        tier_keys = {t.key for t in ladder.tiers} if ladder else set()
        out = []
        for i, c in enumerate(specs):
            path = f"campaigns[{i}]"
            if c.key in rule_keys or c.key == "checkin":
                self.fail(f"{path}.key", f"{c.key!r} is already the key of a rule")
            for j, t in enumerate(c.tiers):
                if t not in tier_keys:
                    self.fail(f"{path}.tiers[{j}]", f"unknown tier {t!r}")
            for j, r in enumerate(c.rules):
                if r not in rule_keys:
                    self.fail(f"{path}.rules[{j}]", f"unknown rule {r!r}")
            for j, k in enumerate(c.currencies):
                if k not in currencies:
                    self.fail(f"{path}.currencies[{j}]", f"unknown currency {k!r}")
            if (c.rules or c.currencies) and c.multiplier is None:
                self.fail(f"{path}.multiplier", "rules and currencies say what a multiplier applies to; give one")
            bonus = self.bonus(c.bonus, currencies, types, f"{path}.bonus") if c.bonus else None
            budget, budget_currency = self.campaign_budget(c, currencies, path)
            out.append(
                Campaign(
                    key=c.key,
                    name=c.name or c.key.replace("_", " ").capitalize(),
                    starts_at=c.starts_at,
                    ends_at=c.ends_at,
                    member_day=self.member_day(c),
                    multiplier=c.multiplier,
                    bonus=bonus,
                    tiers=frozenset(c.tiers),
                    condition=self.member_condition(c.condition, f"{path}.condition") if c.condition else None,
                    rules=frozenset(c.rules),
                    currencies=frozenset(c.currencies),
                    budget=budget,
                    budget_currency=budget_currency,
                )
            )
        return out

    def privileges(self, ladder: Ladder | None) -> list[Privilege]:
        self.unique([p.key for p in self.spec.privileges], "privileges")
        tiers = {t.key for t in ladder.tiers} if ladder else set()
        out = []
        for i, p in enumerate(self.spec.privileges):
            for j, tier in enumerate(p.tiers):
                if tier not in tiers:
                    known = (
                        f" (tiers: {', '.join(t.key for t in ladder.tiers)})"
                        if ladder
                        else "; the program has no ladder"
                    )
                    self.fail(f"privileges[{i}].tiers[{j}]", f"unknown tier {tier!r}{known}")
            quota = Quota(1) if p.single_use else Quota(p.quota.uses, p.quota.per) if p.quota else None
            out.append(
                Privilege(
                    key=p.key,
                    name=p.name,
                    kind=p.kind,
                    tiers=tuple(dict.fromkeys(p.tiers)),
                    quota=quota,
                    window=p.window,
                    description=p.description,
                )
            )
        return out

    def member_day(self, c: CampaignSpec) -> MemberDay | None:
        if c.member_day is None:
            return None
        if c.member_day.weekday is not None:
            return MemberDay(weekday=WEEKDAYS.index(c.member_day.weekday))
        return MemberDay(day_of_month=c.member_day.day_of_month)

    def bonus(
        self, spec: BonusSpec, currencies: Mapping[str, Currency], types: Mapping[str, EventType], path: str
    ) -> CampaignBonus:
        event_type = types.get(spec.event)
        if event_type is None:
            self.fail(f"{path}.event", f"unknown event type {spec.event!r}")
        grant = self.grant(spec.currency, spec.amount, currencies, path)
        condition = self.condition(spec.condition, event_type, f"{path}.condition") if spec.condition else None
        return CampaignBonus(spec.event, grant, condition)

    def campaign_budget(
        self, c: CampaignSpec, currencies: Mapping[str, Currency], path: str
    ) -> tuple[int | None, str | None]:
        """A budget is counted in one currency: the bonus's, or the one currency the multiplier applies to."""
        if c.budget is None:
            return None, None
        named = set(c.currencies) if c.multiplier is not None else set()
        if c.bonus is not None:
            named.add(c.bonus.currency)
        if c.multiplier is not None and not c.currencies:
            self.fail(f"{path}.currencies", "a budgeted multiplier must name the one currency its budget counts")
            return None, None
        if len(named) != 1:
            self.fail(f"{path}.budget", "a budget counts one currency; this campaign gives several")
            return None, None
        key = named.pop()
        return self.minor(c.budget, currencies.get(key), f"{path}.budget"), key

    def multipliers(self) -> Multipliers:
        spec = self.spec.multipliers
        return Multipliers() if spec is None else Multipliers(spec.stacking, spec.cap)

    def leaderboards(self, currencies: Mapping[str, Currency], types: Mapping[str, EventType]) -> list[Leaderboard]:
        self.unique([b.key for b in self.spec.leaderboards], "leaderboards")
        out = []
        for i, b in enumerate(self.spec.leaderboards):
            m = b.measure
            if m.currency is not None and m.currency not in currencies:
                self.fail(f"leaderboards[{i}].measure.currency", f"unknown currency {m.currency!r}")
            if m.event is not None and m.event not in types:
                self.fail(f"leaderboards[{i}].measure.event", f"unknown event type {m.event!r}")
            event = m.event.replace("_", " ") if m.event else ""
            unit = m.unit or (f"{event} events" if m.event else "")
            unit_one = m.unit_one or (m.unit if m.unit else f"{event} event" if m.event else "")
            out.append(Leaderboard(b.key, b.name, b.period, m.currency, m.event, unit, unit_one, b.group_by))
        return out

    def envelopes(self, currencies: Mapping[str, Currency]) -> EnvelopePolicy | None:
        spec = self.spec.envelopes
        if spec is None:
            return None
        currency = currencies.get(spec.currency)
        if currency is None:
            self.fail("envelopes.currency", f"unknown currency {spec.currency!r}")
        elif not currency.spendable:
            self.fail("envelopes.currency", f"{spec.currency!r} is a growth currency; envelopes move points")
        elif not currency.transferable:
            self.fail("envelopes.currency", f"{spec.currency!r} is not transferable: mark it `transferable: true`")
        self.unique([d.key for d in spec.daily], "envelopes.daily")
        daily = []
        for i, d in enumerate(spec.daily):
            path = f"envelopes.daily[{i}]"
            condition = self.condition(d.condition, None, f"{path}.condition")
            if condition is not None and "event" in set(condition.compiled.variables()):
                self.fail(f"{path}.condition", "a daily envelope's condition sees `member` only")
            if condition is not None:
                amount = self.minor(d.amount, currency, f"{path}.amount")
                daily.append(DailyEnvelope(d.key, d.name, amount, condition))
        return EnvelopePolicy(
            currency=spec.currency,
            daily_limit=self.minor(spec.daily_limit, currency, "envelopes.daily_limit") if spec.daily_limit else None,
            daily_count=spec.daily_count,
            fee_percent=spec.fee_percent,
            min_share=self.minor(spec.min_share, currency, "envelopes.min_share"),
            max_shares=spec.max_shares,
            birthday=self.minor(spec.birthday, currency, "envelopes.birthday"),
            daily=tuple(daily),
        )


def _window(spec: LadderSpec) -> Window:
    if isinstance(spec.window, str):
        return Window(spec.window)
    return Window("rolling", spec.window.rolling_days)


def _comprehension_names(source: str) -> set[str]:
    # Macros such as `list.all(x, x > 0)` bind names; CEL reports them as variables too.
    names = set()
    for macro in ("all(", "exists(", "exists_one(", "map(", "filter("):
        start = 0
        while (at := source.find(macro, start)) >= 0:
            start = at + len(macro)
            name = source[start:].split(",", 1)[0].strip()
            if name.isidentifier():
                names.add(name)
    return names


def compile_program(spec: ProgramFile, *, source: str | None = None) -> Program:
    """Check what the schema cannot (references, order, CEL) and build the engine's Program."""
    c = _Compiler(spec)
    tz = c.timezone()
    currencies = c.currencies()
    types = c.event_types()
    rules = c.rules(currencies, types)
    ladder = c.ladder(currencies, types)
    badges, needs = c.badges(currencies, types)
    tasks = c.tasks(currencies, types)
    envelopes = c.envelopes(currencies)
    checkin = c.checkin(currencies, types)
    campaigns = c.campaigns(currencies, types, rules, ladder)

    privileges = c.privileges(ladder)
    leaderboards = c.leaderboards(currencies, types)
    if c.issues:
        raise ProgramInvalid(c.issues, source=source)
    by_type: dict[str, list[Rule]] = {}
    for rule in rules:
        by_type.setdefault(rule.event_type, []).append(rule)
    return Program(
        key=spec.key,
        name=spec.name,
        timezone=tz,
        currencies=currencies,
        event_types=types,
        rules=tuple(rules),
        ladder=ladder,
        rules_by_type={k: tuple(v) for k, v in by_type.items()},
        badges=tuple(badges),
        tasks=tuple(tasks),
        counters=needs,
        envelopes=envelopes,
        checkin=checkin,
        campaigns=tuple(campaigns),
        multipliers=c.multipliers(),
        privileges=tuple(privileges),
        leaderboards=tuple(leaderboards),
        money_currency=spec.money_currency,
    )
