"""Showing an amount in a currency's minor units as people read it.

Stripe amounts are integers in the currency's smallest unit: 499900 INR is
₹4,999.00, but 5000 JPY is ¥5,000 (a zero-decimal currency) and 5000 KWD is
5.000 (three decimals). https://docs.stripe.com/currencies#zero-decimal
"""

from __future__ import annotations

from typing import Final

ZERO_DECIMAL: Final = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
THREE_DECIMAL: Final = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit_digits(currency: str) -> int:
    """How many decimal digits a Stripe amount in ``currency`` carries."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def format_amount(amount: int, currency: str) -> str:
    """``amount`` (minor units) as ``4,999.00 INR`` / ``5,000 JPY``; exact for
    any integer (no float)."""
    digits = minor_unit_digits(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    text = f"{sign}{whole:,}"
    if digits:
        text += f".{fraction:0{digits}d}"
    return f"{text} {currency.upper()}".rstrip()
