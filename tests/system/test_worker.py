"""The tuned worker (fulfillment/queue/worker.py): its pool, its kept wake-ups and the
queue's planner statistics, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import DjangoApp
from procrastinate.contrib.django import app as procrastinate_app

from fulfillment import queue
from fulfillment.queue import names
from fulfillment.queue.worker import (
    FulfilmentWorker,
    TunedDjangoConnector,
    queue_statistics_refresh,
    worker_pool_size,
)
from tests.helpers import jobs, wait_until

POLLING_S = 3.0


def _delay_of_a_job_deferred_by_a_running_job(
    worker_class: type[procrastinate_worker.Worker],
) -> float:
    """Seconds from a running job deferring another to that job starting, on a
    worker of ``worker_class`` at concurrency 4 woken by LISTEN/NOTIFY.

    The race is made certain: a fetch that finds nothing while a job runs
    lingers 0.4 s before returning, and the running job defers (and commits)
    0.1 s in, so the new job's notification always lands during a fetch.
    """
    app = DjangoApp(connector=TunedDjangoConnector().get_worker_connector())
    times: dict[str, float] = {}

    @app.task(queue="wakeup_probe", name="wakeup_probe.child")
    async def child() -> None:
        times["child_started"] = time.monotonic()

    @app.task(queue="wakeup_probe", name="wakeup_probe.parent")
    async def parent() -> None:
        await asyncio.sleep(0.1)
        times["child_deferred"] = time.monotonic()
        await child.defer_async()

    async def scenario() -> None:
        async with app.open_async():
            worker = worker_class(
                app=app,
                queues=["wakeup_probe"],
                concurrency=4,
                fetch_job_polling_interval=POLLING_S,
                install_signal_handlers=False,
                listen_notify=True,
            )
            real_fetch = app.job_manager.fetch_job

            async def fetch_lingering_while_a_job_runs(**kwargs: Any) -> Any:
                job = await real_fetch(**kwargs)
                if job is None and worker._running_jobs:
                    await asyncio.sleep(0.4)
                return job

            app.job_manager.fetch_job = fetch_lingering_while_a_job_runs  # type: ignore[method-assign, assignment]
            await parent.defer_async()
            running = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + POLLING_S + 2
            while "child_started" not in times and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            worker.stop()  # type: ignore[no-untyped-call]
            await asyncio.wait_for(running, timeout=10)

    asyncio.run(scenario())
    assert "child_started" in times, "the deferred job never ran"
    return times["child_started"] - times["child_deferred"]


@pytest.mark.django_db(transaction=True)
def test_a_job_deferred_by_a_running_job_starts_at_once_at_concurrency_4() -> None:
    delay = _delay_of_a_job_deferred_by_a_running_job(FulfilmentWorker)

    # The lingering fetch accounts for up to 0.4 s; the polling interval is 3 s.
    assert delay < 1.0


@pytest.mark.django_db(transaction=True)
def test_procrastinates_own_worker_still_loses_that_wake_up() -> None:
    """The canary: when this fails, upstream has fixed the lost wake-up and
    FulfilmentWorker can go (see its docstring for the fix proposed)."""
    delay = _delay_of_a_job_deferred_by_a_running_job(procrastinate_worker.Worker)

    assert delay > POLLING_S - 1.0


def test_manage_py_worker_runs_the_tuned_worker_and_connector() -> None:
    assert isinstance(procrastinate_app.connector, TunedDjangoConnector)
    assert isinstance(procrastinate_app._worker(), FulfilmentWorker)


@pytest.mark.django_db(transaction=True)
def test_worker_pool_connections_run_each_query_in_autocommit() -> None:
    connector = TunedDjangoConnector().get_worker_connector()

    async def probe() -> tuple[bool, int, int]:
        await connector.open_async()
        try:
            pool = connector.pool  # type: ignore[attr-defined]
            async with pool.connection() as conn:
                autocommit = conn.autocommit
                # The heartbeat query, as the worker runs it: no transaction
                # is left open around it.
                await conn.execute("SELECT 1")
                status = conn.info.transaction_status
            return autocommit, status, pool.max_size
        finally:
            await connector.close_async()

    autocommit, status, size = asyncio.run(probe())

    assert autocommit is True
    assert status == 0  # psycopg.pq.TransactionStatus.IDLE
    assert size == worker_pool_size() == 5  # WORKER_CONCURRENCY 4, plus the fetch


@pytest.fixture
def no_autoanalyze_of_the_queue() -> Iterator[None]:
    """Only the code under test analyzes procrastinate_jobs meanwhile."""
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE procrastinate_jobs SET (autovacuum_enabled = false)"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE procrastinate_jobs RESET (autovacuum_enabled)")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_autoanalyze_of_the_queue")
def test_queue_statistics_are_refreshed_when_a_burst_outgrows_them() -> None:
    connector = TunedDjangoConnector().get_worker_connector()

    def refresh() -> bool:
        async def check() -> bool:
            await connector.open_async()
            try:
                return await queue_statistics_refresh(connector)
            finally:
                await connector.close_async()

        return asyncio.run(check())

    # The state autovacuum leaves behind: statistics gathered when the table
    # held only finished jobs.
    for number in range(300):
        queue.defer(names.REFRESH_LEARNINGS, student_id=f"done{number}")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        cursor.execute("ANALYZE procrastinate_jobs")
    assert refresh() is False

    for number in range(250):
        queue.defer(names.REFRESH_LEARNINGS, student_id=f"s{number}")

    assert refresh() is True
    assert refresh() is False  # now they know
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM procrastinate_jobs "
            "WHERE status = 'todo'"
        )
        assert cursor.fetchone()[0][0]["Plan"]["Plan Rows"] >= 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_autoanalyze_of_the_queue")
def test_a_running_worker_refreshes_the_statistics_within_seconds() -> None:
    app = DjangoApp(connector=TunedDjangoConnector().get_worker_connector())
    for number in range(300):
        queue.defer(names.REFRESH_LEARNINGS, student_id=f"done{number}")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        cursor.execute("ANALYZE procrastinate_jobs")
        # A burst on a queue this worker does not serve, so it stays waiting.
        for number in range(250):
            queue.defer(names.REFRESH_LEARNINGS, student_id=f"s{number}")
        cursor.execute(
            "SELECT analyze_count FROM pg_stat_user_tables "
            "WHERE relname = 'procrastinate_jobs'"
        )
        analyzed_before = cursor.fetchone()[0]

    async def run_briefly() -> None:
        async with app.open_async():
            worker = FulfilmentWorker(
                app=app, queues=["nothing_here"], install_signal_handlers=False
            )
            running = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
            await asyncio.sleep(2.5)
            worker.stop()  # type: ignore[no-untyped-call]
            await asyncio.wait_for(running, timeout=10)

    asyncio.run(run_briefly())

    def analyzed() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT analyze_count FROM pg_stat_user_tables "
                "WHERE relname = 'procrastinate_jobs'"
            )
            return bool(cursor.fetchone()[0] > analyzed_before)

    # The statistics collector reports with a short delay.
    wait_until(analyzed, timeout=5, what="the worker's ANALYZE")


@pytest.mark.django_db
def test_maintenance_first_then_the_pipeline_then_cache_refreshes() -> None:

    for number in range(2):
        queue.defer(names.REFRESH_LEARNINGS, student_id=f"s{number}")
    queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(uuid.uuid4()))
    queue.defer(names.MATERIALISE_SESSIONS, purchase_id=str(uuid.uuid4()))
    for task_name in (
        names.RESCUE_STALLED_JOBS,
        names.RECONCILE_INVARIANTS,
        names.PRUNE_FINISHED_JOBS,
    ):
        queue.defer(task_name, timestamp=0)

    # The order procrastinate fetches in: priority, then age.
    fetch_order = sorted(jobs(), key=lambda job: (-job.priority, job.id))
    assert [job.queue_name for job in fetch_order] == [
        "maintenance",
        "maintenance",
        "maintenance",
        "allocation",
        "sessions",
        "cache",
        "cache",
    ]
