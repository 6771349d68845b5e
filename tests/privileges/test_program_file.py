"""The `privileges:` and `leaderboards:` sections: optional, compiled, and refused with paths."""

from __future__ import annotations

from kinloop.domain.program import Leaderboard, Privilege, Quota
from kinloop.program.loader import compile_program, parse_program
from tests.program.test_validation import pairs

HEADER = """
key: shop
name: Shop
currencies:
  - {key: stars, name: Stars, kind: growth}
  - {key: beans, name: Beans, kind: points}
event_types:
  - key: purchase
    attributes: {amount: decimal}
  - key: answer
ladder:
  currency: stars
  tiers:
    - {key: green, name: Green, threshold: 0}
    - {key: gold, name: Gold, threshold: 10}
"""


def test_without_the_sections_a_program_has_none() -> None:
    p = compile_program(parse_program(HEADER))
    assert (p.privileges, p.leaderboards) == ((), ())


def test_the_sections_compile() -> None:
    p = compile_program(
        parse_program(
            HEADER
            + """
privileges:
  - {key: coupon, name: Coupon, kind: preferential, tiers: [gold], quota: {uses: 2, per: month}}
  - {key: gift, name: Gift, kind: care, tiers: [green, gold], single_use: true, window: birthday_month}
  - {key: line, name: VIP line, kind: service, tiers: [gold], description: Call us}
leaderboards:
  - {key: answers, name: Answers, period: week, measure: {event: answer}}
  - {key: stars, name: Stars, period: all_time, measure: {currency: stars}, group_by: city}
"""
        )
    )
    assert p.privileges == (
        Privilege("coupon", "Coupon", "preferential", ("gold",), Quota(2, "month")),
        Privilege("gift", "Gift", "care", ("green", "gold"), Quota(1), "birthday_month"),
        Privilege("line", "VIP line", "service", ("gold",), None, description="Call us"),
    )
    assert p.leaderboards == (
        Leaderboard("answers", "Answers", "week", event="answer", unit="answer events", unit_one="answer event"),
        Leaderboard("stars", "Stars", "all_time", currency="stars", group_by="city"),
    )


def test_bad_privileges_are_refused_with_their_paths() -> None:
    text = (
        HEADER
        + """
privileges:
  - {key: coupon, name: Coupon, kind: preferential, tiers: [gold, platinum]}
  - {key: coupon, name: Again, kind: care, tiers: [gold]}
  - {key: both, name: Both, kind: care, tiers: [gold], single_use: true, quota: {uses: 1}}
  - {key: zero, name: Zero, kind: gift, tiers: [], quota: {uses: 0, per: fortnight}}
"""
    )
    assert pairs(text) == [
        ("privileges[2]", "give single_use or quota, not both"),
        ("privileges[3].kind", "must be 'preferential', 'function', 'care' or 'service'"),
        ("privileges[3].tiers", "must not be empty"),
        ("privileges[3].quota.uses", "must be greater than 0"),
        ("privileges[3].quota.per", "must be 'day', 'week', 'month' or 'year'"),
    ]
    # Once the schema is satisfied, references are checked.
    text = HEADER + "privileges:\n  - {key: c, name: C, kind: care, tiers: [gold, platinum]}\n"
    text += "  - {key: c, name: D, kind: care, tiers: [green]}\n"
    assert pairs(text) == [
        ("privileges[1].key", "duplicate key 'c'"),
        ("privileges[0].tiers[1]", "unknown tier 'platinum' (tiers: green, gold)"),
    ]


def test_privileges_need_a_ladder() -> None:
    text = HEADER.split("ladder:")[0] + "privileges:\n  - {key: c, name: C, kind: care, tiers: [gold]}\n"
    assert pairs(text) == [("privileges[0].tiers[0]", "unknown tier 'gold'; the program has no ladder")]


def test_bad_leaderboards_are_refused_with_their_paths() -> None:
    text = (
        HEADER
        + """
leaderboards:
  - {key: a, name: A, period: fortnight, measure: {event: answer}}
  - {key: b, name: B, period: week, measure: {event: answer, currency: stars}}
  - {key: c, name: C, period: week, measure: {currency: stars, unit: pts}}
"""
    )
    assert pairs(text) == [
        ("leaderboards[0].period", "must be 'day', 'week', 'month' or 'all_time'"),
        ("leaderboards[1].measure", "give exactly one of currency or event"),
        ("leaderboards[2].measure", "unit is for event counts; currencies show their own unit"),
    ]
    text = HEADER + "leaderboards:\n  - {key: a, name: A, period: week, measure: {event: reply}}\n"
    text += "  - {key: a, name: A, period: day, measure: {currency: gems}}\n"
    assert pairs(text) == [
        ("leaderboards[1].key", "duplicate key 'a'"),
        ("leaderboards[0].measure.event", "unknown event type 'reply'"),
        ("leaderboards[1].measure.currency", "unknown currency 'gems'"),
    ]
