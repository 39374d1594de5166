"""Fixtures: signed Stripe deliveries, real workers, emptied queue tables.
The helpers they use live in tests/helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from procrastinate.contrib.django import app as procrastinate_app

from fulfillment.testing import stripe_events
from tests.helpers import ROOT, WorkerProcess, database_url_for_tests

PROCRASTINATE_TABLES = (
    "procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
    "procrastinate_workers"
)


def _empty_procrastinate_tables() -> None:
    # procrastinate's models are unmanaged, so Django's flush after a
    # transactional test leaves their rows behind for the next test.
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {PROCRASTINATE_TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    with django_db_blocker.unblock():
        _empty_procrastinate_tables()


@pytest.fixture(autouse=True)
def _procrastinate_tables_emptied(
    request: pytest.FixtureRequest, django_db_blocker: Any
) -> Iterator[None]:
    yield
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction")
    ):
        with django_db_blocker.unblock():
            _empty_procrastinate_tables()


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def signed_post(client: Client) -> Callable[..., Any]:
    """POST a Stripe event to the webhook, signed with the configured secret."""

    def post(
        event: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Any:
        body = event if isinstance(event, bytes) else stripe_events.encode(event)
        header = signature or stripe_events.signature_header(
            body,
            secret=secret or settings.STRIPE_WEBHOOK_SECRET,
            timestamp=timestamp,
        )
        return client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            headers={"Stripe-Signature": header},
        )

    return post


@pytest.fixture
def run_worker(transactional_db: None) -> Callable[..., None]:
    """Run a real procrastinate worker in this process until the queue is empty.

    It uses the worker's own pooled connector, as ``manage.py procrastinate
    worker`` does, so tasks defer from inside a running worker for real.
    """

    def run(*, queues: list[str] | None = None, concurrency: int = 1) -> None:
        connector = procrastinate_app.connector.get_worker_connector()  # type: ignore[attr-defined]
        with procrastinate_app.replace_connector(connector):
            procrastinate_app.run_worker(
                queues=queues,
                wait=False,
                install_signal_handlers=False,
                listen_notify=False,
                concurrency=concurrency,
            )

    return run


@pytest.fixture
def worker_process(
    transactional_db: None, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``manage.py procrastinate worker`` processes on the test
    database; every one still running is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(*extra_args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "manage.py", "procrastinate", "worker", *extra_args],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": database_url_for_tests(),
                "LOG_LEVEL": "INFO",
                **(env or {}),
            },
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(process, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)
