"""A worker's life (issue #12, item 9): it beats until its last job ends, so a
SIGTERMed worker's jobs never run twice, and a worker whose row was pruned
registers again and goes on. Real worker processes and real PostgreSQL, plus the
pins on what ``FulfilmentWorker`` takes from procrastinate."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import inspect
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from procrastinate import manager, sql
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import DjangoApp

from fulfillment.models import Purchase
from fulfillment.queue.worker import (
    HEARTBEAT_TASK_NAME,
    FulfilmentWorker,
    TunedDjangoConnector,
)
from fulfillment.services.maintenance import stalled_jobs_rescue
from tests import helpers
from tests.helpers import WorkerProcess, database_url_for_tests, jobs, pay, wait_until

# Longer than WORKER_STALLED_AFTER_SECONDS (10 s): without heartbeats during
# shutdown, the rescue would take the job for stalled.
JOB_SECONDS = 12.0


@pytest.fixture
def purchase_lock() -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Hold a purchase's row from another connection until the test commits: the
    allocation job then runs (blocked) for as long as the test likes."""
    holders: list[psycopg.Connection[Any]] = []

    def hold(purchase_id: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(database_url_for_tests())
        conn.execute(
            "SELECT 1 FROM fulfillment_purchase WHERE id = %s FOR UPDATE", [purchase_id]
        )
        holders.append(conn)
        return conn

    yield hold
    for conn in holders:
        conn.close()


def _heartbeat(worker_id: int) -> dt.datetime | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_heartbeat FROM procrastinate_workers WHERE id = %s",
            [worker_id],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _worker_ids() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM procrastinate_workers")
        return {row[0] for row in cursor.fetchall()}


def _db_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (now,) = cursor.fetchone()
    return now  # type: ignore[no-any-return]


def _doing_job() -> Any:
    return next(
        (job for job in jobs("allocate_trainer") if job.status == "doing"), None
    )


# The job blocks on the purchase lock longer than the web's 10 s lock_timeout.
SLOW_JOB_WORKER_ENV = {"DATABASE_LOCK_TIMEOUT_S": "60"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sigtermed_worker_beats_until_its_job_ends_and_the_job_runs_once(
    worker_process: Callable[..., WorkerProcess],
    purchase_lock: Callable[[str], psycopg.Connection[Any]],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    holder = purchase_lock(purchase_id)
    worker = worker_process("--queues", "allocation", env=SLOW_JOB_WORKER_ENV)
    job = wait_until(_doing_job, timeout=20, what="the allocation job to start")
    worker_id = job.worker_id

    worker.process.send_signal(signal.SIGTERM)
    sigterm_at = _db_now()
    stopping_since = time.monotonic()
    rescued: list[int] = []
    last_beat, oldest_beat_s = sigterm_at, 0.0
    while time.monotonic() - stopping_since < JOB_SECONDS:
        # The rescue as it runs every 5 s on the other workers.
        rescued += stalled_jobs_rescue().retried
        last_beat = _heartbeat(worker_id) or last_beat
        oldest_beat_s = max(oldest_beat_s, (_db_now() - last_beat).total_seconds())
        assert worker.process.poll() is None, worker.output()
        time.sleep(0.5)
    holder.commit()  # the job ends now

    assert worker.process.wait(timeout=20) == 0, worker.output()
    beat_for = (last_beat - sigterm_at).total_seconds()
    print(
        f"heartbeat kept {beat_for:.1f}s after SIGTERM (job ran {JOB_SECONDS:.0f}s),"
        f" never older than {oldest_beat_s:.1f}s"
    )
    assert beat_for > JOB_SECONDS - 4  # beats every 2 s
    assert oldest_beat_s < 5  # far from the 10 s that make a worker stalled
    assert rescued == []
    [job] = jobs("allocate_trainer")
    assert (job.status, job.attempts) == ("succeeded", 1)  # ran exactly once
    assert Purchase.objects.get(pk=purchase_id).status == "allocated"
    assert worker_id not in _worker_ids()  # unregistered once done
    assert "Stop requested" in worker.output()


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_row_was_pruned_registers_again_and_keeps_its_jobs(
    worker_process: Callable[..., WorkerProcess],
    purchase_lock: Callable[[str], psycopg.Connection[Any]],
) -> None:
    course = helpers.course()
    # Two: both purchases want the same weekday slots.
    helpers.trainer(courses=[course])
    helpers.trainer(courses=[course])
    _, first_id = pay(course=course)
    holder = purchase_lock(first_id)
    worker = worker_process("--queues", "allocation", env=SLOW_JOB_WORKER_ENV)
    running = wait_until(_doing_job, timeout=20, what="the allocation job to start")
    pruned_id = running.worker_id

    # What another worker's prune_stalled_workers does to it.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_workers WHERE id = %s", [pruned_id])
    [new_id] = wait_until(
        lambda: _worker_ids() - {pruned_id},
        timeout=10,
        what="the worker to register again",
    )
    # Its running job is its own again, so the rescue leaves it alone.
    assert _doing_job().worker_id == new_id
    assert stalled_jobs_rescue().retried == []
    holder.commit()

    _, second_id = pay(course=course)
    wait_until(
        lambda: (
            Purchase.objects.filter(
                pk__in=[first_id, second_id], status="allocated"
            ).count()
            == 2
        ),
        timeout=15,
        what="both purchases allocated by the same worker",
    )
    assert worker.process.poll() is None, worker.output()
    assert [(job.status, job.attempts) for job in jobs("allocate_trainer")] == [
        ("succeeded", 1),
        ("succeeded", 1),
    ]
    assert jobs("allocate_trainer")[1].worker_id == new_id
    assert "worker row was pruned; registered again" in worker.output()


@pytest.mark.django_db(transaction=True)
def test_a_fetch_that_finds_its_row_gone_registers_again_instead_of_stopping() -> None:
    """The fetch path alone: heartbeats too rare to notice first."""
    app = DjangoApp(connector=TunedDjangoConnector().get_worker_connector())
    ran: list[int] = []

    @app.task(queue="lifecycle_probe", name="lifecycle_probe.job")
    async def probe_job(number: int) -> None:
        ran.append(number)

    async def scenario() -> tuple[int | None, int | None]:
        async with app.open_async():
            worker = FulfilmentWorker(
                app=app,
                queues=["lifecycle_probe"],
                install_signal_handlers=False,
                update_heartbeat_interval=3600,
                fetch_job_polling_interval=0.2,
                listen_notify=False,
            )
            running = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
            while worker.worker_id is None:
                await asyncio.sleep(0.02)
            pruned_id = worker.worker_id
            await app.connector.execute_query_async(
                "DELETE FROM procrastinate_workers WHERE id = %(id)s", id=pruned_id
            )
            await probe_job.defer_async(number=1)
            deadline = time.monotonic() + 5
            while not ran and time.monotonic() < deadline and not running.done():
                await asyncio.sleep(0.05)
            new_id = worker.worker_id
            worker.stop()  # type: ignore[no-untyped-call]
            await asyncio.wait_for(running, timeout=10)
            return pruned_id, new_id

    pruned_id, new_id = asyncio.run(scenario())

    assert ran == [1]
    assert new_id is not None and new_id != pruned_id


def test_procrastinate_worker_still_cancels_the_heartbeat_before_waiting_for_jobs() -> (
    None
):
    """The canary of ``FulfilmentWorker._shutdown``: when upstream beats during
    shutdown itself, the override can go."""
    source = inspect.getsource(procrastinate_worker.Worker._shutdown)
    cancel = source.index("cancel_and_capture_errors(side_tasks)")
    wait = source.index("asyncio.wait(")
    assert cancel < wait
    side_tasks = inspect.getsource(procrastinate_worker.Worker._start_side_tasks)
    assert f'name="{HEARTBEAT_TASK_NAME}"' in side_tasks


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# What FulfilmentWorker copies or relies on, as procrastinate 3.10.0 has it. A
# new digest means: re-read the upstream code, re-apply our changes (see the
# class docstring), then update the digest.
UPSTREAM_PINS: dict[str, tuple[Callable[..., Any], str]] = {
    "Worker._fetch_and_process_jobs": (
        procrastinate_worker.Worker._fetch_and_process_jobs,
        "2963aa354dfda4d6",
    ),
    "Worker._update_heartbeat": (
        procrastinate_worker.Worker._update_heartbeat,
        "a45b4b3b030e0827",
    ),
    "Worker._shutdown": (procrastinate_worker.Worker._shutdown, "7e40cbd5efe3acf5"),
    "Worker._start_side_tasks": (
        procrastinate_worker.Worker._start_side_tasks,
        "2623df64cb23ce26",
    ),
    "JobManager.update_heartbeat": (
        manager.JobManager.update_heartbeat,
        "91a7b7aa717eace4",
    ),
    "JobManager.fetch_job": (manager.JobManager.fetch_job, "eb92906b55c10d9c"),
    "JobManager.register_worker": (
        manager.JobManager.register_worker,
        "611f376fe38f07f8",
    ),
}
UPSTREAM_SQL_PINS = {
    "update_heartbeat": "20072135a408e084",
    "register_worker": "c1f586449d9ef547",
    "fetch_job": "cdfaf364035990e2",
    "prune_stalled_workers": "20ea599ae729f744",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_PINS))
def test_the_upstream_code_fulfilment_worker_relies_on_is_unchanged(name: str) -> None:
    function, digest = UPSTREAM_PINS[name]
    assert _digest(inspect.getsource(function)) == digest, (
        f"procrastinate changed {name}: re-read FulfilmentWorker's docstring"
    )


@pytest.mark.parametrize("name", sorted(UPSTREAM_SQL_PINS))
def test_the_upstream_queries_fulfilment_worker_relies_on_are_unchanged(
    name: str,
) -> None:
    assert _digest(sql.queries[name]) == UPSTREAM_SQL_PINS[name], (
        f"procrastinate changed its {name} query: re-read FulfilmentWorker"
    )
