"""Issue #12 item 1: events of one PaymentIntent end as their sequential arrival
would, whatever their overlap. Two real connections: one delivery is held inside
its transaction while the other is posted, then released; a real worker runs
whatever was deferred, and the end state is read from PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client

from fulfillment.models import (
    Payment,
    Purchase,
    Reservation,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.services import purchases
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import jobs, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(event: dict[str, Any]) -> dict[str, Any]:
    body = stripe_events.encode(event)
    response = Client().post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        headers={
            "Stripe-Signature": stripe_events.signature_header(
                body, secret=settings.STRIPE_WEBHOOK_SECRET
            )
        },
    )
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


class Deliveries:
    """Deliveries posted from threads, each on its own database connection."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def post(self, name: str, event: dict[str, Any]) -> None:
        def run() -> None:
            try:
                self.answers[name] = deliver(event)
            except BaseException as error:  # reported by join()
                self.errors.append(error)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run, name=name)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} never answered"
        assert not self.errors, self.errors


def held(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, ...]:
    """Make ``purchases.<name>`` stop, once done, until released: its caller's
    transaction stays open meanwhile. Returns (reached, release)."""
    real = getattr(purchases, name)
    reached, release = threading.Event(), threading.Event()

    def holding(**kwargs: Any) -> Any:
        result = real(**kwargs)
        reached.set()
        release.wait(timeout=20)
        return result

    monkeypatch.setattr(purchases, name, holding)
    return reached, release


def a_delivery_waits_for_the_payment_intent_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def payment_and_refund() -> tuple[dict[str, Any], dict[str, Any]]:
    course = helpers.course()
    helpers.trainer(courses=[course])
    payment = stripe_events.payment_intent_succeeded(
        metadata=helpers.metadata_for(course=course)
    )
    pi = payment["data"]["object"]["id"]
    return payment, stripe_events.charge_refunded(payment_intent=pi)


def assert_refunded_with_nothing_booked(run_worker: Callable[..., None]) -> None:
    run_worker()  # whatever was deferred runs to the end
    purchase = Purchase.objects.select_related("payment").get()
    assert purchase.status == Purchase.Status.REFUNDED
    assert purchase.payment.status == Payment.Status.REFUNDED
    assert not TrainerAllocation.objects.filter(status="active").exists()
    assert not Reservation.objects.exists()
    assert not TutoringSession.objects.filter(status="scheduled").exists()
    assert not [job for job in jobs() if job.status in ("todo", "doing")]
    assert not jobs(status="failed")


def test_refund_posted_while_its_payment_commits_cancels_it(
    monkeypatch: pytest.MonkeyPatch, run_worker: Callable[..., None]
) -> None:
    payment, refund = payment_and_refund()
    reached, release = held(monkeypatch, "purchase_create_from_payment")
    deliveries = Deliveries()

    deliveries.post("payment", payment)
    assert reached.wait(timeout=10), "the payment never reached its purchase"
    deliveries.post("refund", refund)
    # Before the fix the refund answered at once, blind to the open payment.
    wait_until(
        a_delivery_waits_for_the_payment_intent_lock,
        timeout=10,
        what="the refund to wait for its payment's transaction",
    )
    release.set()
    deliveries.join()

    purchase_id = deliveries.answers["payment"]["purchase_id"]
    assert deliveries.answers["payment"]["status"] == "accepted"
    assert deliveries.answers["refund"] == {
        "status": "refunded",
        "purchase_id": purchase_id,
    }
    assert_refunded_with_nothing_booked(run_worker)


def test_payment_posted_while_its_refund_commits_is_born_refunded(
    monkeypatch: pytest.MonkeyPatch, run_worker: Callable[..., None]
) -> None:
    payment, refund = payment_and_refund()
    reached, release = held(monkeypatch, "_early_refund_remember")
    deliveries = Deliveries()

    deliveries.post("refund", refund)
    assert reached.wait(timeout=10), "the refund was never remembered"
    deliveries.post("payment", payment)
    wait_until(
        a_delivery_waits_for_the_payment_intent_lock,
        timeout=10,
        what="the payment to wait for its refund's transaction",
    )
    release.set()
    deliveries.join()

    assert deliveries.answers["refund"]["status"] == "needs_attention"
    assert deliveries.answers["payment"]["status"] == "accepted"
    assert not jobs("allocate_trainer")
    assert_refunded_with_nothing_booked(run_worker)


def test_payments_and_refunds_posted_at_once_all_end_refunded(
    run_worker: Callable[..., None],
) -> None:
    pairs = [payment_and_refund() for _ in range(6)]
    barrier = threading.Barrier(len(pairs) * 2)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def post(event: dict[str, Any]) -> None:
        try:
            barrier.wait(timeout=10)
            answers.append(deliver(event))
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=post, args=(event,)) for pair in pairs for event in pair
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors, errors
    assert len(answers) == 12
    run_worker()
    assert Purchase.objects.count() == 6
    assert set(Purchase.objects.values_list("status", flat=True)) == {"refunded"}
    assert not Reservation.objects.exists()
    assert not TutoringSession.objects.filter(status="scheduled").exists()
    assert not jobs(status="failed")
