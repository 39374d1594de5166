"""The pipeline with real workers: atomic stages, end to end, and concurrency."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from fulfillment import tasks
from fulfillment.models import (
    JobFailure,
    Purchase,
    Reservation,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import WorkerProcess, deliver, jobs, pay, wait_until

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
API = {"Authorization": "Bearer dev-fulfilment-api-token"}


def pipeline_idle() -> bool:
    return (
        not any(
            job.status in {"todo", "doing"} and not job.task_name.endswith("_waitlist")
            for job in jobs()
        )
        and not Purchase.objects.filter(
            status=Purchase.Status.ALLOCATION_PENDING
        ).exists()
    )


@pytest.mark.django_db(transaction=True)
def test_failure_after_the_defer_inside_a_running_task_leaves_nothing_behind(
    run_worker: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    helpers.crash_after_allocating(
        monkeypatch, RuntimeError("crash right after deferring the sessions job")
    )

    # The worker runs with its own pooled connector, exactly as in production.
    run_worker(queues=["allocation"])

    purchase = Purchase.objects.get(pk=purchase_id)
    assert purchase.status == Purchase.Status.ALLOCATION_PENDING
    assert not TrainerAllocation.objects.exists()
    assert not Reservation.objects.exists()
    assert not jobs("materialise_sessions")
    [job] = jobs("allocate_trainer")
    assert job.status == "failed"
    failure = JobFailure.objects.get(job_id=job.id)
    assert failure.error_type == "RuntimeError"
    assert "crash right after deferring" in failure.error_message
    assert str(failure.purchase_id) == purchase_id


@pytest.mark.django_db(transaction=True)
def test_each_stage_run_twice_changes_nothing_the_second_time(
    run_worker: Callable[..., None],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    run_worker()
    snapshot = (
        Purchase.objects.values("status", "trainer", "allocated_at").get(
            pk=purchase_id
        ),
        list(Reservation.objects.values_list("id", flat=True)),
        list(TutoringSession.objects.values_list("id", flat=True)),
        len(jobs()),
    )

    tasks.allocate_trainer(purchase_id=purchase_id)
    tasks.materialise_sessions(purchase_id=purchase_id)

    assert snapshot == (
        Purchase.objects.values("status", "trainer", "allocated_at").get(
            pk=purchase_id
        ),
        list(Reservation.objects.values_list("id", flat=True)),
        list(TutoringSession.objects.values_list("id", flat=True)),
        len(jobs()),
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_signed_payment_is_allocated_by_a_worker_and_a_refund_frees_the_trainer(
    worker_process: Callable[..., WorkerProcess], client: Client
) -> None:
    course = helpers.course(mode="home")
    trainer = helpers.trainer(courses=[course], name="Asha", max_active_students=1)
    worker = worker_process()
    first_pi, first = pay(course=course, time_slot="4:00 PM")

    detail = wait_until(
        lambda: _allocated_with_window(client, first),
        timeout=20,
        what="the first purchase to be allocated with its sessions",
    )

    assert detail["trainer"] == {"id": str(trainer.pk), "name": "Asha"}
    assert len(detail["sessions"]) == 7
    starts = [dt.datetime.fromisoformat(s["starts_at"]) for s in detail["sessions"]]
    assert all(s.astimezone(KOLKATA).time() == dt.time(16, 0) for s in starts)
    assert all(s.astimezone(KOLKATA).weekday() < 5 for s in starts)
    assert detail["sessions"][0]["starts_at"].endswith("+05:30")
    assert Reservation.objects.filter(trainer=trainer).count() == 10

    # A second purchase finds the only trainer at capacity and waits.
    _, second = pay(course=course, time_slot="6:00 PM")
    waiting = wait_until(
        lambda: _status(client, second) == "waitlisted" and _detail(client, second),
        timeout=20,
        what="the second purchase to be waitlisted",
    )
    assert "at capacity" in waiting["status_reason"]

    refund = stripe_events.charge_refunded(payment_intent=first_pi)
    assert deliver(refund)["status"] == "refunded"

    wait_until(
        lambda: _allocated_with_window(client, second),
        timeout=20,
        what="the waitlisted purchase to take the freed trainer",
    )
    refunded = _detail(client, first)
    assert refunded["status"] == "refunded"
    assert {s["status"] for s in refunded["sessions"]} == {"cancelled"}
    assert not Reservation.objects.filter(allocation__purchase_id=first).exists()
    assert worker.stop() == 0
    trace = client.get(f"/api/payments/{first_pi}/trace", headers=API).json()
    kinds = [entry["kind"] for entry in trace["entries"]]
    assert kinds.count("webhook") == 2
    assert "job" in kinds


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_never_double_book_or_overfill_trainers(
    worker_process: Callable[..., WorkerProcess],
) -> None:
    course = helpers.course(mode="home")
    for number in range(3):
        helpers.trainer(
            courses=[course], max_active_students=5, longitude=77.61 + number / 100
        )
    # Five distinct slots, eight or nine purchases each: every trainer can take each
    # slot once, so exactly 3 x 5 purchases fit and the rest compete and lose.
    slots = ["10:00 AM", "12:00 PM", "2:00 PM", "4:00 PM", "6:00 PM"]
    purchase_ids = [pay(course=course, time_slot=slots[n % 5])[1] for n in range(42)]

    workers = [worker_process("--concurrency", "4") for _ in range(2)]
    wait_until(pipeline_idle, timeout=60, interval=0.25, what="the queue to drain")
    for worker in workers:
        assert worker.stop() == 0

    statuses = dict(
        Purchase.objects.filter(pk__in=purchase_ids).values_list("pk", "status")
    )
    assert set(statuses.values()) <= {"allocated", "waitlisted"}
    assert list(statuses.values()).count("allocated") == 15  # 3 trainers x 5
    assert not Purchase.objects.filter(status="waitlisted", status_reason="").exists()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM fulfillment_reservation a
            JOIN fulfillment_reservation b
              ON a.trainer_id = b.trainer_id AND a.id < b.id AND a.during && b.during
            """
        )
        assert cursor.fetchone() == (0,)
        cursor.execute(
            """
            SELECT count(*) FROM fulfillment_trainer t
            WHERE (SELECT count(*) FROM fulfillment_trainerallocation a
                   WHERE a.trainer_id = t.id AND a.status = 'active')
                  > t.max_active_students
            """
        )
        assert cursor.fetchone() == (0,)
    allocated = Purchase.objects.filter(status="allocated")
    assert all(p.sessions.count() == 7 for p in allocated)
    assert not [job for job in jobs() if job.status == "failed"]


def _detail(client: Client, purchase_id: str) -> dict[str, Any]:
    response = client.get(f"/api/purchases/{purchase_id}", headers=API)
    assert response.status_code == 200
    detail: dict[str, Any] = response.json()
    return detail


def _status(client: Client, purchase_id: str) -> str:
    return str(_detail(client, purchase_id)["status"])


def _allocated_with_window(client: Client, purchase_id: str) -> dict[str, Any] | None:
    detail = _detail(client, purchase_id)
    if detail["status"] == "allocated" and len(detail["sessions"]) == 7:
        return detail
    return None
