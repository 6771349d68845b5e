"""The rule engine: (program, member state, event) -> awards and the reason for each."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kinloop.domain.program import Pending
from kinloop.domain.rules import (
    Activity,
    Award,
    BonusMove,
    FirstAward,
    MemberState,
    RuleOutcome,
    Usage,
    apply,
    describe,
    evaluate,
)
from tests.domain.factories import event, member, program

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def rate_program(*, per: str, amount: str, rounding: str, decimals: int = 0) -> str:
    return f"""
key: rate
name: Rate
currencies:
  - {{key: pts, name: Points, kind: points, decimals: {decimals}}}
event_types:
  - key: purchase
    attributes: {{amount: decimal}}
rules:
  - key: r
    event: purchase
    currency: pts
    rate: {{attribute: amount, per: {per}, amount: {amount}, rounding: {rounding}}}
"""


def awarded(text: str, amount: str | int) -> tuple[list[Award], list[RuleOutcome]]:
    p = program(text)
    ev = event(attributes={"amount": Decimal(str(amount))})
    result = evaluate(p, member(), ev, NOW)
    return list(result.awards), list(result.outcomes)


# --- proportional awards and rounding ---------------------------------------------------------


@pytest.mark.parametrize(("amount", "points"), [(120, 2), (149, 2), (150, 3), (49, 0), ("99.99", 1)])
def test_rate_full_counts_only_whole_blocks(amount: int | str, points: int) -> None:
    # given 1 point per whole 50 spent
    text = rate_program(per="50", amount="1", rounding="full")
    # when
    awards, _ = awarded(text, amount)
    # then
    assert [a.amount for a in awards] == ([points] if points else [])


def test_rate_full_and_down_differ_on_a_multi_unit_rate() -> None:
    # given 3 points per 50: 120 is 2 whole blocks (6 points) but 7.2 points pro rata
    assert awarded(rate_program(per="50", amount="3", rounding="full"), 120)[0][0].amount == 6
    assert awarded(rate_program(per="50", amount="3", rounding="down"), 120)[0][0].amount == 7


@pytest.mark.parametrize(
    ("rounding", "amount", "points"),
    [
        ("down", 149, 2),
        ("up", 101, 3),
        ("half_up", 125, 3),
        ("half_up", 124, 2),
        ("half_even", 125, 2),
        ("half_even", 175, 4),
    ],
)
def test_rate_rounding_modes(rounding: str, amount: int, points: int) -> None:
    awards, outcomes = awarded(rate_program(per="50", amount="1", rounding=rounding), amount)
    assert [a.amount for a in awards] == [points]
    assert outcomes[0].status == "awarded"


def test_rate_in_a_currency_with_decimals_is_in_minor_units() -> None:
    # given 0.1 point per 1 spent, in a currency with 2 decimals
    full = rate_program(per="1", amount="0.1", rounding="full", decimals=2)
    down = rate_program(per="1", amount="0.1", rounding="down", decimals=2)
    # then 12.345 spent is 12 whole blocks (1.20 points) or 1.2345 points rounded down (1.23)
    assert awarded(full, "12.345")[0][0].amount == 120
    assert awarded(down, "12.345")[0][0].amount == 123
    assert describe(program(down), awarded(down, "12.345")[1][0]) == "1.23 Points"


def test_an_award_that_rounds_to_zero_gives_nothing() -> None:
    awards, [outcome] = awarded(rate_program(per="50", amount="1", rounding="full"), 30)
    assert awards == []
    assert outcome == RuleOutcome("r", "zero")
    assert describe(program(rate_program(per="50", amount="1", rounding="full")), outcome) == "amount rounds to 0"


def test_a_negative_amount_gives_nothing() -> None:
    awards, [outcome] = awarded(rate_program(per="50", amount="1", rounding="full"), -500)
    assert awards == []
    assert outcome.status == "zero"


def test_a_missing_rate_attribute_is_reported() -> None:
    p = program(
        """
key: t
name: T
currencies: [{key: pts, name: Points, kind: points}]
event_types:
  - {key: purchase, attributes: {total: {type: integer, required: false}}}
rules:
  - {key: r, event: purchase, currency: pts, rate: {attribute: total, per: 10}}
"""
    )
    result = evaluate(p, member(), event(), NOW)
    assert result.awards == ()
    assert result.outcomes == (RuleOutcome("r", "missing_attribute", info=("total",)),)
    assert describe(p, result.outcomes[0]) == "event has no 'total'"


# --- caps and limits --------------------------------------------------------------------------

CAPS = """
key: caps
name: Caps
currencies: [{key: pts, name: Points, kind: points}]
event_types:
  - {key: purchase, attributes: {amount: decimal}}
  - {key: check_in}
rules:
  - key: per_purchase
    event: purchase
    currency: pts
    amount: 3
    cap: {per_day: 5, per_week: 8}
  - key: daily
    event: check_in
    currency: pts
    amount: 1
    limit: {per_day: 1, lifetime: 3}
"""


def run(text: str, events: list[tuple[str, str, datetime]], state: MemberState | None = None) -> list[RuleOutcome]:
    """Evaluate events in order, each seeing the state the ones before left; one outcome each."""
    p = program(text)
    state = state or member()
    out = []
    for event_id, type_, at in events:
        result = evaluate(p, state, event(event_id=event_id, type=type_, at=at, attributes={"amount": 1}), NOW)
        apply(state, result)
        assert len(result.outcomes) == 1
        out.append(result.outcomes[0])
    return out


def test_a_cap_truncates_the_award_and_then_stops_it() -> None:
    # given 3 points a purchase, at most 5 a day
    outcomes = run(CAPS, [("e1", "purchase", T0), ("e2", "purchase", T0), ("e3", "purchase", T0)])
    # then 3, then 2 of 3, then nothing
    assert outcomes == [
        RuleOutcome("per_purchase", "awarded", 3),
        RuleOutcome("per_purchase", "capped", 2, info=(3, "day", 5)),
        RuleOutcome("per_purchase", "cap_reached", info=("day", 5)),
    ]
    assert [describe(program(CAPS), o) for o in outcomes] == [
        "3 Points",
        "2 Points of 3 Points (day cap of 5 Points)",
        "day cap of 5 Points already reached",
    ]


def test_a_cap_reports_the_tightest_period() -> None:
    # given 5 on Monday (day cap), then on Tuesday 3 of the 8 a week allows
    day2 = T0 + timedelta(days=1)
    outcomes = run(
        CAPS,
        [("e1", "purchase", T0), ("e2", "purchase", T0), ("e3", "purchase", day2), ("e4", "purchase", day2)],
    )
    assert [(o.status, o.amount) for o in outcomes] == [
        ("awarded", 3),
        ("capped", 2),
        ("awarded", 3),
        ("cap_reached", 0),
    ]
    assert outcomes[3].info == ("week", 8)
    assert describe(program(CAPS), outcomes[3]) == "week cap of 8 Points already reached"


def test_caps_start_again_in_the_next_period() -> None:
    # given the week cap was reached on Monday and Tuesday of ISO week 10
    days = [T0, T0, T0 + timedelta(days=1), T0 + timedelta(days=1)]
    # when a purchase comes on the next Monday
    outcomes = run(CAPS, [(f"e{i}", "purchase", at) for i, at in enumerate([*days, T0 + timedelta(days=7)])])
    # then it is awarded in full
    assert outcomes[-2].status == "cap_reached"
    assert outcomes[-1] == RuleOutcome("per_purchase", "awarded", 3)


def test_caps_record_usage_per_period_key() -> None:
    p = program(CAPS)
    result = evaluate(p, member(), event(at=T0, attributes={"amount": 1}), NOW)
    assert dict(result.usage) == {
        ("per_purchase", "d2026-03-02"): Usage(3, 1),
        ("per_purchase", "w2026-10"): Usage(3, 1),
    }


def test_a_limit_counts_awards() -> None:
    # given one check-in award a day, three in a lifetime
    at = [T0, T0 + timedelta(hours=2), T0 + timedelta(days=1), T0 + timedelta(days=2), T0 + timedelta(days=3)]
    outcomes = run(CAPS, [(f"c{i}", "check_in", t) for i, t in enumerate(at)])
    assert [o.status for o in outcomes] == ["awarded", "limit_reached", "awarded", "awarded", "limit_reached"]
    assert outcomes[1] == RuleOutcome("daily", "limit_reached", info=("day", 1))
    assert outcomes[4] == RuleOutcome("daily", "limit_reached", info=("lifetime", 3))
    assert describe(program(CAPS), outcomes[1]) == "at most 1 award per day; already given"
    assert describe(program(CAPS), outcomes[4]) == "at most 3 awards per lifetime; already given"


def test_days_for_caps_are_local_days() -> None:
    # given a program in Shanghai (UTC+8) capping 5 points a day
    text = CAPS.replace("name: Caps", "name: Caps\ntimezone: Asia/Shanghai")
    # when purchases at 15:00 and 17:00 UTC fall on two Shanghai days (23:00 and 01:00 local)
    at1 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    at2 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    outcomes = run(text, [("e1", "purchase", at1), ("e2", "purchase", at1), ("e3", "purchase", at2)])
    # then the third purchase is the first of a new day
    assert [(o.status, o.amount) for o in outcomes] == [("awarded", 3), ("capped", 2), ("awarded", 3)]


# --- conditions -------------------------------------------------------------------------------

CONDITIONS = """
key: cond
name: Cond
currencies:
  - {key: pts, name: Points, kind: points}
event_types:
  - key: purchase
    attributes:
      amount: decimal
      qty: {type: integer, required: false}
      channel: {type: string, required: false}
  - key: check_in
rules:
  - {key: app_only, event: purchase, currency: pts, amount: 2, condition: "event.channel == 'app'"}
  - {key: per_item, event: purchase, currency: pts, amount: 1, condition: "100 / event.qty > 10"}
  - {key: big, event: purchase, currency: pts, amount: 5, condition: "event.amount >= 100.0"}
  - {key: third, event: check_in, currency: pts, amount: 7, condition: "member.counters.check_in == 3"}
  - {key: streak, event: check_in, currency: pts, amount: 9, condition: "member.streaks.check_in >= 3"}
  - {key: rich, event: check_in, currency: pts, amount: 4, condition: "member.balances.pts >= 10.0"}
  - {key: gold, event: check_in, currency: pts, amount: 6, condition: "member.tier == 'gold'"}
"""


def statuses(outcomes: tuple[RuleOutcome, ...]) -> dict[str, str]:
    return {o.rule: o.status for o in outcomes}


def test_conditions_see_event_attributes() -> None:
    p = program(CONDITIONS)
    ev = event(attributes={"amount": Decimal("150"), "qty": 5, "channel": "app"})
    result = evaluate(p, member(), ev, NOW)
    assert statuses(result.outcomes) == {"app_only": "awarded", "per_item": "awarded", "big": "awarded"}
    assert [a.amount for a in result.awards] == [2, 1, 5]


def test_a_false_condition_gives_nothing_and_says_why() -> None:
    p = program(CONDITIONS)
    ev = event(attributes={"amount": Decimal("99.99"), "qty": 20, "channel": "shop"})
    result = evaluate(p, member(), ev, NOW)
    assert result.awards == ()
    assert result.outcomes == (
        RuleOutcome("app_only", "condition_false"),
        RuleOutcome("per_item", "condition_false"),
        RuleOutcome("big", "condition_false"),
    )
    assert describe(p, result.outcomes[0]) == "condition is false: event.channel == 'app'"


def test_a_condition_that_cannot_be_evaluated_is_an_error_not_a_crash() -> None:
    # given no channel (a missing optional attribute) and qty 0 (a division by zero)
    p = program(CONDITIONS)
    result = evaluate(p, member(), event(attributes={"amount": Decimal(100), "qty": 0}), NOW)
    by_rule = {o.rule: o for o in result.outcomes}
    # then those rules report an error, and the others still award
    assert by_rule["app_only"] == RuleOutcome("app_only", "condition_error", info=("channel",))
    assert describe(p, by_rule["app_only"]) == "condition could not be evaluated: channel"
    assert by_rule["per_item"].status == "condition_error"
    assert "division by zero" in by_rule["per_item"].info[0]
    assert by_rule["big"] == RuleOutcome("big", "awarded", 5)
    assert result.awards == (Award("big", "pts", 5),)


def test_member_counters_and_streaks_include_the_event_being_evaluated() -> None:
    # given check-ins on three consecutive days
    p = program(CONDITIONS)
    state = member()
    got = []
    for i in range(3):
        result = evaluate(p, state, event(event_id=f"c{i}", type="check_in", at=T0 + timedelta(days=i)), NOW)
        apply(state, result)
        got.append(statuses(result.outcomes))
    # then the streak rule and the third-check-in rule both fire on the third day only
    assert [g["streak"] for g in got] == ["condition_false", "condition_false", "awarded"]
    assert [g["third"] for g in got] == ["condition_false", "condition_false", "awarded"]
    assert state.activity["check_in"] == Activity(3, date(2026, 3, 4), 3)


def test_a_late_check_in_sees_the_streak_of_its_own_day() -> None:
    # given check-ins on 3, 4 and 5 March (a streak of 3)
    p = program(CONDITIONS)
    state = member(activity={"check_in": Activity(3, date(2026, 3, 5), 3)})
    # when a second check-in for 4 March arrives late, and then one for 6 March
    late = evaluate(p, state, event(event_id="late", type="check_in", at=datetime(2026, 3, 4, 9, tzinfo=UTC)), NOW)
    today = evaluate(p, state, event(event_id="now", type="check_in", at=datetime(2026, 3, 6, 9, tzinfo=UTC)), NOW)
    # then the late one stood at a streak of 2 on its day; the current one makes 4
    assert statuses(late.outcomes)["streak"] == "condition_false"
    assert statuses(today.outcomes)["streak"] == "awarded"


def test_member_balances_are_in_display_units_and_tier_is_visible() -> None:
    p = program(CONDITIONS)
    poor = evaluate(p, member(balances={"pts": 9}), event(type="check_in"), NOW)
    rich = evaluate(p, member(balances={"pts": 10}, tier="gold"), event(type="check_in"), NOW)
    assert statuses(poor.outcomes)["rich"] == "condition_false"
    assert statuses(poor.outcomes)["gold"] == "condition_false"
    assert statuses(rich.outcomes)["rich"] == "awarded"
    assert statuses(rich.outcomes)["gold"] == "awarded"


# --- validity windows -------------------------------------------------------------------------

WINDOW = """
key: win
name: Win
currencies: [{key: pts, name: Points, kind: points}]
event_types: [{key: check_in}]
rules:
  - key: double_days
    event: check_in
    currency: pts
    amount: 2
    valid_from: "2026-03-01T00:00:00Z"
    valid_to: "2026-03-08T00:00:00Z"
"""


@pytest.mark.parametrize(
    ("at", "outcome", "text"),
    [
        (
            datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
            RuleOutcome("double_days", "not_yet_valid", info=("2026-03-01T00:00:00+00:00",)),
            "valid from 2026-03-01T00:00:00+00:00",
        ),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), RuleOutcome("double_days", "awarded", 2), "2 Points"),
        (datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC), RuleOutcome("double_days", "awarded", 2), "2 Points"),
        (
            datetime(2026, 3, 8, 0, 0, tzinfo=UTC),
            RuleOutcome("double_days", "no_longer_valid", info=("2026-03-08T00:00:00+00:00",)),
            "valid until 2026-03-08T00:00:00+00:00",
        ),
    ],
)
def test_validity_is_judged_by_when_the_event_happened(at: datetime, outcome: RuleOutcome, text: str) -> None:
    p = program(WINDOW)
    # `now` (when it is processed) is long after the window: it does not matter
    result = evaluate(p, member(), event(type="check_in", at=at), datetime(2026, 6, 1, tzinfo=UTC))
    assert result.outcomes == (outcome,)
    assert describe(p, outcome) == text
    assert result.awards == ((Award("double_days", "pts", 2),) if outcome.status == "awarded" else ())


# --- first-time bonus -------------------------------------------------------------------------

BONUS = """
key: bonus
name: Bonus
currencies: [{key: pts, name: Points, kind: points}]
event_types: [{key: purchase, attributes: {amount: decimal}}, {key: review}]
rules:
  - key: buy
    event: purchase
    currency: pts
    amount: 2
    first_time_bonus: 10
  - key: first_review
    event: review
    currency: pts
    amount: 1
    limit: {lifetime: 1}
    first_time_bonus: 5
"""


def test_the_first_time_bonus_is_given_once() -> None:
    p = program(BONUS)
    state = member()
    # when
    first = evaluate(p, state, event(event_id="e1", at=T0, attributes={"amount": 1}), NOW)
    apply(state, first)
    second = evaluate(p, state, event(event_id="e2", at=T0 + timedelta(days=1), attributes={"amount": 1}), NOW)
    # then
    assert first.awards == (Award("buy", "pts", 2), Award("buy", "pts", 10, "first_time_bonus"))
    assert first.outcomes == (RuleOutcome("buy", "awarded", 2, 10),)
    assert describe(p, first.outcomes[0]) == "2 Points; first-time bonus 10 Points"
    assert first.firsts == {"buy": FirstAward(T0, "e1")}
    assert first.bonus_moves == ()
    assert second.awards == (Award("buy", "pts", 2),)
    assert second.outcomes == (RuleOutcome("buy", "awarded", 2),)
    assert second.firsts == {}


def test_a_late_earlier_event_takes_the_first_time_bonus() -> None:
    # given e2 holds the bonus
    p = program(BONUS)
    state = member()
    apply(state, evaluate(p, state, event(event_id="e2", at=T0, attributes={"amount": 1}), NOW))
    # when e1, which happened an hour earlier, arrives late
    late = evaluate(p, state, event(event_id="e1", at=T0 - timedelta(hours=1), attributes={"amount": 1}), NOW)
    # then e1 gets the bonus and the bonus moves away from e2
    assert late.awards == (Award("buy", "pts", 2), Award("buy", "pts", 10, "first_time_bonus"))
    assert late.bonus_moves == (BonusMove("buy", "e2"),)
    assert late.firsts == {"buy": FirstAward(T0 - timedelta(hours=1), "e1")}
    assert late.outcomes == (RuleOutcome("buy", "awarded", 2, 10, note="bonus moved from later event e2"),)
    assert describe(p, late.outcomes[0]) == "2 Points; first-time bonus 10 Points (bonus moved from later event e2)"
    apply(state, late)
    assert state.firsts["buy"] == FirstAward(T0 - timedelta(hours=1), "e1")


def test_a_late_event_that_happened_after_the_holder_does_not_move_the_bonus() -> None:
    p = program(BONUS)
    state = member()
    apply(state, evaluate(p, state, event(event_id="e2", at=T0, attributes={"amount": 1}), NOW))
    later = evaluate(p, state, event(event_id="e3", at=T0 + timedelta(minutes=1), attributes={"amount": 1}), NOW)
    assert later.bonus_moves == ()
    assert later.awards == (Award("buy", "pts", 2),)


def test_at_the_same_instant_the_smaller_event_id_is_first() -> None:
    p = program(BONUS)
    state = member()
    apply(state, evaluate(p, state, event(event_id="b", at=T0, attributes={"amount": 1}), NOW))
    tie = evaluate(p, state, event(event_id="a", at=T0, attributes={"amount": 1}), NOW)
    assert tie.bonus_moves == (BonusMove("buy", "b"),)


def test_the_bonus_moves_even_when_the_rule_itself_has_reached_its_limit() -> None:
    # given a review rule limited to once in a lifetime, already given to r2
    p = program(BONUS)
    state = member()
    apply(state, evaluate(p, state, event(event_id="r2", type="review", at=T0), NOW))
    # when an earlier review arrives late
    late = evaluate(p, state, event(event_id="r1", type="review", at=T0 - timedelta(days=1)), NOW)
    # then no second rule award, but the bonus moves to the earlier review
    assert late.awards == (Award("first_review", "pts", 5, "first_time_bonus"),)
    assert late.outcomes == (RuleOutcome("first_review", "awarded", 0, 5, note="bonus moved from later event r2"),)
    assert describe(p, late.outcomes[0]) == (
        "nothing from the rule itself; first-time bonus 5 Points (bonus moved from later event r2)"
    )
    assert late.bonus_moves == (BonusMove("first_review", "r2"),)


# --- pending ----------------------------------------------------------------------------------


def test_awards_are_pending_by_currency_unless_the_rule_says_otherwise() -> None:
    p = program(
        """
key: pend
name: Pend
currencies:
  - {key: pts, name: Points, kind: points, pending: {days: 14}}
  - {key: xp, name: XP, kind: growth}
event_types:
  - {key: purchase, attributes: {amount: decimal, order_id: string}}
  - {key: delivered, attributes: {order_id: string}}
rules:
  - {key: a, event: purchase, currency: pts, amount: 1}
  - {key: b, event: purchase, currency: pts, amount: 2, pending: {until_event: delivered, key: order_id}}
  - {key: c, event: purchase, currency: xp, amount: 3}
"""
    )
    result = evaluate(p, member(), event(attributes={"amount": 1, "order_id": "o1"}), NOW)
    assert result.awards == (
        Award("a", "pts", 1, "rule", Pending(days=14)),
        Award("b", "pts", 2, "rule", Pending(until_event="delivered", key="order_id")),
        Award("c", "xp", 3, "rule", None),
    )


# --- bookkeeping ------------------------------------------------------------------------------


def test_evaluate_does_not_change_the_state_until_applied() -> None:
    p = program(CAPS)
    state = member()
    result = evaluate(p, state, event(at=T0, attributes={"amount": 1}), NOW)
    assert state.usage == {}
    assert state.activity == {}
    apply(state, result)
    assert state.usage[("per_purchase", "d2026-03-02")] == Usage(3, 1)
    assert state.activity["purchase"] == Activity(1, date(2026, 3, 2), 1)


def test_a_late_event_for_an_earlier_day_counts_but_keeps_the_last_day_and_streak() -> None:
    p = program(CAPS)
    state = member(activity={"check_in": Activity(4, date(2026, 3, 5), 3)})
    result = evaluate(p, state, event(type="check_in", at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC)), NOW)
    assert result.activity == Activity(5, date(2026, 3, 5), 3)
    assert result.day == date(2026, 3, 3)


def test_rules_of_other_event_types_are_not_evaluated() -> None:
    p = program(CAPS)
    result = evaluate(p, member(), event(type="check_in", at=T0), NOW)
    assert [o.rule for o in result.outcomes] == ["daily"]
