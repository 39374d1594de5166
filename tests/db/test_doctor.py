"""``manage.py doctor``, ``/healthz`` and ``/metrics`` go red for each failure the
old system had, and green again after the fix."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from fulfillment import queue, tasks
from fulfillment.models import Purchase, WorkerPresence
from fulfillment.ops.health import DOCTOR_CHECKS
from fulfillment.queue import names
from tests import helpers
from tests.helpers import load_event

pytestmark = pytest.mark.django_db


def doctor() -> tuple[int, dict[str, dict[str, Any]]]:
    out = io.StringIO()
    try:
        call_command("doctor", "--json", stdout=out)
        code = 0
    except CommandError as error:
        code = error.returncode
    report = json.loads(out.getvalue())
    return code, {check["name"]: check for check in report["checks"]}


def fresh_worker(queues: list[str] | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        (worker_id,) = cursor.fetchone()
    if queues is not None:
        WorkerPresence.objects.create(
            worker_id=worker_id, host="test", pid=1, queues=queues
        )
    return int(worker_id)


def test_doctor_is_green_for_a_healthy_service() -> None:
    fresh_worker()

    code, checks = doctor()

    assert code == 0
    assert {check["verdict"] for check in checks.values()} == {"ok"}
    assert list(checks) == [
        "database",
        "migrations",
        "workers",
        "queues served",
        "queue depth",
        "stalled jobs",
        "failed jobs (24h)",
        "stuck purchases",
        "waitlist SLA",
        "payments needing attention",
        "long lock holders",
    ]


def test_doctor_and_healthz_go_red_without_a_worker_and_green_with_one(
    client: Client,
) -> None:
    code, checks = doctor()
    assert code == 1
    assert checks["workers"]["verdict"] == "fail"
    assert client.get("/healthz").status_code == 503

    fresh_worker()

    assert doctor()[0] == 0
    assert client.get("/healthz").status_code == 200


def test_doctor_and_healthz_go_red_with_a_missing_migration(client: Client) -> None:
    fresh_worker()
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'fulfillment' "
            "AND name = '0002_cache_table' RETURNING applied"
        )
        (applied,) = cursor.fetchone()

    code, checks = doctor()
    assert code == 1
    assert checks["migrations"]["verdict"] == "fail"
    assert "fulfillment.0002_cache_table" in checks["migrations"]["details"]
    assert client.get("/healthz").status_code == 503

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_migrations (app, name, applied) "
            "VALUES ('fulfillment', '0002_cache_table', %s)",
            [applied],
        )
    assert doctor()[0] == 0
    assert client.get("/healthz").status_code == 200


def test_doctor_goes_red_with_a_purchase_stuck_past_its_sla(
    signed_post: Callable[..., Any],
) -> None:
    fresh_worker()
    call_command("seed_demo", verbosity=0)
    purchase_id = signed_post(load_event("payment_intent_succeeded")).json()[
        "purchase_id"
    ]
    Purchase.objects.filter(pk=purchase_id).update(
        created_at=timezone.now() - dt.timedelta(minutes=10)
    )

    code, checks = doctor()
    assert code == 1
    assert checks["stuck purchases"]["verdict"] == "fail"
    assert checks["stuck purchases"]["value"] == 1

    tasks.allocate_trainer(purchase_id=purchase_id)

    _, checks = doctor()
    assert checks["stuck purchases"]["verdict"] == "ok"


def test_doctor_goes_red_when_a_queue_has_work_and_nobody_serves_it() -> None:
    fresh_worker(queues=["allocation"])
    queue.defer(names.REFRESH_LEARNINGS, student_id="s1")

    code, checks = doctor()

    assert code == 1
    assert checks["queues served"]["verdict"] == "fail"
    assert checks["queues served"]["details"][0].startswith("cache: 1 ready")


def test_doctor_goes_red_with_a_failed_job_and_a_payment_needing_attention(
    signed_post: Callable[..., Any],
) -> None:
    fresh_worker()
    job_id = queue.defer(names.ALLOCATE_TRAINER, purchase_id="p")
    with connection.cursor() as cursor:
        # todo -> doing -> failed, as a worker would (triggers log the events).
        for status in ("doing", "failed"):
            cursor.execute(
                "UPDATE procrastinate_jobs SET status = %s WHERE id = %s",
                [status, job_id],
            )
    signed_post(load_event("payment_intent_succeeded", start_date="2026-02-30"))

    code, checks = doctor()

    assert code == 1
    assert checks["failed jobs (24h)"]["value"] == 1
    assert checks["payments needing attention"]["value"] == 1
    assert "start_date" in checks["payments needing attention"]["details"][0]


def test_doctor_text_output_has_one_line_per_check_with_its_number() -> None:
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("doctor", stdout=out)

    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == len(DOCTOR_CHECKS) == 11
    assert lines[2].startswith("[FAIL] workers")


def test_metrics_are_prometheus_text_computed_from_the_database(
    signed_post: Callable[..., Any], client: Client
) -> None:
    call_command("seed_demo", verbosity=0)
    signed_post(load_event("payment_intent_succeeded"))
    signed_post(load_event("customer_created"))
    signed_post(load_event("payment_intent_succeeded"), secret="whsec_wrong")
    course = helpers.course()
    helpers.trainer(courses=[course])

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'fulfilment_webhooks_total{outcome="accepted"} 1.0' in text
    assert 'fulfilment_webhooks_total{outcome="ignored"} 1.0' in text
    assert 'fulfilment_webhooks_total{outcome="invalid_signature"} 1.0' in text
    assert 'fulfilment_jobs{status="todo",task="allocate_trainer"} 1.0' in text
    assert 'fulfilment_purchases{status="allocation_pending"} 1.0' in text
    assert "fulfilment_workers_alive 0.0" in text
    assert "fulfilment_heals_total 0.0" in text
    assert 'fulfilment_oldest_waiting_seconds{stage="queue:allocation"}' in text
    assert "fulfilment_payment_to_allocation_seconds_bucket" in text
