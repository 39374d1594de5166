"""Nothing silently stuck: rescue stalled jobs, heal broken invariants, prune.

Each function is safe to run on many workers at once: rows are claimed with
``FOR UPDATE SKIP LOCKED`` and every action is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from procrastinate import exceptions, jobs, sql

from fulfillment import queue
from fulfillment.models import (
    Purchase,
    Reservation,
    TraceEvent,
    TrainerAllocation,
    TutoringSession,
    WorkerPresence,
)
from fulfillment.queue import names
from fulfillment.selectors.jobs import STALLED_JOBS
from fulfillment.services import allocation, cache
from fulfillment.services.sessions import SESSION_WINDOW
from fulfillment.services.trace import trace_record

logger = logging.getLogger(__name__)

HEALER = "reconcile"
# A purchase younger than this may simply not have committed its job's worker
# pick-up yet; the sweeper leaves it alone.
GRACE = dt.timedelta(seconds=30)


@dataclass
class RescueReport:
    retried: list[int] = field(default_factory=list)
    # Stalled, but a waiting twin holds its queueing lock and will do the work.
    superseded: list[int] = field(default_factory=list)


def stalled_jobs_rescue(*, stalled_after_s: float | None = None) -> RescueReport:
    """Put jobs whose worker died (no heartbeat for ``stalled_after_s``) back in
    the queue.

    procrastinate only detects these. Retrying one whose ``queueing_lock`` is held
    by a waiting twin violates the lock's unique index (procrastinate #1446); the
    twin will do the same work, so the stalled job is finished as ``aborted``
    instead of staying ``doing`` forever.
    """
    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    report = RescueReport()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT j.id {STALLED_JOBS} ORDER BY j.id FOR UPDATE OF j SKIP LOCKED",
                [limit],
            )
            stalled = [row[0] for row in cursor.fetchall()]
        now = timezone.now()
        for job_id in stalled:
            try:
                with transaction.atomic():
                    _execute(
                        "retry_job",
                        job_id=job_id,
                        retry_at=now,
                        new_priority=None,
                        new_queue_name=None,
                        new_lock=None,
                    )
                report.retried.append(job_id)
            except exceptions.UniqueViolation:
                _execute(
                    "finish_job",
                    job_id=job_id,
                    status=jobs.Status.ABORTED.value,
                    delete_job=False,
                )
                report.superseded.append(job_id)
    if stalled:
        logger.warning(
            "stalled jobs rescued",
            extra={"retried": report.retried, "superseded": report.superseded},
        )
    return report


@dataclass
class ReconcileReport:
    allocation_redeferred: int = 0
    sessions_redeferred: int = 0
    refunds_released: int = 0

    @property
    def healed(self) -> int:
        return (
            self.allocation_redeferred
            + self.sessions_redeferred
            + self.refunds_released
        )


def invariants_reconcile(*, now: dt.datetime | None = None) -> ReconcileReport:
    """Check the business invariants against the queue and heal what is missing.

    1. A purchase waiting for allocation has a live (todo/doing) allocation job.
    2. An allocated purchase has its window of sessions.
    3. A refunded purchase has nothing scheduled and no future reservation.

    Every heal is recorded in the purchase's trace (kind ``healing``).
    """
    now = now or timezone.now()
    report = ReconcileReport()
    for purchase_id in _pending_without_job(now - GRACE):
        with transaction.atomic():
            purchase = _claim(purchase_id, Purchase.Status.ALLOCATION_PENDING)
            if purchase is None or _has_live_job(names.ALLOCATE_TRAINER, purchase_id):
                continue
            queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(purchase_id))
            _healed(purchase, "Allocation job was missing; deferred a new one.")
            report.allocation_redeferred += 1
    for purchase_id in _allocated_with_short_window(now - GRACE, now):
        with transaction.atomic():
            purchase = _claim(purchase_id, Purchase.Status.ALLOCATED)
            if purchase is None or _has_live_job(
                names.MATERIALISE_SESSIONS, purchase_id
            ):
                continue
            queue.defer(names.MATERIALISE_SESSIONS, purchase_id=str(purchase_id))
            _healed(purchase, "Session window was short; deferred the sessions job.")
            report.sessions_redeferred += 1
    for purchase_id in _refunded_with_future_bookings(now):
        with transaction.atomic():
            purchase = _claim(purchase_id, Purchase.Status.REFUNDED)
            if purchase is None:
                continue
            cancelled = allocation.allocation_release(purchase=purchase, now=now)
            Reservation.objects.filter(
                allocation__purchase=purchase, during__startswith__gte=now
            ).delete()
            # The student's sessions changed, and the trainer has room again.
            cache.learnings_invalidate(student_id=purchase.student_id)
            allocation.waitlist_retry_soon()
            _healed(
                purchase,
                f"Refunded purchase still had bookings; cancelled {cancelled} "
                "sessions and released the trainer.",
            )
            report.refunds_released += 1
    if report.healed:
        logger.warning(
            "invariants healed",
            extra={
                "allocation_redeferred": report.allocation_redeferred,
                "sessions_redeferred": report.sessions_redeferred,
                "refunds_released": report.refunds_released,
            },
        )
    return report


def jobs_prune(*, succeeded_after_hours: int, failed_after_hours: int) -> None:
    """Delete finished jobs (and their events): succeeded, cancelled and aborted
    ones after ``succeeded_after_hours``, failed ones after ``failed_after_hours``.
    The trace keeps its own durable record (TraceEvent, JobFailure)."""
    _execute(
        "delete_old_jobs",
        nb_hours=succeeded_after_hours,
        queue=None,
        statuses=["succeeded", "cancelled", "aborted"],
    )
    _execute(
        "delete_old_jobs",
        nb_hours=failed_after_hours,
        queue=None,
        statuses=["failed"],
    )
    WorkerPresence.objects.exclude(worker_id__in=_live_worker_ids()).delete()


def _execute(query: str, **arguments: object) -> None:
    # procrastinate's own SQL, on Django's connection and transaction.
    queue.execute(sql.queries[query], **arguments)


def _live_worker_ids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM procrastinate_workers")
        return [row[0] for row in cursor.fetchall()]


def _claim(purchase_id: uuid.UUID, status: str) -> Purchase | None:
    """Lock the purchase if it still has ``status`` and nobody else holds it."""
    return (
        Purchase.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
        .select_related("payment")
        .filter(pk=purchase_id, status=status)
        .first()
    )


def _has_live_job(task_name: str, purchase_id: uuid.UUID) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT EXISTS (
                SELECT 1 FROM procrastinate_jobs
                WHERE task_name = %s AND status IN ('todo', 'doing')
                  AND args->>'purchase_id' = %s)
            """,
            [task_name, str(purchase_id)],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _pending_without_job(created_before: dt.datetime) -> list[uuid.UUID]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id FROM fulfillment_purchase p
            WHERE p.status = 'allocation_pending' AND p.created_at < %s
              AND NOT EXISTS (
                SELECT 1 FROM procrastinate_jobs j
                WHERE j.task_name = %s
                  AND j.status IN ('todo', 'doing')
                  AND j.args->>'purchase_id' = p.id::text)
            ORDER BY p.created_at
            LIMIT 500
            """,
            [created_before, names.ALLOCATE_TRAINER],
        )
        return [row[0] for row in cursor.fetchall()]


def _allocated_with_short_window(
    allocated_before: dt.datetime, now: dt.datetime
) -> list[uuid.UUID]:
    """Allocated purchases with fewer upcoming sessions than they should have:
    min(window, reservations still ahead that are not yet sessions + upcoming)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id FROM fulfillment_purchase p
            JOIN fulfillment_trainerallocation a
              ON a.purchase_id = p.id AND a.status = %s
            WHERE p.status = 'allocated' AND p.allocated_at < %s
              AND (SELECT count(*) FROM fulfillment_tutoringsession s
                   WHERE s.purchase_id = p.id AND s.status = %s AND s.ends_at > %s)
                < LEAST(%s, (SELECT count(*) FROM fulfillment_reservation r
                             WHERE r.allocation_id = a.id AND upper(r.during) > %s))
            LIMIT 500
            """,
            [
                TrainerAllocation.Status.ACTIVE,
                allocated_before,
                TutoringSession.Status.SCHEDULED,
                now,
                SESSION_WINDOW,
                now,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


def _refunded_with_future_bookings(now: dt.datetime) -> list[uuid.UUID]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id FROM fulfillment_purchase p
            WHERE p.status = 'refunded' AND (
                EXISTS (SELECT 1 FROM fulfillment_tutoringsession s
                        WHERE s.purchase_id = p.id AND s.status = 'scheduled'
                          AND s.starts_at >= %s)
                OR EXISTS (SELECT 1 FROM fulfillment_reservation r
                           JOIN fulfillment_trainerallocation a
                             ON a.id = r.allocation_id
                           WHERE a.purchase_id = p.id AND lower(r.during) >= %s))
            LIMIT 500
            """,
            [now, now],
        )
        return [row[0] for row in cursor.fetchall()]


def _healed(purchase: Purchase, message: str) -> None:
    trace_record(
        payment=purchase.payment,
        purchase=purchase,
        kind=TraceEvent.Kind.HEALING,
        actor=HEALER,
        message=message,
    )
    logger.warning(
        "invariant healed", extra={"purchase_id": str(purchase.pk), "heal": message}
    )
