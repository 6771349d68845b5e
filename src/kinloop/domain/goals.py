"""Shared goals: members donate towards a target; reaching it closes the round. No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Donation:
    """How a donation lands on a round: what is taken, and whether it reaches the target."""

    accepted: int
    raised: int
    reached: bool


def donate(*, target: int, raised: int, amount: int) -> Donation:
    """Take at most what the round still misses (a donation never overshoots the target)."""
    if amount <= 0:
        raise ValueError("a donation is positive")
    missing = max(target - raised, 0)
    accepted = min(amount, missing)
    return Donation(accepted, raised + accepted, raised + accepted >= target)


def progress_text(raised: int, target: int, missing_text: str, name: str) -> str:
    """'40 Beans to Plant a tree' or 'Plant a tree reached'."""
    return f"{name} reached" if raised >= target else f"{missing_text} to {name}"
