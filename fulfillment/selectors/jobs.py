"""The job queue as operators see it: queues, stalled and failed jobs
(``/healthz``, ``/metrics``, ``manage.py doctor`` and the dashboard)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Max
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from fulfillment.models import JobFailure
from fulfillment.queue import names

# Jobs in ``doing`` whose worker is gone or has not beaten for %s seconds: what
# the rescue sweep retries and what health counts. FROM/WHERE, ``j`` the job.
STALLED_JOBS = """
    FROM procrastinate_jobs j
    LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
    WHERE j.status = 'doing'
      AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %s))
"""


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
    for queue in names.STAGE_QUEUES:
        found.setdefault(queue, QueueStats(queue, 0, 0, 0, 0, None))
    return sorted(found.values(), key=lambda stats: stats.queue)


def stalled_jobs_count(*, stalled_after_s: float | None = None) -> int:
    """Jobs in ``doing`` whose worker is gone or silent (what rescue retries)."""
    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {STALLED_JOBS}", [limit])
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
