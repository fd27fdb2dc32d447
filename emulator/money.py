"""Money and quantities: exact decimals inside, JSON numbers outside, as QuickBooks prints them."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


class NotANumber(ValueError):
    """A value that should have been a number."""


def to_decimal(value: Any) -> Decimal:
    """A JSON number (or numeric string) as an exact Decimal; floats go through their shortest repr."""
    if isinstance(value, bool) or value is None:
        raise NotANumber(repr(value))
    if isinstance(value, Decimal):
        return value
    try:
        result = Decimal(str(value)) if isinstance(value, int | float | str) else None
    except InvalidOperation:
        result = None
    if result is None or not result.is_finite():
        raise NotANumber(repr(value))
    return result


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def number(value: Decimal) -> int | float:
    """QuickBooks prints 100 for 100.00 and 12.75 for 12.750."""
    normalized = value.normalize()
    if normalized == normalized.to_integral_value():
        return int(normalized)
    return float(normalized)


def two_places(value: Decimal) -> str:
    """Amounts inside LineEx are strings with two decimals ("387.00")."""
    return f"{cents(value):.2f}"
