"""Stage 3: the student-facing sessions, a rolling window over the reservations.

The trainer is reserved for the whole schedule at allocation; only the next
``SESSION_WINDOW`` sessions exist as ``TutoringSession`` rows. A periodic job
tops the window up as sessions pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from fulfillment.exceptions import PurchaseNotFound
from fulfillment.models import (
    Purchase,
    Reservation,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.services import cache
from fulfillment.services.allocation import waitlist_retry_soon

logger = logging.getLogger(__name__)

SESSION_WINDOW = 7


def sessions_materialise(
    *, purchase_id: uuid.UUID, now: dt.datetime | None = None
) -> list[TutoringSession]:
    """Complete the sessions that have ended and materialise upcoming ones until
    ``SESSION_WINDOW`` are scheduled (or the schedule is exhausted).

    Idempotent: sessions are unique per (purchase, sequence) and a second run
    finds nothing to do. Returns the sessions created.
    """
    now = now or timezone.now()
    with transaction.atomic():
        purchase = (
            Purchase.objects.select_for_update(no_key=True, of=("self",))
            .filter(pk=purchase_id)
            .first()
        )
        if purchase is None:
            raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
        if purchase.status != Purchase.Status.ALLOCATED:
            return []
        allocation = purchase.allocations.filter(
            status=TrainerAllocation.Status.ACTIVE
        ).first()
        if allocation is None:
            return []
        scheduled = Q(status=TutoringSession.Status.SCHEDULED)
        window = purchase.sessions.aggregate(
            last=Max("sequence"),
            scheduled=Count("pk", filter=scheduled),
            ended=Count("pk", filter=scheduled & Q(ends_at__lte=now)),
        )
        completed = 0
        if window["ended"]:
            # Under the purchase's lock, so still exactly the ones counted.
            completed = purchase.sessions.filter(scheduled, ends_at__lte=now).update(
                status=TutoringSession.Status.COMPLETED
            )
        # Every reservation still without a session (at most the schedule's
        # length), read once and split here.
        later = list(
            Reservation.objects.filter(
                allocation=allocation, sequence__gt=window["last"] or 0
            ).order_by("sequence")
        )
        # Sessions that passed while nothing topped the window up (an outage)
        # still get their row, born completed: the history has no holes.
        passed = [r for r in later if r.during.upper <= now]
        future = [r for r in later if r.during.upper > now]
        still_scheduled = window["scheduled"] - completed
        upcoming = future[: max(SESSION_WINDOW - still_scheduled, 0)]
        created = TutoringSession.objects.bulk_create(
            [
                TutoringSession(
                    purchase=purchase,
                    trainer_id=allocation.trainer_id,
                    sequence=reservation.sequence,
                    starts_at=reservation.during.lower,
                    ends_at=reservation.during.upper,
                    status=status,
                )
                for status, reservations in (
                    (TutoringSession.Status.COMPLETED, passed),
                    (TutoringSession.Status.SCHEDULED, upcoming),
                )
                for reservation in reservations
            ]
        )
        if not future and not (
            Reservation.objects.filter(
                allocation=allocation, during__endswith__gt=now
            ).exists()
        ):
            # Every session has passed: the trainer's capacity is free again.
            allocation.status = TrainerAllocation.Status.COMPLETED
            allocation.ended_at = now
            allocation.save(update_fields=["status", "ended_at"])
            # The trainer's capacity changed: waiting purchases may fit now.
            waitlist_retry_soon()
        if created or completed:
            cache.learnings_invalidate(student_id=purchase.student_id)
            logger.info(
                "sessions materialised",
                extra={
                    "purchase_id": str(purchase.pk),
                    "sessions_created": len(created),
                    "sessions_completed": completed,
                },
            )
        return created


def purchases_needing_top_up(*, now: dt.datetime | None = None) -> list[uuid.UUID]:
    """Allocated purchases with a scheduled session that has already ended."""
    now = now or timezone.now()
    return list(
        TutoringSession.objects.filter(
            status=TutoringSession.Status.SCHEDULED,
            ends_at__lte=now,
            purchase__status=Purchase.Status.ALLOCATED,
        )
        .values_list("purchase_id", flat=True)
        .distinct()
    )


def session_windows_top_up(*, now: dt.datetime | None = None) -> int:
    """Top up every window with passed sessions, each purchase in its own
    transaction. Returns the number of sessions created."""
    now = now or timezone.now()
    return sum(
        len(sessions_materialise(purchase_id=purchase_id, now=now))
        for purchase_id in purchases_needing_top_up(now=now)
    )
