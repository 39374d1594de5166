"""The one helpers module of the suite: catalogue builders, signed Stripe
deliveries, purchases made as production makes them, job rows, real worker
processes and polling. Fixtures that wire these into tests live in conftest.py.
"""

from __future__ import annotations

import datetime as dt
import importlib
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from fulfillment.models import Course, Purchase, Trainer
from fulfillment.services import allocation
from fulfillment.testing import stripe_events

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

SignedPost = Callable[..., Any]

# --- catalogue ------------------------------------------------------------------
# Defaults make a trainer who fits the default purchase (Bengaluru, weekday
# 16:00, home visit).

HOME = (12.9756, 77.6050)
_numbers = itertools.count(1)


def course(**fields: Any) -> Course:
    defaults: dict[str, Any] = {"title": f"Course {next(_numbers)}", "mode": "home"}
    return Course.objects.create(**{**defaults, **fields})


def trainer(*, courses: list[Course], **fields: Any) -> Trainer:
    defaults: dict[str, Any] = {
        "name": f"Trainer {next(_numbers)}",
        "latitude": HOME[0],
        "longitude": HOME[1] + 0.01,  # about 1.1 km east
        "max_travel_km": 10,
        "max_active_students": 5,
        "weekdays": [0, 1, 2, 3, 4, 5, 6],
        "work_start": dt.time(9),
        "work_end": dt.time(20),
        "is_active": True,
    }
    created = Trainer.objects.create(**{**defaults, **fields})
    created.courses.set(courses)
    return created


def metadata_for(*, course: Course, **overrides: str) -> dict[str, str]:
    """Valid payment metadata for ``course``: weekday sessions at 4 PM from the
    next Monday that is at least a week away."""
    today = timezone.localdate()
    start = today + dt.timedelta(days=7 + (7 - today.weekday()) % 7)
    values = {
        "student_id": str(uuid.uuid4()),
        "student_name": "Anya Test",
        "student_email": "anya.parent@example.com",
        "course_id": str(course.pk),
        "total_sessions": "10",
        "delivery_mode": "WEEKDAY_DAILY",
        "start_date": start.isoformat(),
        "time_slot": "4:00 PM",
        "latitude": str(HOME[0]),
        "longitude": str(HOME[1]),
    }
    values.update(overrides)
    return values


# --- Stripe deliveries and purchases ---------------------------------------------


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A webhook fixture from tests/fixtures/webhooks, with a fresh event id and
    ``overrides`` applied to data.object.metadata (None deletes a key)."""
    event: dict[str, Any] = json.loads(
        (FIXTURES / "webhooks" / f"{name}.json").read_text()
    )
    event["id"] = stripe_events.new_id("evt")
    metadata = event["data"]["object"].get("metadata")
    for key, value in overrides.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return event


def buy(signed_post: SignedPost, course: Course, **metadata: str) -> Purchase:
    """A purchase made as production makes one: a signed Stripe delivery of
    ``metadata(course=course, **metadata)``, answered ``accepted``."""
    fields = metadata_for(course=course, **metadata)
    response = signed_post(stripe_events.payment_intent_succeeded(metadata=fields))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "accepted", body
    return Purchase.objects.select_related("payment").get(pk=body["purchase_id"])


def waitlisted(
    signed_post: SignedPost,
    course: Course,
    *,
    now: dt.datetime | None = None,
    actor: str = "allocate_trainer",
    **metadata: str,
) -> Purchase:
    """A purchase that allocation waitlisted (no trainer fits)."""
    purchase = buy(signed_post, course, **metadata)
    allocation.purchase_allocate(purchase_id=purchase.pk, actor=actor, now=now)
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.WAITLISTED, purchase.status_reason
    return purchase


def deliver(event: dict[str, Any]) -> dict[str, Any]:
    body = stripe_events.encode(event)
    response = Client().post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        headers={
            "Stripe-Signature": stripe_events.signature_header(
                body, secret="whsec_dev_fulfilment_local_only"
            )
        },
    )
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def pay(**metadata: Any) -> tuple[str, str]:
    """A signed payment through the real webhook, for tests without the
    ``signed_post`` fixture; returns (PaymentIntent id, purchase id)."""
    event = stripe_events.payment_intent_succeeded(metadata=metadata_for(**metadata))
    answer = deliver(event)
    assert answer["status"] == "accepted"
    return event["data"]["object"]["id"], answer["purchase_id"]


# --- console users -----------------------------------------------------------------
_groups_migration = importlib.import_module(
    "admin_ui.migrations.0001_operations_groups"
)
_jobs_permission_migration = importlib.import_module(
    "admin_ui.migrations.0002_manage_jobs_permission"
)
_phone_call_migration = importlib.import_module(
    "admin_ui.migrations.0003_phone_call_permissions"
)


def ensure_groups() -> None:
    """The groups the data migration made: a transactional test earlier in the
    session flushes every table, migration data included."""
    _groups_migration.create_groups(django_apps, None)
    _jobs_permission_migration.add_permission(django_apps, None)
    _phone_call_migration.add_permissions(django_apps, None)


def sign_in(
    client: Client,
    *groups: str,
    staff: bool = True,
    username: str = "",
    permissions: tuple[str, ...] = (),
) -> User:
    """Log ``client`` in as a new user of ``groups`` (Operations, Support)."""
    ensure_groups()
    user = User.objects.create_user(
        username=username or "-".join(groups).lower() or "someone",
        password="irrelevant",
        is_staff=staff,
    )
    user.groups.set(Group.objects.filter(name__in=groups))
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client.force_login(user)
    return user


# --- jobs, workers, polling --------------------------------------------------------


def jobs(task: str | None = None, **filters: Any) -> list[ProcrastinateJob]:
    queryset = ProcrastinateJob.objects.all()
    if task is not None:
        queryset = queryset.filter(task_name=f"fulfillment.tasks.{task}")
    return list(queryset.filter(**filters).order_by("id"))


def crash_after_allocating(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make ``purchase_allocate`` raise ``error`` once the allocation, its
    state change and the sessions job are all written (they are one statement
    now; its last log line comes after it)."""
    real_info = allocation.logger.info

    def info(message: str, *args: Any, **kwargs: Any) -> None:
        if message == "trainer allocated":
            raise error
        real_info(message, *args, **kwargs)

    monkeypatch.setattr(allocation.logger, "info", info)


def database_url_for_tests() -> str:
    """A URL for the test database, for worker processes started by tests."""
    params = connection.settings_dict
    host = params["HOST"] or ""
    user = params["USER"] or "postgres"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    if host.startswith("/"):
        return f"postgres://{user}{password}@/{params['NAME']}?host={host}"
    port = f":{params['PORT']}" if params["PORT"] else ""
    return f"postgres://{user}{password}@{host}{port}/{params['NAME']}"


class WorkerProcess:
    """A ``manage.py procrastinate worker`` process started by a test."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
