"""Which trainers fit a purchase, and why not (CONTRACT §6): the verdicts that
automatic allocation ranks and the console's Assign page shows.

The pure rules live in ``fulfillment.domain.fit``; this module gathers each
trainer's facts in a few queries and, for automatic allocation, first drops in
SQL the trainers who cannot fit.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    Exists,
    F,
    Func,
    Max,
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
from psycopg.types.multirange import Multirange
from psycopg.types.range import Range

from fulfillment.domain import fit, geo
from fulfillment.domain.schedule import (
    DeliveryMode,
    Slot,
    build_schedule,
    remaining_slots,
)
from fulfillment.models import (
    Course,
    Purchase,
    Reservation,
    Trainer,
    TrainerAllocation,
    TrainerLeave,
)


def purchase_schedule(*, purchase: Purchase, now: dt.datetime) -> list[Slot]:
    """The purchase's sessions still to give, starting no earlier than ``now``.

    Sessions already given (reserved before ``now`` by any of its allocations,
    current or released) are not given again: the schedule continues from the
    next sequence, on the day after the last one given (never two in a day).
    """
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    given, last_given = 0, None
    if purchase.allocated_at is not None:  # never allocated: nothing given
        given, last_given = _sessions_given(purchase=purchase, now=now)
    not_before = now
    if last_given is not None:
        next_day = last_given.astimezone(tz).date() + dt.timedelta(days=1)
        not_before = max(now, dt.datetime.combine(next_day, dt.time(), tzinfo=tz))
    slots = build_schedule(
        start_date=purchase.start_date,
        time_slot=purchase.time_slot,
        delivery_mode=DeliveryMode(purchase.delivery_mode),
        total_sessions=purchase.total_sessions,
        tz=tz,
        not_before=not_before,
    )
    return remaining_slots(slots, given=given)


def _sessions_given(
    *, purchase: Purchase, now: dt.datetime
) -> tuple[int, dt.datetime | None]:
    """How many of the purchase's sessions have started by ``now``, and when the
    last of them started: releases keep the reservations of sessions given and
    drop the rest."""
    given = Reservation.objects.filter(
        allocation__purchase=purchase, during__startswith__lt=now
    ).aggregate(count=Count("pk"), last=Max(_Lower(F("during"))))
    return given["count"], given["last"]


class _Lower(Func):
    function = "lower"
    output_field = DateTimeField()


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
        released_from_purchase=Exists(
            TrainerAllocation.objects.filter(
                trainer_id=OuterRef("pk"),
                purchase_id=purchase.pk,
                status=TrainerAllocation.Status.RELEASED,
            ).exclude(released_by="")
        ),
        leave_starts=ArraySubquery(_leave_overlapping(slots, tz).values("starts_on")),
        leave_ends=ArraySubquery(_leave_overlapping(slots, tz).values("ends_on")),
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
                leave=_leave(t.leave_starts, t.leave_ends),
                released_from_purchase=t.released_from_purchase,
            ),
            purchase_facts,
        )
        for t in trainer_list
    ]


# How many ranked candidates automatic allocation fetches: the best fitting
# trainer is almost always the first; the rest cover a few taken meanwhile.
CANDIDATES = 5

# The candidate query of automatic allocation. The cheap rules (course,
# activity, capacity, days and hours, distance) rank every trainer who may fit;
# the overlap probe then runs on that ranked list, one trainer at a time, only
# until ``limit`` pass. Each probe (``r.trainer_id = … AND r.during && …``) is
# an index scan of the exclusion constraint's GiST index on (trainer_id,
# during). Written as a scalar subquery, the probe cannot become a hash anti
# join, which scans that index by time alone: every trainer's reservations in
# the schedule's weeks, a cost that grows with the business (#15).
_CANDIDATES_SQL = """
SELECT ranked.id, ranked.name, ranked.latitude, ranked.longitude,
       ranked.max_travel_km, ranked.max_active_students, ranked.weekdays,
       ranked.work_start, ranked.work_end, ranked.active,
       EXISTS (SELECT FROM fulfillment_trainerallocation released
               WHERE released.trainer_id = ranked.id
                 AND released.purchase_id = %(purchase)s
                 AND released.status = 'released'
                 AND released.released_by <> ''),
       ARRAY(SELECT l.starts_on FROM fulfillment_trainerleave l
             WHERE l.trainer_id = ranked.id AND l.starts_on <= %(last_day)s
               AND l.ends_on >= %(first_day)s ORDER BY l.starts_on),
       ARRAY(SELECT l.ends_on FROM fulfillment_trainerleave l
             WHERE l.trainer_id = ranked.id AND l.starts_on <= %(last_day)s
               AND l.ends_on >= %(first_day)s ORDER BY l.starts_on)
FROM (
    SELECT t.id, t.name, t.latitude, t.longitude, t.max_travel_km,
           t.max_active_students, t.weekdays, t.work_start, t.work_end,
           load.active, distance.km
    FROM fulfillment_trainer t
    JOIN fulfillment_trainer_courses tc
      ON tc.trainer_id = t.id AND tc.course_id = %(course)s
    CROSS JOIN LATERAL (
        SELECT count(*) AS active FROM fulfillment_trainerallocation a
        WHERE a.trainer_id = t.id AND a.status = 'active'
    ) load
    CROSS JOIN LATERAL (SELECT {distance} AS km) distance
    WHERE t.is_active
      AND load.active < t.max_active_students
      AND t.weekdays @> %(weekdays)s::smallint[]
      AND t.work_start <= %(work_start)s AND t.work_end >= %(work_end)s
      AND {near}
    ORDER BY {order} load.active, t.id
    OFFSET 0
) ranked
WHERE NOT (SELECT EXISTS (
    SELECT FROM fulfillment_reservation r
    WHERE r.trainer_id = ranked.id AND r.during && %(schedule)s
))
ORDER BY {outer_order} ranked.active, ranked.id
LIMIT %(limit)s
"""

# geo.great_circle_km in SQL, from each trainer to the purchase's home.
_DISTANCE_SQL = (
    "2 * %(radius)s * asin(sqrt(least(greatest("
    "power(sin(radians(t.latitude - %(lat)s) / 2), 2) + %(cos_lat)s"
    " * cos(radians(t.latitude)) * power(sin(radians(t.longitude - %(lon)s) / 2), 2)"
    ", 0.0), 1.0)))"
)


def trainer_candidates(
    *, purchase: Purchase, slots: list[Slot], limit: int = CANDIDATES
) -> list[fit.Verdict]:
    """The best fitting trainers for automatic allocation, best first: exactly
    the first ``limit`` of ``fit.rank`` over the whole roster's verdicts (all
    of them when fewer fit).

    One query ranks (nearest for home courses, then fewest active allocations,
    then lowest id) and limits the trainers who may fit in SQL; the pure rules
    then judge those few. The SQL filters only ever keep too many (leave and
    sessions across midnight are the pure rules' to judge), so the fitting
    rows are a prefix of the full ranking; should every fetched row fail those
    rules while more rows may follow, the whole prefiltered list is judged.
    """
    course: Course = purchase.course
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    schedule = _schedule_ranges(slots)
    home_visit = course.mode == Course.Mode.HOME
    if schedule is None or (
        home_visit and (purchase.latitude is None or purchase.longitude is None)
    ):
        # Nothing to reserve, or a home course with no home: the full path says
        # what the pure rules make of that.
        verdicts = trainer_verdicts(purchase=purchase, slots=slots, fitting_only=True)
        return fit.rank(verdicts, home_visit=home_visit)[:limit]
    starts = [slot.starts_at.astimezone(tz) for slot in slots]
    ends = [slot.ends_at.astimezone(tz) for slot in slots]
    params: dict[str, Any] = {
        "purchase": purchase.pk,
        "course": course.pk,
        "first_day": min(start.date() for start in starts),
        "last_day": max(start.date() for start in starts),
        "weekdays": sorted({start.weekday() for start in starts}),
        "work_start": min(start.time() for start in starts),
        "work_end": max(end.time() for end in ends),
        "schedule": schedule,
        "limit": limit,
    }
    latitude, longitude = purchase.latitude, purchase.longitude
    if home_visit and latitude is not None and longitude is not None:
        params.update(
            radius=geo.EARTH_RADIUS_KM,
            lat=latitude,
            lon=longitude,
            cos_lat=math.cos(math.radians(latitude)),
            slack=_DISTANCE_SLACK_KM,
        )
        sql = _CANDIDATES_SQL.format(
            distance=_DISTANCE_SQL,
            near="distance.km <= t.max_travel_km + %(slack)s",
            order="distance.km,",
            outer_order="ranked.km,",
        )
    else:
        sql = _CANDIDATES_SQL.format(
            distance="NULL", near="true", order="", outer_order=""
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    purchase_facts = fit.PurchaseFacts(
        home_visit=home_visit,
        latitude=purchase.latitude,
        longitude=purchase.longitude,
        slots=tuple(slots),
        tz=tz,
    )
    verdicts = [
        fit.evaluate(
            fit.TrainerFacts(
                id=str(trainer_id),
                name=name,
                is_active=True,
                teaches_course=True,
                latitude=latitude,
                longitude=longitude,
                max_travel_km=max_travel_km,
                max_active_students=max_active_students,
                weekdays=frozenset(weekdays),
                work_start=work_start,
                work_end=work_end,
                active_allocations=active,
                # The probe kept only trainers with nothing reserved then.
                reserved=(),
                leave=_leave(leave_starts, leave_ends),
                released_from_purchase=released,
            ),
            purchase_facts,
        )
        for (
            trainer_id,
            name,
            latitude,
            longitude,
            max_travel_km,
            max_active_students,
            weekdays,
            work_start,
            work_end,
            active,
            released,
            leave_starts,
            leave_ends,
        ) in rows
    ]
    ranked = fit.rank(verdicts, home_visit=home_visit)
    if len(ranked) < limit and len(rows) == limit:
        verdicts = trainer_verdicts(purchase=purchase, slots=slots, fitting_only=True)
        ranked = fit.rank(verdicts, home_visit=home_visit)
    return ranked[:limit]


@dataclass(frozen=True)
class BookingCheck:
    """An active allocation of one trainer against what the trainer is today:
    ``broken`` are the rules the trainer now breaks for its future sessions."""

    allocation: TrainerAllocation
    slots: tuple[Slot, ...]
    broken: tuple[fit.Rule, ...]

    @property
    def still_fits(self) -> bool:
        return not self.broken


def trainer_booking_checks(
    *, trainer_id: uuid.UUID, now: dt.datetime
) -> list[BookingCheck]:
    """Every active allocation of the trainer with future sessions, judged by
    the pure rules against the trainer's current facts (activity, courses,
    days, hours, leave, travel distance).

    The allocation's own reservations are its slots, so they never clash with
    themselves; capacity is not re-judged (a trainer who lowers it keeps the
    students they have), nor are soft rules an operator waived when assigning.
    """
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    trainer = Trainer.objects.filter(pk=trainer_id).prefetch_related("courses").first()
    if trainer is None:
        return []
    allocations = list(
        TrainerAllocation.objects.filter(
            trainer=trainer, status=TrainerAllocation.Status.ACTIVE
        )
        .select_related("purchase__course", "purchase__student", "purchase__payment")
        .order_by("created_at")
    )
    future: dict[uuid.UUID, list[Slot]] = defaultdict(list)
    for reservation in Reservation.objects.filter(
        allocation__in=allocations, during__startswith__gte=now
    ).order_by("during"):
        future[reservation.allocation_id].append(
            Slot(
                reservation.sequence,
                reservation.during.lower.astimezone(tz),
                reservation.during.upper.astimezone(tz),
            )
        )
    course_ids = {course.pk for course in trainer.courses.all()}
    leave = tuple(
        TrainerLeave.objects.filter(trainer=trainer, ends_on__gte=now.date())
        .order_by("starts_on")
        .values_list("starts_on", "ends_on")
    )
    checks = []
    for allocation in allocations:
        slots = future.get(allocation.pk)
        if not slots:
            continue
        purchase = allocation.purchase
        verdict = fit.evaluate(
            fit.TrainerFacts(
                id=str(trainer.pk),
                name=trainer.name,
                is_active=trainer.is_active,
                teaches_course=purchase.course_id in course_ids,
                latitude=trainer.latitude,
                longitude=trainer.longitude,
                max_travel_km=trainer.max_travel_km,
                max_active_students=trainer.max_active_students,
                weekdays=frozenset(trainer.weekdays),
                work_start=trainer.work_start,
                work_end=trainer.work_end,
                active_allocations=0,
                leave=leave,
            ),
            fit.PurchaseFacts(
                home_visit=purchase.course.mode == Course.Mode.HOME,
                latitude=purchase.latitude,
                longitude=purchase.longitude,
                slots=tuple(slots),
                tz=tz,
            ),
        )
        waived = allocation.override_reason != ""
        broken = tuple(
            rule
            for rule in verdict.broken
            if rule is not fit.Rule.AT_CAPACITY and (rule.hard or not waived)
        )
        checks.append(
            BookingCheck(allocation=allocation, slots=tuple(slots), broken=broken)
        )
    return checks


def _leave_overlapping(
    slots: list[Slot], tz: zoneinfo.ZoneInfo
) -> QuerySet[TrainerLeave]:
    """Each trainer's leave that overlaps the schedule's days (for a subquery
    on the trainer query itself: no extra query)."""
    days = [slot.starts_at.astimezone(tz).date() for slot in slots] or [dt.date.min]
    return TrainerLeave.objects.filter(
        trainer_id=OuterRef("pk"), starts_on__lte=max(days), ends_on__gte=min(days)
    ).order_by("starts_on")


def _leave(
    starts: list[dt.date] | None, ends: list[dt.date] | None
) -> tuple[tuple[dt.date, dt.date], ...]:
    return tuple(zip(starts or [], ends or [], strict=True))


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


def trainer_reservations_between(
    *, trainer_id: uuid.UUID, starts: dt.datetime, ends: dt.datetime
) -> list[Reservation]:
    """The trainer's reservations overlapping [starts, ends), soonest first,
    with their purchase's student and course."""
    return list(
        Reservation.objects.filter(
            _Overlaps(F("during"), Value(Range(starts, ends, "[)"))),
            trainer_id=trainer_id,
        )
        .select_related("allocation__purchase__student", "allocation__purchase__course")
        .order_by("during")
    )


def trainer_leave_between(
    *, trainer_id: uuid.UUID, first: dt.date, last: dt.date
) -> list[TrainerLeave]:
    """The trainer's leave overlapping the days [first, last]."""
    return list(
        TrainerLeave.objects.filter(
            trainer_id=trainer_id, starts_on__lte=last, ends_on__gte=first
        ).order_by("starts_on")
    )
