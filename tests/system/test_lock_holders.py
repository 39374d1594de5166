"""A session holding a trainer's row never stalls allocation, every connection
notices a dead peer within a minute, and ``manage.py doctor`` names whoever holds
locks too long (issue #12, item 6). Real worker processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from fulfillment.models import JobFailure, Purchase, Trainer
from fulfillment.queue.worker import TunedDjangoConnector
from kcproject import settings as project_settings
from tests import helpers
from tests.helpers import WorkerProcess, database_url_for_tests, jobs, pay, wait_until

LOCK_HOLDER = "lock-holder-under-test"


@pytest.fixture
def trainer_row_lock() -> Iterator[Callable[[Trainer], psycopg.Connection[Any]]]:
    """``SELECT … FOR UPDATE`` on a trainer's row from another connection, left
    open (idle in its transaction) until the test commits it or ends."""
    holders: list[psycopg.Connection[Any]] = []

    def hold(trainer: Trainer) -> psycopg.Connection[Any]:
        # A client of its own, without the service's session timeouts.
        conn = psycopg.connect(database_url_for_tests(), application_name=LOCK_HOLDER)
        conn.execute(
            "SELECT 1 FROM fulfillment_trainer WHERE id = %s FOR UPDATE", [trainer.pk]
        )
        holders.append(conn)
        return conn

    yield hold
    for conn in holders:
        conn.close()


def _status(purchase_id: str) -> str:
    return Purchase.objects.get(pk=purchase_id).status


@pytest.mark.django_db(transaction=True)
def test_a_purchase_another_trainer_fits_is_allocated_while_the_best_is_locked(
    worker_process: Callable[..., WorkerProcess],
    trainer_row_lock: Callable[[Trainer], psycopg.Connection[Any]],
) -> None:
    course = helpers.course()
    nearest = helpers.trainer(courses=[course], longitude=helpers.HOME[1] + 0.005)
    farther = helpers.trainer(courses=[course], longitude=helpers.HOME[1] + 0.02)
    trainer_row_lock(nearest)
    worker_process("--queues", "allocation")

    started = time.monotonic()
    _, purchase_id = pay(course=course)
    wait_until(
        lambda: _status(purchase_id) == "allocated",
        timeout=10,
        what="allocation around the locked trainer",
    )
    seconds = time.monotonic() - started

    print(f"allocated around a locked trainer in {seconds:.2f}s")
    assert seconds < 5
    assert Purchase.objects.get(pk=purchase_id).trainer_id == farther.pk
    [job] = jobs("allocate_trainer")
    assert (job.status, job.attempts) == ("succeeded", 1)


@pytest.mark.django_db(transaction=True)
def test_when_the_only_fitting_trainer_is_locked_the_job_retries_instead_of_waitlisting(
    worker_process: Callable[..., WorkerProcess],
    trainer_row_lock: Callable[[Trainer], psycopg.Connection[Any]],
) -> None:
    course = helpers.course()
    only = helpers.trainer(courses=[course])
    holder = trainer_row_lock(only)
    worker_process("--queues", "allocation")

    _, purchase_id = pay(course=course)
    # The first attempt met the lock, gave up at once and asked to run again.
    wait_until(
        lambda: JobFailure.objects.filter(error_type="TrainersBusy").exists(),
        timeout=10,
        what="an attempt that found the trainer busy",
    )
    [job] = jobs("allocate_trainer")
    assert job.status == "todo"
    assert _status(purchase_id) == "allocation_pending"

    holder.commit()  # the lock holder lets go
    released = time.monotonic()
    wait_until(
        lambda: _status(purchase_id) == "allocated",
        timeout=20,
        what="allocation once the lock is released",
    )
    print(f"allocated {time.monotonic() - released:.1f}s after the lock was released")
    purchase = Purchase.objects.get(pk=purchase_id)
    assert purchase.trainer_id == only.pk
    assert not purchase.trace_events.filter(to_status="waitlisted").exists()
    [job] = jobs("allocate_trainer")
    assert job.status == "succeeded"
    assert job.attempts >= 2


def doctor() -> tuple[int, dict[str, dict[str, Any]]]:
    out = io.StringIO()
    try:
        call_command("doctor", "--json", stdout=out)
        code = 0
    except CommandError as error:
        code = error.returncode
    report = json.loads(out.getvalue())
    return code, {check["name"]: check for check in report["checks"]}


@pytest.mark.django_db(transaction=True)
def test_doctor_names_a_session_holding_a_trainer_lock_too_long(
    trainer_row_lock: Callable[[Trainer], psycopg.Connection[Any]],
    settings: Any,
) -> None:
    settings.DOCTOR_LOCK_HOLD_LIMIT_S = 1
    trainer = helpers.trainer(courses=[helpers.course()])
    _, checks = doctor()
    assert checks["long lock holders"]["verdict"] == "ok"

    holder = trainer_row_lock(trainer)
    pid = holder.info.backend_pid

    def red() -> dict[str, Any] | None:
        code, checks = doctor()
        check = checks["long lock holders"]
        return check if code == 1 and check["verdict"] == "fail" else None

    check = wait_until(red, timeout=5, interval=0.2, what="doctor to name the holder")
    [detail] = check["details"]
    print(detail)
    assert detail.startswith(f"pid {pid} ({LOCK_HOLDER}) idle in transaction for ")
    assert "locking fulfillment_trainer" in detail
    assert "FOR UPDATE" in detail

    holder.commit()
    _, checks = doctor()
    assert checks["long lock holders"]["verdict"] == "ok"


EXPECTED_SESSION = {
    "lock_timeout": "10s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "1min",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "3",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "20000",
}


TCP_ONLY = {
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
}


def expected_server(conn_host: str) -> dict[str, str]:
    if conn_host.startswith("/"):
        return {
            name: "unix socket" if name in TCP_ONLY else value
            for name, value in EXPECTED_SESSION.items()
        }
    return EXPECTED_SESSION


async def _connection_settings(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """libpq's keepalive parameters of ``conn``, and the server's session
    settings as that session sees them."""
    parameters = conn.info.get_parameters()
    client = {
        name: parameters.get(name)
        for name in (
            "keepalives",
            "keepalives_idle",
            "keepalives_interval",
            "keepalives_count",
            "tcp_user_timeout",
        )
    }
    server = {}
    for name in EXPECTED_SESSION:
        cursor = await conn.execute(f"SHOW {name}")
        row = await cursor.fetchone()
        assert row is not None
        server[name] = row[0]
    # Over a unix socket (the embedded server) the server's TCP settings do not
    # apply and read 0; the client's are still passed to libpq.
    if conn.info.host.startswith("/"):
        server = {
            name: ("unix socket" if name in TCP_ONLY and value == "0" else value)
            for name, value in server.items()
        }
    return {"client": client, "server": server}


@pytest.mark.django_db(transaction=True)
def test_the_worker_pool_and_its_listener_detect_dead_peers_and_bound_waits() -> None:
    """The connector ``manage.py procrastinate worker`` runs: its pool's
    connections and the LISTEN connection procrastinate opens beside it."""
    connector = TunedDjangoConnector().get_worker_connector()

    async def probe() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        await connector.open_async()
        try:
            pool = connector.pool  # type: ignore[attr-defined]
            async with pool.connection() as conn:
                pooled = await _connection_settings(conn)
            # What PsycopgConnector.listen_notify connects with.
            async with connector._get_standalone_connection() as conn:  # type: ignore[attr-defined]
                listener = await _connection_settings(conn)
            return pool.kwargs, pooled, listener
        finally:
            await connector.close_async()

    pool_kwargs, pooled, listener = asyncio.run(probe())

    assert pool_kwargs["keepalives"] == 1
    assert pool_kwargs["tcp_user_timeout"] == 20_000
    assert pool_kwargs["application_name"] == "fulfillment-worker"
    client = {
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "3",
        "keepalives_count": "3",
        "tcp_user_timeout": "20000",
    }
    # The tests run the in-process pool under pytest, so the web's 30 s applies.
    expected = expected_server(str(connection.settings_dict["HOST"] or ""))
    assert pooled == {"client": client, "server": expected}
    assert listener == {"client": client, "server": expected}


@pytest.mark.parametrize(
    ("argv", "long_statements"),
    [
        (["manage.py", "procrastinate", "worker", "-q", "allocation"], True),
        (["manage.py", "migrate", "--noinput"], True),
        (["manage.py", "runserver"], False),
        (["gunicorn", "kcproject.wsgi"], False),
        (["manage.py", "procrastinate", "healthchecks"], False),
    ],
)
def test_only_workers_and_migrate_run_without_a_statement_timeout(
    argv: list[str], long_statements: bool
) -> None:
    assert project_settings._runs_long_statements(argv) is long_statements
    options = project_settings.database_timeouts(statement_timeout_s=0)["options"]
    assert "-c statement_timeout=0s" in options


def test_a_database_url_keeps_its_own_connection_options() -> None:
    config = project_settings._database(
        "postgres://u@db:5432/x?keepalives_idle=5&options=-c%20lock_timeout%3D2s",
        statement_timeout_s=30,
    )

    options = config["OPTIONS"]
    assert options["keepalives_idle"] == 5
    assert options["keepalives"] == 1
    # Later -c settings win in PostgreSQL: the URL's come after ours.
    assert options["options"].endswith("-c lock_timeout=2s")
    assert options["options"].startswith("-c lock_timeout=10s ")
