"""Exact amounts: integers in the currency's minor units, with one rounding helper.

A currency with `decimals: 2` stores 12.34 as 1234. Amounts never pass through floats.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Literal

from kinloop.domain.errors import InvalidAmount

Rounding = Literal["full", "down", "up", "half_up", "half_even"]

_MODES = {
    "full": ROUND_FLOOR,
    "down": ROUND_FLOOR,
    "up": ROUND_CEILING,
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
}
_SCALES = [Decimal(10) ** d for d in range(0, 19)]
# Amounts and the sums of them must fit the ledger's 64-bit integers with room to spare.
MAX_MINOR = 10**15


def scale(decimals: int) -> Decimal:
    """The factor between display units and minor units."""
    return _SCALES[decimals]


def to_minor(value: Decimal | int | str, decimals: int, *, field: str = "amount") -> int:
    """Convert a display amount to minor units, refusing anything finer than the currency."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError as exc:
        raise InvalidAmount(f"{value!r} is not a number", field=field) from exc
    if not d.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number", field=field)
    if d.adjusted() > 30:  # far beyond MAX_MINOR; refuse before the arithmetic overflows
        raise InvalidAmount(f"{value} is larger than the ledger accepts ({MAX_MINOR:.0e} units)", field=field)
    minor = d * _SCALES[decimals]
    if minor != minor.to_integral_value():
        raise InvalidAmount(f"{value} has more than {decimals} decimal places", field=field)
    if abs(minor) > MAX_MINOR:
        raise InvalidAmount(f"{value} is larger than the ledger accepts ({MAX_MINOR:.0e} units)", field=field)
    return int(minor)


def from_minor(minor: int, decimals: int) -> Decimal:
    """Convert minor units back to a display amount."""
    if decimals == 0:
        return Decimal(minor)
    return Decimal(minor).scaleb(-decimals)


def round_minor(value: Decimal, decimals: int, rounding: Rounding) -> int:
    """Round a display amount to the currency's minor units.

    The rule: `down`/`full` drop any fraction (towards minus infinity), `up` takes the next unit,
    `half_up` rounds halves away from zero, `half_even` rounds halves to the even unit.
    """
    minor = (value * _SCALES[decimals]).to_integral_value(rounding=_MODES[rounding])
    return int(minor)
