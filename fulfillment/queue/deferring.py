"""Deferring jobs by task name, inside the caller's transaction.

procrastinate's Django connector writes the job row on Django's connection, so a
job deferred inside ``transaction.atomic()`` commits or rolls back with the rows
that call for it. But ``manage.py procrastinate worker`` swaps the app's connector
for a pooled one process-wide, so a plain ``task.defer()`` from inside a running
task would commit on its own, before (or without) the task's writes. Every defer in
this project therefore goes through ``defer()`` below, which always uses a job
manager bound to Django's connection, in the web process and in workers alike.

Services defer the next stage by its name (``fulfillment.queue.names``): the
registered task's queue, priority, queueing lock and retry policy apply, and no
service imports ``fulfillment.tasks`` (which imports the services).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from procrastinate import exceptions, jobs, manager, types
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector

# The one job manager on Django's connection: defers here, procrastinate's own
# SQL in the maintenance services (``execute``), operators' retries; each commits
# with the caller's transaction.
job_manager = manager.JobManager(DjangoConnector())


def defer(
    task_name: str,
    *,
    queueing_lock: str | None = None,
    schedule_in: dict[str, int] | None = None,
    **task_kwargs: types.JSONValue,
) -> int | None:
    """Insert a job for the task registered as ``task_name`` on Django's
    connection and return its id.

    With a ``queueing_lock`` (given here or declared on the task), a job already
    waiting under that lock makes this a no-op returning ``None``. The insert
    then runs in a savepoint: the unique violation behind ``AlreadyEnqueued``
    would otherwise abort the caller's whole transaction. An unknown name raises
    ``procrastinate.exceptions.TaskNotFound``: a job no worker could run is
    never written.
    """
    task = app.tasks.get(task_name)
    if task is None:
        app.perform_import_paths()  # type: ignore[no-untyped-call]  # not loaded yet
        task = app.tasks.get(task_name)
    if task is None:
        raise exceptions.TaskNotFound(f"no task is registered as {task_name!r}")
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


def execute(query: str, **arguments: object) -> None:
    """Run one statement of procrastinate's schema on Django's connection (in
    the caller's transaction)."""
    job_manager.connector.get_sync_connector().execute_query(query, **arguments)
