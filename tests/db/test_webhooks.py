"""CONTRACT §3's webhook table, row by row: the answer, the rows and the jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import OperationalError, connection, connections
from django.test import Client

from fulfillment.models import (
    Payment,
    Purchase,
    Student,
    TraceEvent,
    WebhookDelivery,
)
from fulfillment.services import purchases
from fulfillment.testing import demo, stripe_events
from tests import helpers
from tests.helpers import jobs, load_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _catalogue(db: None) -> None:
    from django.core.management import call_command

    call_command("seed_demo", verbosity=0)


def nothing_stored() -> bool:
    return (
        not Payment.objects.exists()
        and not Purchase.objects.exists()
        and not WebhookDelivery.objects.exists()
        and not jobs("allocate_trainer")
    )


def test_first_delivery_records_payment_purchase_and_allocation_job(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(load_event("payment_intent_succeeded"))

    assert response.status_code == 200
    purchase = Purchase.objects.get()
    assert response.json() == {"status": "accepted", "purchase_id": str(purchase.pk)}
    assert purchase.status == Purchase.Status.ALLOCATION_PENDING
    assert purchase.payment.payment_intent == "pi_3QfixtureSucceeded01"
    assert purchase.payment.amount == 499900
    assert (
        purchase.course_id is not None
        and str(purchase.course_id) == demo.PYTHON_FOR_KIDS
    )
    assert purchase.student.name == "Anya Sharma"
    assert purchase.time_slot.hour == 15
    [job] = jobs("allocate_trainer")
    assert job.args == {"purchase_id": str(purchase.pk)}
    assert job.status == "todo" and job.queue_name == "allocation"
    assert WebhookDelivery.objects.get().outcome == "accepted"
    assert TraceEvent.objects.filter(purchase=purchase).count() == 1


@pytest.mark.parametrize(
    "signature",
    [
        None,  # header missing
        "t=1,v1=deadbeef",
        "garbage",
    ],
)
def test_bad_or_missing_signature_is_refused_and_stores_nothing(
    client: Client, signature: str | None
) -> None:
    body = stripe_events.encode(load_event("payment_intent_succeeded"))
    headers = {"Stripe-Signature": signature} if signature else {}
    response = client.post(
        "/webhooks/stripe/", data=body, content_type="application/json", headers=headers
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert nothing_stored()


def test_signature_with_another_secret_is_refused(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(load_event("payment_intent_succeeded"), secret="whsec_other")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert nothing_stored()


def test_delivery_signed_more_than_300_seconds_ago_is_refused(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(
        load_event("payment_intent_succeeded"), timestamp=int(time.time()) - 301
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert nothing_stored()


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"id": "evt_1", "type": "payment_intent.succeeded"}',
        b'{"id": 5, "type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "evt_1", "data": {"object": {}}}',
    ],
)
def test_authentic_body_that_is_not_a_stripe_event_is_malformed(
    signed_post: Callable[..., Any], body: bytes
) -> None:
    response = signed_post(body)

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_payload"
    assert nothing_stored()


def test_body_that_is_not_utf8_cannot_carry_a_valid_signature(
    signed_post: Callable[..., Any],
) -> None:
    # Stripe signs the UTF-8 text of the body; bytes that are not UTF-8 were not
    # signed by Stripe, whatever header comes with them.
    response = signed_post(b"\xff\xfe not utf-8")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert nothing_stored()


def test_authentic_event_whose_object_cannot_be_used_is_kept_for_operators(
    signed_post: Callable[..., Any],
) -> None:
    # A Stripe event, but its PaymentIntent has no id: nothing to key a payment
    # on, so the delivery is kept, flagged, and Stripe is not told to retry.
    body = (
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}'
    )

    response = signed_post(body)

    assert response.status_code == 200
    assert response.json() == {
        "status": "needs_attention",
        "reason": "id: not a PaymentIntent id (pi_...)",
    }
    assert not Payment.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.event_id) == ("needs_attention", "evt_1")


def test_payment_intent_with_bad_amount_is_kept_for_operators(
    signed_post: Callable[..., Any],
) -> None:
    event = load_event("payment_intent_succeeded")
    event["data"]["object"]["amount_received"] = "4999"

    response = signed_post(event)

    assert response.status_code == 200
    assert response.json()["status"] == "needs_attention"
    assert response.json()["reason"].startswith("amount_received:")
    payment = Payment.objects.get()
    assert payment.attention_reason == response.json()["reason"]
    assert payment.raw_event["data"]["object"]["amount_received"] == "4999"
    assert not Purchase.objects.exists()
    assert not jobs("allocate_trainer")


def test_authentic_event_of_unhandled_type_is_ignored(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(load_event("customer_created"))

    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert nothing_stored()


def test_same_payment_intent_again_is_a_duplicate_and_changes_nothing(
    signed_post: Callable[..., Any],
) -> None:
    first = signed_post(load_event("payment_intent_succeeded")).json()
    # Stripe may send the same PaymentIntent under a new event id.
    second = signed_post(load_event("payment_intent_succeeded", student_name="Other"))

    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "purchase_id": first["purchase_id"]}
    assert Purchase.objects.count() == 1
    assert Student.objects.get().name == "Anya Sharma"
    assert len(jobs("allocate_trainer")) == 1
    assert list(
        WebhookDelivery.objects.order_by("id").values_list("outcome", flat=True)
    ) == ["accepted", "duplicate"]


def test_redelivery_of_the_same_event_is_a_duplicate(
    signed_post: Callable[..., Any],
) -> None:
    event = load_event("payment_intent_succeeded")
    signed_post(event)

    response = signed_post(event)

    assert response.json()["status"] == "duplicate"
    assert Purchase.objects.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"course_id": "00000000-0000-4000-8000-000000000000"}, "course_id"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"total_sessions": "15"}, "total_sessions"),
        ({"time_slot": "25:00"}, "time_slot"),
        ({"student_id": None}, "student_id"),
        ({"latitude": None, "longitude": None}, "latitude"),
        ({"delivery_mode": "DAILY"}, "delivery_mode"),
    ],
)
def test_unusable_metadata_keeps_the_payment_for_operators(
    signed_post: Callable[..., Any], overrides: dict[str, Any], field: str
) -> None:
    response = signed_post(load_event("payment_intent_succeeded", **overrides))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "needs_attention"
    assert body["reason"].startswith(f"{field}:")
    payment = Payment.objects.get()
    assert payment.attention_reason == body["reason"]
    assert payment.amount == 499900
    assert not Purchase.objects.exists()
    assert not jobs("allocate_trainer")
    assert WebhookDelivery.objects.get().outcome == "needs_attention"


def test_online_course_needs_no_location(signed_post: Callable[..., Any]) -> None:
    event = load_event(
        "payment_intent_succeeded",
        course_id=demo.SCRATCH_GAMES,
        latitude=None,
        longitude=None,
    )

    response = signed_post(event)

    assert response.json()["status"] == "accepted"


def test_failure_after_the_defer_leaves_nothing_behind(
    signed_post: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The allocation job is written with the purchase (one statement); the
    # delivery record comes last, so failing there fails after the defer.
    deferred: list[str] = []

    def delivery_then_fail(*args: Any, **kwargs: Any) -> None:
        deferred.extend(job.task_name for job in jobs())
        raise OperationalError("connection lost right after the defer")

    monkeypatch.setattr(purchases, "_delivery", delivery_then_fail)

    response = signed_post(load_event("payment_intent_succeeded"))

    assert response.status_code == 503
    assert nothing_stored()
    assert not Student.objects.exists()
    assert "fulfillment.tasks.allocate_trainer" in deferred
    # Only the catalogue's own job, from the fixture, is left.
    assert [job.task_name for job in jobs()] == [
        "fulfillment.tasks.reallocate_waitlist"
    ]


def test_database_unreachable_answers_503(
    signed_post: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(connection, "cursor", unreachable)

    response = signed_post(load_event("payment_intent_succeeded"))

    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"


def test_a_delivery_does_not_probe_its_connection_first(
    signed_post: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = helpers.metadata_for(course=helpers.course())
    signed_post(stripe_events.payment_intent_succeeded(metadata=metadata))  # opened
    probes: list[bool] = []
    real_is_usable = connection.is_usable

    def is_usable() -> bool:
        probes.append(True)
        return real_is_usable()

    metadata = helpers.metadata_for(course=helpers.course())
    monkeypatch.setattr(connection, "is_usable", is_usable)
    connection.health_check_enabled = True  # type: ignore[attr-defined]
    # As at the start of any request:
    connection.health_check_done = False  # type: ignore[attr-defined]

    response = signed_post(stripe_events.payment_intent_succeeded(metadata=metadata))

    assert response.json()["status"] == "accepted"
    assert probes == []


@pytest.mark.django_db(transaction=True)
def test_a_delivery_on_a_connection_that_died_meanwhile_is_stored_on_a_new_one(
    signed_post: Callable[..., Any],
) -> None:
    course = helpers.course()
    first = signed_post(
        stripe_events.payment_intent_succeeded(
            metadata=helpers.metadata_for(course=course)
        )
    )
    assert first.json()["status"] == "accepted"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    # PostgreSQL restarted, or a failover: the pooled connection is dead.
    with psycopg.connect(helpers.database_url_for_tests(), autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])

    again = signed_post(
        stripe_events.payment_intent_succeeded(
            metadata=helpers.metadata_for(course=course)
        )
    )

    assert again.status_code == 200, again.content
    assert again.json()["status"] == "accepted"
    assert Purchase.objects.filter(pk=again.json()["purchase_id"]).exists()


@pytest.mark.django_db(transaction=True)
def test_six_concurrent_deliveries_of_one_payment_intent_make_one_purchase() -> None:
    from django.core.management import call_command

    call_command("seed_demo", verbosity=0)
    barrier = threading.Barrier(6)
    answers: list[dict[str, Any]] = []

    def deliver() -> None:
        try:
            body = stripe_events.encode(load_event("payment_intent_succeeded"))
            header = stripe_events.signature_header(
                body, secret="whsec_dev_fulfilment_local_only"
            )
            barrier.wait(timeout=10)
            response = Client().post(
                "/webhooks/stripe/",
                data=body,
                content_type="application/json",
                headers={"Stripe-Signature": header},
            )
            answers.append(response.json())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    statuses = sorted(answer["status"] for answer in answers)
    assert statuses == ["accepted"] + ["duplicate"] * 5
    purchase = Purchase.objects.get()
    assert {answer["purchase_id"] for answer in answers} == {str(purchase.pk)}
    assert len(jobs("allocate_trainer")) == 1


def test_refund_of_an_unknown_payment_intent_is_flagged(
    signed_post: Callable[..., Any],
) -> None:
    response = signed_post(load_event("charge_refunded"))

    assert response.status_code == 200
    assert response.json()["status"] == "needs_attention"
    assert "pi_3QfixtureSucceeded01" in response.json()["reason"]
    assert WebhookDelivery.objects.get().outcome == "needs_attention"


def test_refund_arriving_before_the_payment_makes_a_refunded_purchase(
    signed_post: Callable[..., Any],
) -> None:
    signed_post(load_event("charge_refunded"))

    response = signed_post(load_event("payment_intent_succeeded"))

    purchase = Purchase.objects.get()
    assert response.json()["status"] == "accepted"
    assert purchase.status == Purchase.Status.REFUNDED
    assert purchase.payment.status == Payment.Status.REFUNDED
    assert not jobs("allocate_trainer")


def test_refund_cancels_a_pending_purchase_and_is_idempotent(
    signed_post: Callable[..., Any],
) -> None:
    purchase_id = signed_post(load_event("payment_intent_succeeded")).json()[
        "purchase_id"
    ]

    first = signed_post(load_event("charge_refunded"))
    second = signed_post(load_event("charge_refunded"))

    assert first.json() == {"status": "refunded", "purchase_id": purchase_id}
    assert second.json() == {"status": "duplicate", "purchase_id": purchase_id}
    assert Purchase.objects.get().status == Purchase.Status.REFUNDED
    assert len(jobs("reallocate_waitlist")) == 1


def test_webhook_only_accepts_post(client: Client) -> None:
    assert client.get("/webhooks/stripe/").status_code == 405


def test_the_webhook_path_skips_session_auth_and_messages(
    signed_post: Callable[..., Any], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    for middleware in (SessionMiddleware, AuthenticationMiddleware, MessageMiddleware):
        real = middleware.process_request

        def process_request(
            self: Any, request: Any, real: Any = real, name: str = middleware.__name__
        ) -> Any:
            seen.append(f"{name} {request.path}")
            return real(self, request)

        monkeypatch.setattr(middleware, "process_request", process_request)
    metadata = helpers.metadata_for(course=helpers.course())

    answer = signed_post(stripe_events.payment_intent_succeeded(metadata=metadata))
    assert answer.json()["status"] == "accepted"
    assert seen == []
    assert not answer.cookies

    client.get("/admin/login/")
    assert seen == [
        "SessionMiddleware /admin/login/",
        "AuthenticationMiddleware /admin/login/",
        "MessageMiddleware /admin/login/",
    ]
