"""Nothing silently stuck: stalled-job rescue, the sweeper, graceful shutdown,
retention (issue: workers not running, events lost, marked done too early)."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from fulfillment import queue, tasks
from fulfillment.models import Purchase, TraceEvent
from fulfillment.queue import names
from fulfillment.services import cache
from fulfillment.services.maintenance import (
    invariants_reconcile,
    jobs_prune,
    stalled_jobs_rescue,
)
from tests import helpers
from tests.helpers import WorkerProcess, database_url_for_tests, jobs, pay, wait_until


@pytest.fixture
def purchase_row_lock() -> Iterator[Callable[[str], threading.Event]]:
    """Hold ``SELECT ... FOR UPDATE`` on a purchase from another connection, so the
    allocation job blocks mid-run, until the returned event is set."""
    releases: list[threading.Event] = []
    threads: list[threading.Thread] = []

    def hold(purchase_id: str) -> threading.Event:
        locked, release = threading.Event(), threading.Event()

        def run() -> None:
            url = database_url_for_tests()
            with psycopg.connect(url) as conn, conn.transaction():
                conn.execute(
                    "SELECT 1 FROM fulfillment_purchase WHERE id = %s FOR UPDATE",
                    [purchase_id],
                )
                locked.set()
                release.wait(timeout=60)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert locked.wait(timeout=10)
        releases.append(release)
        threads.append(thread)
        return release

    yield hold
    for release in releases:
        release.set()
    for thread in threads:
        thread.join(timeout=10)


def _job_doing(task: str) -> bool:
    return any(job.status == "doing" for job in jobs(task))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_allocation_of_a_sigkilled_worker_finishes_on_another_worker_within_30s(
    worker_process: Callable[..., WorkerProcess],
    purchase_row_lock: Callable[[str], threading.Event],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    release = purchase_row_lock(purchase_id)
    doomed = worker_process("--queues", "allocation")
    wait_until(lambda: _job_doing("allocate_trainer"), timeout=20, what="job start")

    doomed.kill()  # SIGKILL in the middle of the allocation
    killed_at = time.monotonic()
    release.set()
    worker_process()  # a healthy worker on every queue, running the rescue

    wait_until(
        lambda: Purchase.objects.get(pk=purchase_id).status == "allocated",
        timeout=30,
        what="another worker to finish the allocation",
    )
    rescue_seconds = time.monotonic() - killed_at
    print(f"rescued after SIGKILL in {rescue_seconds:.1f}s")
    assert rescue_seconds < 30
    [job] = jobs("allocate_trainer")
    assert job.status == "succeeded"
    assert job.attempts == 2


@pytest.mark.django_db
def test_rescue_requeues_a_job_whose_worker_is_gone() -> None:
    job_id = queue.defer(names.ALLOCATE_TRAINER, purchase_id="x")
    _start_job_without_worker(job_id)

    report = stalled_jobs_rescue()

    assert report.retried == [job_id]
    [job] = jobs("allocate_trainer")
    assert job.status == "todo"


@pytest.mark.django_db
def test_rescue_aborts_a_stalled_job_whose_queueing_lock_a_waiting_twin_holds() -> None:
    # procrastinate #1446: retrying it would violate the queueing lock's index.
    stalled = queue.defer(
        names.REFRESH_LEARNINGS, queueing_lock="learnings:s1", student_id="s1"
    )
    _start_job_without_worker(stalled)
    twin = queue.defer(
        names.REFRESH_LEARNINGS, queueing_lock="learnings:s1", student_id="s1"
    )

    report = stalled_jobs_rescue()

    assert report.superseded == [stalled]
    assert {job.id: job.status for job in jobs("refresh_learnings")} == {
        stalled: "aborted",
        twin: "todo",
    }


@pytest.mark.django_db
def test_rescue_leaves_jobs_of_live_workers_alone() -> None:
    job_id = queue.defer(names.ALLOCATE_TRAINER, purchase_id="x")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        (worker_id,) = cursor.fetchone()
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
            "WHERE id = %s",
            [worker_id, job_id],
        )

    assert stalled_jobs_rescue().retried == []


@pytest.mark.django_db(transaction=True)
def test_sweeper_redefers_an_allocation_job_deleted_by_hand(
    run_worker: Callable[..., None],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM procrastinate_jobs WHERE task_name LIKE %s",
            ["%allocate_trainer"],
        )

    # Too young to judge: the purchase may simply not have been picked up yet.
    assert invariants_reconcile().allocation_redeferred == 0
    report = invariants_reconcile(now=timezone.now() + dt.timedelta(minutes=1))

    assert report.allocation_redeferred == 1
    heal = TraceEvent.objects.get(kind="healing")
    assert str(heal.purchase_id) == purchase_id
    assert "Allocation job was missing" in heal.message
    # Running it again finds the job it deferred and changes nothing.
    assert (
        invariants_reconcile(now=timezone.now() + dt.timedelta(minutes=1)).healed == 0
    )
    run_worker()
    assert Purchase.objects.get(pk=purchase_id).status == "allocated"


@pytest.mark.django_db(transaction=True)
def test_sweeper_restores_a_missing_session_window_and_clears_a_refund(
    run_worker: Callable[..., None],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, allocated = pay(course=course, time_slot="10:00 AM")
    _, refunded = pay(course=course, time_slot="12:00 PM")
    run_worker()
    later = timezone.now() + dt.timedelta(minutes=1)
    Purchase.objects.get(pk=allocated).sessions.all().delete()
    # A refund whose release was lost: status says refunded, bookings remain.
    Purchase.objects.filter(pk=refunded).update(status="refunded")

    report = invariants_reconcile(now=later)

    assert report.sessions_redeferred == 1
    assert report.refunds_released == 1
    run_worker()
    assert Purchase.objects.get(pk=allocated).sessions.count() == 7
    statuses = set(
        Purchase.objects.get(pk=refunded).sessions.values_list("status", flat=True)
    )
    assert statuses == {"cancelled"}
    assert invariants_reconcile(now=later).healed == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_the_running_allocation_finish_and_loses_nothing(
    worker_process: Callable[..., WorkerProcess],
    purchase_row_lock: Callable[[str], threading.Event],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    release = purchase_row_lock(purchase_id)
    worker = worker_process()
    wait_until(lambda: _job_doing("allocate_trainer"), timeout=20, what="job start")

    worker.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the stop request is in; the job is still blocked
    assert worker.process.poll() is None
    release.set()

    assert worker.process.wait(timeout=20) == 0
    assert Purchase.objects.get(pk=purchase_id).status == "allocated"
    [job] = jobs("allocate_trainer")
    assert job.status == "succeeded"
    assert "Stop requested" in worker.output()


@pytest.mark.django_db
def test_prune_drops_old_finished_jobs_but_keeps_the_trace(
    signed_post: Callable[..., Any],
) -> None:
    old = queue.defer(names.ALLOCATE_TRAINER, purchase_id="old")
    recent = queue.defer(names.ALLOCATE_TRAINER, purchase_id="recent")
    failed = queue.defer(names.ALLOCATE_TRAINER, purchase_id="failed")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = CASE WHEN id = %s "
            "THEN 'failed'::procrastinate_job_status "
            "ELSE 'succeeded'::procrastinate_job_status END",
            [failed],
        )
        cursor.execute(
            "UPDATE procrastinate_events SET at = now() - interval '4 days' "
            "WHERE job_id IN (%s, %s)",
            [old, failed],
        )

    jobs_prune(succeeded_after_hours=72, failed_after_hours=720)

    assert {job.id for job in jobs()} == {recent, failed}


def _start_job_without_worker(job_id: int | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL "
            "WHERE id = %s",
            [job_id],
        )


@pytest.mark.django_db(transaction=True)
def test_a_refresh_postponed_while_the_database_is_down_is_deferred_once_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The refresh fails because PostgreSQL went away, and so does deferring the
    # later one, twice: the job must wait for the database, not end failed.

    monkeypatch.setattr(tasks, "POSTPONE_WAITS_S", (0.0, 0.0, 0.0))
    outage = iter([True, True])
    real_defer = cache.learnings_refresh_defer

    def refresh(**kwargs: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    def defer_when_up(**kwargs: Any) -> None:
        if next(outage, False):
            raise OperationalError("the database system is shutting down")
        real_defer(**kwargs)

    monkeypatch.setattr(cache, "learnings_refresh", refresh)
    monkeypatch.setattr(cache, "learnings_refresh_defer", defer_when_up)

    tasks.refresh_learnings(student_id=str(uuid.UUID(int=7)))

    later = jobs("refresh_learnings")
    assert len(later) == 1 and later[0].status == "todo"
    assert later[0].scheduled_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_postponed_defer_fails_the_job_after_the_database_stays_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "POSTPONE_WAITS_S", (0.0, 0.0))
    calls = []

    def never(**kwargs: object) -> None:
        calls.append(kwargs)
        raise OperationalError("could not connect")

    with pytest.raises(OperationalError):
        tasks._once_the_database_answers(never)
    assert len(calls) == 3
