"""Ladders in the program file: the new settings compile, bad ladders are refused with paths."""

from __future__ import annotations

from kinloop.domain.errors import ProgramInvalid
from kinloop.domain.program import PaidTerm, Window
from kinloop.program.loader import compile_program, parse_program

HEADER = """
key: t
name: T
currencies:
  - {key: value, name: Value, kind: growth}
  - {key: points, name: Points, kind: points}
event_types: [{key: visit}, {key: buy_club}]
"""


def problems(ladder: str) -> list[tuple[str, str]]:
    try:
        compile_program(parse_program(HEADER + ladder))
    except ProgramInvalid as exc:
        return [(i.path, i.message) for i in exc.issues]
    return []


def test_a_full_ladder_compiles() -> None:
    p = compile_program(
        parse_program(
            HEADER
            + """
ladder:
  currency: value
  window: {rolling_days: 365}
  cadence: monthly
  grace_days: 30
  one_level_drop: true
  warn_days: 7
  tiers:
    - {key: a, name: A, threshold: 0}
    - {key: b, name: B, threshold: 10}
    - {key: club, name: Club, paid: {term_days: 365, event: buy_club}}
    - {key: inner, name: Inner, invitation_only: true}
"""
        )
    )
    assert p.ladder is not None
    assert p.ladder.window == Window("rolling", 365)
    assert (p.ladder.cadence, p.ladder.grace_days, p.ladder.one_level_drop, p.ladder.warn_days) == (
        "monthly",
        30,
        True,
        7,
    )
    assert p.ladder.tiers[2].paid == PaidTerm(365, "buy_club", 7)
    assert p.ladder.tiers[3].invitation_only
    assert not p.ladder.tiers[3].earnable


def test_a_lifetime_ladder_without_the_new_settings_is_unchanged() -> None:
    p = compile_program(parse_program(HEADER + "ladder: {currency: value, tiers: [{key: a, name: A, threshold: 0}]}\n"))
    assert p.ladder is not None
    assert (p.ladder.window, p.ladder.cadence, p.ladder.grace_days) == (Window("lifetime"), "realtime", 0)


def test_bad_ladders_are_refused_with_every_path() -> None:
    found = problems(
        """
ladder:
  currency: value
  tiers:
    - {key: a, name: A, threshold: 10}
    - {key: b, name: B, threshold: 10}
    - {key: c, name: C}
    - {key: d, name: D, invitation_only: true, threshold: 50}
    - {key: e, name: E, paid: {term_days: 30, event: nope}}
    - {key: f, name: F, threshold: 5}
"""
    )
    assert found == [
        ("ladder.tiers[1].threshold", "must be greater than the tier before (10)"),
        ("ladder.tiers[2].threshold", "unreachable tier: give a threshold, or make it paid or invitation_only"),
        ("ladder.tiers[3].threshold", "an invitation-only tier is never reached by threshold; remove it"),
        ("ladder.tiers[4].paid.event", "unknown event type 'nope'"),
        ("ladder.tiers[5].threshold", "must be greater than the tier before (10)"),
    ]


def test_unknown_and_points_currencies_are_refused() -> None:
    assert problems("ladder: {currency: gems, tiers: [{key: a, name: A, threshold: 0}]}\n") == [
        ("ladder.currency", "unknown currency 'gems'")
    ]
    assert problems("ladder: {currency: points, tiers: [{key: a, name: A, threshold: 0}]}\n") == [
        ("ladder.currency", "'points' is a points currency; tiers qualify on a growth currency")
    ]


def test_schema_errors_name_the_field() -> None:
    found = problems("ladder: {currency: value, window: weekly, cadence: hourly, tiers: [{key: a, name: A}]}\n")
    paths = {p for p, _ in found}
    assert "ladder.window" in paths or any(p.startswith("ladder.window") for p in paths)
    assert "ladder.cadence" in paths
