"""Currencies QuickBooks knows by ISO code, and the fixed exchange rates the emulator uses when none is given."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# ISO 4217 code -> the name QuickBooks prints in a CurrencyRef.
NAMES = {
    "USD": "United States Dollar",
    "CAD": "Canadian Dollar",
    "GBP": "British Pound Sterling",
    "AUD": "Australian Dollar",
    "EUR": "Euro",
    "NZD": "New Zealand Dollar",
    "JPY": "Japanese Yen",
    "CHF": "Swiss Franc",
    "SEK": "Swedish Krona",
    "NOK": "Norwegian Krone",
    "DKK": "Danish Krone",
    "MXN": "Mexican Peso",
    "INR": "Indian Rupee",
    "CNY": "Chinese Yuan Renminbi",
    "HKD": "Hong Kong Dollar",
    "SGD": "Singapore Dollar",
    "ZAR": "South African Rand",
}

# US dollars for one unit of each currency: a fixed table, so tests can compute what to expect (see README).
USD_PER_UNIT = {
    "USD": Decimal("1"),
    "CAD": Decimal("0.73"),
    "GBP": Decimal("1.27"),
    "AUD": Decimal("0.66"),
    "EUR": Decimal("1.08"),
    "NZD": Decimal("0.61"),
    "JPY": Decimal("0.0067"),
    "CHF": Decimal("1.13"),
    "SEK": Decimal("0.095"),
    "NOK": Decimal("0.094"),
    "DKK": Decimal("0.145"),
    "MXN": Decimal("0.058"),
    "INR": Decimal("0.012"),
    "CNY": Decimal("0.14"),
    "HKD": Decimal("0.128"),
    "SGD": Decimal("0.74"),
    "ZAR": Decimal("0.054"),
}

RATE_PLACES = Decimal("0.000001")


def is_known(code: str) -> bool:
    return code in NAMES


def ref(code: str) -> dict[str, Any]:
    """A CurrencyRef as QuickBooks prints it."""
    return {"value": code, "name": NAMES.get(code, code)}


def exchange_rate(code: str, home: str) -> Decimal:
    """Home-currency units for one unit of `code` (Intuit's ExchangeRate), from the fixed table."""
    if code == home:
        return Decimal(1)
    return (USD_PER_UNIT[code] / USD_PER_UNIT[home]).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)
