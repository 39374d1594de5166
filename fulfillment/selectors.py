"""Reads that several places share (API, commands, admin, dashboard)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max, Q, QuerySet
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from fulfillment.models import (
    JobFailure,
    Payment,
    Purchase,
    TraceEvent,
    TutoringSession,
    WebhookDelivery,
)

UPCOMING_IN_LEARNINGS = 3


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, in TIME_ZONE (what people read)."""
    if value is None:
        return None
    return timezone.localtime(value).isoformat()


def purchase_detail(*, purchase_id: uuid.UUID) -> dict[str, Any] | None:
    purchase = (
        Purchase.objects.select_related("payment", "trainer")
        .filter(pk=purchase_id)
        .first()
    )
    if purchase is None:
        return None
    sessions = purchase.sessions.order_by("sequence")
    return {
        "id": str(purchase.pk),
        "payment_intent": purchase.payment.payment_intent,
        "student_id": str(purchase.student_id),
        "course_id": str(purchase.course_id),
        "status": purchase.status,
        "status_reason": purchase.status_reason,
        "trainer": _trainer(purchase),
        "sessions_total": purchase.total_sessions,
        "sessions": [_session(s) for s in sessions],
        "created_at": iso(purchase.created_at),
        "allocated_at": iso(purchase.allocated_at),
    }


def student_learnings(*, student_id: uuid.UUID) -> dict[str, Any]:
    """What the app's learnings screen shows: one entry per purchase."""
    now = timezone.now()
    purchases = (
        Purchase.objects.filter(student_id=student_id)
        .select_related("course", "trainer")
        .order_by("created_at")
    )
    upcoming: dict[uuid.UUID, list[TutoringSession]] = {}
    for session in TutoringSession.objects.filter(
        purchase__student_id=student_id,
        status=TutoringSession.Status.SCHEDULED,
        ends_at__gt=now,
    ).order_by("starts_at"):
        upcoming.setdefault(session.purchase_id, []).append(session)
    return {
        "student_id": str(student_id),
        "learnings": [
            {
                "purchase_id": str(p.pk),
                "course": {"id": str(p.course_id), "title": p.course.title},
                "status": p.status,
                "status_label": Purchase.Status(p.status).label,
                "status_reason": p.status_reason,
                "trainer": _trainer(p),
                "sessions_total": p.total_sessions,
                "next_sessions": [
                    _session(s) for s in upcoming.get(p.pk, [])[:UPCOMING_IN_LEARNINGS]
                ],
            }
            for p in purchases
        ],
    }


def payment_for(reference: str) -> Payment | None:
    """The payment named by a PaymentIntent id or by a purchase id."""
    try:
        purchase_id = uuid.UUID(reference)
    except ValueError:
        return Payment.objects.filter(payment_intent=reference).first()
    return Payment.objects.filter(purchase__pk=purchase_id).first()


def payment_trace(*, reference: str) -> dict[str, Any] | None:
    """The whole path of one payment, oldest first: deliveries, state changes,
    jobs (with attempts, worker, timings and last error) and operator actions."""
    payment = payment_for(reference)
    if payment is None:
        return None
    purchase = Purchase.objects.filter(payment=payment).first()
    entries: list[dict[str, Any]] = []
    for delivery in WebhookDelivery.objects.filter(
        payment_intent=payment.payment_intent
    ).order_by("received_at", "id"):
        entries.append(
            {
                "at": delivery.received_at,
                "kind": "webhook",
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
                "outcome": delivery.outcome,
                "detail": delivery.detail,
            }
        )
    purchase_began: dt.datetime | None = None
    for event in TraceEvent.objects.filter(payment=payment):
        if event.purchase_id is not None and purchase_began is None:
            purchase_began = event.created_at
        entries.append(
            {
                "at": event.created_at,
                "kind": event.kind,
                "actor": event.actor,
                "from_status": event.from_status,
                "to_status": event.to_status,
                "message": event.message,
            }
        )
    if purchase is not None:
        entries.extend(_job_entries(purchase, since=purchase_began))
    # One transaction's rows share its clock: the delivery, then what it changed,
    # then the jobs it deferred.
    rank = {"webhook": 0, "job": 2}
    entries.sort(key=lambda entry: (entry["at"], rank.get(entry["kind"], 1)))
    for entry in entries:
        entry["at"] = iso(entry["at"])
    return {
        "payment_intent": payment.payment_intent,
        "purchase_id": str(purchase.pk) if purchase else None,
        "status": purchase.status if purchase else _payment_status(payment),
        "status_reason": purchase.status_reason
        if purchase
        else payment.attention_reason,
        "entries": entries,
    }


def _job_entries(
    purchase: Purchase, *, since: dt.datetime | None
) -> list[dict[str, Any]]:
    """The purchase's own jobs, and the student's cache refreshes deferred since
    the purchase was recorded (they serve all of the student's purchases)."""
    student_jobs = Q(
        args__student_id=str(purchase.student_id),
        id__in=ProcrastinateEvent.objects.filter(
            type="deferred", at__gte=since or purchase.created_at
        ).values("job_id"),
    )
    jobs = list(
        ProcrastinateJob.objects.filter(
            Q(args__purchase_id=str(purchase.pk)) | student_jobs
        ).order_by("id")
    )
    events: dict[int, dict[str, dt.datetime]] = {}
    for event in ProcrastinateEvent.objects.filter(job__in=jobs).order_by("at", "id"):
        if event.at is not None:
            events.setdefault(event.job_id, {}).setdefault(event.type, event.at)
            if event.type in {"started", "succeeded", "failed", "cancelled", "aborted"}:
                events[event.job_id][f"last_{event.type}"] = event.at
    failures: dict[int, JobFailure] = {}
    for recorded in JobFailure.objects.filter(job_id__in=[j.id for j in jobs]).order_by(
        "failed_at"
    ):
        failures[recorded.job_id] = recorded
    entries = []
    for job in jobs:
        times = events.get(job.id, {})
        failure = failures.get(job.id)
        deferred_at = times.get("deferred") or job.scheduled_at or timezone.now()
        finished = next(
            (
                times[f"last_{t}"]
                for t in ("succeeded", "failed", "cancelled", "aborted")
                if f"last_{t}" in times
            ),
            None,
        )
        entries.append(
            {
                "at": deferred_at,
                "kind": "job",
                "job_id": job.id,
                "task": job.task_name,
                "queue": job.queue_name,
                "status": job.status,
                "attempts": job.attempts,
                "worker_id": job.worker_id,
                "failed_on": failure.worker if failure else None,
                "deferred_at": iso(times.get("deferred")),
                "started_at": iso(times.get("last_started")),
                "finished_at": iso(finished),
                "last_error": (
                    f"{failure.error_type}: {failure.error_message}"
                    if failure
                    else None
                ),
            }
        )
    return entries


def _payment_status(payment: Payment) -> str:
    if payment.status == Payment.Status.REFUNDED:
        return "refunded"
    return "needs_attention" if payment.attention_reason else payment.status


def _trainer(purchase: Purchase) -> dict[str, str] | None:
    if purchase.trainer is None or purchase.status != Purchase.Status.ALLOCATED:
        return None
    return {"id": str(purchase.trainer.pk), "name": purchase.trainer.name}


def _session(session: TutoringSession) -> dict[str, Any]:
    return {
        "sequence": session.sequence,
        "starts_at": iso(session.starts_at),
        "ends_at": iso(session.ends_at),
        "status": session.status,
    }


# --- operations: queues, workers, failed jobs, stuck purchases ----------------
# Shared by /healthz, /metrics, `manage.py doctor` and the admin dashboard.

STAGE_QUEUES = ("allocation", "sessions", "cache")


@dataclass(frozen=True)
class QueueStats:
    queue: str
    todo: int  # ready to run now
    scheduled: int  # todo, but not before a later time (retries, delays)
    doing: int
    failed: int
    oldest_ready_age_s: float | None


def queue_stats() -> list[QueueStats]:
    """Per queue: ready, scheduled, running and failed jobs, and the age of the
    oldest ready job (from its ``deferred`` event). One query."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT j.queue_name,
                   count(*) FILTER (WHERE j.status = 'todo'
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())),
                   count(*) FILTER (WHERE j.status = 'todo'
                       AND j.scheduled_at > now()),
                   count(*) FILTER (WHERE j.status = 'doing'),
                   count(*) FILTER (WHERE j.status = 'failed'),
                   extract(epoch FROM now() - min(
                       coalesce(j.scheduled_at, e.at)) FILTER (
                       WHERE j.status = 'todo'
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())))
            FROM procrastinate_jobs j
            LEFT JOIN LATERAL (
                SELECT min(at) AS at FROM procrastinate_events
                WHERE job_id = j.id AND type = 'deferred'
            ) e ON j.status = 'todo'
            WHERE j.status IN ('todo', 'doing', 'failed')
            GROUP BY j.queue_name
            ORDER BY j.queue_name
            """
        )
        rows = cursor.fetchall()
    found = {
        row[0]: QueueStats(
            queue=row[0],
            todo=row[1],
            scheduled=row[2],
            doing=row[3],
            failed=row[4],
            oldest_ready_age_s=float(row[5]) if row[5] is not None else None,
        )
        for row in rows
    }
    for queue in STAGE_QUEUES:
        found.setdefault(queue, QueueStats(queue, 0, 0, 0, 0, None))
    return sorted(found.values(), key=lambda stats: stats.queue)


@dataclass(frozen=True)
class LiveWorker:
    worker_id: int
    heartbeat_age_s: float
    name: str
    host: str
    pid: int | None
    queues: tuple[str, ...] | None  # None: not known yet (no job run); (): all

    def serves(self, queue: str) -> bool:
        return self.queues is None or not self.queues or queue in self.queues


def live_workers(*, stalled_after_s: float | None = None) -> list[LiveWorker]:
    """Workers whose heartbeat is fresher than ``stalled_after_s``."""
    from procrastinate.contrib.django.models import ProcrastinateWorker

    from fulfillment.models import WorkerPresence

    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    now = timezone.now()
    workers = list(
        ProcrastinateWorker.objects.filter(
            last_heartbeat__gte=now - dt.timedelta(seconds=limit)
        ).order_by("id")
    )
    presence = {
        p.worker_id: p
        for p in WorkerPresence.objects.filter(worker_id__in=[w.id for w in workers])
    }
    result = []
    for worker in workers:
        known = presence.get(worker.id)
        result.append(
            LiveWorker(
                worker_id=worker.id,
                heartbeat_age_s=(now - worker.last_heartbeat).total_seconds(),
                name=known.name if known else "",
                host=known.host if known else "",
                pid=known.pid if known else None,
                queues=tuple(known.queues) if known else None,
            )
        )
    return result


def stalled_jobs_count(*, stalled_after_s: float | None = None) -> int:
    """Jobs in ``doing`` whose worker is gone or silent (what rescue retries)."""
    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM procrastinate_jobs j
            LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
            WHERE j.status = 'doing'
              AND (w.id IS NULL
                   OR w.last_heartbeat < now() - make_interval(secs => %s))
            """,
            [limit],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class FailedJobGroup:
    task_name: str
    error: str  # exception type and message shape (digits and ids masked)
    count: int
    last_seen: dt.datetime
    job_ids: tuple[int, ...]


def failed_job_groups(*, limit: int = 20) -> list[FailedJobGroup]:
    """Failed jobs grouped by task and error shape, most recent first."""
    # One read of ids and names: a prune between two reads must not break this.
    tasks: dict[int, str] = dict(
        ProcrastinateJob.objects.filter(status="failed").values_list("id", "task_name")
    )
    failed_ids = list(tasks)
    latest: dict[int, JobFailure] = {}
    for recorded in JobFailure.objects.filter(job_id__in=failed_ids).order_by(
        "failed_at"
    ):
        latest[recorded.job_id] = recorded
    failed_at: dict[int, dt.datetime] = dict(
        ProcrastinateEvent.objects.filter(job_id__in=failed_ids, type="failed")
        .values("job_id")
        .annotate(at=Max("at"))
        .values_list("job_id", "at")
    )
    groups: dict[tuple[str, str], list[tuple[int, dt.datetime | None]]] = {}
    for job_id in failed_ids:
        failure = latest.get(job_id)
        shape = (
            f"{failure.error_type}: {error_shape(failure.error_message)}"
            if failure
            else "error not recorded"
        )
        groups.setdefault((tasks[job_id], shape), []).append(
            (job_id, failed_at.get(job_id) or (failure.failed_at if failure else None))
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    result = [
        FailedJobGroup(
            task_name=task,
            error=shape,
            count=len(members),
            last_seen=max((at or epoch) for _, at in members),
            job_ids=tuple(sorted(job_id for job_id, _ in members)),
        )
        for (task, shape), members in groups.items()
    ]
    result.sort(key=lambda group: group.last_seen, reverse=True)
    return result[:limit]


_ID_PATTERN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\b(?:pi|evt|ch|cus)_[A-Za-z0-9]+|\d+(?:\.\d+)?",
    re.IGNORECASE,
)


def error_shape(message: str) -> str:
    """The message with ids and numbers masked, so equal errors group together."""
    return _ID_PATTERN.sub("…", message)[:200]


def purchases_stuck(*, older_than: dt.timedelta) -> QuerySet[Purchase]:
    """Purchases still waiting for allocation after ``older_than``."""
    return Purchase.objects.filter(
        status=Purchase.Status.ALLOCATION_PENDING,
        created_at__lt=timezone.now() - older_than,
    ).order_by("created_at")


def payments_needing_attention() -> QuerySet[Payment]:
    """Payments whose metadata could not become a purchase, still unresolved."""
    return Payment.objects.filter(
        purchase__isnull=True, status=Payment.Status.SUCCEEDED
    ).exclude(attention_reason="")
