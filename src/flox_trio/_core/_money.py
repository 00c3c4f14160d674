"""Exact money arithmetic for the order, fill, position and PnL path.

Strategies read floats (fast, what an indicator wants); everything that is
money is a Decimal built from the shortest repr of the float, so the price an
exchange sent as "43250.12" stays exactly 43250.12 through a million fills.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from .._errors import OrderError

ZERO = Decimal(0)


def to_decimal(value: object, what: str = "value") -> Decimal:
    """Convert a user-supplied number to an exact Decimal.

    Floats go through ``repr`` (the shortest string that round-trips), so
    ``0.1`` becomes ``Decimal("0.1")`` and not its binary expansion.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise OrderError(f"{what} must be a number, got a bool ({value!r})")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise OrderError(f"{what} must be finite, got {value!r}")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise OrderError(f"{what} {value!r} is not a number") from None
    else:
        raise OrderError(f"{what} must be a number (int, float, str or Decimal), got {type(value).__name__}")
    if not result.is_finite():
        raise OrderError(f"{what} must be finite, got {value!r}")
    return result


#: Bounds of an order's price and quantity: far beyond any real market, near enough that
#: price * quantity * fee stays exact in the default decimal context (28 digits).
MAX_AMOUNT = Decimal("1e15")
MAX_DECIMALS = 18


def order_amount(value: object, what: str) -> Decimal:
    """A strategy's price or quantity: a finite number in (0, 1e15] with at most 18 decimals."""
    result = to_decimal(value, what)
    if not ZERO < result <= MAX_AMOUNT:
        raise OrderError(f"order {what} must be > 0 and <= {MAX_AMOUNT:,.0f}, got {value!r}")
    exponent = result.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise OrderError(f"order {what} {value!r} has more than {MAX_DECIMALS} decimals")
    return result


def price_decimal(price: float) -> Decimal:
    """The exact Decimal of a market price the engine holds as a float."""
    return Decimal(repr(price))
