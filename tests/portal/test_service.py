"""The portal's view of a member (services.portal) on SQLite and PostgreSQL: the card's
progress in the program's words, the mall as the member can use it, history lines."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from kinloop.domain.tiers import progress, tier_for
from kinloop.program.loader import compile_program, parse_program
from kinloop.services import envelopes, ingest, member_view, orders, portal
from kinloop.services.member_view import MemberView
from kinloop.services.programs import LoadedProgram
from tests.conftest import EXAMPLES, NOW
from tests.mall.conftest import put_reward


def purchase(engine: Engine, coffee: LoadedProgram, member_id: str, amount: int, n: int = 0) -> None:
    """A purchase: 1 ★ per 50 and 1 Bean per 10 of its amount."""
    event = {
        "event_id": f"p-{member_id}-{amount}-{n}",
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "attributes": {"amount": amount},
    }
    with engine.begin() as conn:
        (result,) = ingest.ingest(conn, coffee, [event], now=NOW)
    assert result.status == "accepted", result


def view_of(engine: Engine, coffee: LoadedProgram, member_id: str) -> MemberView:
    with engine.connect() as conn:
        return member_view.show(conn, coffee, member_id, now=NOW)


@pytest.mark.parametrize(
    ("spent", "tier", "percent", "words"),
    [
        (100, "Green", 50, "2 ★ to Jade"),  # 2 of the 4 ★ from Green (0) to Jade (4)
        (200, "Jade", 0, "12 ★ to Gold"),  # just reached Jade: none of the way from 4 to 16
        (650, "Jade", 75, "3 ★ to Gold"),  # 13 ★: 9 of the 12
        (900, "Gold", 100, "Gold: the highest tier you can earn"),  # Reserve is bought, not earned
    ],
)
def test_the_card_says_how_far_the_next_tier_is(
    engine: Engine, coffee: LoadedProgram, spent: int, tier: str, percent: int, words: str
) -> None:
    purchase(engine, coffee, "m1", spent)
    card = portal.card(coffee, view_of(engine, coffee, "m1"))
    assert (card.tier_name, card.progress_percent, card.progress_text) == (tier, percent, words)
    assert [(b.name, b.text) for b in card.balances] == [
        ("Stars", f"{spent // 50} ★"),
        ("Beans", f"{spent // 10} Beans"),
    ]


COFFEE = compile_program(parse_program((EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")))
LADDER = COFFEE.ladder
assert LADDER is not None


def _view(stars: int) -> MemberView:
    """A member view as tiers.view shapes it for `stars` earned ★ on the coffee ladder."""
    assert LADDER is not None
    reached = tier_for(LADDER, stars)
    nxt = progress(LADDER, stars)
    return MemberView(
        member_id="m",
        tier={"key": reached.key, "name": reached.name} if reached else None,
        balances={"stars": stars, "beans": 0},
        pending={"stars": 0, "beans": 0},
        display={"stars": f"{stars} ★", "beans": "0 Beans"},
        next_tier=(
            {
                "key": nxt.next.key,
                "name": nxt.next.name,
                "missing": nxt.missing,
                "text": f"{nxt.missing} ★ to {nxt.next.name}",
            }
            if nxt.next
            else None
        ),
        expiring=[],
        profile={},
        tier_status={"qualification": stars, "qualification_text": f"{stars} ★ in the current window"},
    )


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=60))
def test_the_progress_bar_stays_in_bounds_and_fills_up_within_a_tier(a: int, b: int) -> None:
    low, high = sorted((a, b))
    loaded = LoadedProgram(1, 1, 1, COFFEE)
    first, second = portal.card(loaded, _view(low)), portal.card(loaded, _view(high))
    assert 0 <= first.progress_percent <= 100
    assert 0 <= second.progress_percent <= 100
    if first.tier_name == second.tier_name:
        assert first.progress_percent <= second.progress_percent
    if first.next_tier_name is None:
        assert first.progress_percent == 100


def test_the_mall_says_why_a_reward_cannot_be_redeemed(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "m1", 1000)  # 100 Beans, 20 ★: Gold
    purchase(engine, coffee, "m2", 300)  # 30 Beans, 6 ★: Jade
    put_reward(engine, coffee, "cheap", price=30)
    put_reward(engine, coffee, "dear", price=60)
    put_reward(engine, coffee, "gold_only", price=10, tiers=["gold"])
    put_reward(engine, coffee, "gone", price=10, stock=0)
    put_reward(
        engine,
        coffee,
        "sale",
        price=50,
        promos=[{"starts_at": "2026-01-01T00:00:00+00:00", "ends_at": "2026-04-01T00:00:00+00:00", "price": 25}],
    )
    with engine.connect() as conn:
        seen = {
            o.key: (o.state, o.reason, o.price_text, o.regular_text)
            for o in portal.offers(conn, coffee, view_of(engine, coffee, "m2"), now=NOW)
        }
    assert seen == {
        "cheap": ("available", None, "30 Beans", None),
        "dear": ("short", "Not enough Beans: 30 Beans more needed", "60 Beans", None),
        "gold_only": ("gated", "For Gold members", "10 Beans", None),
        "gone": ("sold_out", "Sold out", "10 Beans", None),
        "sale": ("available", None, "25 Beans", "50 Beans"),
    }
    with engine.connect() as conn:
        gold = {o.key: o.state for o in portal.offers(conn, coffee, view_of(engine, coffee, "m1"), now=NOW)}
    assert gold["gold_only"] == "available"


def test_history_speaks_the_programs_words(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "m1", 1000)
    purchase(engine, coffee, "m2", 100)
    put_reward(engine, coffee, "espresso", name="Espresso", price=50)
    with engine.begin() as conn:
        orders.place(conn, coffee, "m1", "espresso", key="k1", now=NOW)
        envelopes.send(conn, coffee, "m1", key="e1", amount=10, to="m2", now=NOW)
    with engine.connect() as conn:
        lines, more = portal.history(conn, coffee, "m1", before=None)
        theirs, _ = portal.history(conn, coffee, "m2", before=None)
    assert more is None
    assert [(line.title, line.note, line.amount_text) for line in lines] == [
        ("Envelope fee", None, "−1 Beans"),
        ("Red envelope sent", None, "−10 Beans"),
        ("Redeemed", "1 × Espresso", "−50 Beans"),
        ("Beans for purchases", None, "+100 Beans"),
        ("Stars for purchases", None, "+20 ★"),
    ]
    assert theirs[0].title == "Red envelope received"
    assert theirs[0].amount_text == "+10 Beans"


EV = compile_program(parse_program((EXAMPLES / "ev_community.yaml").read_text(encoding="utf-8")))


@pytest.mark.parametrize(("upcoming", "marked"), [(1, 1), (7, 7), (8, 1), (15, 1), (16, 2)])
def test_the_check_in_ladder_marks_the_step_the_next_check_in_earns(upcoming: int, marked: int) -> None:
    """The EV program's ladder of 7 steps cycles: day 8 earns what day 1 does."""
    checkin = {
        "streak": upcoming - 1,
        "best": upcoming - 1,
        "days": upcoming - 1,
        "checked_in_today": False,
        "next_reward": {"day": upcoming, "text": f"day {upcoming}: 5 points"},
        "next_milestone": None,
        "makeup_cards_left": 2,
        "text": "",
    }
    view = MemberView("m", None, {}, {}, {}, None, [], {}, checkin=checkin)
    panel = portal.checkin(EV, view)
    assert panel is not None
    assert [day for day, _, upcoming_step in panel.ladder if upcoming_step] == [marked]
    assert [text for _, text, _ in panel.ladder][-1] == "10 Points"
