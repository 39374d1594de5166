"""procrastinate task middleware: who runs what, and why it failed.

Records the worker's presence (its queues, host and pid, which procrastinate does
not keep) at most every ``PRESENCE_EVERY_S`` per process, and the error of every
failed attempt (procrastinate keeps no error text).

Installed by ``fulfillment.queue.worker.on_app_ready``, once the models are
loaded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connection
from django.utils import timezone

from fulfillment.models import JobFailure, WorkerPresence

if TYPE_CHECKING:
    from procrastinate import job_context, worker
    from procrastinate.middleware import SyncCallNext

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()
PRESENCE_EVERY_S = 5.0
_presence_lock = threading.Lock()
_presence_seen: dict[int, float] = {}


def record_job_failure(
    call_next: SyncCallNext,
    context: job_context.JobContext,
    worker: worker.Worker,
) -> Any:
    """Run the task; if it raises, store the error in its own transaction (the
    task's transaction has already rolled back) and re-raise."""
    _record_presence(context)
    try:
        return call_next()
    except Exception as error:
        _record(context, error)
        raise


def _record(context: job_context.JobContext, error: Exception) -> None:
    job = context.job
    purchase_id = job.task_kwargs.get("purchase_id")
    try:
        if connection.in_atomic_block:
            return  # Not ours to commit; the caller's own error handling applies.
        JobFailure.objects.create(
            job_id=job.id or 0,
            task_name=job.task_name,
            attempt=job.attempts + 1,
            worker=f"{context.worker_name or ''}@{_HOST}:{os.getpid()}",
            error_type=type(error).__name__,
            error_message=str(error)[:2000],
            purchase_id=uuid.UUID(purchase_id)
            if isinstance(purchase_id, str)
            else None,
        )
    except (DatabaseError, ValueError):
        # The database may be the reason the task failed; the job's own status
        # still tells the story.
        logger.warning("could not record job failure", extra={"job_id": job.id})


def _record_presence(context: job_context.JobContext) -> None:
    worker_id = context.job.worker_id
    if worker_id is None:
        return
    now = time.monotonic()
    with _presence_lock:
        if now - _presence_seen.get(worker_id, -PRESENCE_EVERY_S) < PRESENCE_EVERY_S:
            return
        _presence_seen[worker_id] = now
    try:
        WorkerPresence.objects.update_or_create(
            worker_id=worker_id,
            defaults={
                "name": context.worker_name or "",
                "host": _HOST,
                "pid": os.getpid(),
                "queues": sorted(context.worker_queues or []),
                "seen_at": timezone.now(),
            },
        )
    except DatabaseError:
        logger.warning("could not record worker presence", extra={"worker": worker_id})
