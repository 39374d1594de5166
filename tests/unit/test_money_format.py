"""domain/money.py and domain/storable.py: pure rules, no database."""

from __future__ import annotations

import pytest

from fulfillment.domain.money import format_amount
from fulfillment.domain.storable import storable_copy


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (499900, "inr", "4,999.00 INR"),
        (5, "usd", "0.05 USD"),
        (5000, "jpy", "5,000 JPY"),
        (1000000, "KRW", "1,000,000 KRW"),
        (5000, "kwd", "5.000 KWD"),
        (2**63 - 1, "inr", "92,233,720,368,547,758.07 INR"),
        (0, "", "0.00"),
    ],
)
def test_amounts_are_shown_in_the_currency_s_units(
    amount: int, currency: str, shown: str
) -> None:
    assert format_amount(amount, currency) == shown


def test_unstorable_text_is_replaced_and_named_by_path() -> None:
    value = {"a\x00": ["ok", "\ud800x"], "b": {"c": "fine"}, "n": 1}

    cleaned, changed = storable_copy(value)

    assert cleaned == {"a\ufffd": ["ok", "\ufffdx"], "b": {"c": "fine"}, "n": 1}
    assert changed == ["a\ufffd", "a\ufffd[1]"]
    assert value["a\x00"] == ["ok", "\ud800x"]  # a copy: the input is untouched
