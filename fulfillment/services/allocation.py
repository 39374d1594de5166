"""Stage 2: allocate a trainer to a purchase (CONTRACT §6).

Safe under any number of concurrent workers: the purchase row is locked for the
whole decision, each candidate trainer's row is locked while its capacity is
counted, and the exclusion constraint on reservations is the last word on
overlaps; a violation just means "try the next trainer".
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
import zoneinfo
from collections import defaultdict
from typing import Any, TypeVar

import psycopg.errors
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import (
    ASin,
    Cos,
    Greatest,
    Least,
    Power,
    Radians,
    Sin,
    Sqrt,
)
from django.utils import timezone
from psycopg.types.multirange import Multirange
from psycopg.types.range import Range

from fulfillment import queueing
from fulfillment.domain import fit, geo
from fulfillment.domain.schedule import DeliveryMode, Slot, build_schedule
from fulfillment.exceptions import PurchaseNotFound
from fulfillment.models import (
    Course,
    Purchase,
    Reservation,
    Trainer,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.services import cache
from fulfillment.services.trace import purchase_transition

logger = logging.getLogger(__name__)

WAITING_STATUSES = (Purchase.Status.ALLOCATION_PENDING, Purchase.Status.WAITLISTED)


class _TrainerTaken(Exception):
    """The trainer filled up or got an overlapping reservation meanwhile."""


def purchase_schedule(*, purchase: Purchase, now: dt.datetime) -> list[Slot]:
    """The purchase's sessions, starting no earlier than ``now``."""
    return build_schedule(
        start_date=purchase.start_date,
        time_slot=purchase.time_slot,
        delivery_mode=DeliveryMode(purchase.delivery_mode),
        total_sessions=purchase.total_sessions,
        tz=zoneinfo.ZoneInfo(settings.TIME_ZONE),
        not_before=now,
    )


def trainer_verdicts(
    *,
    purchase: Purchase,
    slots: list[Slot],
    all_trainers: bool = False,
    fitting_only: bool = False,
) -> list[fit.Verdict]:
    """The verdict of every trainer who teaches the course (of every trainer at all
    with ``all_trainers``), from two queries whatever the number of trainers.

    With ``fitting_only`` the database first drops every trainer who breaks a
    rule (automatic allocation's fast path: a handful of rows instead of the
    whole roster). Its filters only ever keep too many, never too few, and the
    pure rules still judge every trainer kept, so the verdicts and their ranking
    are exactly those of the full list.
    """
    course: Course = purchase.course
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    schedule = _schedule_ranges(slots)
    trainers = Trainer.objects.annotate(
        teaches_course=Exists(
            Trainer.courses.through.objects.filter(
                trainer_id=OuterRef("pk"), course_id=course.pk
            )
        ),
        active_allocations=Count(
            "allocations", filter=Q(allocations__status=TrainerAllocation.Status.ACTIVE)
        ),
    )
    if not all_trainers or fitting_only:
        trainers = trainers.filter(teaches_course=True)
    if fitting_only:
        trainers = _may_fit(
            trainers.filter(
                is_active=True, active_allocations__lt=F("max_active_students")
            ),
            purchase=purchase,
            slots=slots,
            tz=tz,
        )
    trainer_list = list(trainers)
    reserved: dict[uuid.UUID, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    if schedule is not None and trainer_list and not fitting_only:
        # Only reservations that overlap a session itself, not everything in
        # the schedule's span: a few rows where the span holds hundreds.
        overlapping = Reservation.objects.filter(
            _Overlaps(F("during"), Value(schedule)),
            trainer__in=[t.pk for t in trainer_list],
        ).values_list("trainer_id", "during")
        for trainer_id, during in overlapping:
            reserved[trainer_id].append((during.lower, during.upper))
    purchase_facts = fit.PurchaseFacts(
        home_visit=course.mode == Course.Mode.HOME,
        latitude=purchase.latitude,
        longitude=purchase.longitude,
        slots=tuple(slots),
        tz=tz,
    )
    return [
        fit.evaluate(
            fit.TrainerFacts(
                id=str(t.pk),
                name=t.name,
                is_active=t.is_active,
                teaches_course=t.teaches_course,
                latitude=t.latitude,
                longitude=t.longitude,
                max_travel_km=t.max_travel_km,
                max_active_students=t.max_active_students,
                weekdays=frozenset(t.weekdays),
                work_start=t.work_start,
                work_end=t.work_end,
                active_allocations=t.active_allocations,
                reserved=tuple(reserved.get(t.pk, ())),
            ),
            purchase_facts,
        )
        for t in trainer_list
    ]


class _Overlaps(Func):
    """``range && multirange``: served by the reservations' GiST index."""

    arg_joiner = " && "
    template = "%(expressions)s"
    output_field = BooleanField()


def _schedule_ranges(slots: list[Slot]) -> Multirange[dt.datetime] | None:
    if not slots:
        return None
    return Multirange(Range(slot.starts_at, slot.ends_at, "[)") for slot in slots)


_Trainers = TypeVar("_Trainers", bound="QuerySet[Trainer, Any]")

# Headroom for float rounding between PostgreSQL's and Python's trigonometry, so
# the SQL distance filter never drops a trainer the pure rule would keep.
_DISTANCE_SLACK_KM = 0.01


def _may_fit(
    trainers: _Trainers,
    *,
    purchase: Purchase,
    slots: list[Slot],
    tz: zoneinfo.ZoneInfo,
) -> _Trainers:
    """Keep the trainers who may fit by place and time, by the rules of
    ``fit.evaluate`` in SQL."""
    if purchase.course.mode == Course.Mode.HOME:
        if purchase.latitude is None or purchase.longitude is None:
            return trainers.none()
        trainers = trainers.alias(
            distance_km=_great_circle_km(purchase.latitude, purchase.longitude)
        ).filter(distance_km__lte=F("max_travel_km") + _DISTANCE_SLACK_KM)
    schedule = _schedule_ranges(slots)
    if schedule is None:
        return trainers
    starts = [slot.starts_at.astimezone(tz) for slot in slots]
    ends = [slot.ends_at.astimezone(tz) for slot in slots]
    # A session crossing midnight fits nobody (the pure rule says so); the
    # bounds below then merely keep too many.
    return trainers.filter(
        ~Exists(
            Reservation.objects.filter(
                _Overlaps(F("during"), Value(schedule)), trainer=OuterRef("pk")
            )
        ),
        weekdays__contains=sorted({start.weekday() for start in starts}),
        work_start__lte=min(start.time() for start in starts),
        work_end__gte=max(end.time() for end in ends),
    )


def _great_circle_km(latitude: float, longitude: float) -> CombinedExpression:
    """``geo.great_circle_km`` from each trainer to the point, in SQL."""
    d_phi = Radians(F("latitude") - latitude) / 2
    d_lambda = Radians(F("longitude") - longitude) / 2
    a = Power(Sin(d_phi), 2) + math.cos(math.radians(latitude)) * Cos(
        Radians(F("latitude"))
    ) * Power(Sin(d_lambda), 2)
    return 2 * geo.EARTH_RADIUS_KM * ASin(Sqrt(Least(Greatest(a, 0.0), 1.0)))


def purchase_allocate(
    *, purchase_id: uuid.UUID, actor: str, now: dt.datetime | None = None
) -> Purchase:
    """Allocate the best fitting trainer, or waitlist the purchase with a reason.

    Idempotent: a purchase that is no longer waiting is returned untouched. On
    success, reserves the trainer for every session and defers the sessions job,
    all in one transaction.
    """
    now = now or timezone.now()
    with transaction.atomic():
        purchase = (
            Purchase.objects.select_for_update(no_key=True, of=("self",))
            .select_related("course", "payment")
            .filter(pk=purchase_id)
            .first()
        )
        if purchase is None:
            raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
        if purchase.status not in WAITING_STATUSES:
            return purchase
        slots = purchase_schedule(purchase=purchase, now=now)
        verdicts = trainer_verdicts(purchase=purchase, slots=slots, fitting_only=True)
        home_visit = purchase.course.mode == Course.Mode.HOME
        for verdict in fit.rank(verdicts, home_visit=home_visit):
            try:
                allocation_create(
                    purchase=purchase,
                    trainer_id=uuid.UUID(verdict.trainer.id),
                    slots=slots,
                    now=now,
                )
            except _TrainerTaken:
                continue
            return _allocated(purchase=purchase, actor=actor, now=now, verdict=verdict)
        if not verdicts:
            # Nobody may fit: the whole roster's verdicts say why, for operators.
            # (Candidates that were all taken meanwhile say so themselves.)
            verdicts = trainer_verdicts(purchase=purchase, slots=slots)
        reason = fit.waitlist_reason(verdicts, course_title=purchase.course.title)
        return purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.WAITLISTED,
            reason=reason,
            actor=actor,
        )


def allocation_create(
    *,
    purchase: Purchase,
    trainer_id: uuid.UUID,
    slots: list[Slot],
    now: dt.datetime,
    enforce_capacity: bool = True,
    assigned_by: str = "",
    override_reason: str = "",
) -> TrainerAllocation:
    """Reserve the trainer for every slot, or raise ``_TrainerTaken`` having
    changed nothing. Must run inside the caller's transaction."""
    try:
        # A savepoint: if this trainer is taken, its row lock and any partial
        # reservations go away and the caller's transaction stays usable.
        with transaction.atomic():
            trainer = Trainer.objects.select_for_update(no_key=True).get(pk=trainer_id)
            if enforce_capacity:
                active = trainer.allocations.filter(
                    status=TrainerAllocation.Status.ACTIVE
                ).count()
                if active >= trainer.max_active_students:
                    raise _TrainerTaken
            allocation = TrainerAllocation.objects.create(
                purchase=purchase,
                trainer=trainer,
                assigned_by=assigned_by,
                override_reason=override_reason,
                created_at=now,
            )
            Reservation.objects.bulk_create(
                Reservation(
                    trainer=trainer,
                    allocation=allocation,
                    sequence=slot.sequence,
                    during=(slot.starts_at, slot.ends_at),
                )
                for slot in slots
            )
            return allocation
    except IntegrityError as error:
        if isinstance(error.__cause__, psycopg.errors.ExclusionViolation):
            raise _TrainerTaken from error
        raise


def _allocated(
    *, purchase: Purchase, actor: str, now: dt.datetime, verdict: fit.Verdict
) -> Purchase:
    from fulfillment import tasks

    purchase.trainer_id = uuid.UUID(verdict.trainer.id)
    purchase.allocated_at = now
    distance = (
        f", {verdict.distance_km:.1f} km away"
        if verdict.distance_km is not None
        else ""
    )
    # The sessions stage, deferred here, invalidates again and refreshes.
    with cache.next_stage_refreshes():
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.ALLOCATED,
            reason=f"Allocated to {verdict.trainer.name}{distance}.",
            actor=actor,
            update_fields=("trainer", "allocated_at"),
        )
    queueing.defer(tasks.materialise_sessions, purchase_id=str(purchase.pk))
    logger.info(
        "trainer allocated",
        extra={"purchase_id": str(purchase.pk), "trainer_id": verdict.trainer.id},
    )
    return purchase


def allocation_release(*, purchase: Purchase, now: dt.datetime) -> int:
    """Release the purchase's trainer: future reservations are deleted and future
    sessions cancelled. Returns the number of sessions cancelled. Runs in the
    caller's transaction, with the purchase locked."""
    allocations = list(
        purchase.allocations.select_for_update(no_key=True).filter(
            status=TrainerAllocation.Status.ACTIVE
        )
    )
    for allocation in allocations:
        Reservation.objects.filter(
            allocation=allocation, during__startswith__gte=now
        ).delete()
        allocation.status = TrainerAllocation.Status.RELEASED
        allocation.ended_at = now
        allocation.save(update_fields=["status", "ended_at"])
    scheduled = TutoringSession.objects.filter(
        purchase=purchase, status=TutoringSession.Status.SCHEDULED
    )
    # Sessions already given (or under way) stay in the history as completed.
    scheduled.filter(starts_at__lt=now).update(status=TutoringSession.Status.COMPLETED)
    return scheduled.filter(starts_at__gte=now).update(
        status=TutoringSession.Status.CANCELLED
    )


def waitlist_reallocate(*, actor: str, limit: int = 500) -> int:
    """Try every waitlisted purchase again, oldest first, each in its own
    transaction. Returns how many got a trainer. Safe to run concurrently:
    each attempt locks its purchase and re-checks its status."""
    waiting = list(
        Purchase.objects.filter(status=Purchase.Status.WAITLISTED)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    allocated = 0
    for purchase_id in waiting:
        purchase = purchase_allocate(purchase_id=purchase_id, actor=actor)
        if purchase.status == Purchase.Status.ALLOCATED:
            allocated += 1
    if waiting:
        logger.info(
            "waitlist retried",
            extra={"waitlisted": len(waiting), "allocated": allocated},
        )
    return allocated
