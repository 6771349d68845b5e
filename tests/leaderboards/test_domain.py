"""Leaderboards in the pure core: what an event adds, period names, and the ranking order."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain import leaderboards as D
from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Leaderboard

ANSWERS = Leaderboard("answers", "Top answerers", "week", event="answer", unit="answers", unit_one="answer")
GROWTH = Leaderboard("growth", "City growth", "month", currency="growth", group_by="city")
EVER = Leaderboard("ever", "All time", "all_time", currency="coins")


def test_an_event_adds_one_to_count_boards_and_its_earnings_to_currency_boards() -> None:
    day = date(2026, 3, 4)
    got = D.deltas(
        [ANSWERS, GROWTH, EVER],
        event_type="answer",
        day=day,
        earned={"growth": 23, "coins": 2},
        profile={"city": "Xi'an"},
    )
    assert got == [
        D.Delta("answers", "w2026-10", "", 1),
        D.Delta("growth", "m2026-03", "Xi'an", 23),
        D.Delta("ever", "all", "", 2),
    ]
    # Nothing earned and another type: no change at all (no row to write).
    assert D.deltas([ANSWERS, GROWTH], event_type="comment", day=day, earned={}, profile={}) == []
    # Without the attribute a member scores in no group ('').
    assert D.deltas([GROWTH], event_type="x", day=day, earned={"growth": 1}, profile={})[0].group == ""


def test_periods_are_named_as_people_write_them() -> None:
    assert D.day_of_period("2026-W10") == date(2026, 3, 2)
    assert D.day_of_period("2026-03") == date(2026, 3, 1)
    assert D.day_of_period("2026-03-05") == date(2026, 3, 5)
    for bad in ("2026-W60", "2026-13", "2026-02-30", "last week"):
        with pytest.raises(InvalidInput, match="is not a period"):
            D.day_of_period(bad)
    day = date(2026, 3, 5)
    assert [D.period_name(b, day) for b in (ANSWERS, GROWTH, EVER)] == ["2026-W10", "2026-03", "all time"]
    assert D.period_name(Leaderboard("d", "D", "day", event="x"), day) == "2026-03-05"
    # ISO weeks: 1 January 2027 belongs to the last week of 2026.
    assert D.board_period_key(ANSWERS, date(2027, 1, 1)) == "w2026-53"


def test_scores_in_words() -> None:
    from tests.domain.factories import program

    p = program(
        """
key: p
name: P
currencies: [{key: coins, name: Coins, kind: points, decimals: 1}]
event_types: [{key: answer}]
"""
    )
    assert [D.score_text(p, ANSWERS, n) for n in (0, 1, 2, 1200)] == [
        "0 answers",
        "1 answer",
        "2 answers",
        "1,200 answers",
    ]
    assert D.score_text(p, EVER, 25) == "2.5 Coins"


def test_ordinals() -> None:
    assert [D.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
        "111th",
    ]


T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_ties_go_to_who_reached_the_score_first_then_to_the_member_id() -> None:
    s = [
        D.Standing("zed", 5, T0),
        D.Standing("amy", 5, T0),
        D.Standing("Bob", 5, T0),
        D.Standing("early", 5, T0 - timedelta(seconds=1)),
        D.Standing("top", 9, T0 + timedelta(days=1)),
    ]
    assert [x.member_id for x in D.ranked(s)] == ["top", "early", "Bob", "amy", "zed"]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=12))
def test_the_ranking_is_a_total_order_independent_of_input_order(pairs: list[tuple[int, int]]) -> None:
    standings = [D.Standing(f"m{i}", score, T0 + timedelta(minutes=m)) for i, (score, m) in enumerate(pairs)]
    once = D.ranked(standings)
    assert D.ranked(list(reversed(standings))) == once
    for a, b in itertools.pairwise(once):
        assert a.score > b.score or (a.score == b.score and (a.reached_at, a.member_id) < (b.reached_at, b.member_id))
