"""Recording what happened to a payment, in the transaction that made it happen."""

from __future__ import annotations

import logging
import uuid

from django.contrib.postgres.functions import TransactionNow

from fulfillment.models import Payment, Purchase, TraceEvent
from fulfillment.services import cache

logger = logging.getLogger(__name__)


def trace_record(
    *,
    payment: Payment | None = None,
    payment_id: uuid.UUID | None = None,
    purchase: Purchase | None = None,
    kind: TraceEvent.Kind,
    actor: str,
    message: str,
    from_status: str = "",
    to_status: str = "",
) -> TraceEvent:
    """One trace row of ``payment`` (or of the payment with ``payment_id``:
    the caller need not load it)."""
    if payment is not None:
        payment_id = payment.pk
    if payment_id is None:
        raise TypeError("trace_record needs the payment or its id")
    return TraceEvent.objects.create(
        # The transaction's clock, like procrastinate's job events, so one
        # transaction's rows sort together in the trace.
        created_at=TransactionNow(),
        payment_id=payment_id,
        purchase=purchase,
        kind=kind,
        actor=actor,
        message=message,
        from_status=from_status,
        to_status=to_status,
    )


def purchase_transition(
    *,
    purchase: Purchase,
    to_status: Purchase.Status,
    reason: str,
    actor: str,
    update_fields: tuple[str, ...] = (),
) -> Purchase:
    """Move a (locked) purchase to ``to_status``, trace it, and invalidate the
    student's cached learnings; all in the caller's transaction.

    A call that changes neither status nor reason writes nothing.
    """
    from_status = purchase.status
    if from_status == to_status and purchase.status_reason == reason:
        if update_fields:
            purchase.save(update_fields=[*update_fields, "updated_at"])
        return purchase
    purchase.status = to_status
    purchase.status_reason = reason
    purchase.save(
        update_fields=["status", "status_reason", "updated_at", *update_fields]
    )
    trace_record(
        payment_id=purchase.payment_id,
        purchase=purchase,
        kind=TraceEvent.Kind.STATE_CHANGE,
        actor=actor,
        message=reason or Purchase.Status(to_status).label,
        from_status=from_status,
        to_status=to_status,
    )
    cache.learnings_invalidate(student_id=purchase.student_id)
    logger.info(
        "purchase status changed",
        extra={
            "purchase_id": str(purchase.pk),
            "from_status": from_status,
            "to_status": str(to_status),
            "actor": actor,
        },
    )
    return purchase
