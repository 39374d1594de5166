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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from django.db import DatabaseError, connection, transaction
from django.db.models import F, Model
from django.db.models.functions import Greatest
from django.utils import timezone

from fulfillment import queue
from fulfillment.domain.metadata import (
    MetadataError,
    PurchaseRequest,
    parse_purchase_metadata,
    require_location,
)
from fulfillment.domain.money import format_amount
from fulfillment.domain.stripe import StripeEvent
from fulfillment.models import (
    Course,
    EarlyRefund,
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
    PARTIALLY_REFUNDED = "partially_refunded"
    IGNORED = "ignored"


@dataclass(frozen=True)
class EventResult:
    outcome: Outcome
    purchase_id: uuid.UUID | None = None
    reason: str = ""  # for operators: why it needs attention


def stripe_event_process(*, event: StripeEvent) -> EventResult:
    """Handle one authentic Stripe event (already signature-checked).

    Never refuses an authentic event for its content: what cannot be used is
    kept where it can be (the payment, cleaned; else the delivery) and answered
    ``NEEDS_ATTENTION`` with the reason. Events of one PaymentIntent are
    serialised (``_payment_intent_lock``), so any order or overlap of them ends
    as their sequential arrival would.
    """
    handler = _HANDLERS.get(event.type)
    if handler is None:
        logger.info("stripe event ignored", extra={"event_type": event.type})
        return EventResult(Outcome.IGNORED)
    return handler(event)


def _payment_succeeded(event: StripeEvent) -> EventResult:
    event_id, intent = event.id, event.data_object
    payment_intent = _payment_intent_of(intent.get("id"))
    if payment_intent is None:
        # Nothing to key a payment on: only the delivery can be kept.
        return _unusable(event, "id: not a PaymentIntent id (pi_...)")
    amount, currency, problems = _payment_terms(intent)
    if event.unstorable:
        problems.insert(
            0,
            f"{', '.join(event.unstorable)}: text the database cannot store "
            "(NUL or an unpaired surrogate), kept with U+FFFD",
        )
    metadata = intent.get("metadata")
    stored_metadata = metadata if isinstance(metadata, dict) else {}
    with transaction.atomic():
        _payment_intent_lock(payment_intent)
        payment, created, refunded_first = _payment_get_or_create(
            Payment(
                payment_intent=payment_intent,
                amount=amount,
                currency=currency,
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
        if refunded_first:
            _early_refund_apply(payment=payment)
        reason = "; ".join(problems)
        if not reason:
            try:
                purchase = purchase_create_from_payment(
                    payment=payment, actor=STRIPE_ACTOR
                )
            except MetadataError as error:
                reason = str(error)
        if reason:
            payment_flag(payment=payment, reason=reason, actor=STRIPE_ACTOR)
            _delivery(
                event_id,
                "payment_intent.succeeded",
                payment_intent,
                "needs_attention",
                detail=reason,
            )
            return EventResult(Outcome.NEEDS_ATTENTION, reason=reason)
        _delivery(event_id, "payment_intent.succeeded", payment_intent, "accepted")
        return EventResult(Outcome.ACCEPTED, purchase.pk)


# The largest amount a BigIntegerField holds.
_MAX_MINOR_UNITS = 2**63 - 1


def _payment_terms(intent: Mapping[str, Any]) -> tuple[int, str, list[str]]:
    """The amount received and currency to store, and what makes them unusable
    ("field: problem" each; an unusable amount is stored as 0, a currency as "").

    The amount is ``amount_received`` (what was taken), ``amount`` only when
    Stripe left it out; nothing received, or a PaymentIntent that is not
    ``succeeded``, is not a purchase.
    """
    problems: list[str] = []
    key = "amount" if intent.get("amount_received") is None else "amount_received"
    amount = intent.get(key)
    if not _is_minor_units(amount):
        problems.append(f"{key}: not a whole number of minor units")
        amount = 0
    elif amount == 0:
        problems.append(f"{key}: nothing was received (0)")
    currency = intent.get("currency")
    if (
        not isinstance(currency, str)
        or len(currency) != 3
        or not (currency.isascii() and currency.isalpha())
    ):
        problems.append("currency: not a 3-letter ISO code")
        currency = ""
    status = intent.get("status")
    if status != "succeeded":
        shown = repr(status[:40]) if isinstance(status, str) else "missing"
        problems.append(f"status: the PaymentIntent is {shown}, not 'succeeded'")
    return amount, currency.lower(), problems


def _is_minor_units(value: object) -> TypeGuard[int]:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= _MAX_MINOR_UNITS
    )


def _payment_intent_of(value: object) -> str | None:
    """A PaymentIntent id (``pi_...``) from an event field, which Stripe may
    send expanded into the object; ``None`` when it is not one."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, str) and value.startswith("pi_") and len(value) <= 255:
        return value
    return None


def _payment_intent_lock(payment_intent: str) -> None:
    """Serialise every event of one PaymentIntent until the transaction ends.

    Taken first by each handler: a refund posted while its payment's
    transaction is open waits for it and then sees the payment; one that gets
    here first is remembered (``EarlyRefund``) before the payment can look.
    Without it each would miss the other's uncommitted row. Transaction-scoped,
    so a crash or rollback releases it; a hash collision only makes two
    PaymentIntents wait for each other.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"stripe.payment_intent:{payment_intent}"],
        )


def purchase_create_from_payment(*, payment: Payment, actor: str) -> Purchase:
    """Turn a payment's metadata into a purchase and defer its allocation.

    Raises ``MetadataError`` (naming the field) when the metadata cannot be used;
    the caller decides whether to flag the payment. Runs in the caller's
    transaction; the payment must have no purchase yet.
    """
    request = parse_purchase_metadata(payment.metadata)
    # Only the two columns the purchase needs: building and compiling the ORM
    # query and its model took a seventh of the webhook's CPU (py-spy, #15).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT title, mode FROM {Course._meta.db_table} WHERE id = %s",  # noqa: S608
            [request.course_id],
        )
        course = cursor.fetchone()
    if course is None:
        raise MetadataError(
            "course_id", f"no course {request.course_id} in the catalogue"
        )
    course_title, course_mode = course
    if course_mode == Course.Mode.HOME:
        require_location(request)
    purchase = Purchase(
        payment=payment,
        student_id=request.student_id,
        course_id=request.course_id,
        total_sessions=request.total_sessions,
        delivery_mode=request.delivery_mode.value,
        start_date=request.start_date,
        time_slot=request.time_slot,
        latitude=request.latitude,
        longitude=request.longitude,
        status_reason="Waiting for the allocation job.",
    )
    message = (
        f"Purchase of {course_title} for "
        f"{format_amount(payment.amount, payment.currency)} recorded; "
        "trainer allocation pending."
    )
    # Stripe does not promise order: when the refund came first, the purchase
    # is born cancelled and nothing is allocated.
    refunded_first = payment.status == Payment.Status.REFUNDED
    # The student (created, or their learnings version bumped: the purchase
    # changes their learnings), the purchase, its first trace row (as
    # ``trace_record`` writes it, on the transaction's clock) and the
    # allocation job: one statement, all or nothing.
    columns, values = _insert_values(purchase)
    job = (
        None
        if refunded_first
        else queue.deferral(names.ALLOCATE_TRAINER, purchase_id=str(purchase.pk))
    )
    placeholders = ", ".join(["%s"] * len(values))
    # Table names and placeholders only: every value is a parameter.
    sql = (  # noqa: S608
        f"WITH student AS ({_STUDENT_UPSERT} RETURNING id), "  # noqa: S608
        f"purchase AS (INSERT INTO {Purchase._meta.db_table} ({columns}) "
        f"SELECT {placeholders} FROM student RETURNING id), "
        f"trace AS (INSERT INTO {TraceEvent._meta.db_table} (payment_id, "
        "purchase_id, kind, actor, from_status, to_status, message, created_at) "
        "SELECT %s, id, %s, %s, '', %s, %s, now() FROM purchase) "
    ) + (f"SELECT {job.sql} FROM purchase" if job else "SELECT 1")  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                *_student_values(request),
                *values,
                payment.pk,
                TraceEvent.Kind.STATE_CHANGE.value,
                actor,
                purchase.status,
                message,
                *(job.params if job else []),
            ],
        )
    _saved(purchase)
    if refunded_first:
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.REFUNDED,
            reason="Refunded before the payment was processed.",
            actor=actor,
        )
        return purchase
    logger.info(
        "purchase recorded",
        extra={
            "purchase_id": str(purchase.pk),
            "payment_intent": payment.payment_intent,
        },
    )
    return purchase


def payment_flag(*, payment: Payment, reason: str, actor: str) -> Payment:
    """Keep a payment that cannot become a purchase (or whose refund failed)
    for operators, with ``reason``; in the caller's transaction."""
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
    """``charge.refunded``, sent for partial refunds too: the charge carries the
    running ``amount_refunded``; only a full refund cancels the purchase."""
    event_id, charge = event.id, event.data_object
    if charge.get("payment_intent") is None:
        # A charge made without a PaymentIntent was not made by this service.
        logger.info(
            "refund of a charge without a PaymentIntent ignored",
            extra={"charge": str(charge.get("id"))[:255], "event_id": event_id},
        )
        return EventResult(Outcome.IGNORED)
    payment_intent = _payment_intent_of(charge.get("payment_intent"))
    if payment_intent is None:
        return _unusable(event, "payment_intent: not a PaymentIntent id (pi_...)")
    amount_refunded = charge.get("amount_refunded")
    fully = charge.get("refunded") is True
    if not _is_minor_units(amount_refunded):
        if not fully:
            return _unusable(
                event,
                "amount_refunded: not a whole number of minor units",
                payment_intent=payment_intent,
            )
        amount_refunded = 0
    with transaction.atomic():
        _payment_intent_lock(payment_intent)
        payment = (
            Payment.objects.select_for_update(no_key=True)
            .filter(payment_intent=payment_intent)
            .first()
        )
        if payment is None:
            _early_refund_remember(
                payment_intent=payment_intent,
                amount_refunded=amount_refunded,
                refunded=fully,
                event_id=event_id,
            )
            reason = (
                f"refund for unknown PaymentIntent {payment_intent}; remembered, "
                "its payment will not be fulfilled beyond it"
            )
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
        outcome = payment_refund_record(
            payment=payment,
            purchase=purchase,
            amount_refunded=amount_refunded,
            refunded=fully,
            actor=STRIPE_ACTOR,
        )
        _delivery(event_id, "charge.refunded", payment_intent, outcome.value)
        return EventResult(outcome, purchase.pk if purchase else None)


def payment_refund_record(
    *,
    payment: Payment,
    purchase: Purchase | None,
    amount_refunded: int,
    refunded: bool,
    actor: str,
) -> Outcome:
    """Record that ``amount_refunded`` (a running total) of ``payment`` is
    refunded: fully (``refunded``, or all that was received) cancels the
    purchase; partly only records the amount and traces it. Idempotent: a total
    not above the recorded one, or any refund of a refunded payment, is a
    ``DUPLICATE``. In the caller's transaction, rows locked."""
    if payment.status == Payment.Status.REFUNDED:
        return Outcome.DUPLICATE
    # CONTRACT §3: fully refunded when Stripe says so or the total refunded
    # reaches what was received (a payment that received nothing, flagged, is
    # fully refunded by any refund at all).
    if refunded or 0 < amount_refunded >= payment.amount:
        payment.amount_refunded = max(
            payment.amount_refunded, amount_refunded, payment.amount
        )
        purchase_refund(payment=payment, purchase=purchase, actor=actor)
        return Outcome.REFUNDED
    if amount_refunded <= payment.amount_refunded:
        return Outcome.DUPLICATE
    payment.amount_refunded = amount_refunded
    payment.save(update_fields=["amount_refunded", "updated_at"])
    refunded_text = format_amount(amount_refunded, payment.currency)
    received_text = format_amount(payment.amount, payment.currency)
    trace_record(
        payment=payment,
        purchase=purchase,
        kind=TraceEvent.Kind.STATE_CHANGE,
        actor=actor,
        message=(
            f"Partial refund: {refunded_text} of {received_text} refunded so far; "
            "the purchase and its sessions are unchanged."
        ),
    )
    logger.info(
        "partial refund recorded",
        extra={
            "payment_intent": payment.payment_intent,
            "amount_refunded": amount_refunded,
        },
    )
    return Outcome.PARTIALLY_REFUNDED


def _early_refund_remember(
    *, payment_intent: str, amount_refunded: int, refunded: bool, event_id: str
) -> None:
    """Keep the largest refund seen for a PaymentIntent not yet paid (under its
    lock); the payment applies it when it arrives."""
    table = EarlyRefund._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS r (payment_intent, amount_refunded, "  # noqa: S608
            "refunded, event_id, received_at) VALUES (%s, %s, %s, %s, now()) "
            "ON CONFLICT (payment_intent) DO UPDATE SET "
            "amount_refunded = greatest(r.amount_refunded, excluded.amount_refunded), "
            "refunded = r.refunded OR excluded.refunded",
            [payment_intent, amount_refunded, refunded, event_id],
        )


def _early_refund_apply(*, payment: Payment) -> None:
    """Apply a refund that came before this (new, locked) payment."""
    early = EarlyRefund.objects.filter(payment_intent=payment.payment_intent).first()
    if early is not None:
        payment_refund_record(
            payment=payment,
            purchase=None,
            amount_refunded=early.amount_refunded,
            refunded=early.refunded,
            actor=STRIPE_ACTOR,
        )


# Refund statuses after which the money stays with us, though a refund was asked.
_REFUND_NOT_RETURNED = ("failed", "canceled")


def _refund_updated(event: StripeEvent) -> EventResult:
    """``charge.refund.updated`` / ``refund.updated`` (a Refund object): a refund
    that failed or was cancelled flags the payment, and a purchase already
    cancelled by it, for operators. Other updates are ignored."""
    event_id, refund = event.id, event.data_object
    status = refund.get("status")
    if status not in _REFUND_NOT_RETURNED or refund.get("payment_intent") is None:
        logger.info(
            "refund update ignored",
            extra={"refund": str(refund.get("id"))[:255], "event_id": event_id},
        )
        return EventResult(Outcome.IGNORED)
    payment_intent = _payment_intent_of(refund.get("payment_intent"))
    if payment_intent is None:
        return _unusable(event, "payment_intent: not a PaymentIntent id (pi_...)")
    refund_id = refund.get("id")
    failure = refund.get("failure_reason")
    named = f"refund {refund_id[:255]}" if isinstance(refund_id, str) else "a refund"
    because = f" ({failure[:200]})" if isinstance(failure, str) and failure else ""
    reason = f"{named} {status}{because}: the money was not returned to the customer"
    with transaction.atomic():
        _payment_intent_lock(payment_intent)
        payment = (
            Payment.objects.select_for_update(no_key=True)
            .filter(payment_intent=payment_intent)
            .first()
        )
        if payment is None:
            # A refund remembered before its payment no longer stands.
            amount = refund.get("amount")
            EarlyRefund.objects.filter(payment_intent=payment_intent).update(
                refunded=False,
                amount_refunded=Greatest(
                    F("amount_refunded") - (amount if _is_minor_units(amount) else 0),
                    0,
                ),
            )
            reason = f"{reason}; unknown PaymentIntent {payment_intent}"
            _delivery(event_id, event.type, payment_intent, "needs_attention", reason)
            logger.warning(
                "refund failure for unknown payment", extra={"pi": payment_intent}
            )
            return EventResult(Outcome.NEEDS_ATTENTION, reason=reason)
        purchase = (
            Purchase.objects.select_for_update(no_key=True)
            .filter(payment=payment)
            .first()
        )
        purchase_id = purchase.pk if purchase else None
        if payment.attention_reason == reason:
            # charge.refund.updated and refund.updated tell of the same refund.
            _delivery(event_id, event.type, payment_intent, "duplicate")
            return EventResult(Outcome.DUPLICATE, purchase_id, reason=reason)
        amount = refund.get("amount")
        if _is_minor_units(amount):
            payment.amount_refunded = max(0, payment.amount_refunded - amount)
            payment.save(update_fields=["amount_refunded", "updated_at"])
        payment_flag(payment=payment, reason=reason, actor=STRIPE_ACTOR)
        if purchase is not None and purchase.status == Purchase.Status.REFUNDED:
            purchase_transition(
                purchase=purchase,
                to_status=Purchase.Status.NEEDS_ATTENTION,
                reason=f"Cancelled for a refund, but {reason}.",
                actor=STRIPE_ACTOR,
            )
        _delivery(event_id, event.type, payment_intent, "needs_attention", reason)
        return EventResult(Outcome.NEEDS_ATTENTION, reason=reason)


def _unusable(
    event: StripeEvent, reason: str, *, payment_intent: str = ""
) -> EventResult:
    """An authentic event of a handled type that cannot be used: answered
    ``needs_attention`` (never 4xx: Stripe would retry it for days) and its
    delivery kept with the reason, for operators."""
    with transaction.atomic():
        _delivery(event.id, event.type, payment_intent, "needs_attention", reason)
    logger.warning(
        "stripe event unusable",
        extra={"event_id": event.id, "event_type": event.type, "reason": reason},
    )
    return EventResult(Outcome.NEEDS_ATTENTION, reason=reason)


def purchase_refund(
    *, payment: Payment, purchase: Purchase | None, actor: str
) -> Payment:
    """Cancel a refunded payment's purchase: future sessions cancelled, the
    trainer's reserved time released, and the waitlist retried for the freed
    capacity. Runs in the caller's transaction with both rows locked."""
    now = timezone.now()
    payment.status = Payment.Status.REFUNDED
    payment.save(update_fields=["status", "amount_refunded", "updated_at"])
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
    allocation.waitlist_retry_soon()
    return payment


def _payment_get_or_create(candidate: Payment) -> tuple[Payment, bool, bool]:
    """The payment of ``candidate.payment_intent``, inserted unless it exists,
    whether it was inserted, and whether a refund of it came first
    (``EarlyRefund``; only for a new payment).

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a new payment is the
    candidate itself, not read back (its event JSON included); only a
    duplicate reads the stored row. A concurrent delivery of the same
    PaymentIntent waits on the unique index and then finds the winner's row.
    Runs under the PaymentIntent's lock, so the refund check sees every refund
    that was remembered before it.
    """
    columns, values = _insert_values(candidate)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH payment AS (INSERT INTO {Payment._meta.db_table} "  # noqa: S608
            f"({columns}) VALUES ({', '.join(['%s'] * len(values))}) "
            "ON CONFLICT (payment_intent) DO NOTHING RETURNING id) "
            "SELECT EXISTS (SELECT FROM payment), EXISTS (SELECT FROM "
            f"{EarlyRefund._meta.db_table} WHERE payment_intent = %s)",
            [*values, candidate.payment_intent],
        )
        created, refunded_first = cursor.fetchone() or (False, False)
    if created:
        _saved(candidate)
        return candidate, True, refunded_first
    return Payment.objects.get(payment_intent=candidate.payment_intent), False, False


def _insert_values(instance: Model) -> tuple[str, list[Any]]:
    """The quoted columns and database values of a new row, as
    ``Model.save`` would insert them (defaults and ``auto_now`` applied), for
    an INSERT written by hand."""
    fields = instance._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    values = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection)
        for field in fields
    ]
    return columns, values


def _saved(instance: Model) -> None:
    """Mark an instance inserted by hand as a stored row."""
    instance._state.adding = False
    instance._state.db = connection.alias


# Create the student on first sight, or bump their learnings version (a new
# purchase changes their learnings). No ORM call says "increment on conflict"
# (``update_conflicts`` would copy the new row's version 0 over the current
# one, reviving stale cache entries).
_STUDENT_UPSERT = (
    f"INSERT INTO {Student._meta.db_table} AS s (id, name, email, phone, "  # noqa: S608
    "learnings_version, created_at) VALUES (%s, %s, %s, %s, 0, now()) "
    "ON CONFLICT (id) DO UPDATE SET learnings_version = s.learnings_version + 1, "
    # A later payment may bring the phone the first one lacked.
    "phone = coalesce(nullif(s.phone, ''), excluded.phone)"
)


def _student_values(request: PurchaseRequest) -> list[Any]:
    return [
        request.student_id,
        request.student_name,
        request.student_email,
        request.student_phone,
    ]


_DELIVERY_INSERT = (
    f"INSERT INTO {WebhookDelivery._meta.db_table} (event_id, event_type, "  # noqa: S608
    "payment_intent, outcome, detail, received_at) "
    "VALUES (%s, %s, %s, %s, %s, now())"
)


def _delivery(
    event_id: str, event_type: str, payment_intent: str, outcome: str, detail: str = ""
) -> None:
    """Record the delivery and what it did (on the transaction's clock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _DELIVERY_INSERT, [event_id, event_type, payment_intent, outcome, detail]
        )


_Handler = Callable[[StripeEvent], EventResult]
_HANDLERS: dict[str, _Handler] = {
    "payment_intent.succeeded": _payment_succeeded,
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_updated,
    "refund.updated": _refund_updated,
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
