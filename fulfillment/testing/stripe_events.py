"""Building and signing Stripe events the way Stripe does, for the test-payment
command, the test suite, the chaos run and the benchmark (never for production
traffic, which Stripe signs)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any


def signature_header(
    payload: bytes, *, secret: str, timestamp: int | None = None
) -> str:
    """``Stripe-Signature`` for ``payload``: ``t=<unix>,v1=<hex HMAC-SHA256>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def payment_intent_succeeded(
    *,
    metadata: dict[str, str],
    payment_intent: str | None = None,
    amount: int = 499900,
    currency: str = "inr",
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "type": "payment_intent.succeeded",
        "livemode": False,
        "data": {
            "object": {
                "id": payment_intent or new_id("pi"),
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount,
                "currency": currency,
                "status": "succeeded",
                "metadata": metadata,
            }
        },
    }


def charge_refunded(
    *,
    payment_intent: str | None,
    amount: int = 499900,
    amount_refunded: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``charge.refunded`` as Stripe sends it for full and partial refunds:
    ``amount_refunded`` is the running total (all of ``amount`` by default)."""
    refunded_so_far = amount if amount_refunded is None else amount_refunded
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "type": "charge.refunded",
        "livemode": False,
        "data": {
            "object": {
                "id": new_id("ch"),
                "object": "charge",
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": refunded_so_far,
                "currency": "inr",
                "refunded": refunded_so_far >= amount,
                "payment_intent": payment_intent,
            }
        },
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
