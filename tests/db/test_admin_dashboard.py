"""The ops dashboard, module by module, as an Operations user sees it."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from fulfillment.models import JobFailure, Payment, Purchase, WorkerPresence
from fulfillment.services.allocation import purchase_allocate
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import buy, jobs, sign_in, waitlisted

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]


def dashboard(client: Client) -> str:
    response = client.get("/admin/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def module(page: str, title: str) -> str:
    """The HTML of the dashboard module whose title starts with ``title``."""
    for chunk in page.split('<div id="module_')[1:]:
        heading = re.search(r"<h2>(?:<a [^>]*>)?([^<]*)", chunk)
        if heading and heading.group(1).startswith(title):
            return chunk
    raise AssertionError(f"no module {title!r} on the dashboard")


def live_worker(*queues: str) -> int:
    """A worker whose heartbeat is fresh, serving ``queues`` (none: all)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())"
            " RETURNING id"
        )
        worker_id: int = cursor.fetchone()[0]
    WorkerPresence.objects.create(
        worker_id=worker_id, name="worker-a", host="box", pid=4242, queues=list(queues)
    )
    return worker_id


def fail(job_id: int, error_type: str, message: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed', attempts = 1"
            " WHERE id = %s",
            [job_id],
        )
    task = jobs(id=job_id)[0].task_name
    JobFailure.objects.create(
        job_id=job_id,
        task_name=task,
        attempt=1,
        error_type=error_type,
        error_message=message,
    )


# --- pending allocations ----------------------------------------------------------


def test_waiting_purchases_are_listed_urgent_first_with_the_reason_and_links(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    first = waitlisted(signed_post, course, student_name="Ira Old")
    # Waiting counts from the payment, not from when the purchase was recorded.
    Payment.objects.filter(pk=first.payment_id).update(
        created_at=timezone.now() - dt.timedelta(hours=3)
    )
    # Paid later, but starts earlier on the same day: it comes first.
    second = buy(signed_post, course, student_name="Kabir New", time_slot="10:30")
    sign_in(client, "Operations")

    pending = module(dashboard(client), "Pending allocations")

    assert "Pending allocations (2)" in pending
    assert pending.index("Kabir New") < pending.index("Ira Old")
    assert "3 h" in pending
    assert "No trainer teaches Robotics: add one to the catalogue." in pending
    assert "Monday to Friday 10:30" in pending
    assert f"/admin/fulfillment/purchase/{first.pk}/change/" in pending
    assert f"/admin/fulfillment/purchase/{first.pk}/assign-trainer/" in pending
    assert f"/admin/fulfillment/purchase/{second.pk}/retry-allocation/" in pending


def test_a_pending_purchase_nobody_can_process_says_so_in_red(
    client: Client, signed_post: SignedPost
) -> None:
    buy(signed_post, helpers.course())
    live_worker("sessions", "cache")
    sign_in(client, "Operations")

    pending = module(dashboard(client), "Pending allocations")

    assert re.search(
        r'class="ops-alarm">No live worker serves the allocation queue', pending
    )


def test_a_pending_purchase_whose_job_failed_shows_the_error(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    fail(job.id, "OperationalError", "server closed the connection unexpectedly")
    live_worker()
    sign_in(client, "Operations")

    pending = module(dashboard(client), "Pending allocations")

    assert (
        "The allocation job failed after 1 attempt(s). Last error: "
        "OperationalError: server closed the connection unexpectedly"
    ) in pending


def test_a_pending_purchase_with_a_worker_ready_is_just_queued(
    client: Client, signed_post: SignedPost
) -> None:
    buy(signed_post, helpers.course())
    live_worker()
    sign_in(client, "Operations")

    pending = module(dashboard(client), "Pending allocations")

    assert "Its allocation job is queued; a worker will pick it up shortly." in pending
    assert "ops-alarm" not in pending


def test_nothing_waiting_is_said_plainly(client: Client) -> None:
    sign_in(client, "Operations")

    assert "Nothing is waiting for a trainer." in dashboard(client)


# --- needs attention --------------------------------------------------------------


def test_payments_that_need_attention_show_the_reason_and_the_fix(
    client: Client, signed_post: SignedPost
) -> None:
    event = stripe_events.payment_intent_succeeded(
        metadata=helpers.metadata_for(course=helpers.course(), time_slot="25:00")
    )
    signed_post(event)
    payment_intent = event["data"]["object"]["id"]
    sign_in(client, "Operations")

    attention = module(dashboard(client), "Payments that need attention")

    assert "Payments that need attention (1)" in attention
    assert payment_intent in attention
    assert "time_slot:" in attention
    assert "4,999.00 INR" in attention
    assert "/reprocess/" in attention


# --- failed jobs ------------------------------------------------------------------


def test_failed_jobs_are_grouped_by_task_and_error_with_a_link_and_a_retry(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    job_ids = []
    for name in ("A", "B"):
        purchase = buy(signed_post, course, student_name=name)
        [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
        fail(job.id, "PurchaseNotFound", f"purchase {purchase.pk} does not exist")
        job_ids.append(job.id)
    sign_in(client, "Operations")

    failed = module(dashboard(client), "Failed jobs")

    assert "Failed jobs (2)" in failed
    assert "allocate_trainer" in failed
    assert "PurchaseNotFound: purchase … does not exist" in failed
    assert (
        "/admin/procrastinate/procrastinatejob/?id__in="
        + "%2C".join(map(str, sorted(job_ids)))
    ) in failed
    assert 'action="/admin/fulfillment/jobfailure/retry/"' in failed
    for job_id in job_ids:
        assert f'name="job" value="{job_id}"' in failed
    assert "Retry 2" in failed


# --- workers and queues -----------------------------------------------------------


def test_no_live_worker_is_a_red_warning(client: Client) -> None:
    sign_in(client, "Operations")

    workers = module(dashboard(client), "Workers")

    assert "Workers (0 alive)" in workers
    assert re.search(r'class="ops-alert">No worker is alive', workers)


def test_a_queue_with_work_and_nobody_serving_it_is_a_red_warning(
    client: Client, signed_post: SignedPost
) -> None:
    buy(signed_post, helpers.course())
    live_worker("sessions", "cache")
    sign_in(client, "Operations")

    workers = module(dashboard(client), "Workers")

    assert "Workers (1 alive)" in workers
    assert re.search(
        r'class="ops-alert">Queue allocation has 1 job\(s\) and no live worker', workers
    )
    assert "worker-a" in workers
    assert "box:4242" in workers
    assert "sessions, cache" in workers or "cache, sessions" in workers
    assert " s ago" in workers


def test_queues_show_ready_doing_failed_and_the_oldest_wait(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    buy(signed_post, helpers.course())
    fail(job.id, "RuntimeError", "boom")
    sign_in(client, "Operations")

    queues = module(dashboard(client), "Queues")

    row = re.search(r"allocation</a></td>(.*?)</tr>", queues, re.DOTALL)
    assert row
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[:4] == ["1", "0", "0", "1"]  # ready, later, doing, failed
    assert cells[4].endswith(" s")


# --- today ------------------------------------------------------------------------


def test_today_counts_the_payments_and_what_became_of_them(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course], max_active_students=1)
    allocated = buy(signed_post, course, time_slot="10:00")
    purchase_allocate(purchase_id=allocated.pk, actor="test")
    Purchase.objects.filter(pk=allocated.pk).update(
        allocated_at=allocated.payment.created_at + dt.timedelta(seconds=90)
    )
    waitlisted(signed_post, course)
    buy(signed_post, course)
    signed_post(
        stripe_events.payment_intent_succeeded(
            metadata=helpers.metadata_for(course=course, total_sessions="7")
        )
    )
    sign_in(client, "Operations")

    today = module(dashboard(client), "Today")

    figures = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", today))
    assert figures == {
        "Payments received": "4",
        "Allocated": "1",
        "Waitlisted": "1",
        "Still pending": "1",
        "Need attention": "1",
        "Median payment → allocation": "1 min",
    }


def test_a_failed_job_without_a_recorded_error_is_still_listed(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job.id]
        )
    sign_in(client, "Operations")

    failed = module(dashboard(client), "Failed jobs")

    assert "error not recorded" in failed
    assert "unknown" in failed
    assert "Retry 1" in failed
