"""procrastinate task middleware: keep the error of every failed attempt.

Imported by settings, so nothing here may import models at module level.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connection

if TYPE_CHECKING:
    from procrastinate import job_context, worker
    from procrastinate.middleware import SyncCallNext

logger = logging.getLogger(__name__)

_WORKER = f"{socket.gethostname()}:{os.getpid()}"


def record_job_failure(
    call_next: SyncCallNext,
    context: job_context.JobContext,
    worker: worker.Worker,
) -> Any:
    """Run the task; if it raises, store the error in its own transaction (the
    task's transaction has already rolled back) and re-raise."""
    try:
        return call_next()
    except Exception as error:
        _record(context, error)
        raise


def _record(context: job_context.JobContext, error: Exception) -> None:
    from fulfillment.models import JobFailure

    job = context.job
    purchase_id = job.task_kwargs.get("purchase_id")
    try:
        if connection.in_atomic_block:
            return  # Not ours to commit; the caller's own error handling applies.
        JobFailure.objects.create(
            job_id=job.id or 0,
            task_name=job.task_name,
            attempt=job.attempts + 1,
            worker=f"{context.worker_name or ''}@{_WORKER}",
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
