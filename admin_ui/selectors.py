"""Reads only the operations console uses: why a purchase waits, which trainers
could take it, what a trainer is booked for, and today's numbers.

Everything else the console shows (queues, workers, failed jobs, payments that
need attention, traces) comes from ``fulfillment.selectors``, which other
places read too.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Func, Q, QuerySet, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone
from django.utils.timesince import timesince
from procrastinate.contrib.django.models import ProcrastinateJob

from fulfillment.domain import fit
from fulfillment.domain.schedule import DeliveryMode, Slot, build_schedule
from fulfillment.domain.urgency import StartUrgency, past_sla, start_urgency
from fulfillment.models import (
    WAITING_STATUSES,
    Course,
    JobFailure,
    Payment,
    Purchase,
    Reservation,
    Student,
    Trainer,
    TrainerAllocation,
    WebhookOutcomeCount,
)
from fulfillment.queue import names
from fulfillment.selectors.jobs import queue_stats, stalled_jobs_count
from fulfillment.selectors.purchases import (
    payments_needing_attention,
    purchases_waitlisted_past_sla,
)
from fulfillment.selectors.trainers import purchase_schedule, trainer_verdicts
from fulfillment.selectors.workers import live_workers


@dataclass(frozen=True)
class WaitingPurchase:
    purchase: Purchase
    # Since the payment: a retry or a reprocess does not restart the clock.
    waiting_s: float
    # Why it waits, in words an operator can act on (the whole explanation).
    reason: str
    # Something is broken (no worker, a failed job): shown in red.
    alarming: bool
    # The one line read at a glance on the dashboard.
    headline: str = ""
    first_session_at: dt.datetime | None = None
    urgency: StartUrgency | None = None
    past_sla: bool = False


def waiting_purchases(*, limit: int = 25) -> tuple[int, list[WaitingPurchase]]:
    """Purchases waiting for a trainer (pending or waitlisted), urgent first: the
    soonest first session (start date, then time slot), then the longest wait;
    each with the reason it waits; and how many wait in all."""
    waiting = Purchase.objects.filter(status__in=WAITING_STATUSES)
    purchases = list(
        waiting.select_related("student", "course", "payment").order_by(
            "start_date", "time_slot", "payment__created_at"
        )[:limit]
    )
    total = len(purchases) if len(purchases) < limit else waiting.count()
    return total, _with_reasons(purchases)


def waiting_reason(*, purchase: Purchase) -> WaitingPurchase | None:
    """Why this purchase is not allocated yet; ``None`` when it is not waiting."""
    if purchase.status not in WAITING_STATUSES:
        return None
    return _with_reasons([purchase])[0]


def waitlist_sla() -> dt.timedelta:
    return dt.timedelta(hours=settings.WAITLIST_SLA_HOURS)


def first_session_at(purchase: Purchase) -> dt.datetime:
    """When the purchase's first session is (or was) due, as bought."""
    return build_schedule(
        start_date=purchase.start_date,
        time_slot=purchase.time_slot,
        delivery_mode=DeliveryMode(purchase.delivery_mode),
        total_sessions=purchase.total_sessions,
        tz=zoneinfo.ZoneInfo(settings.TIME_ZONE),
    )[0].starts_at


def _with_reasons(purchases: Sequence[Purchase]) -> list[WaitingPurchase]:
    now = timezone.now()
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    sla = waitlist_sla()
    pending_ids = [
        str(p.pk) for p in purchases if p.status == Purchase.Status.ALLOCATION_PENDING
    ]
    jobs = _latest_allocation_jobs(pending_ids)
    failures = _latest_failures([job.id for job in jobs.values()])
    served = pending_ids and any(
        worker.serves(names.ALLOCATION_QUEUE) for worker in live_workers()
    )
    rows = []
    for purchase in purchases:
        if purchase.status == Purchase.Status.WAITLISTED:
            reason = (
                f"{purchase.status_reason} Tried again every 5 minutes and "
                "whenever the catalogue or capacity changes."
            )
            headline = fit.reason_headline(purchase.status_reason)
            alarming = False
        else:
            job = jobs.get(str(purchase.pk))
            reason, alarming = _pending_reason(
                job,
                failures.get(job.id) if job else None,
                served=bool(served),
                now=now,
            )
            headline = reason
        paid_at = purchase.payment.created_at
        first = first_session_at(purchase)
        late = purchase.status == Purchase.Status.WAITLISTED and past_sla(
            paid_at=paid_at, now=now, sla=sla
        )
        rows.append(
            WaitingPurchase(
                purchase=purchase,
                waiting_s=(now - paid_at).total_seconds(),
                reason=reason,
                alarming=alarming or late,
                headline=headline,
                first_session_at=first,
                urgency=start_urgency(first_session_at=first, now=now, tz=tz),
                past_sla=late,
            )
        )
    return rows


def _latest_allocation_jobs(purchase_ids: list[str]) -> dict[str, ProcrastinateJob]:
    if not purchase_ids:
        return {}
    latest: dict[str, ProcrastinateJob] = {}
    for job in ProcrastinateJob.objects.filter(
        task_name=names.ALLOCATE_TRAINER, args__purchase_id__in=purchase_ids
    ).order_by("id"):
        latest[job.args["purchase_id"]] = job
    return latest


def _latest_failures(job_ids: list[int]) -> dict[int, JobFailure]:
    latest: dict[int, JobFailure] = {}
    for failure in JobFailure.objects.filter(job_id__in=job_ids).order_by("failed_at"):
        latest[failure.job_id] = failure
    return latest


def _pending_reason(
    job: ProcrastinateJob | None,
    failure: JobFailure | None,
    *,
    served: bool,
    now: dt.datetime,
) -> tuple[str, bool]:
    last_error = (
        f" Last error: {failure.error_type}: {failure.error_message}" if failure else ""
    )
    if job is None:
        return (
            "No allocation job is queued for it (the job was lost or pruned). "
            "Retry allocation now, or assign a trainer.",
            True,
        )
    if job.status == "failed":
        return (
            f"The allocation job failed after {job.attempts} attempt(s).{last_error} "
            "Retry allocation now, or assign a trainer.",
            True,
        )
    if job.status == "doing":
        return "A worker is allocating it right now.", False
    if job.status != "todo":
        return (
            f"Its allocation job ended as {job.status} without allocating. "
            "Retry allocation now, or assign a trainer.",
            True,
        )
    if not served:
        return (
            "No live worker serves the allocation queue, so its job cannot run. "
            "Start a worker (make worker); or assign a trainer by hand.",
            True,
        )
    if job.scheduled_at is not None and job.scheduled_at > now:
        return (
            f"The allocation job will try again in {timesince(now, job.scheduled_at)} "
            f"(attempt {job.attempts + 1}).{last_error}",
            bool(failure),
        )
    return "Its allocation job is queued; a worker will pick it up shortly.", False


# --- assigning a trainer by hand ------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One trainer as the Assign trainer page shows it."""

    trainer: Trainer
    verdict: fit.Verdict
    teaches_course: bool
    # The trainer automatic allocation would pick first.
    best: bool

    @property
    def fits(self) -> bool:
        return self.verdict.fits

    @property
    def assignable(self) -> bool:
        return self.verdict.only_soft_rules_broken

    @property
    def hard_rules(self) -> list[str]:
        return [rule.label for rule in self.verdict.broken if rule.hard]

    @property
    def soft_rules(self) -> list[str]:
        return [rule.label for rule in self.verdict.broken if not rule.hard]


def assign_candidates(
    *, purchase: Purchase, now: dt.datetime | None = None
) -> tuple[list[Slot], list[Candidate]]:
    """The purchase's schedule and every trainer: those that fit first (best
    first), then those breaking only soft rules, then the rest; trainers who
    teach the course before those who do not. The same verdicts automatic
    allocation acts on."""
    now = now or timezone.now()
    slots = purchase_schedule(purchase=purchase, now=now)
    verdicts = trainer_verdicts(purchase=purchase, slots=slots, all_trainers=True)
    home_visit = purchase.course.mode == Course.Mode.HOME
    ranked = [v.trainer.id for v in fit.rank(verdicts, home_visit=home_visit)]
    trainers = {
        str(pk): trainer
        for pk, trainer in Trainer.objects.in_bulk(
            [v.trainer.id for v in verdicts]
        ).items()
    }

    def order(verdict: fit.Verdict) -> tuple[int, int, int, float, str]:
        teaches = fit.Rule.NOT_TEACHING not in verdict.broken
        group = 0 if verdict.fits else 1 if verdict.only_soft_rules_broken else 2
        position = (
            ranked.index(verdict.trainer.id)
            if verdict.trainer.id in ranked
            else len(ranked)
        )
        return (
            0 if teaches else 1,
            group,
            position,
            verdict.distance_km or 0.0,
            verdict.trainer.name,
        )

    candidates = [
        Candidate(
            trainer=trainers[verdict.trainer.id],
            verdict=verdict,
            teaches_course=fit.Rule.NOT_TEACHING not in verdict.broken,
            best=bool(ranked) and verdict.trainer.id == ranked[0],
        )
        for verdict in sorted(verdicts, key=order)
    ]
    return slots, candidates


# --- trainers ---------------------------------------------------------------------


def trainer_upcoming_reservations(
    *, trainer: Trainer, limit: int = 10
) -> list[Reservation]:
    """The trainer's next booked sessions, soonest first, with their purchase."""
    return list(
        Reservation.objects.filter(trainer=trainer, during__endswith__gt=timezone.now())
        .select_related("allocation__purchase__student", "allocation__purchase__course")
        .order_by("during")[:limit]
    )


def trainer_active_allocations(*, trainer: Trainer) -> list[TrainerAllocation]:
    return list(
        trainer.allocations.filter(status=TrainerAllocation.Status.ACTIVE)
        .select_related("purchase__student", "purchase__course")
        .order_by("created_at")
    )


# --- today ------------------------------------------------------------------------


@dataclass(frozen=True)
class DaySummary:
    since: dt.datetime
    payments: int
    allocated: int
    waitlisted: int
    pending: int
    needs_attention: int
    median_to_allocation_s: float | None


def today_summary(*, now: dt.datetime | None = None) -> DaySummary:
    """The payments received since local midnight and what became of them. One
    query."""
    now = now or timezone.now()
    local = now.astimezone(zoneinfo.ZoneInfo(settings.TIME_ZONE))
    since = local.replace(hour=0, minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*),
                   count(*) FILTER (WHERE p.allocated_at IS NOT NULL),
                   count(*) FILTER (WHERE p.status = %s),
                   count(*) FILTER (WHERE p.status = %s),
                   count(*) FILTER (WHERE p.id IS NULL AND pay.attention_reason <> ''),
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM p.allocated_at - pay.created_at))
                       FILTER (WHERE p.allocated_at IS NOT NULL)
            FROM {Payment._meta.db_table} pay
            LEFT JOIN {Purchase._meta.db_table} p ON p.payment_id = pay.id
            WHERE pay.created_at >= %s
            """,  # noqa: S608 (table names from the models, values as parameters)
            [Purchase.Status.WAITLISTED, Purchase.Status.ALLOCATION_PENDING, since],
        )
        # An aggregate without GROUP BY always returns its one row.
        row = cursor.fetchone() or (0, 0, 0, 0, 0, None)
    return DaySummary(
        since=since,
        payments=row[0],
        allocated=row[1],
        waitlisted=row[2],
        pending=row[3],
        needs_attention=row[4],
        median_to_allocation_s=float(row[5]) if row[5] is not None else None,
    )


def sessions_outlook() -> str:
    """What happens next after a trainer is assigned by hand, truthfully: the
    sessions job runs only if a live worker serves its queue."""
    if any(worker.serves(names.SESSIONS_QUEUE) for worker in live_workers()):
        return "Sessions are being created."
    return (
        "No live worker serves the sessions queue, so its sessions will be "
        "created only once one starts (make worker)."
    )


# --- alarms -----------------------------------------------------------------------

# Refused signatures this recent are news: a wrong webhook secret, or an attack.
SIGNATURES_WINDOW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Alarm:
    text: str
    # Where the operator looks next.
    url_name: str = ""


def console_alarms(*, now: dt.datetime | None = None) -> list[Alarm]:
    """What is broken right now, for the red bar at the top of the dashboard:
    no worker alive, a queue with work nobody serves, stalled jobs, webhook
    signatures refused within the hour, waitlisted purchases past the SLA."""
    now = now or timezone.now()
    alarms: list[Alarm] = []
    workers = live_workers()
    if not workers:
        alarms.append(
            Alarm(
                "No worker is alive: nothing is being processed. Start one "
                "(make worker, or docker compose up worker).",
                "admin:procrastinate_procrastinatejob_changelist",
            )
        )
    else:
        for stats in queue_stats():
            waiting = stats.todo + stats.scheduled + stats.doing
            if waiting and not any(w.serves(stats.queue) for w in workers):
                alarms.append(
                    Alarm(
                        f"Queue {stats.queue} has {waiting} job(s) and no live "
                        "worker serves it.",
                        "admin:procrastinate_procrastinatejob_changelist",
                    )
                )
    stalled = stalled_jobs_count()
    if stalled:
        alarms.append(
            Alarm(
                f"{stalled} job(s) belong to a worker that stopped; they are "
                "requeued automatically within seconds.",
                "admin:procrastinate_procrastinatejob_changelist",
            )
        )
    refused = WebhookOutcomeCount.objects.filter(
        outcome="invalid_signature", last_at__gte=now - SIGNATURES_WINDOW
    ).first()
    if refused is not None and refused.last_at is not None:
        alarms.append(
            Alarm(
                "Stripe webhook signatures are being refused (last at "
                f"{timezone.localtime(refused.last_at):%H:%M %Z}; "
                f"{refused.count} since counting began): check "
                "STRIPE_WEBHOOK_SECRET against the Stripe dashboard.",
                "admin:fulfillment_webhookdelivery_changelist",
            )
        )
    late = purchases_waitlisted_past_sla(sla=waitlist_sla(), now=now).count()
    if late:
        alarms.append(
            Alarm(
                f"{late} purchase(s) waitlisted for over "
                f"{settings.WAITLIST_SLA_HOURS} h since payment.",
                "admin:fulfillment_purchase_changelist",
            )
        )
    return alarms


# --- one search for anything ----------------------------------------------------

SEARCH_LIMIT = 20
# A query with this many digits, and nothing but phone characters, is a phone.
_PHONE_QUERY = re.compile(r"\+?[0-9 ().\-]+", re.ASCII)
MIN_PHONE_DIGITS = 4


@dataclass(frozen=True)
class SearchResults:
    query: str
    students: list[Student]
    purchases: list[Purchase]
    # Payments whose student does not exist yet: found by their metadata.
    attention_payments: list[Payment]
    payments: list[Payment]
    trainers: list[Trainer]

    @property
    def total(self) -> int:
        return (
            len(self.students)
            + len(self.purchases)
            + len(self.attention_payments)
            + len(self.payments)
            + len(self.trainers)
        )


def phone_digits(query: str) -> str:
    """The digits of ``query`` when it reads as (part of) a phone number."""
    query = query.strip()
    digits = re.sub(r"[^0-9]", "", query)
    if _PHONE_QUERY.fullmatch(query) and len(digits) >= MIN_PHONE_DIGITS:
        return digits
    return ""


def _digits_only(expression: object) -> Func:
    return Func(
        expression,
        Value("[^0-9]"),
        Value(""),
        Value("g"),
        function="regexp_replace",
        output_field=TextField(),
    )


def console_search(*, query: str, limit: int = SEARCH_LIMIT) -> SearchResults:
    """Everything ``query`` names: students (name, email, phone, id), their
    purchases, purchases and payments by id or PaymentIntent id, trainers by
    name, and payments needing attention by the student details in their
    metadata. Each kind at most ``limit``; every text match uses a trigram
    index (migration 0005)."""
    query = query.strip()
    if not query:
        return SearchResults(query, [], [], [], [], [])
    as_uuid: uuid.UUID | None
    try:
        as_uuid = uuid.UUID(query)
    except ValueError:
        as_uuid = None
    digits = phone_digits(query)

    student_match = Q(name__icontains=query) | Q(email__icontains=query)
    if digits:
        student_match |= Q(phone__contains=digits)
    if as_uuid is not None:
        student_match = Q(pk=as_uuid)
    students = list(Student.objects.filter(student_match).order_by("name")[:limit])

    purchase_match = Q(student__in=Student.objects.filter(student_match))
    payment_match = Q(payment_intent=query)
    if as_uuid is not None:
        purchase_match |= Q(pk=as_uuid) | Q(payment__pk=as_uuid)
        payment_match |= Q(pk=as_uuid)
    if query.startswith("pi_"):
        purchase_match |= Q(payment__payment_intent=query)
    purchases = list(
        _purchases(Purchase.objects.filter(purchase_match)).order_by("-created_at")[
            :limit
        ]
    )

    unresolved = payments_needing_attention()
    metadata_match = Q(metadata__student_name__icontains=query) | Q(
        metadata__student_email__icontains=query
    )
    attention = unresolved.annotate(
        metadata_phone=_digits_only(KeyTextTransform("student_phone", "metadata"))
    )
    if digits:
        metadata_match |= Q(metadata_phone__contains=digits)
    if as_uuid is not None:
        metadata_match |= Q(pk=as_uuid) | Q(metadata__student_id=str(as_uuid))
    metadata_match |= Q(payment_intent=query)
    attention_payments: list[Payment] = list(
        attention.filter(metadata_match).order_by("created_at")[:limit]
    )

    payments = [
        p
        for p in Payment.objects.filter(payment_match)
        .select_related("purchase")
        .order_by("-created_at")[:limit]
        if p not in attention_payments
    ]
    trainers = list(
        Trainer.objects.filter(
            Q(pk=as_uuid) if as_uuid is not None else Q(name__icontains=query)
        ).order_by("name")[:limit]
    )
    return SearchResults(
        query, students, purchases, attention_payments, payments, trainers
    )


def _purchases(queryset: QuerySet[Purchase]) -> QuerySet[Purchase]:
    return queryset.select_related("student", "course", "trainer", "payment")
