"""Exact amounts: minor units, and the one rounding helper."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kinloop.domain.amounts import MAX_MINOR, from_minor, round_minor, scale, to_minor
from kinloop.domain.errors import InvalidAmount


def test_scale_is_ten_to_the_decimals() -> None:
    assert scale(0) == Decimal(1)
    assert scale(2) == Decimal(100)
    assert scale(6) == Decimal(1_000_000)


@pytest.mark.parametrize(
    ("value", "decimals", "minor"),
    [
        ("12.34", 2, 1234),
        (Decimal("12.3"), 2, 1230),
        ("1.230", 2, 123),  # trailing zeros are not extra precision
        (7, 0, 7),
        ("-5", 0, -5),
        (0.1, 1, 1),  # floats go through their shortest repr, never binary noise
        ("1e-2", 2, 1),
        ("0", 3, 0),
    ],
)
def test_to_minor_converts_display_amounts(value: Decimal | int | str, decimals: int, minor: int) -> None:
    # when
    got = to_minor(value, decimals)
    # then
    assert got == minor
    assert type(got) is int


@pytest.mark.parametrize(
    ("value", "decimals"),
    [("12.345", 2), ("0.5", 0), (Decimal("0.0001"), 3), (1.25, 1)],
)
def test_to_minor_refuses_more_decimals_than_the_currency_has(value: Decimal | str | float, decimals: int) -> None:
    with pytest.raises(InvalidAmount) as info:
        to_minor(value, decimals, field="cap")  # type: ignore[arg-type]
    assert info.value.detail == f"{value} has more than {decimals} decimal places"
    assert info.value.field == "cap"
    assert info.value.code == "invalid_amount"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("abc", "'abc' is not a number"),
        (True, "True is not a number"),
        ("NaN", "'NaN' is not a finite number"),
        ("Infinity", "'Infinity' is not a finite number"),
    ],
)
def test_to_minor_refuses_what_is_not_a_finite_number(value: object, detail: str) -> None:
    with pytest.raises(InvalidAmount) as info:
        to_minor(value, 2)  # type: ignore[arg-type]
    assert info.value.detail == detail
    assert info.value.field == "amount"


def test_to_minor_refuses_amounts_beyond_what_the_ledger_holds() -> None:
    # given the limit of 10^15 minor units, which 64-bit sums hold with room to spare
    assert MAX_MINOR == 10**15
    assert to_minor(10**15, 0) == 10**15
    assert to_minor("-10000000000000.00", 2) == -(10**15)
    # then one more unit, in display or in minor terms, is refused
    with pytest.raises(InvalidAmount) as info:
        to_minor(10**15 + 1, 0)
    assert info.value.detail == "1000000000000001 is larger than the ledger accepts (1e+15 units)"
    with pytest.raises(InvalidAmount):
        to_minor("10000000000000.01", 2)


def test_from_minor_gives_back_the_display_amount_with_the_currency_precision() -> None:
    assert from_minor(1234, 2) == Decimal("12.34")
    assert str(from_minor(100, 2)) == "1.00"
    assert str(from_minor(5, 0)) == "5"
    assert str(from_minor(-7, 3)) == "-0.007"


def test_to_minor_and_from_minor_round_trip() -> None:
    for text in ("0.01", "99.99", "-3.50", "1000000.00"):
        assert str(from_minor(to_minor(text, 2), 2)) == text


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [
        #             2.5  3.5  -2.5  2.4  2.6  -2.4
        ("full", [2, 3, -3, 2, 2, -3]),
        ("down", [2, 3, -3, 2, 2, -3]),
        ("up", [3, 4, -2, 3, 3, -2]),
        ("half_up", [3, 4, -3, 2, 3, -2]),
        ("half_even", [2, 4, -2, 2, 3, -2]),
    ],
)
def test_round_minor_modes(rounding: str, expected: list[int]) -> None:
    # given
    values = [Decimal(v) for v in ("2.5", "3.5", "-2.5", "2.4", "2.6", "-2.4")]
    # when
    got = [round_minor(v, 0, rounding) for v in values]  # type: ignore[arg-type]
    # then
    assert got == expected


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [("down", 123), ("up", 124), ("half_up", 124), ("half_even", 124)],
)
def test_round_minor_rounds_to_the_currency_minor_unit(rounding: str, expected: int) -> None:
    # 1.235 display units of a 2-decimal currency is 123.5 minor units.
    assert round_minor(Decimal("1.235"), 2, rounding) == expected  # type: ignore[arg-type]


def test_round_minor_half_even_goes_to_the_even_unit_in_minor_units() -> None:
    assert round_minor(Decimal("1.245"), 2, "half_even") == 124
    assert round_minor(Decimal("1.255"), 2, "half_even") == 126


def test_round_minor_keeps_exact_values() -> None:
    for rounding in ("full", "down", "up", "half_up", "half_even"):
        assert round_minor(Decimal("12.34"), 2, rounding) == 1234  # type: ignore[arg-type]
