"""Check-in in the pure core: streaks on the member's own calendar, the ladder, milestones, make-up cards."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.checkin import NO_CHECKINS, CheckinState, cards_left, check_in, current_streak, ladder_amount
from kinloop.domain.program import Checkin, Grant, Milestone, Program
from kinloop.domain.rules import MemberState, apply, evaluate
from tests.domain.factories import event, program

PROGRAM = """
key: club
name: Club
timezone: Europe/Paris
currencies:
  - {key: beans, name: Beans, kind: points}
  - {key: value, name: Value, unit: N, kind: growth}
event_types:
  - key: check_in
checkin:
  event: check_in
  currency: beans
  ladder: [1, 2, 3]
  milestones:
    - {days: 5, currency: value, amount: 10}
  first_day_gift: {currency: beans, amount: 50}
  makeup_cards_per_month: 1
  counts_toward_tiers: false
"""

LADDER = Checkin(event_type="check_in", currency="beans", ladder=(1, 2, 3))
D = date(2026, 1, 10)


def day(n: int) -> date:
    return D + timedelta(days=n)


def run(config: Checkin, days: list[date], state: CheckinState = NO_CHECKINS) -> tuple[CheckinState, list[int]]:
    """Check in on each day in turn; the ladder amounts given."""
    given: list[int] = []
    for d in days:
        result = check_in(config, state, d)
        state = result.state
        given += [a.grant.amount for a in result.awards if a.kind == "checkin"]
    return state, given


# --- the ladder -------------------------------------------------------------------------------


def test_the_ladder_cycles_after_its_last_step() -> None:
    state, given = run(LADDER, [day(i) for i in range(7)])
    assert given == [1, 2, 3, 1, 2, 3, 1]
    assert state.streak == 7


def test_the_ladder_can_hold_its_last_step() -> None:
    hold = Checkin(event_type="check_in", currency="beans", ladder=(1, 2, 3), after_ladder="hold")
    assert run(hold, [day(i) for i in range(6)])[1] == [1, 2, 3, 3, 3, 3]


def test_a_missed_day_starts_the_ladder_again() -> None:
    state, given = run(LADDER, [day(0), day(1), day(3), day(4)])
    assert given == [1, 2, 1, 2]
    assert (state.streak, state.best, state.days) == (2, 2, 4)


def test_a_second_check_in_the_same_day_and_a_late_one_give_nothing() -> None:
    state, _ = run(LADDER, [day(0), day(1)])
    again = check_in(LADDER, state, day(1))
    late = check_in(LADDER, state, day(0))
    assert (again.status, again.awards, again.state) == ("already_checked_in", (), state)
    assert (late.status, late.awards, late.state) == ("late", (), state)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=60))
def test_streak_is_the_run_of_consecutive_days_ending_at_the_last(offsets: list[int]) -> None:
    days = sorted(day(o) for o in offsets)
    state, given = run(LADDER, days)
    distinct = sorted(set(days))
    assert len(given) == len(distinct)  # one reward a day, whatever the repeats
    expected = 0
    for i in range(len(distinct) - 1, -1, -1):
        if i == len(distinct) - 1 or distinct[i] == distinct[i + 1] - timedelta(days=1):
            expected += 1
        else:
            break
    assert state.streak == expected
    assert given[-1:] == ([ladder_amount(LADDER, expected)] if distinct else [])


# --- milestones and gifts ---------------------------------------------------------------------


def test_a_milestone_is_given_once_per_run_and_not_on_a_repeat_day() -> None:
    config = Checkin(
        event_type="check_in", currency="beans", ladder=(1,), milestones=(Milestone(3, Grant("value", 10)),)
    )
    state = NO_CHECKINS
    won = []
    for d in [day(0), day(1), day(2), day(2), day(3), day(5), day(6), day(7)]:
        result = check_in(config, state, d)
        state = result.state
        won += [(result.day, a.grant.amount) for a in result.awards if a.kind == "checkin_milestone"]
    # Day 2 completes the first run of three; the break at day 4 lets a new run earn it again.
    assert won == [(day(2), 10), (day(7), 10)]


def test_a_once_milestone_is_given_only_the_first_time_ever() -> None:
    config = Checkin(
        event_type="check_in",
        currency="beans",
        ladder=(1,),
        milestones=(Milestone(2, Grant("value", 10), once=True),),
    )
    state = NO_CHECKINS
    count = 0
    for d in [day(0), day(1), day(5), day(6)]:
        result = check_in(config, state, d)
        state = result.state
        count += sum(1 for a in result.awards if a.kind == "checkin_milestone")
    assert count == 1
    assert state.milestones == (2,)


def test_the_first_day_gift_comes_with_the_first_check_in_only() -> None:
    config = Checkin(event_type="check_in", currency="beans", ladder=(1,), first_day_gift=Grant("beans", 50))
    first = check_in(config, NO_CHECKINS, day(0))
    later = check_in(config, first.state, day(10))
    assert [(a.kind, a.grant.amount) for a in first.awards] == [("checkin", 1), ("checkin_gift", 50)]
    assert [(a.kind, a.grant.amount) for a in later.awards] == [("checkin", 1)]


# --- make-up cards ----------------------------------------------------------------------------

CARDS = Checkin(
    event_type="check_in",
    currency="beans",
    ladder=(1, 2, 3, 4),
    makeup_cards_per_month=1,
    milestones=(Milestone(3, Grant("value", 10)),),
)


def test_a_make_up_card_fills_a_missed_day_and_the_streak_goes_on() -> None:
    state, _ = run(CARDS, [day(0), day(1)])
    # day(2) was missed; on day(3) the member uses a card for it, then checks in.
    made_up = check_in(CARDS, state, day(3), makeup_for=day(2))
    assert made_up.status == "made_up"
    assert made_up.state.streak == 3
    assert [a.kind for a in made_up.awards] == ["checkin_milestone"]  # the streak reached 3
    today = check_in(CARDS, made_up.state, day(3))
    assert today.state.streak == 4
    assert [a.grant.amount for a in today.awards] == [4]
    assert cards_left(CARDS, today.state, day(3)) == 0


def test_make_up_cards_are_refused_with_a_reason() -> None:
    state, _ = run(CARDS, [day(0), day(1)])
    cases = {
        day(1): "not a missed day",
        day(4): "not a past day",
        day(3): "fill the first missed day first (2026-01-12)",
    }
    for missed, reason in cases.items():
        result = check_in(CARDS, state, day(4), makeup_for=missed)
        assert result.status == "makeup_refused"
        assert reason in result.reason
        assert result.state == state
        assert result.awards == ()
    assert check_in(CARDS, NO_CHECKINS, day(4), makeup_for=day(1)).reason == "there is no streak to continue"


def test_make_up_cards_are_counted_per_month() -> None:
    state, _ = run(CARDS, [day(0)])
    first = check_in(CARDS, state, day(3), makeup_for=day(1))
    second = check_in(CARDS, first.state, day(3), makeup_for=day(2))
    assert second.status == "makeup_refused"
    assert second.reason == "no make-up cards left in 2026-01"
    # In February the card is back: a January card used does not count against it.
    jan = CheckinState(streak=1, last_day=date(2026, 1, 30), days=1, cards_month="2026-01", cards_used=1)
    assert cards_left(CARDS, jan, date(2026, 1, 31)) == 0
    assert cards_left(CARDS, jan, date(2026, 2, 1)) == 1
    assert check_in(CARDS, jan, date(2026, 2, 1), makeup_for=date(2026, 1, 31)).status == "made_up"


def test_the_streak_shown_today_lapses_after_a_missed_day() -> None:
    state, _ = run(LADDER, [day(0), day(1)])
    assert current_streak(state, day(1)) == 2
    assert current_streak(state, day(2)) == 2  # still alive: today is not over
    assert current_streak(state, day(3)) == 0


# --- through the engine: the member's time zone ----------------------------------------------


def check_ins(p: Program, stamps: list[datetime], profile: dict[str, Any] | None = None) -> MemberState:
    state = MemberState("m1", profile=profile or {}, checkin=NO_CHECKINS)
    for i, at in enumerate(stamps):
        apply(state, evaluate(p, state, event(event_id=f"c{i}", type="check_in", at=at), at))
    return state


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_days_are_the_members_own_across_midnight_in_several_time_zones() -> None:
    p = program(PROGRAM)
    # 23:30 and 00:30 UTC: two days in London, one day in Paris, Tokyo and Los Angeles.
    stamps = [utc("2026-01-10T23:30:00+00:00"), utc("2026-01-11T00:30:00+00:00")]
    paris = check_ins(p, stamps)  # program zone: 00:30 and 01:30 on the 11th, one day
    tokyo = check_ins(p, stamps, {"timezone": "Asia/Tokyo"})  # 08:30 and 09:30 on the 11th
    london = check_ins(p, stamps, {"timezone": "Europe/London"})  # 23:30 on the 10th, 00:30 on the 11th
    la = check_ins(p, stamps, {"timezone": "America/Los_Angeles"})  # 15:30 and 16:30 on the 10th
    assert paris.checkin is not None
    assert paris.checkin.days == 1
    assert tokyo.checkin is not None
    assert tokyo.checkin.days == 1
    assert london.checkin is not None
    assert (london.checkin.days, london.checkin.streak) == (2, 2)
    assert la.checkin is not None
    assert (la.checkin.days, la.checkin.last_day) == (1, date(2026, 1, 10))


def test_streaks_hold_across_daylight_saving_changes() -> None:
    p = program(PROGRAM)
    # Paris springs forward on 29 March 2026 (a 23-hour day) and falls back on 25 October (25 hours).
    spring = [utc("2026-03-28T23:30:00+01:00"), utc("2026-03-29T23:30:00+02:00"), utc("2026-03-30T00:15:00+02:00")]
    autumn = [utc("2026-10-24T23:59:00+02:00"), utc("2026-10-25T23:59:00+01:00")]
    s = check_ins(p, spring)
    a = check_ins(p, autumn)
    assert s.checkin is not None
    assert (s.checkin.streak, s.checkin.days) == (3, 3)
    assert a.checkin is not None
    assert (a.checkin.streak, a.checkin.days) == (2, 2)
    # New York falls back on 1 November: 00:30 local on the 1st and 23:30 local on the 1st are one day.
    ny = check_ins(
        p, [utc("2026-11-01T00:30:00-04:00"), utc("2026-11-01T23:30:00-05:00")], {"timezone": "America/New_York"}
    )
    assert ny.checkin is not None
    assert ny.checkin.days == 1


def test_check_in_awards_are_flagged_not_to_count_toward_tiers_when_the_program_says_so() -> None:
    p = program(PROGRAM)
    state = MemberState("m1", checkin=NO_CHECKINS)
    ev = event(type="check_in", at=utc("2026-01-10T10:00:00+00:00"))
    result = evaluate(p, state, ev, ev.occurred_at)
    assert [(a.rule, a.currency, a.amount, a.kind, a.qualifies) for a in result.awards] == [
        ("checkin", "beans", 1, "checkin", False),
        ("checkin", "beans", 50, "checkin_gift", False),
    ]


def test_a_make_up_event_does_not_count_as_the_behaviour() -> None:
    text = PROGRAM + "rules:\n  - {key: daily, event: check_in, currency: beans, amount: 7}\n"
    p = program(text)
    state = check_ins(p, [utc("2026-01-10T10:00:00+00:00")])
    ev = event(type="check_in", at=utc("2026-01-12T10:00:00+00:00"), attributes={"makeup_for": "2026-01-11"})
    result = evaluate(p, state, ev, ev.occurred_at)
    assert result.outcomes == ()
    assert result.checkin is not None
    assert result.checkin.status == "made_up"
    assert result.checkin.state.streak == 2
