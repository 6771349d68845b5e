"""Orders on SQLite and PostgreSQL: placing (stock, limits, gates, promos, codes, idempotency),
moving through states, and points returned into the lots they came from."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from kinloop.domain.errors import (
    IdempotencyConflict,
    IllegalTransition,
    InsufficientBalance,
    InvalidInput,
    InvalidReward,
    LimitReached,
    RewardUnavailable,
    SoldOut,
    TierGated,
)
from kinloop.services import mall, orders, webhooks
from kinloop.services.programs import LoadedProgram
from kinloop.store import migrate
from kinloop.store.db import connect
from kinloop.store.tables import outbox
from tests.conftest import NOW, load_example
from tests.mall.conftest import assert_verified, beans, counts, earn, lot_state, put_reward


def place(engine: Engine, coffee: LoadedProgram, member_id: str, reward: str, **kw: object) -> orders.Order:
    with engine.begin() as conn:
        return orders.place(conn, coffee, member_id, reward, key=kw.pop("key", None), now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]


def move(engine: Engine, coffee: LoadedProgram, order_id: int, action: str, **kw: object) -> orders.Order:
    with engine.begin() as conn:
        return orders.transition(conn, coffee, order_id, action, actor="test", now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]


def test_an_order_spends_the_price_and_sells_one(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 500)
    put_reward(engine, coffee, "mug", price=120, stock=3, category="merch")
    order = place(engine, coffee, "m1", "mug")
    shown = order.as_json(coffee.program)
    assert (shown["status"], shown["points"], shown["quantity"], shown["text"]) == (
        "placed",
        120,
        1,
        "1 × Mug for 120 Beans: placed",
    )
    assert beans(engine, coffee, "m1") == 380
    with engine.connect() as conn:
        assert mall.find(conn, coffee.program_id, "mug").reward.sold == 1
    assert_verified(engine, coffee)


def test_sold_out_is_refused_and_changes_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 500)
    put_reward(engine, coffee, "mug", price=100, stock=1)
    place(engine, coffee, "m1", "mug")
    before = counts(engine)
    with pytest.raises(SoldOut, match="Mug is sold out"):
        place(engine, coffee, "m1", "mug")
    assert counts(engine) == before
    assert beans(engine, coffee, "m1") == 400


def test_short_balance_is_refused_and_the_stock_is_untouched(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 50)
    put_reward(engine, coffee, "mug", price=100, stock=5)
    before = counts(engine)
    with pytest.raises(InsufficientBalance, match="available balance is 50 Beans, 100 Beans asked"):
        place(engine, coffee, "m1", "mug")
    assert counts(engine) == before


def test_the_limit_per_member_per_period(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "latte", price=10, limit={"count": 2, "period": "day"})
    place(engine, coffee, "m1", "latte", quantity=2)
    with pytest.raises(LimitReached, match="limited to 2 per day per member; 2 already redeemed"):
        place(engine, coffee, "m1", "latte")
    # The next day (Paris) the allowance is back.
    place(engine, coffee, "m1", "latte", now=NOW + timedelta(days=1))


def test_a_cancelled_order_does_not_count_towards_the_limit(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "latte", price=10, limit={"count": 1, "period": "lifetime"})
    first = place(engine, coffee, "m1", "latte")
    move(engine, coffee, first.id, "cancel")
    place(engine, coffee, "m1", "latte")


def test_a_tier_gate(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 100)  # 1000 spent: 20 Stars, Gold
    earn(engine, coffee, "m2", 10)  # 2 Stars: Green
    put_reward(engine, coffee, "tumbler", price=10, tiers=["gold"])
    place(engine, coffee, "m1", "tumbler")
    with pytest.raises(TierGated, match="Tumbler is for Gold members only"):
        place(engine, coffee, "m2", "tumbler")


def test_a_promotional_price_in_its_window_only(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    window = {"starts_at": NOW.isoformat(), "ends_at": (NOW + timedelta(days=7)).isoformat(), "price": 60}
    put_reward(engine, coffee, "beans-bag", price=100, promos=[window])
    on_sale = place(engine, coffee, "m1", "beans-bag").as_json(coffee.program)
    assert (on_sale["points"], on_sale["promo"]) == (60, True)
    after = place(engine, coffee, "m1", "beans-bag", now=NOW + timedelta(days=7)).as_json(coffee.program)
    assert (after["points"], after["promo"]) == (100, False)


def test_an_inactive_reward_cannot_be_ordered(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "old", active=False)
    with pytest.raises(RewardUnavailable):
        place(engine, coffee, "m1", "old")


def test_placing_is_idempotent_on_its_key(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "mug", price=100, stock=10)
    first = place(engine, coffee, "m1", "mug", key="k1")
    before = counts(engine)
    again = place(engine, coffee, "m1", "mug", key="k1")
    assert (again.id, again.replayed, counts(engine)) == (first.id, True, before)
    with pytest.raises(IdempotencyConflict):
        place(engine, coffee, "m1", "mug", key="k1", quantity=2)


def test_digital_codes_are_issued_once_each(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "voucher", kind="digital", uses_codes=True, price=10)
    with engine.begin() as conn:
        assert mall.upload_codes(conn, coffee.program_id, "voucher", ["A1", "A2", "A1", ""], now=NOW) == {
            "added": 2,
            "skipped": 0,
            "free": 2,
        }
        again = mall.upload_codes(conn, coffee.program_id, "voucher", ["A2", "A3"], now=NOW)
    assert again == {"added": 1, "skipped": 1, "free": 3}
    got = [place(engine, coffee, "m1", "voucher").codes for _ in range(3)]
    assert got == [("A1",), ("A2",), ("A3",)]
    before = counts(engine)
    with pytest.raises(SoldOut, match="no codes left"):
        place(engine, coffee, "m1", "voucher")
    assert counts(engine) == before


def test_the_order_lifecycle_and_its_webhooks(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    with engine.begin() as conn:
        webhooks.create(
            conn,
            coffee.program_id,
            url="https://example.com/h",
            kinds=["order.placed", "order.completed"],
            description=None,
            now=NOW,
        )
    put_reward(engine, coffee, "mug", price=100)
    order = place(engine, coffee, "m1", "mug")
    with pytest.raises(InvalidInput, match="shipping reference"):
        move(engine, coffee, order.id, "fulfil")
    move(engine, coffee, order.id, "confirm")
    move(engine, coffee, order.id, "fulfil", shipping_reference="PARCEL-1")
    done = move(engine, coffee, order.id, "complete")
    assert [h["status"] for h in done.row.history] == ["placed", "confirmed", "fulfilled", "completed"]
    assert done.row.shipping_reference == "PARCEL-1"
    with pytest.raises(IllegalTransition, match="an order that is completed cannot be cancelled"):
        move(engine, coffee, order.id, "cancel")
    with engine.connect() as conn:
        kinds = list(conn.execute(select(outbox.c.kind).order_by(outbox.c.id)).scalars())
    assert kinds == ["order.placed", "order.completed"]


def test_cancel_returns_points_into_the_original_lots_and_the_stock(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 60, at=NOW - timedelta(days=30))
    earn(engine, coffee, "m1", 60)
    put_reward(engine, coffee, "mug", price=100, stock=1)
    lots_before = lot_state(engine)
    order = place(engine, coffee, "m1", "mug")
    assert beans(engine, coffee, "m1") == 20
    cancelled = move(engine, coffee, order.id, "cancel", reason="changed mind")
    assert cancelled.status == "cancelled"
    assert lot_state(engine) == lots_before  # same lots, same remaining, same expiry
    assert beans(engine, coffee, "m1") == 120
    with engine.connect() as conn:
        assert mall.find(conn, coffee.program_id, "mug").reward.sold == 0
    with pytest.raises(IllegalTransition):
        move(engine, coffee, order.id, "cancel")
    assert_verified(engine, coffee)


def test_a_refund_after_the_lot_expired_lapses_that_part(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 60, at=NOW - timedelta(days=360))  # expires 12 months after earning
    earn(engine, coffee, "m1", 60)
    put_reward(engine, coffee, "mug", price=100, kind="service")
    order = place(engine, coffee, "m1", "mug")
    move(engine, coffee, order.id, "fulfil")
    later = NOW + timedelta(days=30)  # the older lot has expired
    move(engine, coffee, order.id, "refund", now=later)
    # 40 came from the newer lot and are back; the 60 of the expired lot lapsed.
    assert beans(engine, coffee, "m1", later) == 60
    assert_verified(engine, coffee)


def test_bad_rewards_are_refused_with_every_reason(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn, pytest.raises(InvalidReward) as caught:
        mall.put(
            conn,
            coffee,
            "bad",
            {"currency": "stars", "price": -5, "tiers": ["platinum"], "stock": -1},
            now=NOW,
        )
    assert caught.value.field == "currency"
    assert caught.value.detail == (
        "currency: Stars is a growth currency: it qualifies for tiers and is never spent; "
        "price: must be greater than 0, got -5; "
        "stock: must be 0 or more (leave it out for unlimited), got -1; "
        "tiers[0]: unknown tier 'platinum' (this program has: green, jade, gold, reserve)"
    )


def test_stock_cannot_be_set_below_what_was_sold(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "mug", price=10, stock=5)
    place(engine, coffee, "m1", "mug", quantity=3)
    with pytest.raises(InvalidReward, match="stock 2 is below the 3 already sold"):
        put_reward(engine, coffee, "mug", price=10, stock=2)
    assert put_reward(engine, coffee, "mug", price=10, stock=3).reward.left == 0


def test_redemptions_by_reward_category_and_tier(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 1000)
    put_reward(engine, coffee, "mug", price=100, category="merch")
    put_reward(engine, coffee, "latte", price=10, category="drinks")
    place(engine, coffee, "m1", "mug")
    place(engine, coffee, "m1", "latte", quantity=3)
    cancelled = place(engine, coffee, "m1", "latte")
    move(engine, coffee, cancelled.id, "cancel")
    with engine.connect() as conn:
        report = mall.redemptions(conn, coffee, since=NOW - timedelta(days=1), until=None)
    assert [(r["key"], r["orders"], r["units"], r["points"], r["returned_orders"]) for r in report["by_reward"]] == [
        ("mug", 1, 1, 100, 0),
        ("latte", 1, 3, 30, 1),
    ]
    assert [r["key"] for r in report["by_category"]] == ["merch", "drinks"]
    assert [(r["name"], r["orders"]) for r in report["by_tier"]] == [("Gold", 2)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    earned=st.lists(st.tuples(st.integers(1, 80), st.integers(0, 300)), min_size=1, max_size=5),
    price=st.integers(1, 150),
    quantity=st.integers(1, 3),
    refund=st.booleans(),
)
def test_a_cancelled_order_restores_exactly_what_it_took(
    tmp_path_factory: pytest.TempPathFactory, earned: list[tuple[int, int]], price: int, quantity: int, refund: bool
) -> None:
    """Whatever lots the member had (amounts earned on different days of the past year, so
    different expiries), cancelling or refunding an order leaves every lot as it was, expiry
    included. (Lots that expire in between lapse instead: see the test above.)"""
    url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'k.db'}"
    migrate.upgrade(connect(url))
    engine = connect(url)
    coffee = load_example(engine, "coffee")
    for n, (amount, days_ago) in enumerate(earned):
        earn(engine, coffee, "m1", amount, at=NOW - timedelta(days=days_ago), n=n)
    put_reward(engine, coffee, "mug", price=price, kind="service")
    before, balance = lot_state(engine), beans(engine, coffee, "m1")
    try:
        order = place(engine, coffee, "m1", "mug", quantity=quantity)
    except InsufficientBalance:
        assert sum(a for a, _ in earned) < price * quantity
        return
    assert beans(engine, coffee, "m1") == balance - price * quantity
    if refund:
        move(engine, coffee, order.id, "fulfil")
    move(engine, coffee, order.id, "refund" if refund else "cancel")
    assert lot_state(engine) == before
    assert beans(engine, coffee, "m1") == balance
    assert_verified(engine, coffee)
    engine.dispose()
