"""Tier decisions, pure: windows, reviews (cadence, grace, one-level drop), the effective tier,
and the invariant that a member's tier is what the rules give for their history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from kinloop.domain.program import Ladder, PaidTerm, Tier, Window
from kinloop.domain.tiers import (
    Standing,
    effective,
    last_anniversary,
    next_review,
    review,
    review_due,
    tier_for,
    to_keep,
    upgrade,
    window_start,
)

FAN = Tier("fan", "Fan", 0)
VOICE = Tier("voice", "Voice", 100)
BUILDER = Tier("builder", "Co-builder", 1000)
STEWARD = Tier("steward", "Steward", 3000)
CLUB = Tier("club", "EP Club", None, invitation_only=True)
TIERS = (FAN, VOICE, BUILDER, STEWARD, CLUB)
YEAR = Window("calendar_year")
NO_ANNIVERSARY = date(2000, 1, 1)


def ladder(**kw: object) -> Ladder:
    fields: dict[str, object] = {"currency": "value", "window": YEAR, "tiers": TIERS, "cadence": "yearly"}
    fields.update(kw)
    return Ladder(**fields)  # type: ignore[arg-type]


def days(*pairs: tuple[date, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for d, amount in pairs:
        out[d.toordinal()] = out.get(d.toordinal(), 0) + amount
    return out


def qual(history: dict[int, int]):  # type: ignore[no-untyped-def]
    def q(start: date | None, end: date) -> int:
        lo = start.toordinal() if start else 0
        return sum(a for d, a in history.items() if lo <= d <= end.toordinal())

    return q


# --- windows and review dates -------------------------------------------------------------------


def test_windows_start_where_their_kind_says() -> None:
    day = date(2027, 5, 10)
    assert window_start(Window("lifetime"), day, NO_ANNIVERSARY) is None
    assert window_start(Window("rolling", 30), day, NO_ANNIVERSARY) == date(2027, 4, 11)
    assert window_start(YEAR, day, NO_ANNIVERSARY) == date(2027, 1, 1)
    assert window_start(Window("anniversary_year"), day, date(2025, 8, 20)) == date(2026, 8, 20)
    assert window_start(Window("anniversary_year"), day, date(2025, 3, 1)) == date(2027, 3, 1)


def test_a_29_february_anniversary_falls_on_the_28th_in_common_years() -> None:
    assert last_anniversary(date(2024, 2, 29), date(2027, 3, 1)) == date(2027, 2, 28)


def test_reviews_fall_on_the_cadence_dates_since_the_last_run() -> None:
    reached = date(2026, 6, 15)
    assert review_due("yearly", reached, date(2026, 12, 31), date(2027, 1, 1)) == date(2027, 1, 1)
    assert review_due("yearly", reached, date(2027, 1, 1), date(2027, 1, 2)) is None
    # A run that missed some days still finds the review that fell in between.
    assert review_due("monthly", reached, date(2027, 1, 20), date(2027, 2, 3)) == date(2027, 2, 1)
    assert review_due("anniversary", reached, date(2027, 6, 14), date(2027, 6, 15)) == date(2027, 6, 15)
    assert review_due("anniversary", reached, date(2026, 6, 14), date(2026, 6, 15)) is None  # the day reached
    assert review_due("realtime", reached, date(2027, 1, 1), date(2027, 1, 1)) == date(2027, 1, 1)
    assert next_review("anniversary", reached, date(2027, 7, 1)) == date(2028, 6, 15)
    assert next_review("monthly", reached, date(2027, 12, 5)) == date(2028, 1, 1)


# --- reviews --------------------------------------------------------------------------------------


def test_upgrade_is_at_once_and_never_down() -> None:
    s = Standing(earned="builder", reached_on=date(2026, 3, 1))
    assert upgrade(ladder(), s, 50, date(2026, 4, 1)) == s
    assert upgrade(ladder(), s, 3000, date(2026, 4, 1)) == Standing("steward", date(2026, 4, 1))


def test_year_end_review_demotes_to_what_the_closed_year_qualifies_for() -> None:
    history = days((date(2026, 3, 1), 150))  # Voice level in 2026
    s = Standing(earned="steward", reached_on=date(2025, 5, 1))
    # 31 December: no review yet.
    r = review(
        ladder(), s, qual(history), today=date(2026, 12, 31), last_run=date(2026, 12, 30), anniversary=NO_ANNIVERSARY
    )
    assert r.standing == s
    # 1 January: the 2026 window is measured (not the empty 2027 one).
    r = review(
        ladder(), s, qual(history), today=date(2027, 1, 1), last_run=date(2026, 12, 31), anniversary=NO_ANNIVERSARY
    )
    assert r.standing == Standing("voice", date(2027, 1, 1))
    assert r.reason == "retention review"


def test_a_member_who_requalified_keeps_the_tier_at_the_review() -> None:
    history = days((date(2026, 11, 1), 1200))
    s = Standing(earned="builder", reached_on=date(2025, 5, 1))
    r = review(
        ladder(), s, qual(history), today=date(2027, 1, 1), last_run=date(2026, 12, 31), anniversary=NO_ANNIVERSARY
    )
    assert r.standing == s
    assert r.reason is None


def test_one_level_drop_moves_down_a_single_tier() -> None:
    s = Standing(earned="steward", reached_on=date(2025, 5, 1))
    r = review(
        ladder(one_level_drop=True),
        s,
        qual({}),
        today=date(2027, 1, 1),
        last_run=date(2026, 12, 31),
        anniversary=NO_ANNIVERSARY,
    )
    assert r.standing.earned == "builder"


def test_grace_period_delays_the_demotion_and_counts_what_is_earned_meanwhile() -> None:
    lad = ladder(grace_days=31, warn_days=14)
    s = Standing(earned="builder", reached_on=date(2025, 5, 1))
    history = days((date(2026, 6, 1), 900))
    r = review(lad, s, qual(history), today=date(2027, 1, 1), last_run=date(2026, 12, 31), anniversary=NO_ANNIVERSARY)
    assert r.standing == Standing("builder", date(2025, 5, 1), grace_until=date(2027, 2, 1))
    graced = r.standing
    # 14 days before the end of grace: a warning of the scheduled move.
    r = review(
        lad, graced, qual(history), today=date(2027, 1, 18), last_run=date(2027, 1, 17), anniversary=NO_ANNIVERSARY
    )
    assert (r.standing, r.warn) == (graced, (date(2027, 2, 1), "voice"))
    # Earning 100 more during grace keeps the tier.
    topped = {**history, **days((date(2027, 1, 20), 100))}
    r = review(
        lad, graced, qual(topped), today=date(2027, 2, 1), last_run=date(2027, 1, 31), anniversary=NO_ANNIVERSARY
    )
    assert r.standing == Standing("builder", date(2025, 5, 1))
    # Without it, the grace ends in a demotion.
    r = review(
        lad, graced, qual(history), today=date(2027, 2, 1), last_run=date(2027, 1, 31), anniversary=NO_ANNIVERSARY
    )
    assert r.standing == Standing("voice", date(2027, 2, 1))


def test_anniversary_cadence_reviews_on_the_day_the_tier_was_reached() -> None:
    lad = ladder(window=Window("rolling", 365), cadence="anniversary")
    s = Standing(earned="builder", reached_on=date(2026, 4, 10))
    # 1000 reached on 10 April 2026; the 300 of the day before is out of the year the review measures.
    history = days((date(2026, 4, 9), 300), (date(2026, 4, 10), 700))
    before = review(
        lad, s, qual(history), today=date(2027, 4, 9), last_run=date(2027, 4, 8), anniversary=NO_ANNIVERSARY
    )
    assert before.standing == s  # no review before the anniversary, whatever the rolling sum
    on = review(lad, s, qual(history), today=date(2027, 4, 10), last_run=date(2027, 4, 9), anniversary=NO_ANNIVERSARY)
    assert on.standing == Standing("voice", date(2027, 4, 10))


def test_to_keep_says_how_much_by_when() -> None:
    s = Standing(earned="builder", reached_on=date(2026, 2, 1))
    keep = to_keep(ladder(), s, qual(days((date(2027, 3, 1), 995))), date(2027, 6, 1), NO_ANNIVERSARY)
    assert keep is not None
    assert (keep.tier, keep.missing, keep.by) == (BUILDER, 5, date(2027, 12, 31))


# --- the effective tier -------------------------------------------------------------------------

NOW = datetime(2027, 1, 10, tzinfo=UTC)
PAID = Tier("reserve", "Reserve", None, paid=PaidTerm(365))


def test_effective_tier_is_the_highest_source_and_a_lock_overrides() -> None:
    lad = ladder(tiers=(FAN, VOICE, BUILDER, PAID, CLUB))
    s = Standing(earned="voice")
    assert effective(lad, s, NOW) == ("voice", "earned")
    assert effective(lad, Standing("voice", paid="reserve", paid_until=NOW + timedelta(days=1)), NOW) == (
        "reserve",
        "paid",
    )
    assert effective(lad, Standing("voice", paid="reserve", paid_until=NOW), NOW) == ("voice", "earned")
    assert effective(lad, Standing("builder", manual="voice"), NOW) == ("builder", "earned")  # a floor only
    assert effective(lad, Standing("fan", manual="club", manual_until=NOW + timedelta(days=3)), NOW) == (
        "club",
        "manual",
    )
    assert effective(lad, Standing("fan", manual="club", manual_until=NOW), NOW) == ("fan", "earned")
    assert effective(lad, Standing("builder", manual="fan", locked=True), NOW) == ("fan", "manual")
    assert effective(lad, Standing("fan", kept="builder", kept_until=NOW + timedelta(days=1)), NOW) == (
        "builder",
        "kept",
    )


def test_invitation_only_tiers_are_never_reached_by_threshold() -> None:
    assert tier_for(ladder(), 10**9) == STEWARD


# --- the invariant --------------------------------------------------------------------------------

START = date(2026, 1, 1)
awards = st.lists(st.tuples(st.integers(0, 2 * 365 - 1), st.integers(1, 1500)), max_size=25)


def expected_tier(history: dict[int, int], day: date) -> str | None:
    """The rules, stated directly: the higher of what last year qualified for and what this year
    has reached so far (calendar year window, yearly review, no grace, any drop)."""
    this_year = sum(a for d, a in history.items() if date.fromordinal(d).year == day.year and d <= day.toordinal())
    last_year = sum(a for d, a in history.items() if date.fromordinal(d).year == day.year - 1)
    reached = [t for t in (tier_for(ladder(), this_year), tier_for(ladder(), last_year)) if t]
    return max(reached, key=TIERS.index).key if reached else None


@settings(max_examples=40, deadline=None)
@given(awards)
def test_a_members_tier_always_matches_the_rules_for_their_history(given_awards: list[tuple[int, int]]) -> None:
    lad = ladder()
    history: dict[int, int] = {}
    by_day: dict[int, int] = {}
    for offset, amount in given_awards:
        d = (START + timedelta(days=offset)).toordinal()
        by_day[d] = by_day.get(d, 0) + amount
    s = Standing()
    day = START
    while day < START + timedelta(days=2 * 365 + 5):
        # The daily job runs first, then the day's awards upgrade at once.
        s = review(
            lad, s, qual(history), today=day, last_run=day - timedelta(days=1), anniversary=NO_ANNIVERSARY
        ).standing
        if day.toordinal() in by_day:
            history[day.toordinal()] = by_day[day.toordinal()]
            s = upgrade(lad, s, qual(history)(window_start(lad.window, day, NO_ANNIVERSARY), day), day)
        assert s.earned == expected_tier(history, day), day
        day += timedelta(days=1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-800, 1500), max_size=30))
def test_lifetime_realtime_tier_follows_the_balance_up_and_down(moves: list[int]) -> None:
    lad = Ladder("value", Window(), TIERS)
    s = Standing()
    history: dict[int, int] = {}
    for i, amount in enumerate(moves):
        today = START + timedelta(days=i)
        history[today.toordinal()] = amount
        s = review(lad, s, qual(history), today=today, last_run=None, anniversary=NO_ANNIVERSARY).standing
        reached = tier_for(lad, sum(history.values()))
        assert s.earned == (reached.key if reached else None)
