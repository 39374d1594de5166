"""Reading a Stripe Event envelope (https://docs.stripe.com/api/events/object).

Pure: the webhook view has verified the signature and parsed the JSON; this
checks the shape every handled event needs and names the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from fulfillment.domain.storable import storable_copy


class MalformedEvent(ValueError):
    """Authentic, but not a Stripe event we can read; the message names the
    field."""


@dataclass(frozen=True)
class StripeEvent:
    id: str  # evt_…
    type: str  # e.g. payment_intent.succeeded
    data_object: Mapping[str, Any]  # the PaymentIntent, Charge … it is about
    raw: dict[str, Any]  # the whole event, as stored with a payment
    # Fields whose text PostgreSQL cannot store (NUL, an unpaired surrogate),
    # named from data.object ("metadata.note"); ``raw`` and ``data_object``
    # hold them with U+FFFD instead.
    unstorable: tuple[str, ...] = ()


def parse_event(body: object) -> StripeEvent:
    """The envelope of a Stripe Event, or ``MalformedEvent`` when the body is
    not one (no id, type or data.object). The event is a storable copy of
    ``body``: see ``unstorable``."""
    if not isinstance(body, dict):
        raise MalformedEvent("the body must be a JSON object (a Stripe Event)")
    cleaned, changed = storable_copy(body)
    body = cast(dict[str, Any], cleaned)  # a dict's copy is a dict
    event_id = text_field(body, "id")
    event_type = text_field(body, "type")
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedEvent("data.object must be an object")
    return StripeEvent(
        id=event_id,
        type=event_type,
        data_object=data["object"],
        raw=body,
        unstorable=tuple(path.removeprefix("data.object.") for path in changed),
    )


def text_field(mapping: Mapping[str, Any], key: str, *, prefix: str = "") -> str:
    """``mapping[key]`` as a non-empty string of at most 255 characters starting
    with ``prefix``, or ``MalformedEvent`` naming the key."""
    value = mapping.get(key)
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 255
        or "\x00" in value
        or not value.startswith(prefix)
    ):
        expected = f"a string starting with {prefix!r}" if prefix else "a string"
        raise MalformedEvent(f"{key} must be {expected}")
    return value
