"""procrastinate's job pages in the console: every action checks the acting
permission, and only failed jobs can be retried (#12 item 8)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from fulfillment import queue
from fulfillment.queue import names
from tests.helpers import jobs, sign_in

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:procrastinate_procrastinatejob_changelist")


def job_in(status: str) -> int:
    job_id = queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(uuid.uuid4()))
    assert job_id is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, job_id]
        )
    return job_id


def status_of(job_id: int) -> str:
    return next(job.status for job in jobs() if job.id == job_id)


def act(client: Client, action: str, *job_ids: int) -> None:
    client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(job_id) for job_id in job_ids]},
    )


@pytest.mark.parametrize("action", ["retry_failed", "cancel_waiting", "abort_jobs"])
def test_support_can_look_at_jobs_but_no_action_changes_one(
    client: Client, action: str
) -> None:
    sign_in(client, "Support")
    waiting, running, failed = job_in("todo"), job_in("doing"), job_in("failed")

    page = client.get(CHANGELIST)
    act(client, action, waiting, running, failed)

    assert page.status_code == 200
    assert b'name="action"' not in page.content  # no action offered at all
    assert [status_of(j) for j in (waiting, running, failed)] == [
        "todo",
        "doing",
        "failed",
    ]


def test_operations_retries_only_failed_jobs_never_a_running_one(
    client: Client,
) -> None:
    sign_in(client, "Operations")
    running, failed, succeeded = job_in("doing"), job_in("failed"), job_in("succeeded")

    act(client, "retry_failed", running, failed, succeeded)

    assert [status_of(j) for j in (running, failed, succeeded)] == [
        "doing",
        "todo",
        "succeeded",
    ]


def test_operations_cancels_waiting_jobs_and_aborts_running_ones(
    client: Client,
) -> None:
    sign_in(client, "Operations")
    waiting, running, failed = job_in("todo"), job_in("doing"), job_in("failed")

    act(client, "cancel_waiting", waiting, running, failed)
    after_cancel = [status_of(j) for j in (waiting, running, failed)]
    act(client, "abort_jobs", running)

    assert after_cancel == ["cancelled", "doing", "failed"]
    abort_requested = next(job.abort_requested for job in jobs() if job.id == running)
    assert abort_requested is True
