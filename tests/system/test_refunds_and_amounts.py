"""Issue #12, money and trust: partial and failed refunds, charges that are not
ours, and the amount kept (CONTRACT §3), through the signed webhook and real
PostgreSQL; allocation by a real worker where sessions matter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from fulfillment.models import (
    EarlyRefund,
    Payment,
    Purchase,
    Reservation,
    TraceEvent,
    TutoringSession,
    WebhookDelivery,
    WebhookOutcomeCount,
)
from fulfillment.selectors.trace import payment_trace
from tests import helpers
from tests.helpers import jobs, load_event

PI = "pi_3QfixtureSucceeded01"  # the fixtures' PaymentIntent


def fixture_payment(**intent: Any) -> dict[str, Any]:
    """The payment fixture for a course of this test's catalogue, with
    ``intent`` fields of the PaymentIntent replaced (None deletes)."""
    course = helpers.course()
    helpers.trainer(courses=[course])
    event = load_event("payment_intent_succeeded")
    event["data"]["object"]["metadata"] = helpers.metadata_for(course=course)
    for key, value in intent.items():
        if value is None:
            event["data"]["object"].pop(key, None)
        else:
            event["data"]["object"][key] = value
    return event


def scheduled_sessions() -> int:
    return TutoringSession.objects.filter(
        status=TutoringSession.Status.SCHEDULED
    ).count()


# --- partial, then full refunds (item 2) ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_partial_refund_is_recorded_and_a_later_full_refund_cancels(
    signed_post: Callable[..., Any], run_worker: Callable[..., None]
) -> None:
    purchase_id = signed_post(fixture_payment()).json()["purchase_id"]
    run_worker()
    assert Purchase.objects.get().status == Purchase.Status.ALLOCATED
    sessions, reservations = scheduled_sessions(), Reservation.objects.count()
    assert sessions and reservations

    partial = signed_post(load_event("charge_refunded_partial"))

    assert partial.status_code == 200
    assert partial.json() == {
        "status": "partially_refunded",
        "purchase_id": purchase_id,
    }
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_refunded) == ("succeeded", 100000)
    assert Purchase.objects.get().status == Purchase.Status.ALLOCATED
    assert (scheduled_sessions(), Reservation.objects.count()) == (
        sessions,
        reservations,
    )
    trace = payment_trace(reference=PI)
    assert trace is not None
    assert any(
        "Partial refund: 1,000.00 INR of 4,999.00 INR" in getattr(e, "message", "")
        for e in trace.entries
    )

    # Redelivered, the same running total changes nothing.
    assert signed_post(load_event("charge_refunded_partial")).json()["status"] == (
        "duplicate"
    )

    full = signed_post(load_event("charge_refunded"))

    assert full.json() == {"status": "refunded", "purchase_id": purchase_id}
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("refunded", 499900)
    assert Purchase.objects.get().status == Purchase.Status.REFUNDED
    assert scheduled_sessions() == 0
    assert not Reservation.objects.exists()
    assert list(
        WebhookDelivery.objects.filter(event_type="charge.refunded")
        .order_by("id")
        .values_list("outcome", flat=True)
    ) == ["partially_refunded", "duplicate", "refunded"]


@pytest.mark.django_db
def test_refunded_total_reaching_the_amount_received_cancels_without_the_flag(
    signed_post: Callable[..., Any],
) -> None:
    purchase_id = signed_post(fixture_payment()).json()["purchase_id"]
    event = load_event("charge_refunded_partial")
    event["data"]["object"]["amount_refunded"] = 499900  # refunded: false still

    response = signed_post(event)

    assert response.json() == {"status": "refunded", "purchase_id": purchase_id}
    assert Purchase.objects.get().status == Purchase.Status.REFUNDED


@pytest.mark.django_db
def test_any_refund_of_a_payment_that_received_nothing_cancels_it(
    signed_post: Callable[..., Any],
) -> None:
    """Found by the fuzz test: amount_refunded reaching the amount received is
    a full refund (CONTRACT §3), also when nothing was received."""
    flagged = signed_post(fixture_payment(amount=0, amount_received=0)).json()
    assert flagged["status"] == "needs_attention"
    event = load_event("charge_refunded_partial")
    event["data"]["object"]["amount_refunded"] = 1000  # refunded: false

    response = signed_post(event)

    assert response.json()["status"] == "refunded"
    assert Payment.objects.get().status == Payment.Status.REFUNDED


@pytest.mark.django_db
def test_partial_refund_shows_in_the_console(
    signed_post: Callable[..., Any], client: Client
) -> None:
    signed_post(fixture_payment())
    signed_post(load_event("charge_refunded_partial"))
    client.force_login(User.objects.create_superuser("root", password="irrelevant"))

    page = client.get(f"/admin/fulfillment/payment/{Payment.objects.get().pk}/change/")

    assert page.status_code == 200
    assert "4,999.00 INR (1,000.00 INR refunded)" in page.content.decode()


@pytest.mark.parametrize(
    "fixture", ["charge_refund_updated_failed", "refund_updated_failed"]
)
@pytest.mark.django_db
def test_failed_refund_flags_the_cancelled_purchase_for_operators(
    signed_post: Callable[..., Any], fixture: str
) -> None:
    signed_post(fixture_payment())
    signed_post(load_event("charge_refunded"))

    response = signed_post(load_event(fixture))

    assert response.status_code == 200
    reason = (
        "refund re_3QfixtureRefund0001 failed (lost_or_stolen_card): the money was "
        "not returned to the customer"
    )
    assert response.json() == {"status": "needs_attention", "reason": reason}
    payment = Payment.objects.get()
    assert payment.attention_reason == reason
    assert payment.amount_refunded == 0
    purchase = Purchase.objects.get()
    assert purchase.status == Purchase.Status.NEEDS_ATTENTION
    assert reason in purchase.status_reason
    assert TraceEvent.objects.filter(
        to_status="needs_attention", message__contains="lost_or_stolen_card"
    ).exists()

    # Stripe tells of the same refund under both event types.
    other = (
        "refund_updated_failed"
        if fixture == "charge_refund_updated_failed"
        else "charge_refund_updated_failed"
    )
    assert signed_post(load_event(other)).json()["status"] == "duplicate"


@pytest.mark.django_db
def test_refund_update_that_succeeded_is_ignored(
    signed_post: Callable[..., Any],
) -> None:
    signed_post(fixture_payment())
    event = load_event("refund_updated_failed")
    event["data"]["object"]["status"] = "succeeded"

    response = signed_post(event)

    assert response.json() == {"status": "ignored"}
    assert Payment.objects.get().attention_reason == ""


# --- a charge without a PaymentIntent (item 3) ---------------------------------------


@pytest.mark.django_db
def test_refund_of_a_charge_without_payment_intent_is_ignored_and_counted(
    signed_post: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fulfillment"):
        response = signed_post(load_event("charge_refunded_without_payment_intent"))

    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert WebhookOutcomeCount.objects.get(outcome="ignored").count == 1
    assert not WebhookDelivery.objects.exists()
    assert not EarlyRefund.objects.exists()
    assert not Payment.objects.exists()
    [record] = [
        r for r in caplog.records if r.getMessage().startswith("refund of a charge")
    ]
    assert record.__dict__["charge"] == "ch_3QfixtureLegacyCharge1"


@pytest.mark.django_db
def test_refund_naming_something_that_is_not_a_payment_intent_is_kept_flagged(
    signed_post: Callable[..., Any],
) -> None:
    event = load_event("charge_refunded")
    event["data"]["object"]["payment_intent"] = 42

    response = signed_post(event)

    assert response.status_code == 200
    assert response.json()["status"] == "needs_attention"
    assert response.json()["reason"].startswith("payment_intent:")
    assert WebhookDelivery.objects.get().outcome == "needs_attention"


# --- values PostgreSQL cannot store (item 4) -----------------------------------------


@pytest.mark.django_db
def test_payment_with_unstorable_text_is_kept_cleaned_and_flagged(
    signed_post: Callable[..., Any],
) -> None:
    event = fixture_payment()
    event["data"]["object"]["metadata"]["student_name"] = "An\x00ya"
    event["data"]["object"]["metadata"]["notes"] = ["ok", "\ud83d"]

    response = signed_post(event)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "needs_attention"
    assert body["reason"].startswith("metadata.student_name, metadata.notes[1]:")
    payment = Payment.objects.get()
    assert payment.attention_reason == body["reason"]
    assert payment.metadata["student_name"] == "An\ufffdya"
    assert payment.metadata["notes"] == ["ok", "\ufffd"]
    assert payment.raw_event["data"]["object"]["metadata"]["student_name"] == (
        "An\ufffdya"
    )
    assert not Purchase.objects.exists()
    assert not jobs("allocate_trainer")


# --- the amount kept, and what is not a purchase (item 5) ----------------------------


@pytest.mark.django_db
def test_the_amount_kept_is_the_amount_received(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(fixture_payment(amount=499900, amount_received=450000))

    assert response.json()["status"] == "accepted"
    assert Payment.objects.get().amount == 450000


@pytest.mark.django_db
def test_the_amount_is_kept_when_amount_received_is_absent(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(fixture_payment(amount_received=None))

    assert response.json()["status"] == "accepted"
    assert Payment.objects.get().amount == 499900


@pytest.mark.parametrize(
    ("intent", "field"),
    [
        ({"amount": 0, "amount_received": 0}, "amount_received:"),
        ({"amount_received": 0}, "amount_received:"),
        ({"amount": 0, "amount_received": None}, "amount:"),
        ({"status": "processing"}, "status:"),
        ({"status": "requires_capture"}, "status:"),
        ({"status": None}, "status:"),
    ],
)
@pytest.mark.django_db
def test_nothing_received_or_not_succeeded_is_kept_for_operators(
    signed_post: Callable[..., Any], intent: dict[str, Any], field: str
) -> None:
    response = signed_post(fixture_payment(**intent))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "needs_attention"
    assert body["reason"].startswith(field)
    assert Payment.objects.get().attention_reason == body["reason"]
    assert not Purchase.objects.exists()
    assert not jobs("allocate_trainer")


@pytest.mark.django_db
def test_zero_decimal_amounts_are_shown_in_whole_units(
    signed_post: Callable[..., Any], client: Client
) -> None:
    event = fixture_payment(amount=5000, amount_received=5000, currency="jpy")

    assert signed_post(event).json()["status"] == "accepted"

    trace = payment_trace(reference=PI)
    assert trace is not None
    assert any(
        "for 5,000 JPY recorded" in getattr(e, "message", "") for e in trace.entries
    )
    client.force_login(User.objects.create_superuser("root", password="irrelevant"))
    page = client.get("/admin/fulfillment/payment/")
    assert "5,000 JPY" in page.content.decode()
    assert "50.00 JPY" not in page.content.decode()


@pytest.mark.django_db
def test_partial_refund_before_its_payment_is_applied_when_it_arrives(
    signed_post: Callable[..., Any],
) -> None:
    first = signed_post(load_event("charge_refunded_partial"))
    assert first.json()["status"] == "needs_attention"

    response = signed_post(fixture_payment())

    assert response.json()["status"] == "accepted"
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_refunded) == ("succeeded", 100000)
    assert Purchase.objects.get().status == Purchase.Status.ALLOCATION_PENDING
    assert len(jobs("allocate_trainer")) == 1


@pytest.mark.django_db
def test_refund_that_failed_before_its_payment_came_does_not_cancel_it(
    signed_post: Callable[..., Any],
) -> None:
    signed_post(load_event("charge_refunded"))
    failed = signed_post(load_event("charge_refund_updated_failed"))
    assert failed.json()["status"] == "needs_attention"

    response = signed_post(fixture_payment())

    assert response.json()["status"] == "accepted"
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_refunded) == ("succeeded", 0)
    assert Purchase.objects.get().status == Purchase.Status.ALLOCATION_PENDING
    assert len(jobs("allocate_trainer")) == 1
