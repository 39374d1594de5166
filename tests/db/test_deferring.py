"""``queue.deferral``: a job written inside a stage's own statement is the same
row procrastinate's ``defer`` writes, and exists only with that statement's rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from fulfillment import queue
from fulfillment.queue import names

pytestmark = pytest.mark.django_db

COLUMNS = (
    "queue_name, task_name, priority, lock, queueing_lock, args, status, "
    "scheduled_at, attempts"
)


def job_row(job_id: int) -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {COLUMNS} FROM procrastinate_jobs WHERE id = %s",  # noqa: S608
            [job_id],
        )
        row: tuple[Any, ...] | None = cursor.fetchone()
    assert row is not None
    return row


def test_an_inline_job_is_the_row_defer_writes() -> None:
    deferred = queue.defer(names.MATERIALISE_SESSIONS, purchase_id="p-1")
    job = queue.deferral(names.MATERIALISE_SESSIONS, purchase_id="p-1")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {job.sql}", job.params)
        (inline,) = cursor.fetchone() or (None,)

    assert deferred is not None and inline is not None and inline != deferred
    assert job_row(inline) == job_row(deferred)
    assert job_row(inline)[:3] == (
        "sessions",
        "fulfillment.tasks.materialise_sessions",
        0,
    )


def test_an_inline_job_is_written_only_with_the_rows_it_is_selected_from() -> None:
    job = queue.deferral(names.ALLOCATE_TRAINER, purchase_id="p-2")
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH nothing AS (SELECT 1 WHERE false) SELECT {job.sql} FROM nothing",  # noqa: S608
            job.params,
        )
        assert cursor.fetchall() == []
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE args = %s::jsonb",
            ['{"purchase_id": "p-2"}'],
        )
        assert cursor.fetchone() == (0,)


def test_a_task_with_a_queueing_lock_cannot_be_inlined() -> None:
    with pytest.raises(ValueError, match="queueing lock"):
        queue.deferral(names.REALLOCATE_WAITLIST)
