"""Reads only the operations console uses: why a purchase waits, which trainers
could take it, what a trainer is booked for, and today's numbers.

Everything else the console shows (queues, workers, failed jobs, payments that
need attention, traces) comes from ``fulfillment.selectors``, which other
places read too.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.timesince import timesince
from procrastinate.contrib.django.models import ProcrastinateJob

from fulfillment.domain import fit
from fulfillment.domain.schedule import Slot
from fulfillment.models import (
    WAITING_STATUSES,
    Course,
    JobFailure,
    Payment,
    Purchase,
    Reservation,
    Trainer,
    TrainerAllocation,
)
from fulfillment.queue import names
from fulfillment.selectors.trainers import purchase_schedule, trainer_verdicts
from fulfillment.selectors.workers import live_workers


@dataclass(frozen=True)
class WaitingPurchase:
    purchase: Purchase
    waiting_s: float
    # Why it waits, in words an operator can act on.
    reason: str
    # Something is broken (no worker, a failed job): shown in red.
    alarming: bool


def waiting_purchases(*, limit: int = 25) -> tuple[int, list[WaitingPurchase]]:
    """Purchases waiting for a trainer (pending or waitlisted), oldest first,
    each with the reason it waits; and how many wait in all."""
    waiting = Purchase.objects.filter(status__in=WAITING_STATUSES)
    purchases = list(
        waiting.select_related("student", "course").order_by("created_at")[:limit]
    )
    total = len(purchases) if len(purchases) < limit else waiting.count()
    return total, _with_reasons(purchases)


def waiting_reason(*, purchase: Purchase) -> WaitingPurchase | None:
    """Why this purchase is not allocated yet; ``None`` when it is not waiting."""
    if purchase.status not in WAITING_STATUSES:
        return None
    return _with_reasons([purchase])[0]


def _with_reasons(purchases: Sequence[Purchase]) -> list[WaitingPurchase]:
    now = timezone.now()
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
            alarming = False
        else:
            job = jobs.get(str(purchase.pk))
            reason, alarming = _pending_reason(
                job,
                failures.get(job.id) if job else None,
                served=bool(served),
                now=now,
            )
        rows.append(
            WaitingPurchase(
                purchase=purchase,
                waiting_s=(now - purchase.created_at).total_seconds(),
                reason=reason,
                alarming=alarming,
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
