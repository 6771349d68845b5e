"""Bad check-in, campaign and multiplier sections are refused with the path of each problem."""

from __future__ import annotations

from tests.program.test_validation import HEADER, pairs

LADDER = """
ladder:
  currency: stars
  tiers:
    - {key: green, name: Green, threshold: 0}
    - {key: gold, name: Gold, threshold: 10, multiplier: 0}
"""


def test_bad_campaigns_are_refused_with_paths() -> None:
    text = (
        HEADER
        + "rules:\n  - {key: buy, event: purchase, currency: beans, amount: 1}\n"
        + """
campaigns:
  - {key: a, multiplier: 2, member_day: {weekday: funday}}
  - {key: b, starts_at: 2026-05-02T00:00:00Z, ends_at: 2026-05-01T00:00:00Z, multiplier: 2}
  - {key: c, member_day: {weekday: monday}}
  - {key: d, member_day: {weekday: monday, day_of_month: 3}, multiplier: 2}
  - {key: e, multiplier: 2}
"""
    )
    found = pairs(text)
    assert [p for p, _ in found] == [
        "campaigns[0].member_day.weekday",
        "campaigns[1]",
        "campaigns[2]",
        "campaigns[3].member_day",
        "campaigns[4]",
    ]
    assert found[1][1] == "starts_at must be before ends_at"
    assert found[2][1] == "give a multiplier, a bonus, or both"
    assert found[3][1] == "give exactly one of weekday or day_of_month"
    assert found[4][1] == "give starts_at and ends_at, or a member_day"


def test_campaign_references_are_checked() -> None:
    text = (
        HEADER
        + "rules:\n  - {key: buy, event: purchase, currency: beans, amount: 1}\n"
        + """
ladder:
  currency: stars
  tiers: [{key: green, name: Green, threshold: 0}]
campaigns:
  - key: buy
    member_day: {weekday: monday}
    multiplier: 2
    tiers: [gold]
    rules: [sell]
    currencies: [gems]
    condition: member.tier ==
  - key: bonus
    member_day: {day_of_month: 1}
    bonus: {event: refund, currency: beans, amount: 1}
    condition: event.amount > 1
  - key: budgeted
    member_day: {day_of_month: 2}
    multiplier: 2
    budget: 100
"""
    )
    assert pairs(text) == [
        ("campaigns[0].key", "'buy' is already the key of a rule"),
        ("campaigns[0].tiers[0]", "unknown tier 'gold'"),
        ("campaigns[0].rules[0]", "unknown rule 'sell'"),
        ("campaigns[0].currencies[0]", "unknown currency 'gems'"),
        ("campaigns[0].condition", pairs_message(text, "campaigns[0].condition")),
        ("campaigns[1].bonus.event", "unknown event type 'refund'"),
        ("campaigns[1].condition", "a campaign's condition sees member only (put event conditions in its bonus)"),
        ("campaigns[2].currencies", "a budgeted multiplier must name the one currency its budget counts"),
    ]


def pairs_message(text: str, path: str) -> str:
    return next(m for p, m in pairs(text) if p == path)


def test_bad_check_in_and_multipliers_are_refused_with_paths() -> None:
    text = (
        HEADER
        + LADDER
        + """
multipliers: {stacking: most, cap: 0.5}
checkin:
  event: sign_in
  currency: gems
  ladder: []
  milestones:
    - {days: 0, currency: stars, amount: 1}
"""
    )
    assert [p for p, _ in pairs(text)] == [
        "ladder.tiers[1].multiplier",
        "checkin.ladder",
        "checkin.milestones[0].days",
        "multipliers.stacking",
        "multipliers.cap",
    ]


def test_check_in_references_are_checked() -> None:
    text = (
        HEADER
        + """
checkin:
  event: sign_in
  currency: gems
  ladder: [1, 2.5]
  milestones:
    - {days: 7, currency: stars, amount: 1}
    - {days: 7, currency: value, amount: 1}
  first_day_gift: {currency: gold, amount: 5}
"""
    )
    assert pairs(text) == [
        ("checkin.event", "unknown event type 'sign_in'"),
        ("checkin.currency", "unknown currency 'gems'"),
        ("checkin.milestones[1].days", "another milestone is at 7 days"),
        ("checkin.milestones[1].currency", "unknown currency 'value'"),
        ("checkin.first_day_gift.currency", "unknown currency 'gold'"),
    ]
