"""Deferring jobs inside the caller's transaction.

procrastinate's Django connector writes the job row on Django's connection, so a
job deferred inside ``transaction.atomic()`` commits or rolls back with the rows
that call for it. But ``manage.py procrastinate worker`` swaps the app's connector
for a pooled one process-wide, so a plain ``task.defer()`` from inside a running
task would commit on its own, before (or without) the task's writes. Every defer in
this project therefore goes through ``defer()`` below, which always uses a job
manager bound to Django's connection, in the web process and in workers alike.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from procrastinate import exceptions, jobs, manager, types
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.tasks import Task

job_manager = manager.JobManager(DjangoConnector())


def defer(
    task: Task[..., Any, Any],
    *,
    queueing_lock: str | None = None,
    schedule_in: dict[str, int] | None = None,
    **task_kwargs: types.JSONValue,
) -> int | None:
    """Insert a job for ``task`` on Django's connection and return its id.

    With a ``queueing_lock`` (given here or declared on the task), a job already
    waiting under that lock makes this a no-op returning ``None``. The insert
    then runs in a savepoint: the unique violation behind ``AlreadyEnqueued``
    would otherwise abort the caller's whole transaction.
    """
    queueing_lock = queueing_lock or task.queueing_lock
    options: dict[str, Any] = {}
    if queueing_lock is not None:
        options["queueing_lock"] = queueing_lock
    if schedule_in is not None:
        options["schedule_in"] = schedule_in
    job = task.configure(**options).job
    deferrer = jobs.JobDeferrer(job_manager=job_manager, job=job)
    if queueing_lock is None:
        return deferrer.defer(**task_kwargs)
    try:
        with transaction.atomic():
            return deferrer.defer(**task_kwargs)
    except exceptions.AlreadyEnqueued:
        return None
