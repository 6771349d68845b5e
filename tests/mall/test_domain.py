"""The pure parts: order states, hold outcomes, prices, reward checks and the restore plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.errors import HoldExpired, IllegalTransition, InvalidInput
from kinloop.domain.holds import capture_outcome, release_outcome, status_at, timeout_of
from kinloop.domain.orders import TRANSITIONS, Taken, next_status, plan_restore
from kinloop.domain.rewards import Limit, Promo, Reward, check_reward, parse_reward, period_start, price_at
from kinloop.program.loader import compile_program, parse_program
from tests.conftest import EXAMPLES

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
COFFEE = compile_program(parse_program((EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")))


def test_the_happy_path_of_an_order() -> None:
    status = "placed"
    for action in ("confirm", "fulfil", "complete"):
        status = next_status(status, action, kind="physical", shipping_reference="P1")  # type: ignore[arg-type]
    assert status == "completed"


@pytest.mark.parametrize(
    ("status", "action", "message"),
    [
        ("placed", "complete", "an order that is placed cannot be completed (possible now: confirm, fulfil, cancel)"),
        ("cancelled", "refund", "an order that is cancelled cannot be refunded (possible now: none: it is final)"),
        ("fulfilled", "cancel", "an order that is fulfilled cannot be cancelled (possible now: complete, refund)"),
    ],
)
def test_illegal_transitions_say_what_is_possible(status: str, action: str, message: str) -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_status(status, action, kind="service", shipping_reference=None)  # type: ignore[arg-type]
    assert caught.value.detail == message


def test_every_state_is_reachable_and_final_states_are_final() -> None:
    targets = {t for _, t in TRANSITIONS.values()}
    sources = set().union(*(s for s, _ in TRANSITIONS.values()))
    assert targets | {"placed"} == {"placed", "confirmed", "fulfilled", "completed", "cancelled", "refunded"}
    assert "cancelled" not in sources
    assert "refunded" not in sources


def test_a_physical_reward_ships_with_a_reference() -> None:
    with pytest.raises(InvalidInput, match="shipping reference"):
        next_status("confirmed", "fulfil", kind="physical", shipping_reference=" ")


def test_hold_outcomes() -> None:
    later = T0 + timedelta(minutes=1)
    assert capture_outcome("active", later, T0) == "done"
    assert capture_outcome("captured", later, T0) == "repeat"
    assert capture_outcome("active", T0, later) == "expire"
    assert status_at("active", T0, later) == "expired"
    with pytest.raises(HoldExpired):
        capture_outcome("expired", T0, later)
    with pytest.raises(IllegalTransition):
        capture_outcome("released", later, T0)
    assert release_outcome("released", later, T0) == "repeat"
    assert release_outcome("expired", T0, later) == "repeat"
    assert release_outcome("active", T0, later) == "expire"
    with pytest.raises(IllegalTransition):
        release_outcome("captured", later, T0)
    with pytest.raises(InvalidInput):
        timeout_of(5)


def test_the_lowest_promo_in_force_wins() -> None:
    promos = (Promo(T0, T0 + timedelta(days=2), 80), Promo(T0 + timedelta(days=1), T0 + timedelta(days=3), 70))
    reward = Reward("mug", "Mug", "beans", 100, promos=promos)
    assert [price_at(reward, T0 + timedelta(days=d)).points for d in (-1, 0, 1, 2, 3)] == [100, 80, 70, 70, 100]
    # A "promo" dearer than the regular price is never charged.
    assert price_at(Reward("x", "X", "beans", 50, promos=promos), T0).points == 50


def test_reward_checks_name_each_field() -> None:
    bad = Reward("x", "X", "stars", 0, stock=-1, limit=Limit(0, "day"), tiers=("gold", "platinum"), uses_codes=True)
    assert [str(i) for i in check_reward(bad, COFFEE)] == [
        "currency: Stars is a growth currency: it qualifies for tiers and is never spent",
        "price: must be greater than 0, got 0",
        "stock: must be 0 or more (leave it out for unlimited), got -1",
        "limit.count: must be 1 or more, got 0",
        "tiers[1]: unknown tier 'platinum' (this program has: green, jade, gold, reserve)",
        "uses_codes: only digital rewards issue codes",
    ]


def test_parse_reward_reports_bad_amounts_times_and_cash() -> None:
    reward, issues = parse_reward(
        "x",
        {
            "currency": "beans",
            "price": "1.5",
            "cash": "-2",
            "promos": [{"starts_at": "soon", "ends_at": "2026-01-01T00:00:00", "price": 1}],
        },
        COFFEE,
    )
    assert reward is None
    assert [i.path for i in issues] == [
        "promos[0].starts_at",
        "promos[0].ends_at",
        "price",
        "price",
        "cash",
        "cash_currency",
    ]


def test_limit_periods_start_where_the_program_lives() -> None:
    paris = COFFEE.timezone
    at = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)  # already Thursday 5 March in Paris
    assert period_start("day", at, paris) == datetime(2026, 3, 5, tzinfo=paris)
    assert period_start("week", at, paris) == datetime(2026, 3, 2, tzinfo=paris)
    assert period_start("month", at, paris) == datetime(2026, 3, 1, tzinfo=paris)
    assert period_start("lifetime", at, paris) is None


@st.composite
def takens(draw: st.DrawFn) -> list[Taken]:
    """Takes from a few lots, each lot with one expiry (some past, some never)."""
    expiry = st.one_of(st.none(), st.integers(-5, 5).map(lambda d: T0 + timedelta(days=d)))
    lots = draw(st.dictionaries(st.integers(1, 8), expiry, min_size=1))
    picks = draw(st.lists(st.tuples(st.sampled_from(sorted(lots)), st.integers(1, 1000)), max_size=12))
    return [Taken(lot_id, amount, lots[lot_id]) for lot_id, amount in picks]


@given(takens())
def test_a_restore_gives_back_exactly_what_was_taken_with_the_original_expiry(taken: list[Taken]) -> None:
    plan = plan_restore(taken, T0)
    assert plan.total == sum(t.amount for t in taken)
    expired_ids = {t.lot_id for t in taken if t.expires_at is not None and t.expires_at <= T0}
    for lot_id, amount in plan.into_lots:
        assert lot_id not in expired_ids  # nothing goes into a lot that has expired
        assert amount == sum(t.amount for t in taken if t.lot_id == lot_id)
    assert plan.lapsed == sum(t.amount for t in taken if t.lot_id in expired_ids)
