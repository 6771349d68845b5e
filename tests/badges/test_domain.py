"""Badges in the pure core: criteria over counters, levels in order, progress, period resets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from kinloop.domain import badges as B
from kinloop.domain.counters import CounterNeeds, Tallies, count, member_context, streak_now
from kinloop.domain.periods import local_day
from kinloop.domain.rules import Activity, MemberState, apply, evaluate
from tests.badges.programs import FORUM
from tests.domain.factories import event, program

PROGRAM = program(FORUM)
BADGES = {b.key: b for b in PROGRAM.badges}
NEEDS = PROGRAM.counters
assert NEEDS is not None


class Member:
    """A member as ingestion keeps one: rule state, tallies and badges held."""

    def __init__(self) -> None:
        self.state = MemberState("m1")
        self.tallies: Tallies = {}
        self.held: dict[str, set[str]] = {}

    def do(self, type_: str, at: datetime, **attributes: object) -> list[str]:
        """Feed one event; the titles of the badge levels it earns."""
        ev = event(event_id=f"{type_}-{at.isoformat()}", type=type_, at=at, attributes=attributes)
        evaluation = evaluate(PROGRAM, self.state, ev, at)
        apply(self.state, evaluation)
        assert NEEDS is not None
        count(NEEDS, self.tallies, ev, evaluation.day)
        member = member_context(NEEDS, self.tallies, self.state.activity, evaluation.day)
        earned = B.earn(PROGRAM.badges, self.held, member, ev.type)
        for badge, level in earned:
            self.held.setdefault(badge.key, set()).add(level.key)
        return [badge.title(level.key) for badge, level in earned]


SHANGHAI = PROGRAM.timezone


def at(day: str, hh: int = 10, mm: int = 0) -> datetime:
    """A local time in the program's zone (Asia/Shanghai, UTC+8)."""
    return datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}:00").replace(tzinfo=SHANGHAI)


def test_needs_are_read_from_the_criteria() -> None:
    # Given the forum's badges, only what their criteria name is kept.
    assert (
        CounterNeeds(
            counts=frozenset({("answer", "lifetime"), ("comment", "day")}),
            totals=frozenset({("purchase", "amount", "month")}),
            streaks=frozenset({"answer", "check_in"}),
            firsts=frozenset({"purchase"}),
        )
        == NEEDS
    )
    # Lifetime counts come from Activity; only periods and totals need rows of their own.
    assert NEEDS.stored() == {"comment": ("day",), "purchase": ("month",)}
    assert BADGES["helpful"].event_types == frozenset({"answer"})


def test_levels_are_earned_in_order_each_once() -> None:
    m = Member()
    assert m.do("answer", at("2026-02-01")) == []
    assert m.do("answer", at("2026-02-03")) == ["Helpful (Bronze)"]
    assert m.do("answer", at("2026-02-05")) == ["Helpful (Silver)"]
    assert m.do("answer", at("2026-02-07")) == []
    # Five answers, but no two days in a row yet: gold waits for its streak.
    assert m.do("answer", at("2026-02-09")) == []
    assert m.do("answer", at("2026-02-10")) == ["Helpful (Gold)"]
    assert m.do("answer", at("2026-02-11")) == []
    assert m.held["helpful"] == {"bronze", "silver", "gold"}


def test_one_event_can_earn_several_levels_at_once() -> None:
    # Given a member already at five answers and a streak, who held nothing (a badge added later):
    m = Member()
    m.state.activity["answer"] = Activity(count=4, last_day=date(2026, 2, 1), streak=1)
    assert m.do("answer", at("2026-02-02")) == ["Helpful (Bronze)", "Helpful (Silver)", "Helpful (Gold)"]


def test_a_later_level_is_not_earned_before_an_earlier_one() -> None:
    # Gold's criterion is true but silver's is not held and false: nothing beyond bronze.
    levels = BADGES["helpful"].levels
    member = {"counters": {"answer": {"lifetime": 2}}, "streaks": {"answer": 9}}
    earned = B.earn([BADGES["helpful"]], {}, member, "answer")
    assert [lv.key for _, lv in earned] == ["bronze"]
    assert B.satisfied(levels[0], {"member": member})
    assert not B.satisfied(levels[1], {"member": member})
    assert B.satisfied(levels[2], {"member": {**member, "counters": {"answer": {"lifetime": 5}}}})


def test_day_counters_reset_at_local_midnight() -> None:
    m = Member()
    # 23:59 and 00:00 in Shanghai are different days, though the same UTC day (15:59 and 16:00).
    assert m.do("comment", at("2026-02-10", 23, 58)) == []
    assert m.do("comment", at("2026-02-10", 23, 59)) == []
    assert m.do("comment", at("2026-02-11", 0, 0)) == []
    assert at("2026-02-11", 0, 0).astimezone(UTC).date() == date(2026, 2, 10)
    assert m.do("comment", at("2026-02-11", 0, 1)) == []
    assert m.do("comment", at("2026-02-11", 0, 2)) == ["Chatty"]


def test_month_totals_are_exact_and_reset_with_the_month() -> None:
    m = Member()
    assert m.do("purchase", at("2026-01-31", 23, 59), amount=Decimal("100.25")) == ["First purchase"]
    # A new month starts from zero: 100.25 + 0.25 of January does not count.
    assert m.do("purchase", at("2026-02-01", 0, 0), amount=Decimal("100.25")) == []
    assert m.do("purchase", at("2026-02-01", 0, 1), amount=Decimal("0.25")) == ["Big spender"]
    assert m.tallies[("purchase", "m2026-02")].totals == {"amount": Decimal("100.50")}


def test_streak_breaks_after_a_missed_local_day() -> None:
    activity = Activity(count=3, last_day=date(2026, 2, 10), streak=3)
    assert streak_now(activity, date(2026, 2, 10)) == 3
    assert streak_now(activity, date(2026, 2, 11)) == 3  # still alive today: yesterday counts
    assert streak_now(activity, date(2026, 2, 12)) == 0
    assert streak_now(None, date(2026, 2, 12)) == 0


def test_threshold_is_read_only_from_a_simple_criterion() -> None:
    assert B.Threshold.of("member.counters.answer.lifetime >= 10") == B.Threshold(
        "counters.answer.lifetime", Decimal(10)
    )
    assert B.Threshold.of("member.totals.purchase.amount.month >= 100.5") == B.Threshold(
        "totals.purchase.amount.month", Decimal("100.5")
    )
    assert B.Threshold.of("member.streaks.check_in >= 7") is not None
    assert B.Threshold.of("member.counters.answer.lifetime > 10") is None
    assert B.Threshold.of("member.counters.answer.lifetime >= 10 && member.streaks.answer >= 2") is None


def test_showcase_shows_held_levels_and_the_next_ones_progress() -> None:
    helpful = BADGES["helpful"]
    when = datetime(2026, 2, 1, tzinfo=UTC)
    member = {"counters": {"answer": {"lifetime": 2}}, "streaks": {"answer": 1}}
    s = B.showcase(helpful, {"bronze": when}, member)
    assert [(lv.key, t) for lv, t in s.earned] == [("bronze", when)]
    assert s.next is not None
    assert s.next.key == "silver"
    assert s.current == 2
    assert s.next.threshold == B.Threshold("counters.answer.lifetime", Decimal(3))
    # Gold is not a simple threshold: no progress figure.
    s = B.showcase(helpful, {"bronze": when, "silver": when}, member)
    assert s.next is not None
    assert s.next.key == "gold"
    assert s.current is None
    # All held: nothing next.
    assert B.showcase(helpful, dict.fromkeys(("bronze", "silver", "gold"), when), member).next is None


def test_titles_in_the_programs_words() -> None:
    assert BADGES["helpful"].title("silver") == "Helpful (Silver)"
    assert BADGES["chatty"].title("") == "Chatty"


# --- the invariant -------------------------------------------------------------------------
TYPES = ("answer", "comment", "purchase", "check_in")
START = datetime(2026, 1, 30, 0, 0, tzinfo=SHANGHAI)


def _expected(history: list[tuple[str, datetime, Decimal]]) -> set[tuple[str, str]]:
    """Badge levels whose criteria some prefix of the history satisfies, computed from scratch
    (no counters): each criterion restated over the raw list of events."""
    held: set[tuple[str, str]] = set()
    for i in range(len(history)):
        seen = history[: i + 1]
        day = local_day(seen[-1][1], SHANGHAI)
        days = {t: sorted({local_day(a, SHANGHAI) for tt, a, _ in seen if tt == t}) for t in TYPES}

        def streak(t: str, days: dict[str, list[date]] = days, day: date = day) -> int:
            run, d = 0, days[t][-1] if days[t] else None
            if d is None or d < day - timedelta(days=1):
                return 0
            while d in days[t]:
                run, d = run + 1, d - timedelta(days=1)
            return run

        answers = sum(1 for t, _, _ in seen if t == "answer")
        comments_today = sum(1 for t, a, _ in seen if t == "comment" and local_day(a, SHANGHAI) == day)
        month_total = sum(
            (x for t, a, x in seen if t == "purchase" and local_day(a, SHANGHAI).replace(day=1) == day.replace(day=1)),
            Decimal(0),
        )
        truths = {
            ("helpful", "bronze"): answers >= 2,
            ("helpful", "silver"): answers >= 3,
            ("helpful", "gold"): answers >= 5 and streak("answer") >= 2,
            ("chatty", ""): comments_today >= 3,
            ("big_spender", ""): month_total >= Decimal("100.5"),
            ("first_buy", ""): any(t == "purchase" for t, _, _ in seen),
            ("regular", "week"): streak("check_in") >= 7,
        }
        for key, true in truths.items():
            # Levels are earned in order: a level counts once the ones before it are held.
            earlier = [lv.key for lv in BADGES[key[0]].levels]
            before = earlier[: earlier.index(key[1])]
            if true and all((key[0], b) in held for b in before):
                held.add(key)
    return held


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(TYPES),
        st.integers(min_value=0, max_value=60 * 24 * 12),  # minutes, in order after START
        st.decimals(min_value=0, max_value=80, places=2),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events_strategy)
def test_badges_held_are_those_the_history_satisfies(raw: list[tuple[str, int, Decimal]]) -> None:
    history = sorted(((t, START + timedelta(minutes=m), x) for t, m, x in raw), key=lambda e: (e[1], e[0]))
    member = Member()
    for i, (t, when, amount) in enumerate(history):
        attrs = {"amount": amount} if t == "purchase" else {}
        ev = event(event_id=f"e{i}", type=t, at=when, attributes=attrs)
        evaluation = evaluate(PROGRAM, member.state, ev, when)
        apply(member.state, evaluation)
        assert NEEDS is not None
        count(NEEDS, member.tallies, ev, evaluation.day)
        counters = member_context(NEEDS, member.tallies, member.state.activity, evaluation.day)
        for badge, level in B.earn(PROGRAM.badges, member.held, counters, t):
            assert level.key not in member.held.get(badge.key, set())  # never twice
            member.held.setdefault(badge.key, set()).add(level.key)
    held = {(b, lv) for b, levels in member.held.items() for lv in levels}
    assert held == _expected(history)


@given(
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=40),
    st.decimals(min_value=0, max_value=300, places=2),
)
def test_thresholds_decide_as_their_cel_source_does(answers: int, streak: int, total: Decimal) -> None:
    # Threshold levels are decided in Python, without CEL: the same answer as the criterion's source.
    member = {
        "counters": {"answer": {"lifetime": answers}},
        "streaks": {"answer": streak, "check_in": streak},
        "totals": {"purchase": {"amount": {"month": float(total)}}},
    }
    for badge in PROGRAM.badges:
        for level in badge.levels:
            if level.threshold is not None:
                fast = level.threshold.current(member) >= level.threshold.target
                assert fast == B.satisfied(level, {"member": member}), (badge.key, level.key)
