"""Stage 1: a Stripe event becomes a payment, a purchase and the allocation job.

``stripe_event_process`` is the one service the webhook view calls. Each handled
event is processed in one transaction: the delivery record, the payment, the
purchase and the next job commit together or not at all. Duplicates are caught by
the unique PaymentIntent id, so even concurrent deliveries make one purchase.
It returns what happened (``EventResult``); the view decides what HTTP says.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.postgres.functions import TransactionNow
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from fulfillment import queue
from fulfillment.domain.metadata import (
    MetadataError,
    PurchaseRequest,
    parse_purchase_metadata,
    require_location,
)
from fulfillment.domain.stripe import MalformedEvent, StripeEvent, text_field
from fulfillment.models import (
    Course,
    Payment,
    Purchase,
    Student,
    TraceEvent,
    WebhookDelivery,
    WebhookOutcomeCount,
)
from fulfillment.queue import names
from fulfillment.services import allocation
from fulfillment.services.trace import purchase_transition, trace_record

logger = logging.getLogger(__name__)

STRIPE_ACTOR = "stripe"


class Outcome(enum.StrEnum):
    """What a Stripe event did (CONTRACT §3's answer table)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    NEEDS_ATTENTION = "needs_attention"
    REFUNDED = "refunded"
    IGNORED = "ignored"


@dataclass(frozen=True)
class EventResult:
    outcome: Outcome
    purchase_id: uuid.UUID | None = None
    reason: str = ""  # for operators: why it needs attention


def stripe_event_process(*, event: StripeEvent) -> EventResult:
    """Handle one authentic Stripe event (already signature-checked).

    Raises ``MalformedEvent`` naming the field when a handled event lacks what
    it needs; nothing is stored then.
    """
    handler = _HANDLERS.get(event.type)
    if handler is None:
        logger.info("stripe event ignored", extra={"event_type": event.type})
        return EventResult(Outcome.IGNORED)
    return handler(event)


def _payment_succeeded(event: StripeEvent) -> EventResult:
    event_id, intent = event.id, event.data_object
    payment_intent = text_field(intent, "id", prefix="pi_")
    amount = intent.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise MalformedEvent("data.object.amount must be a non-negative integer")
    currency = text_field(intent, "currency")
    if len(currency) != 3 or not currency.isalpha():
        raise MalformedEvent("data.object.currency must be a 3-letter ISO code")
    metadata = intent.get("metadata")
    stored_metadata = metadata if isinstance(metadata, dict) else {}
    with transaction.atomic():
        payment, created = _payment_get_or_create(
            Payment(
                payment_intent=payment_intent,
                amount=amount,
                currency=currency.lower(),
                metadata=stored_metadata,
                raw_event=event.raw,
            )
        )
        if not created:
            purchase_id = (
                Purchase.objects.filter(payment=payment)
                .values_list("pk", flat=True)
                .first()
            )
            _delivery(event_id, "payment_intent.succeeded", payment_intent, "duplicate")
            return EventResult(
                Outcome.DUPLICATE, purchase_id, reason=payment.attention_reason
            )
        try:
            purchase = purchase_create_from_payment(payment=payment, actor=STRIPE_ACTOR)
        except MetadataError as error:
            payment_flag(payment=payment, reason=str(error), actor=STRIPE_ACTOR)
            _delivery(
                event_id,
                "payment_intent.succeeded",
                payment_intent,
                "needs_attention",
                detail=str(error),
            )
            return EventResult(Outcome.NEEDS_ATTENTION, reason=str(error))
        _delivery(event_id, "payment_intent.succeeded", payment_intent, "accepted")
        return EventResult(Outcome.ACCEPTED, purchase.pk)


def purchase_create_from_payment(*, payment: Payment, actor: str) -> Purchase:
    """Turn a payment's metadata into a purchase and defer its allocation.

    Raises ``MetadataError`` (naming the field) when the metadata cannot be used;
    the caller decides whether to flag the payment. Runs in the caller's
    transaction; the payment must have no purchase yet.
    """
    request = parse_purchase_metadata(payment.metadata)
    course = Course.objects.filter(pk=request.course_id).first()
    if course is None:
        raise MetadataError(
            "course_id", f"no course {request.course_id} in the catalogue"
        )
    if course.mode == Course.Mode.HOME:
        require_location(request)
    student_id = _student_upsert(request)
    refunded_already = WebhookDelivery.objects.filter(
        payment_intent=payment.payment_intent, event_type="charge.refunded"
    ).exists()
    purchase = Purchase.objects.create(
        payment=payment,
        student_id=student_id,
        course=course,
        total_sessions=request.total_sessions,
        delivery_mode=request.delivery_mode.value,
        start_date=request.start_date,
        time_slot=request.time_slot,
        latitude=request.latitude,
        longitude=request.longitude,
        status_reason="Waiting for the allocation job.",
    )
    trace_record(
        payment=payment,
        purchase=purchase,
        kind=TraceEvent.Kind.STATE_CHANGE,
        actor=actor,
        message=f"Purchase of {course.title} recorded; trainer allocation pending.",
        to_status=purchase.status,
    )
    if refunded_already:
        # Stripe does not promise order: the refund came first, so the purchase is
        # born cancelled and nothing is allocated.
        payment.status = Payment.Status.REFUNDED
        payment.save(update_fields=["status", "updated_at"])
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.REFUNDED,
            reason="Refunded before the payment was processed.",
            actor=actor,
        )
        return purchase
    # The upsert above bumped the student's learnings version; the allocation
    # stage invalidates again whatever it decides, and defers the refresh.
    queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(purchase.pk))
    logger.info(
        "purchase recorded",
        extra={
            "purchase_id": str(purchase.pk),
            "payment_intent": payment.payment_intent,
        },
    )
    return purchase


def payment_flag(*, payment: Payment, reason: str, actor: str) -> Payment:
    """Keep a payment whose metadata cannot become a purchase, for operators."""
    payment.attention_reason = reason
    payment.save(update_fields=["attention_reason", "updated_at"])
    trace_record(
        payment=payment,
        kind=TraceEvent.Kind.STATE_CHANGE,
        actor=actor,
        message=f"Payment needs attention: {reason}",
        to_status="needs_attention",
    )
    logger.warning(
        "payment needs attention",
        extra={"payment_intent": payment.payment_intent, "reason": reason},
    )
    return payment


def _charge_refunded(event: StripeEvent) -> EventResult:
    event_id, charge = event.id, event.data_object
    payment_intent = text_field(charge, "payment_intent", prefix="pi_")
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(no_key=True)
            .filter(payment_intent=payment_intent)
            .first()
        )
        if payment is None:
            reason = f"refund for unknown PaymentIntent {payment_intent}"
            _delivery(
                event_id,
                "charge.refunded",
                payment_intent,
                "needs_attention",
                detail=reason,
            )
            logger.warning("refund for unknown payment", extra={"pi": payment_intent})
            return EventResult(Outcome.NEEDS_ATTENTION, reason=reason)
        purchase = (
            Purchase.objects.select_for_update(no_key=True)
            .filter(payment=payment)
            .first()
        )
        purchase_id = purchase.pk if purchase else None
        if payment.status == Payment.Status.REFUNDED:
            _delivery(event_id, "charge.refunded", payment_intent, "duplicate")
            return EventResult(Outcome.DUPLICATE, purchase_id)
        purchase_refund(payment=payment, purchase=purchase, actor=STRIPE_ACTOR)
        _delivery(event_id, "charge.refunded", payment_intent, "refunded")
        return EventResult(Outcome.REFUNDED, purchase_id)


def purchase_refund(
    *, payment: Payment, purchase: Purchase | None, actor: str
) -> Payment:
    """Cancel a refunded payment's purchase: future sessions cancelled, the
    trainer's reserved time released, and the waitlist retried for the freed
    capacity. Runs in the caller's transaction with both rows locked."""
    now = timezone.now()
    payment.status = Payment.Status.REFUNDED
    payment.save(update_fields=["status", "updated_at"])
    if purchase is None:
        trace_record(
            payment=payment,
            kind=TraceEvent.Kind.STATE_CHANGE,
            actor=actor,
            message="Payment refunded.",
            to_status="refunded",
        )
        return payment
    cancelled = allocation.allocation_release(purchase=purchase, now=now)
    purchase_transition(
        purchase=purchase,
        to_status=Purchase.Status.REFUNDED,
        reason=f"Refunded; {cancelled} upcoming sessions cancelled.",
        actor=actor,
    )
    queue.defer(names.REALLOCATE_WAITLIST)
    return payment


def _payment_get_or_create(candidate: Payment) -> tuple[Payment, bool]:
    """The payment of ``candidate.payment_intent``, inserted unless it exists.

    ``INSERT ... ON CONFLICT DO NOTHING`` then a read: two statements and no
    savepoint (``get_or_create`` takes four). A concurrent delivery of the same
    PaymentIntent waits on the unique index and then finds the winner's row.
    """
    Payment.objects.bulk_create([candidate], ignore_conflicts=True)
    payment = Payment.objects.get(payment_intent=candidate.payment_intent)
    return payment, payment.pk == candidate.pk


def _student_upsert(request: PurchaseRequest) -> uuid.UUID:
    """Create the student on first sight, or bump their learnings version (the
    new purchase changes their learnings): one statement either way.

    No ORM call says "increment on conflict" (``update_conflicts`` would copy the
    new row's version 0 over the current one, reviving stale cache entries).
    """
    table = Student._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS s (id, name, email, phone, "  # noqa: S608
            "learnings_version, created_at) VALUES (%s, %s, %s, %s, 0, now()) "
            "ON CONFLICT (id) DO UPDATE SET learnings_version = "
            "s.learnings_version + 1, "
            # A later payment may bring the phone the first one lacked.
            "phone = coalesce(nullif(s.phone, ''), excluded.phone)",
            [
                request.student_id,
                request.student_name,
                request.student_email,
                request.student_phone,
            ],
        )
    return request.student_id


def _delivery(
    event_id: str, event_type: str, payment_intent: str, outcome: str, detail: str = ""
) -> None:
    WebhookDelivery.objects.create(
        received_at=TransactionNow(),
        event_id=event_id,
        event_type=event_type,
        payment_intent=payment_intent,
        outcome=outcome,
        detail=detail,
    )


_Handler = Callable[[StripeEvent], EventResult]
_HANDLERS: dict[str, _Handler] = {
    "payment_intent.succeeded": _payment_succeeded,
    "charge.refunded": _charge_refunded,
}


def webhook_outcome_count(*, outcome: str) -> None:
    """Count one delivery that stores nothing else (refused or ignored): a
    single upsert in autocommit. Stored deliveries are counted from their rows."""
    table = WebhookOutcomeCount._meta.db_table
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (outcome, count) VALUES (%s, 1) "  # noqa: S608
                f"ON CONFLICT (outcome) DO UPDATE SET count = {table}.count + 1",
                [outcome[:40]],
            )
    except DatabaseError:
        logger.warning("webhook outcome not counted", extra={"outcome": outcome})
