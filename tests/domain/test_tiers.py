"""Tiers: which tier a growth balance reaches, and how far the next one is."""

from __future__ import annotations

import pytest

from kinloop.domain.program import LIFETIME, Ladder, Tier
from kinloop.domain.tiers import Progress, progress, tier_for
from tests.domain.factories import program

GREEN = Tier("green", "Green", 0)
JADE = Tier("jade", "Jade", 400)
GOLD = Tier("gold", "Gold", 1600)
LADDER = Ladder("stars", LIFETIME, (GREEN, JADE, GOLD))
# A ladder whose lowest tier must be earned.
EARNED = Ladder("stars", LIFETIME, (Tier("lv1", "Lv 1", 100), Tier("lv2", "Lv 2", 250)))


@pytest.mark.parametrize(
    ("growth", "tier"),
    [(0, GREEN), (399, GREEN), (400, JADE), (1599, JADE), (1600, GOLD), (10**9, GOLD)],
)
def test_tier_for_is_the_highest_tier_reached(growth: int, tier: Tier) -> None:
    assert tier_for(LADDER, growth) == tier


def test_below_the_lowest_threshold_there_is_no_tier() -> None:
    assert tier_for(EARNED, 99) is None
    assert tier_for(EARNED, 100) == Tier("lv1", "Lv 1", 100)


def test_a_negative_growth_balance_has_no_tier_above_zero() -> None:
    assert tier_for(LADDER, -5) is None


@pytest.mark.parametrize(
    ("growth", "expected"),
    [
        (0, Progress(GREEN, JADE, 400)),
        (397, Progress(GREEN, JADE, 3)),
        (400, Progress(JADE, GOLD, 1200)),
        (1599, Progress(JADE, GOLD, 1)),
        (1600, Progress(GOLD, None, 0)),
        (5000, Progress(GOLD, None, 0)),
    ],
)
def test_progress_is_the_distance_to_the_next_tier(growth: int, expected: Progress) -> None:
    assert progress(LADDER, growth) == expected


def test_progress_before_the_first_tier() -> None:
    assert progress(EARNED, 40) == Progress(None, Tier("lv1", "Lv 1", 100), 60)


def test_thresholds_are_in_minor_units_of_the_ladder_currency() -> None:
    # given a growth currency with 2 decimals and a tier at 12.5
    p = program(
        """
key: t
name: T
currencies: [{key: value, name: Value, kind: growth, decimals: 2}]
event_types: [{key: visit}]
ladder:
  currency: value
  tiers:
    - {key: base, name: Base, threshold: 0}
    - {key: plus, name: Plus, threshold: 12.5}
"""
    )
    assert p.ladder is not None
    assert [t.threshold for t in p.ladder.tiers] == [0, 1250]
    assert tier_for(p.ladder, 1249) == Tier("base", "Base", 0)
    assert progress(p.ladder, 1000) == Progress(Tier("base", "Base", 0), Tier("plus", "Plus", 1250), 250)
