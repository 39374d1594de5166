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

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from procrastinate import exceptions, jobs, manager, tasks, types
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector
from psycopg.types.json import Jsonb

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
    task = _registered(task_name)
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


@dataclass(frozen=True)
class Deferral:
    """A job as a SQL expression for the caller's own statement: ``sql`` (the
    new job's id) with its ``params`` in order, for ``%s`` placeholders."""

    sql: str
    params: tuple[Any, ...]

    def named(self, prefix: str = "job") -> tuple[str, dict[str, Any]]:
        """The same with ``%(name)s`` placeholders, for a statement that
        names its parameters."""
        keys = [f"{prefix}_{index}" for index in range(len(self.params))]
        sql = self.sql % tuple(f"%({key})s" for key in keys)
        return sql, dict(zip(keys, self.params, strict=True))


def deferral(task_name: str, **task_kwargs: types.JSONValue) -> Deferral:
    """The job ``defer(task_name, ...)`` would insert, as an expression a stage
    puts in the statement that writes its data: one round trip fewer, and the
    job exists exactly when that statement's rows do (select it ``FROM`` them).

    The same row as procrastinate's own ``defer_jobs`` query (its function,
    with the registered task's queue, priority and lock), so its triggers and
    NOTIFY fire as for any job. Not for a task with a queueing lock: a job
    already waiting under it would fail the caller's whole statement.
    """
    task = _registered(task_name)
    if task.queueing_lock is not None:
        raise ValueError(
            f"{task_name!r} has a queueing lock: defer it with queue.defer()"
        )
    job = jobs.JobDeferrer(job_manager=job_manager, job=task.configure().job)
    new = job.make_new_job(**task_kwargs)
    return Deferral(
        sql=(
            "(procrastinate_defer_jobs_v1(ARRAY[(%s, %s, %s, %s, NULL, %s, %s)"
            "::procrastinate_job_to_defer_v1]))[1]"
        ),
        params=(
            new.queue,
            new.task_name,
            new.priority,
            new.lock,
            Jsonb(new.task_kwargs),
            new.scheduled_at,
        ),
    )


def _registered(task_name: str) -> tasks.Task[Any, Any, Any]:
    task = app.tasks.get(task_name)
    if task is None:
        app.perform_import_paths()  # type: ignore[no-untyped-call]  # not loaded yet
        task = app.tasks.get(task_name)
    if task is None:
        raise exceptions.TaskNotFound(f"no task is registered as {task_name!r}")
    return task


def execute(query: str, **arguments: object) -> None:
    """Run one statement of procrastinate's schema on Django's connection (in
    the caller's transaction)."""
    job_manager.connector.get_sync_connector().execute_query(query, **arguments)
