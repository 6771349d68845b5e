"""Ledger arithmetic: which lots a spend consumes, how debts are paid, how awards are clawed back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kinloop.domain.ledger import Clawback, Lot, allocate, consumption_order, plan_clawback, settle_debts

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lot(
    id: int,
    remaining: int,
    *,
    amount: int | None = None,
    earned_day: int = 0,
    expires_day: int | None = None,
    status: str = "available",
) -> Lot:
    """A lot of `pts`, earned `earned_day` days after T0, expiring `expires_day` days after T0 (None: never)."""
    return Lot(
        id=id,
        currency="pts",
        amount=remaining if amount is None else amount,
        remaining=remaining,
        earned_at=T0 + timedelta(days=earned_day),
        expires_at=None if expires_day is None else T0 + timedelta(days=expires_day),
        status=status,  # type: ignore[arg-type]
    )


# --- allocate ---------------------------------------------------------------------------------


def test_spending_takes_the_soonest_expiring_lot_first_and_never_expiring_last() -> None:
    # given lots expiring in 30 days, never, and in 10 days
    lots = [lot(1, 5, expires_day=30), lot(2, 5), lot(3, 5, expires_day=10)]
    # when 12 is spent
    takes, short = allocate(lots, 12)
    # then
    assert takes == [(3, 5), (1, 5), (2, 2)]
    assert short == 0


def test_a_spend_that_fits_in_one_lot_takes_only_what_it_needs() -> None:
    takes, short = allocate([lot(1, 10, expires_day=5), lot(2, 10, expires_day=6)], 4)
    assert takes == [(1, 4)]
    assert short == 0


def test_allocate_reports_the_shortfall_without_inventing_points() -> None:
    takes, short = allocate([lot(1, 3, expires_day=5), lot(2, 4)], 10)
    assert takes == [(1, 3), (2, 4)]
    assert short == 3


def test_pending_spent_and_debt_lots_are_not_spendable() -> None:
    lots = [
        lot(1, 5, expires_day=1, status="pending"),
        lot(2, 0, amount=5, expires_day=2),
        lot(3, -4, amount=-4),
        lot(4, 6, expires_day=3),
    ]
    assert allocate(lots, 6) == ([(4, 6)], 0)
    assert allocate(lots, 7) == ([(4, 6)], 1)


def test_lots_expiring_together_go_oldest_first_then_by_id() -> None:
    lots = [
        lot(5, 1, earned_day=2, expires_day=9),
        lot(4, 1, earned_day=1, expires_day=9),
        lot(3, 1, earned_day=2, expires_day=9),
    ]
    assert allocate(lots, 3) == ([(4, 1), (3, 1), (5, 1)], 0)


def test_never_expiring_lots_go_oldest_first() -> None:
    lots = [lot(1, 2, earned_day=5), lot(2, 2, earned_day=1), lot(3, 2, earned_day=9, expires_day=400)]
    assert [lot_id for lot_id, _ in allocate(lots, 6)[0]] == [3, 2, 1]


def test_consumption_order_puts_never_expiring_last() -> None:
    soon = lot(1, 1, expires_day=1)
    later = lot(2, 1, expires_day=1000)
    never = lot(3, 1)
    assert sorted([never, later, soon], key=consumption_order) == [soon, later, never]


def test_allocating_zero_takes_nothing() -> None:
    assert allocate([lot(1, 5, expires_day=1)], 0) == ([], 0)


# --- debts ------------------------------------------------------------------------------------


def test_a_debt_lot_is_a_lot_with_a_negative_amount() -> None:
    assert lot(1, -5, amount=-5).is_debt
    assert not lot(2, 0, amount=5).is_debt


def test_new_earnings_pay_debts_oldest_first() -> None:
    # given two debts
    debts = [lot(7, -4, amount=-6, earned_day=3), lot(6, -5, amount=-5, earned_day=1)]
    # when 7 is earned
    takes = settle_debts(debts, 7)
    # then the older debt is paid in full and 2 go to the newer
    assert takes == [(6, 5), (7, 2)]


def test_earnings_beyond_the_debts_are_left_alone() -> None:
    assert settle_debts([lot(1, -3, amount=-3)], 10) == [(1, 3)]


def test_paid_off_debts_are_skipped() -> None:
    assert settle_debts([lot(1, 0, amount=-3), lot(2, -2, amount=-2, earned_day=1)], 5) == [(2, 2)]


def test_nothing_earned_pays_nothing() -> None:
    assert settle_debts([lot(1, -3, amount=-3)], 0) == []


# --- clawback ---------------------------------------------------------------------------------


def test_a_clawback_takes_from_the_awards_own_lot_first() -> None:
    # given the event's own lot (id 9) and another lot expiring sooner
    own = lot(9, 10, expires_day=100)
    other = lot(1, 10, expires_day=5)
    # when 6 is clawed back
    plan = plan_clawback([own], [own, other], 6, allow_negative=False)
    # then only the own lot is touched
    assert plan == Clawback([(9, 6)], 0, 0)
    assert plan.recovered == 6


def test_what_the_own_lot_lacks_comes_from_other_lots_soonest_expiring_first() -> None:
    own = lot(9, 3, amount=10, expires_day=100)
    others = [own, lot(1, 4, expires_day=50), lot(2, 4, expires_day=20), lot(3, 9)]
    plan = plan_clawback([own], others, 10, allow_negative=False)
    assert plan.takes == [(9, 3), (2, 4), (1, 3)]
    assert (plan.debt, plan.unrecovered, plan.recovered) == (0, 0, 10)


def test_a_shortfall_becomes_debt_where_the_currency_allows_negative_balances() -> None:
    own = lot(9, 2, amount=10)
    plan = plan_clawback([own], [own, lot(1, 3)], 10, allow_negative=True)
    assert plan == Clawback([(9, 2), (1, 3)], 5, 0)
    assert plan.recovered == 10


def test_a_shortfall_is_unrecovered_where_the_balance_cannot_go_negative() -> None:
    own = lot(9, 2, amount=10)
    plan = plan_clawback([own], [own, lot(1, 3)], 10, allow_negative=False)
    assert plan == Clawback([(9, 2), (1, 3)], 0, 5)
    assert plan.recovered == 5


def test_a_pending_own_lot_is_not_taken_as_available() -> None:
    own = lot(9, 5, status="pending")
    plan = plan_clawback([own], [own, lot(1, 5)], 4, allow_negative=False)
    assert plan == Clawback([(1, 4)], 0, 0)


def test_a_clawback_with_no_lots_at_all() -> None:
    assert plan_clawback([], [], 7, allow_negative=True) == Clawback([], 7, 0)
    assert plan_clawback([], [], 7, allow_negative=False) == Clawback([], 0, 7)
