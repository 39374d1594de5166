"""``/healthz`` tells anyone only whether each check passes; which hosts run
workers, what they serve and what the database said are for staff and for
holders of the API token."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from fulfillment.models import WorkerPresence

pytestmark = pytest.mark.django_db

WORKER_HOST = "fulfilment-worker-7.internal"


def live_worker_on_a_named_host() -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        (worker_id,) = cursor.fetchone()
    WorkerPresence.objects.create(
        worker_id=worker_id, host=WORKER_HOST, pid=4242, queues=["allocation"]
    )


def token() -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.FULFILMENT_API_TOKEN}"}


def assert_only_flags(body: dict[str, Any]) -> None:
    assert set(body) == {"status", "checks"}
    assert {"database", "migrations", "workers"} <= set(body["checks"])
    for name, check in body["checks"].items():
        assert check == {"ok": check["ok"]}, f"{name} says more than ok: {check}"
        assert isinstance(check["ok"], bool)


def test_anonymous_healthy_answer_names_no_host_and_no_detail(client: Client) -> None:
    live_worker_on_a_named_host()

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert_only_flags(body)
    assert WORKER_HOST not in response.content.decode()
    assert "4242" not in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert "Authorization" in response["Vary"]


def test_anonymous_failing_answer_is_503_with_only_the_failing_flag(
    client: Client,
) -> None:
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert_only_flags(body)
    assert body["checks"]["workers"] == {"ok": False}
    assert body["checks"]["database"] == {"ok": True}
    assert "heartbeat" not in response.content.decode()
    assert "PostgreSQL" not in response.content.decode()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer wrong-token", id="wrong-token"),
        pytest.param(f"Basic {settings.FULFILMENT_API_TOKEN}", id="basic-scheme"),
        pytest.param(settings.FULFILMENT_API_TOKEN, id="bare-token"),
    ],
)
def test_a_wrong_token_gets_the_anonymous_answer(client: Client, header: str) -> None:
    live_worker_on_a_named_host()

    response = client.get("/healthz", headers={"Authorization": header})

    assert response.status_code == 200
    assert_only_flags(response.json())
    assert WORKER_HOST not in response.content.decode()


def test_the_api_token_reads_workers_and_messages(client: Client) -> None:
    live_worker_on_a_named_host()

    response = client.get("/healthz", headers=token())

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"]["detail"].startswith("reachable, PostgreSQL")
    assert checks["workers"]["value"] == 1
    (worker,) = checks["workers"]["details"]
    assert f"on {WORKER_HOST}:4242" in worker
    assert "queues=allocation" in worker


def test_a_staff_session_reads_details_and_a_non_staff_one_does_not(
    client: Client,
) -> None:
    live_worker_on_a_named_host()
    User.objects.create_user(username="sam", password="pw-sam-long", is_staff=False)
    User.objects.create_user(username="olivia", password="pw-olivia-l", is_staff=True)

    client.login(username="sam", password="pw-sam-long")
    assert_only_flags(client.get("/healthz").json())

    client.login(username="olivia", password="pw-olivia-l")
    body = client.get("/healthz").json()
    assert WORKER_HOST in body["checks"]["workers"]["details"][0]


def test_the_status_code_does_not_depend_on_who_asks(client: Client) -> None:
    anonymous = client.get("/healthz")
    with_token = client.get("/healthz", headers=token())

    assert anonymous.status_code == with_token.status_code == 503
    assert anonymous.json()["status"] == with_token.json()["status"] == "failing"
    flags = {name: check["ok"] for name, check in with_token.json()["checks"].items()}
    assert anonymous.json()["checks"] == {
        name: {"ok": ok} for name, ok in flags.items()
    }
