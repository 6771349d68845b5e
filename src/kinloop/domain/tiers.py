"""Tier logic: which tier a growth balance reaches, and the distance to the next."""

from __future__ import annotations

from dataclasses import dataclass

from kinloop.domain.program import Ladder, Tier


def tier_for(ladder: Ladder, growth: int) -> Tier | None:
    """The highest tier whose threshold the growth balance reaches."""
    reached: Tier | None = None
    for tier in ladder.tiers:
        if growth >= tier.threshold:
            reached = tier
    return reached


@dataclass(frozen=True, slots=True)
class Progress:
    tier: Tier | None
    next: Tier | None
    missing: int  # minor units of the ladder currency still needed for `next`


def progress(ladder: Ladder, growth: int) -> Progress:
    """Where a member stands on the ladder and how much is missing for the next tier."""
    current = tier_for(ladder, growth)
    for tier in ladder.tiers:
        if tier.threshold > growth:
            return Progress(current, tier, tier.threshold - growth)
    return Progress(current, None, 0)
