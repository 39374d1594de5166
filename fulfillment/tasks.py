"""procrastinate tasks: queue, retry policy and coalescing only.

Each task takes ids and calls one service. Business rules live in services.
Transient database errors (connection lost, deadlock, serialization failure) are
retried with exponential backoff; domain errors (``FulfillmentError``) fail the
job at once, visibly: failed jobs are the dead-letter queue.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, close_old_connections
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from fulfillment import queue
from fulfillment.queue import names
from fulfillment.services import allocation, cache, maintenance, sessions

logger = logging.getLogger(__name__)

# 2, 4, 8 ... 256 s between attempts: about 8.5 minutes in all, enough to ride out
# a PostgreSQL restart or failover.
TRANSIENT_RETRY = RetryStrategy(
    max_attempts=8,
    exponential_wait=2,
    retry_exceptions={OperationalError, InterfaceError},
)


@app.task(queue=names.ALLOCATION_QUEUE, retry=TRANSIENT_RETRY)
def allocate_trainer(purchase_id: str) -> None:
    """Stage 2: allocate a trainer, then defer the sessions stage."""
    allocation.purchase_allocate(
        purchase_id=uuid.UUID(purchase_id), actor="allocate_trainer"
    )


@app.task(queue=names.SESSIONS_QUEUE, retry=TRANSIENT_RETRY)
def materialise_sessions(purchase_id: str) -> None:
    """Stage 3: materialise the rolling window of sessions."""
    sessions.sessions_materialise(purchase_id=uuid.UUID(purchase_id))


# Below the pipeline's own stages: a refresh only warms a cache that readers fill
# themselves on a miss, so under a burst the stages that get a parent their
# trainer and sessions go first, and a refresh that waits longer coalesces more.
CACHE_PRIORITY = -10


@app.task(queue=names.CACHE_QUEUE, priority=CACHE_PRIORITY)
def refresh_learnings(student_id: str) -> None:
    """Stage 4: re-warm the student's cached learnings.

    Deferred with a queueing lock (one waiting refresh per student), so it must not
    use procrastinate's retry: retrying a job whose lock is held by a waiting twin
    leaves it stuck in ``doing`` (procrastinate #1446). A transient failure
    instead defers a fresh refresh for later; a waiting twin makes that a no-op.
    """
    try:
        cache.learnings_refresh(student_id=uuid.UUID(student_id))
    except (OperationalError, InterfaceError):
        logger.warning("learnings refresh postponed", extra={"student_id": student_id})
        _once_the_database_answers(
            lambda: cache.learnings_refresh_defer(
                student_id=uuid.UUID(student_id), schedule_in={"seconds": 10}
            )
        )


@app.periodic(cron="*/5 * * * *", periodic_id="reallocate_waitlist")
@app.task(queue=names.ALLOCATION_QUEUE, queueing_lock="reallocate_waitlist")
def reallocate_waitlist(timestamp: int | None = None) -> None:
    """Try the waitlisted purchases again: every few minutes, and whenever the
    catalogue changes or a refund frees a trainer."""
    try:
        allocation.waitlist_reallocate(actor="reallocate_waitlist")
    except (OperationalError, InterfaceError):
        # Same reasoning as refresh_learnings: no procrastinate retry with a
        # queueing lock; the next trigger or tick tries again.
        logger.warning("waitlist retry postponed")
        _once_the_database_answers(
            lambda: queue.defer(names.REALLOCATE_WAITLIST, schedule_in={"seconds": 30})
        )


# 1 + 2 + 4 + 8 + 16 s: a PostgreSQL restart takes a few seconds.
POSTPONE_WAITS_S = (1.0, 2.0, 4.0, 8.0, 16.0)


def _once_the_database_answers(defer_later: Callable[[], object]) -> None:
    """Defer the postponed job as soon as the database answers again.

    The failure that made us postpone is usually the database going away, and
    then the defer fails too: the job would end ``failed`` with its work never
    redone. So wait a little (the job's worker slot is of no use meanwhile) and
    give up, failing the job for an operator to see, only after about 30 s.
    """
    for wait in (*POSTPONE_WAITS_S, None):
        try:
            defer_later()
            return
        except (OperationalError, InterfaceError):
            if wait is None:
                raise
            close_old_connections()  # drop the broken connection, reconnect next
            time.sleep(wait)


@app.periodic(cron="*/10 * * * *", periodic_id="top_up_session_windows")
@app.task(queue=names.SESSIONS_QUEUE, queueing_lock="top_up_session_windows")
def top_up_session_windows(timestamp: int) -> None:
    """Complete passed sessions and keep every window at its size."""
    sessions.session_windows_top_up()


# --- maintenance: nothing silently stuck ---------------------------------------
# Periodic jobs carry a queueing lock so ticks never pile up; for the reason given
# in refresh_learnings they do not use procrastinate's retry (the next tick is the
# retry). They run ahead of any backlog (workers fetch by priority, then age):
# rescuing and healing matter most when the queue is deep.
MAINTENANCE_PRIORITY = 100


# croniter reads a sixth field as seconds: "* * * * * */5" is every 5 s.
@app.periodic(cron="* * * * * */5", periodic_id="rescue_stalled_jobs")
@app.task(
    queue=names.MAINTENANCE_QUEUE,
    queueing_lock="rescue_stalled_jobs",
    priority=MAINTENANCE_PRIORITY,
)
def rescue_stalled_jobs(timestamp: int) -> None:
    """Every 5 s: requeue jobs whose worker stopped beating (SIGKILL, OOM, lost
    machine). With 2 s heartbeats and 10 s to be declared stalled, such a job
    runs again on another worker within about 17 s."""
    maintenance.stalled_jobs_rescue()


@app.periodic(cron="* * * * *", periodic_id="reconcile_invariants")
@app.task(
    queue=names.MAINTENANCE_QUEUE,
    queueing_lock="reconcile_invariants",
    priority=MAINTENANCE_PRIORITY,
)
def reconcile_invariants(timestamp: int) -> None:
    """Every minute: heal purchases whose next job or sessions went missing."""
    maintenance.invariants_reconcile()


@app.periodic(cron="17 * * * *", periodic_id="prune_finished_jobs")
@app.task(
    queue=names.MAINTENANCE_QUEUE,
    queueing_lock="prune_finished_jobs",
    priority=MAINTENANCE_PRIORITY,
)
def prune_finished_jobs(timestamp: int) -> None:
    """Hourly: drop succeeded jobs after 3 days and failed ones after 30."""
    maintenance.jobs_prune(succeeded_after_hours=72, failed_after_hours=720)
