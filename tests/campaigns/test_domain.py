"""Campaigns and multipliers in the pure core: windows at their edges, member days in the
program's zone, targeting, stacking under a cap, budgets, and the words of the explanation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.campaigns import combine, is_active, next_start, scaled, status
from kinloop.domain.program import Multipliers
from kinloop.domain.rules import Evaluation, MemberState, describe, evaluate
from tests.domain.factories import event, member, program

BASE = """
key: cafe
name: Cafe
timezone: Europe/Paris
currencies:
  - {key: stars, name: Stars, unit: ★, kind: growth}
  - {key: beans, name: Beans, kind: points}
event_types:
  - key: purchase
    attributes: {amount: decimal}
  - key: review
rules:
  - {key: purchase_stars, event: purchase, currency: stars, rate: {attribute: amount, per: 10, amount: 1}}
  - {key: purchase_beans, event: purchase, currency: beans, rate: {attribute: amount, per: 1, amount: 1}}
ladder:
  currency: stars
  tiers:
    - {key: green, name: Green, threshold: 0}
    - {key: gold, name: Gold, threshold: 100, multiplier: 1.2}
"""

WINDOW = """
campaigns:
  - key: double
    name: Double Beans
    starts_at: 2026-05-01T00:00:00+02:00
    ends_at: 2026-05-04T00:00:00+02:00
    multiplier: 2
    currencies: [beans]
"""

MEMBER_DAY = """
multipliers: {stacking: multiply, cap: 3}
campaigns:
  - key: member_day
    name: Member day
    member_day: {weekday: wednesday}
    multiplier: 2
    rules: [purchase_beans]
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def beans(p_text: str, when: datetime, state: MemberState | None = None, amount: int = 12) -> Evaluation:
    p = program(p_text)
    ev = event(at=when, attributes={"amount": Decimal(amount)})
    return evaluate(p, state or member(), ev, when)


def given_beans(result: Evaluation) -> int:
    return sum(a.amount for a in result.awards if a.currency == "beans")


# --- when a campaign runs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "doubled"),
    [
        ("2026-04-30T23:59:59.999999+02:00", False),
        ("2026-05-01T00:00:00+02:00", True),  # starts_at is inclusive
        ("2026-05-03T23:59:59+02:00", True),
        ("2026-05-04T00:00:00+02:00", False),  # ends_at is exclusive
    ],
)
def test_a_window_runs_from_its_start_inclusive_to_its_end_exclusive(when: str, doubled: bool) -> None:
    assert given_beans(beans(BASE + WINDOW, at(when))) == (24 if doubled else 12)


@pytest.mark.parametrize(
    ("when", "doubled"),
    [
        ("2026-01-06T22:59:59+00:00", False),  # 23:59:59 Tuesday in Paris
        ("2026-01-06T23:00:00+00:00", True),  # midnight: Wednesday begins in Paris (still Tuesday in UTC)
        ("2026-01-07T22:59:59+00:00", True),
        ("2026-01-07T23:00:00+00:00", False),  # Thursday in Paris
    ],
)
def test_the_member_day_is_a_day_in_the_programs_time_zone(when: str, doubled: bool) -> None:
    assert given_beans(beans(BASE + MEMBER_DAY, at(when))) == (24 if doubled else 12)


def test_a_day_of_the_month_member_day_and_its_next_start() -> None:
    p = program(
        BASE + "campaigns:\n  - {key: payday, member_day: {day_of_month: 31}, multiplier: 2, currencies: [beans]}\n"
    )
    c = p.campaigns[0]
    tz = p.timezone
    assert is_active(c, at("2026-01-31T12:00:00+01:00"), tz)
    assert not is_active(c, at("2026-02-01T12:00:00+01:00"), tz)
    # February has no 31st: the next is 31 March, from midnight in Paris.
    assert next_start(c, at("2026-02-01T12:00:00+01:00"), tz) == at("2026-03-31T00:00:00+02:00")


def test_past_active_and_upcoming() -> None:
    c = program(BASE + WINDOW).campaigns[0]
    tz = program(BASE).timezone
    assert status(c, at("2026-04-01T00:00:00+02:00"), tz) == "upcoming"
    assert status(c, at("2026-05-02T00:00:00+02:00"), tz) == "active"
    assert status(c, at("2026-05-04T00:00:00+02:00"), tz) == "past"
    assert next_start(c, at("2026-04-01T00:00:00+02:00"), tz) == at("2026-05-01T00:00:00+02:00")


# --- stacking ---------------------------------------------------------------------------------


def test_stacking_policies_and_the_cap() -> None:
    two, one_five = Decimal(2), Decimal("1.5")
    assert combine([two, one_five], Multipliers("multiply")) == 3
    assert combine([two, one_five], Multipliers("add")) == Decimal("2.5")
    assert combine([two, one_five], Multipliers("highest")) == 2
    assert combine([two, one_five, two], Multipliers("multiply", Decimal(4))) == 4
    assert combine([], Multipliers("multiply", Decimal(4))) == 1


@given(
    st.lists(st.decimals(min_value=Decimal("0.5"), max_value=Decimal(5), places=2), max_size=5),
    st.sampled_from(["multiply", "add", "highest"]),
    st.decimals(min_value=Decimal(1), max_value=Decimal(10), places=1),
    st.integers(min_value=0, max_value=10**9),
)
def test_the_total_never_exceeds_the_cap_and_rounds_down(
    factors: list[Decimal], policy: str, cap: Decimal, amount: int
) -> None:
    total = combine(factors, Multipliers(policy, cap))  # type: ignore[arg-type]
    assert total <= cap
    assert scaled(amount, total) <= amount * total < scaled(amount, total) + 1


def test_a_gold_member_on_member_day_earns_both_multipliers_in_words() -> None:
    gold = member(tier="gold")
    result = beans(BASE + MEMBER_DAY, at("2026-01-07T10:00:00+00:00"), gold)
    assert given_beans(result) == 28  # 12 x 2 x 1.2 = 28.8, rounded down
    outcome = next(o for o in result.outcomes if o.rule == "purchase_beans")
    assert outcome.factors == ("×2 Member day", "×1.2 Gold")
    assert describe(program(BASE + MEMBER_DAY), outcome) == "28 Beans (×2 Member day, ×1.2 Gold)"
    # Tier multipliers leave growth currencies alone: a tier must not feed its own qualification.
    assert [a.amount for a in result.awards if a.currency == "stars"] == [1]


def test_the_cap_is_said_when_it_holds_the_total_back() -> None:
    text = BASE + MEMBER_DAY.replace("cap: 3", "cap: 2")
    result = beans(text, at("2026-01-07T10:00:00+00:00"), member(tier="gold"))
    assert given_beans(result) == 24
    outcome = next(o for o in result.outcomes if o.rule == "purchase_beans")
    assert outcome.factors[-1] == "at most ×2 in all"


def test_the_outcome_row_keeps_the_factors() -> None:
    result = beans(BASE + MEMBER_DAY, at("2026-01-07T10:00:00+00:00"), member(tier="gold"))
    outcome = next(o for o in result.outcomes if o.rule == "purchase_beans")
    from kinloop.domain.rules import RuleOutcome

    assert RuleOutcome.from_row(outcome.as_row()) == outcome


# --- targeting --------------------------------------------------------------------------------

TARGETED = """
campaigns:
  - key: gold_week
    name: Gold week
    starts_at: 2026-05-01T00:00:00Z
    ends_at: 2026-05-08T00:00:00Z
    multiplier: 3
    currencies: [beans]
    tiers: [gold]
    condition: member.profile.city == "Lyon"
"""


@pytest.mark.parametrize(
    ("tier", "profile", "expected"),
    [
        ("gold", {"city": "Lyon"}, 12 * 3 * Decimal("1.2")),
        ("gold", {"city": "Paris"}, 12 * Decimal("1.2")),
        ("green", {"city": "Lyon"}, 12),
        ("gold", {}, 12 * Decimal("1.2")),  # no such attribute: not targeted (not an error)
    ],
)
def test_campaigns_target_tiers_and_member_attributes(tier: str, profile: dict[str, str], expected: Decimal) -> None:
    state = member(tier=tier, profile=profile)
    assert given_beans(beans(BASE + TARGETED, at("2026-05-02T10:00:00Z"), state)) == int(expected)


# --- bonuses and budgets ----------------------------------------------------------------------

BONUS = """
campaigns:
  - key: review_bonus
    name: Review week
    starts_at: 2026-05-01T00:00:00Z
    ends_at: 2026-05-08T00:00:00Z
    bonus: {event: review, currency: beans, amount: 5}
    budget: 12
"""


def test_a_bonus_for_a_behaviour_is_held_to_its_budget_with_a_partial_grant() -> None:
    p = program(BASE + BONUS)
    budgets = {"campaign:review_bonus": 12}
    given_amounts = []
    statuses = []
    for i in range(4):
        ev = event(event_id=f"r{i}", type="review", at=at("2026-05-02T10:00:00Z"))
        result = evaluate(p, member(member_id=f"m{i}"), ev, ev.occurred_at, budgets)
        given_amounts.append(sum(a.amount for a in result.awards))
        statuses.append(result.outcomes[0].status)
    assert given_amounts == [5, 5, 2, 0]
    assert statuses == ["awarded", "awarded", "awarded", "budget_spent"]
    assert budgets == {"campaign:review_bonus": 0}


def test_a_budgeted_multiplier_pays_only_for_the_extra_it_adds() -> None:
    text = BASE + WINDOW.replace("currencies: [beans]", "currencies: [beans]\n    budget: 15")
    p = program(text)
    budgets = {"campaign:double": 15}
    amounts = []
    for i in range(3):
        ev = event(event_id=f"p{i}", at=at("2026-05-02T10:00:00+02:00"), attributes={"amount": Decimal(10)})
        result = evaluate(p, member(), ev, ev.occurred_at, budgets)
        amounts.append(sum(a.amount for a in result.awards if a.currency == "beans"))
    assert amounts == [20, 15, 10]  # 10 extra, then the 5 left, then none: the base is never cut
    assert budgets["campaign:double"] == 0


def test_a_rule_budget_gives_what_is_left_then_nothing() -> None:
    text = BASE.replace(
        "rate: {attribute: amount, per: 1, amount: 1}}", "rate: {attribute: amount, per: 1, amount: 1}, budget: 30}"
    )
    p = program(text)
    budgets = {"rule:purchase_beans": 30}
    results = [
        evaluate(
            p,
            member(),
            event(event_id=f"p{i}", attributes={"amount": Decimal(12)}),
            at("2026-03-02T10:00:00Z"),
            budgets,
        )
        for i in range(4)
    ]
    assert [given_beans(r) for r in results] == [12, 12, 6, 0]
    assert results[3].outcomes[1].status == "budget_spent"
    assert describe(p, results[3].outcomes[1]) == "the budget of Purchase beans is spent"


def test_a_program_without_campaigns_or_multipliers_is_not_boosted() -> None:
    assert not program(BASE.replace(", multiplier: 1.2", "")).boosted
    assert program(BASE).boosted
    assert datetime(2026, 1, 1, tzinfo=UTC)  # keeps the import honest in every branch


@given(
    st.lists(st.tuples(st.sampled_from(["review", "purchase"]), st.integers(min_value=1, max_value=500)), max_size=40),
    st.integers(min_value=0, max_value=200),
)
def test_budgets_are_never_overspent_and_fully_used_when_asked_for(
    behaviours: list[tuple[str, int]], left: int
) -> None:
    """Whatever the events, a budget gives min(asked, budget) in all: never more, never less."""
    text = (
        BASE
        + BONUS.replace("budget: 12", "budget: 1000")
        + WINDOW.replace("currencies: [beans]", "currencies: [beans]\n    budget: 1000").replace("campaigns:\n", "")
    )
    p = program(text)
    budgets = {"campaign:review_bonus": left, "campaign:double": left}
    asked = {"campaign:review_bonus": 0, "campaign:double": 0}
    given_by = {"campaign:review_bonus": 0, "campaign:double": 0}
    for i, (kind, amount) in enumerate(behaviours):
        when = at("2026-05-02T10:00:00+02:00")
        attrs = {"amount": Decimal(amount)} if kind == "purchase" else {}
        result = evaluate(p, member(), event(event_id=f"e{i}", type=kind, at=when, attributes=attrs), when, budgets)
        if kind == "review":
            asked["campaign:review_bonus"] += 5
            given_by["campaign:review_bonus"] += sum(a.amount for a in result.awards if a.kind == "campaign_bonus")
        else:
            asked["campaign:double"] += amount  # the extra a x2 adds is the base amount again
            given_by["campaign:double"] += given_beans(result) - amount
    for key in budgets:
        assert given_by[key] == min(asked[key], left)
        assert budgets[key] == left - given_by[key] >= 0
