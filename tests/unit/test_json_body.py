"""Strict reading of webhook bodies: JSON that PostgreSQL's jsonb can take."""

from __future__ import annotations

import pytest

from fulfillment.domain.json_body import MAX_DEPTH, UnreadableBody, parse_json_body


def test_a_stripe_shaped_body_is_read() -> None:
    body = b'{"id": "evt_1", "data": {"object": {"amount": 4999, "x": 1.5}}}'

    assert parse_json_body(body) == {
        "id": "evt_1",
        "data": {"object": {"amount": 4999, "x": 1.5}},
    }


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e400}', "too large"),
        (b"[" * 100_000 + b"]" * 100_000, "deeper than"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deeper than"),
        (b'{"a": ' + b"1" * 5000 + b"}", "not JSON"),
    ],
)
def test_what_python_reads_but_json_or_postgresql_would_not_is_refused(
    body: bytes, why: str
) -> None:
    with pytest.raises(UnreadableBody) as caught:
        parse_json_body(body)

    assert why in str(caught.value)


def test_nesting_up_to_the_limit_is_read() -> None:
    body = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH

    assert parse_json_body(body) is not None


def test_scalars_are_read_as_themselves() -> None:
    # Whether a scalar is a Stripe event is the service's question, not ours.
    assert parse_json_body(b"42") == 42
    assert parse_json_body(b'"\\u0000"') == "\x00"
