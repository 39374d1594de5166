"""The JSON API and ``/healthz`` through Django's test client (CONTRACT §3)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from fulfillment.models import Course, Purchase
from fulfillment.services.allocation import purchase_allocate
from fulfillment.services.sessions import sessions_materialise
from fulfillment.testing import stripe_events
from tests import helpers

NOW = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
START = "2030-01-07"
KOLKATA_OFFSET = dt.timedelta(hours=5, minutes=30)

SignedPost = Callable[..., Any]


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.FULFILMENT_API_TOKEN}"}


def get(client: Client, url: str) -> Any:
    return client.get(url, headers=auth())


def buy(
    signed_post: SignedPost, course: Course, **metadata: str
) -> tuple[Purchase, dict[str, Any]]:
    fields = helpers.metadata_for(course=course, **{"start_date": START, **metadata})
    event = stripe_events.payment_intent_succeeded(metadata=fields)
    body = signed_post(event).json()
    assert body["status"] == "accepted", body
    return Purchase.objects.get(pk=body["purchase_id"]), event


def allocate(purchase: Purchase) -> Purchase:
    allocated = purchase_allocate(purchase_id=purchase.pk, actor="test", now=NOW)
    assert allocated.status == Purchase.Status.ALLOCATED, allocated.status_reason
    return allocated


def assert_iso_with_offset(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == KOLKATA_OFFSET, value
    return parsed


# --- authentication --------------------------------------------------------------

ENDPOINTS = [
    f"/api/purchases/{uuid.UUID(int=1)}",
    f"/api/students/{uuid.UUID(int=1)}/learnings",
    "/api/payments/pi_unknown/trace",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Bearer wrong-token", id="wrong-token"),
        pytest.param("Bearer", id="empty-bearer"),
        pytest.param(f"Basic {settings.FULFILMENT_API_TOKEN}", id="basic-scheme"),
        pytest.param(settings.FULFILMENT_API_TOKEN, id="bare-token"),
    ],
)
def test_api_refuses_requests_without_the_bearer_token(
    client: Client, url: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}

    response = client.get(url, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_api_scheme_is_case_insensitive(client: Client) -> None:
    token = settings.FULFILMENT_API_TOKEN

    response = client.get(ENDPOINTS[0], headers={"Authorization": f"bearer {token}"})

    assert response.status_code == 404


# --- purchase detail ---------------------------------------------------------------


@pytest.mark.django_db
def test_purchase_detail_of_an_allocated_purchase(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course], name="Asha Rao")
    purchase, event = buy(signed_post, course)
    allocate(purchase)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)

    response = get(client, f"/api/purchases/{purchase.pk}")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "id",
        "payment_intent",
        "student_id",
        "course_id",
        "status",
        "status_reason",
        "trainer",
        "sessions_total",
        "sessions",
        "created_at",
        "allocated_at",
    }
    metadata = event["data"]["object"]["metadata"]
    assert body["id"] == str(purchase.pk)
    assert body["payment_intent"] == event["data"]["object"]["id"]
    assert body["student_id"] == metadata["student_id"]
    assert body["course_id"] == str(course.pk)
    assert body["status"] == "allocated"
    assert body["status_reason"] == "Allocated to Asha Rao, 1.1 km away."
    assert body["trainer"] == {"id": str(trainer.pk), "name": "Asha Rao"}
    assert body["sessions_total"] == 10
    assert [s["sequence"] for s in body["sessions"]] == [1, 2, 3, 4, 5, 6, 7]
    assert body["sessions"][0] == {
        "sequence": 1,
        "starts_at": "2030-01-07T16:00:00+05:30",
        "ends_at": "2030-01-07T17:00:00+05:30",
        "status": "scheduled",
    }
    created = assert_iso_with_offset(body["created_at"])
    assert created == purchase.created_at
    assert assert_iso_with_offset(body["allocated_at"]) == NOW
    assert body["allocated_at"] == "2030-01-01T11:30:00+05:30"


@pytest.mark.django_db
def test_purchase_detail_while_allocation_is_pending(
    client: Client, signed_post: SignedPost
) -> None:
    purchase, _ = buy(signed_post, helpers.course())

    body = get(client, f"/api/purchases/{purchase.pk}").json()

    assert body["status"] == "allocation_pending"
    assert body["status_reason"]
    assert body["trainer"] is None
    assert body["sessions"] == []
    assert body["allocated_at"] is None
    assert_iso_with_offset(body["created_at"])


@pytest.mark.django_db
def test_purchase_detail_of_a_waitlisted_purchase_explains_why(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    purchase, _ = buy(signed_post, course)
    purchase_allocate(purchase_id=purchase.pk, actor="test", now=NOW)

    body = get(client, f"/api/purchases/{purchase.pk}").json()

    assert body["status"] == "waitlisted"
    assert body["status_reason"] == (
        "No trainer teaches Robotics: add one to the catalogue."
    )
    assert body["trainer"] is None


@pytest.mark.django_db
def test_unknown_purchase_is_404(client: Client) -> None:
    response = get(client, f"/api/purchases/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.django_db
def test_purchase_path_that_is_not_a_uuid_is_404(client: Client) -> None:
    assert get(client, "/api/purchases/not-a-uuid").status_code == 404


@pytest.mark.django_db
def test_api_is_read_only(client: Client) -> None:
    response = client.post(f"/api/purchases/{uuid.uuid4()}", headers=auth())

    assert response.status_code == 405


# --- learnings -------------------------------------------------------------------


@pytest.mark.django_db
def test_learnings_are_served_from_cache_until_a_change(
    client: Client, signed_post: SignedPost, django_assert_max_num_queries: Any
) -> None:
    course = helpers.course(title="Python for Kids")
    trainer = helpers.trainer(courses=[course], name="Asha Rao")
    purchase, _ = buy(signed_post, course)
    url = f"/api/students/{purchase.student_id}/learnings"
    first = get(client, url)
    assert first.status_code == 200

    with django_assert_max_num_queries(2) as captured:
        second = get(client, url)

    assert second.json() == first.json()
    sql = " ".join(query["sql"] for query in captured.captured_queries)
    assert "fulfillment_purchase" not in sql
    assert "fulfillment_tutoringsession" not in sql
    [entry] = first.json()["learnings"]
    assert entry["purchase_id"] == str(purchase.pk)
    assert entry["course"] == {"id": str(course.pk), "title": "Python for Kids"}
    assert entry["status"] == "allocation_pending"
    assert entry["status_label"] == "Trainer allocation pending"
    assert entry["trainer"] is None
    assert entry["next_sessions"] == []

    allocate(purchase)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)
    third = get(client, url).json()

    [entry] = third["learnings"]
    assert entry["status"] == "allocated"
    assert entry["trainer"] == {"id": str(trainer.pk), "name": "Asha Rao"}
    assert [s["sequence"] for s in entry["next_sessions"]] == [1, 2, 3]
    assert entry["next_sessions"][0]["starts_at"] == "2030-01-07T16:00:00+05:30"


@pytest.mark.django_db
def test_learnings_list_every_purchase_of_the_student(
    client: Client, signed_post: SignedPost
) -> None:
    first_course, second_course = helpers.course(), helpers.course()
    first, _ = buy(signed_post, first_course)
    student_id = str(first.student_id)
    second, _ = buy(signed_post, second_course, student_id=student_id)

    body = get(client, f"/api/students/{student_id}/learnings").json()

    assert body["student_id"] == student_id
    assert [e["purchase_id"] for e in body["learnings"]] == [
        str(first.pk),
        str(second.pk),
    ]


@pytest.mark.django_db
def test_learnings_of_an_unknown_student_are_404(client: Client) -> None:
    response = get(client, f"/api/students/{uuid.uuid4()}/learnings")

    assert response.status_code == 404


# --- trace -----------------------------------------------------------------------


@pytest.mark.django_db
def test_trace_by_payment_intent_and_by_purchase_id_tell_the_same_story(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase, event = buy(signed_post, course)
    allocate(purchase)
    payment_intent = event["data"]["object"]["id"]

    by_intent = get(client, f"/api/payments/{payment_intent}/trace")
    by_purchase = get(client, f"/api/payments/{purchase.pk}/trace")

    assert by_intent.status_code == by_purchase.status_code == 200
    body = by_intent.json()
    assert by_purchase.json() == body
    assert body["payment_intent"] == payment_intent
    assert body["purchase_id"] == str(purchase.pk)
    assert body["status"] == "allocated"
    entries = body["entries"]
    times = [assert_iso_with_offset(entry["at"]) for entry in entries]
    assert times == sorted(times)
    [webhook] = [e for e in entries if e["kind"] == "webhook"]
    assert webhook["event_id"] == event["id"]
    assert webhook["event_type"] == "payment_intent.succeeded"
    assert webhook["outcome"] == "accepted"
    changes = [e["to_status"] for e in entries if e["kind"] == "state_change"]
    assert changes == ["allocation_pending", "allocated"]
    job_entries = {e["task"]: e for e in entries if e["kind"] == "job"}
    assert {
        "fulfillment.tasks.allocate_trainer",
        "fulfillment.tasks.materialise_sessions",
    } <= set(job_entries)
    allocate_job = job_entries["fulfillment.tasks.allocate_trainer"]
    assert allocate_job["status"] == "todo"
    assert allocate_job["attempts"] == 0
    assert allocate_job["queue"] == "allocation"
    assert allocate_job["last_error"] is None


@pytest.mark.django_db
def test_trace_of_a_refunded_purchase_ends_with_the_refund(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase, event = buy(signed_post, course)
    allocate(purchase)
    payment_intent = event["data"]["object"]["id"]
    signed_post(stripe_events.charge_refunded(payment_intent=payment_intent))

    body = get(client, f"/api/payments/{payment_intent}/trace").json()

    assert body["status"] == "refunded"
    webhooks = [e["event_type"] for e in body["entries"] if e["kind"] == "webhook"]
    assert webhooks == ["payment_intent.succeeded", "charge.refunded"]
    changes = [e["to_status"] for e in body["entries"] if e["kind"] == "state_change"]
    assert changes[-1] == "refunded"


@pytest.mark.django_db
def test_trace_of_a_payment_needing_attention(
    client: Client, signed_post: SignedPost
) -> None:
    fields = helpers.metadata_for(course=helpers.course(), course_id=str(uuid.uuid4()))
    event = stripe_events.payment_intent_succeeded(metadata=fields)
    assert signed_post(event).json()["status"] == "needs_attention"
    payment_intent = event["data"]["object"]["id"]

    body = get(client, f"/api/payments/{payment_intent}/trace").json()

    assert body["purchase_id"] is None
    assert body["status"] == "needs_attention"
    assert body["status_reason"].startswith("course_id:")
    kinds = [(e["kind"], e.get("outcome")) for e in body["entries"]]
    assert ("webhook", "needs_attention") in kinds


@pytest.mark.django_db
@pytest.mark.parametrize("reference", ["pi_unknown", str(uuid.UUID(int=7))])
def test_trace_of_an_unknown_payment_is_404(client: Client, reference: str) -> None:
    assert get(client, f"/api/payments/{reference}/trace").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_trace_starts_with_the_delivery_that_began_it(
    client: Client, signed_post: SignedPost
) -> None:
    # Committed transactions, as in production: PostgreSQL's now() is each
    # transaction's start, not the test's.
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase, _ = buy(signed_post, course)

    body = get(client, f"/api/payments/{purchase.pk}/trace").json()

    kinds = [entry["kind"] for entry in body["entries"]]
    assert kinds[0] == "webhook", kinds


# --- health ----------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_is_503_without_a_worker_heartbeat(client: Client) -> None:
    # Details (detail, value) only with the token: tests/test_health_privacy.py.
    response = client.get("/healthz", headers=auth())

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    # One entry per check, each named; more checks may join these three.
    assert {"database", "migrations", "workers"} <= set(body["checks"])
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False
    assert "heartbeat" in body["checks"]["workers"]["detail"]


@pytest.mark.django_db
def test_healthz_is_200_with_a_fresh_worker_heartbeat(client: Client) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO procrastinate_workers DEFAULT VALUES")

    response = client.get("/healthz", headers=auth())

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["workers"]["value"] == 1


@pytest.mark.django_db
def test_healthz_ignores_a_stale_worker_heartbeat(client: Client) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour')"
        )

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["workers"]["ok"] is False
