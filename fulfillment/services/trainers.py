"""Trainers leave and take leave: their bookings follow.

A trainer deactivated, no longer teaching a course, working fewer days or hours,
travelling less far, or on leave may no longer fit the sessions they are booked
for. ``trainer_bookings_recheck`` finds those bookings by the pure rules of
``fulfillment.domain.fit`` and sends each purchase back to the allocation stage,
keeping the sessions already given; the stage reallocates it or waitlists it
with the reason. Called in the transaction of the change (console save, catalogue
import), so the change and its consequences commit together.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from fulfillment import queue
from fulfillment.domain import fit
from fulfillment.models import Purchase, TraceEvent, Trainer, TrainerAllocation
from fulfillment.queue import names
from fulfillment.selectors.trainers import BookingCheck, trainer_booking_checks
from fulfillment.services import allocation, cache
from fulfillment.services.trace import purchase_transition, trace_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MovedBooking:
    """A purchase taken off a trainer who no longer fits it."""

    purchase_id: uuid.UUID
    student_name: str
    course_title: str
    # Why, in words: "was deactivated", "no longer teaches Chess", ...
    why: str

    def __str__(self) -> str:
        return f"{self.student_name} · {self.course_title} ({self.why})"


def trainer_bookings_recheck(
    *, trainer_id: uuid.UUID, actor: str, now: dt.datetime | None = None
) -> list[MovedBooking]:
    """Send every allocated purchase the trainer no longer fits back to the
    allocation stage: future reservations and sessions released (sessions given
    stay), the purchase pending with the reason, the allocation job deferred, the
    student's learnings invalidated; each in the trace, with ``actor``.

    Idempotent: a second call finds nothing left to move. Runs in its own
    transaction, or as a savepoint of the caller's.
    """
    now = now or timezone.now()
    moved: list[MovedBooking] = []
    with transaction.atomic():
        trainer = (
            Trainer.objects.select_for_update(no_key=True).filter(pk=trainer_id).first()
        )
        if trainer is None:
            return []
        leave = list(
            trainer.leaves.filter(ends_on__gte=timezone.localdate(now)).values_list(
                "starts_on", "ends_on"
            )
        )
        for check in trainer_booking_checks(trainer_id=trainer_id, now=now):
            if check.still_fits:
                continue
            why = _why(check, leave)
            if _send_back(check, trainer=trainer, why=why, actor=actor, now=now):
                purchase = check.allocation.purchase
                moved.append(
                    MovedBooking(
                        purchase_id=purchase.pk,
                        student_name=purchase.student.name,
                        course_title=purchase.course.title,
                        why=why,
                    )
                )
    if moved:
        logger.info(
            "bookings moved off a trainer",
            extra={"trainer_id": str(trainer_id), "moved": len(moved)},
        )
    return moved


def _send_back(
    check: BookingCheck, *, trainer: Trainer, why: str, actor: str, now: dt.datetime
) -> bool:
    purchase = (
        Purchase.objects.select_for_update(no_key=True, of=("self",))
        .select_related("payment")
        .filter(pk=check.allocation.purchase_id, status=Purchase.Status.ALLOCATED)
        .first()
    )
    still_booked = TrainerAllocation.objects.filter(
        pk=check.allocation.pk, status=TrainerAllocation.Status.ACTIVE
    ).exists()
    if purchase is None or not still_booked:
        return False  # changed meanwhile (refunded, moved, completed)
    released = allocation.allocation_release(purchase=purchase, now=now, moving=True)
    purchase.trainer = None
    message = (
        f"{trainer.name} {why}: {released} upcoming session(s) released; "
        "reallocating (sessions given are kept)."
    )
    # The allocation stage invalidates again and refreshes when it decides.
    with cache.next_stage_refreshes():
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.ALLOCATION_PENDING,
            reason=message,
            actor=actor,
            update_fields=("trainer",),
        )
    trace_record(
        payment=purchase.payment,
        purchase=purchase,
        kind=TraceEvent.Kind.OPERATOR_ACTION,
        actor=actor,
        message=f"{actor} changed {trainer.name} ({why}): this purchase moves.",
    )
    queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(purchase.pk))
    return True


def _why(check: BookingCheck, leave: list[tuple[dt.date, dt.date]]) -> str:
    """The rules broken, as what happened to the trainer."""
    tz = timezone.get_default_timezone()
    reasons = []
    for rule in check.broken:
        if rule is fit.Rule.INACTIVE:
            reasons.append("was deactivated")
        elif rule is fit.Rule.NOT_TEACHING:
            title = check.allocation.purchase.course.title
            reasons.append(f"no longer teaches {title}")
        elif rule is fit.Rule.TOO_FAR:
            reasons.append("no longer travels that far")
        elif rule is fit.Rule.NOT_WORKING:
            days = {slot.starts_at.astimezone(tz).date() for slot in check.slots}
            covering = [
                (first, last)
                for first, last in leave
                if any(first <= day <= last for day in days)
            ]
            if covering:
                first, last = covering[0]
                reasons.append(f"is on leave {first:%d %b}\N{EN DASH}{last:%d %b %Y}")
            else:
                reasons.append("no longer works on those days and hours")
        else:
            reasons.append(f"is {rule.label}")
    return " and ".join(reasons)
