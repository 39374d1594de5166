"""How ``manage.py procrastinate worker`` talks to PostgreSQL, tuned.

Installed by ``PROCRASTINATE_ON_APP_READY`` (settings). Three changes around
procrastinate 3.10's worker, each measured (``docs/performance.md``, the record
``docs/decisions/0003-forked-worker-fetch-loop.md`` and the commits that brought
them):

* **Its pool.** The stock worker connector checks out a pooled connection with a
  liveness probe and wraps every query in BEGIN/COMMIT: four round trips per
  query, twelve per job. Every procrastinate query is a single statement (a
  PL/pgSQL function), so autocommit loses nothing; the probe now runs only on a
  connection that sat idle long enough to have been cut (a PostgreSQL restart,
  a proxy's idle timeout), so a busy worker pays one round trip per query and an
  idle one still reconnects transparently.
* **A lost wake-up** (``FulfilmentWorker``): with concurrency > 1, a job deferred
  by a running job could wait for the polling interval instead of starting.
* **The queue's planner statistics** (``queue_statistics_refresh``, checked
  every second by each worker): a burst must not meet statistics of an empty
  queue.

It also installs the task middleware (``fulfillment.queue.middleware``) here,
where the models are loaded, rather than in settings. Tasks themselves are
untouched: they run on Django's own connections, and defer through
``fulfillment.queue.defer`` on them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, cast

import psycopg
import psycopg_pool
from django.conf import settings
from procrastinate import connector, job_context, utils
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import settings as procrastinate_settings
from procrastinate.contrib.django import utils as django_utils
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.psycopg_connector import PsycopgConnector

from fulfillment.queue import middleware

if TYPE_CHECKING:
    from procrastinate import App

logger = logging.getLogger(__name__)

# A pooled connection idle for longer than this is probed before use.
PROBE_IDLE_AFTER_S = 5.0

_returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


def on_app_ready(app: App) -> None:
    """procrastinate's Django hook: tune the worker's connector and loop."""
    tuned = TunedDjangoConnector(alias=procrastinate_settings.settings.DATABASE_ALIAS)
    app.connector = tuned
    app.job_manager.connector = tuned
    app.worker_defaults = {
        **app.worker_defaults,
        "task_middleware": [middleware.record_job_failure],
    }
    # App has no option for the worker class; this is its one factory.
    app._worker = functools.partial(_worker, app)  # type: ignore[method-assign]


def _worker(app: App, **options: Any) -> procrastinate_worker.Worker:
    return FulfilmentWorker(app=app, **{**app.worker_defaults, **options})


class TunedDjangoConnector(DjangoConnector):
    """Django's connector for deferring; a tuned pool for the worker itself."""

    def get_worker_connector(self) -> connector.BaseAsyncConnector:
        size = worker_pool_size()
        return PsycopgConnector(
            kwargs={
                **django_utils.connector_params(self.alias),
                "application_name": "fulfillment-worker",
            },
            min_size=size,
            max_size=size,
            configure=_autocommit,
            reset=_note_returned,
            pool_factory=_pool_probing_idle_connections,
        )


def worker_pool_size() -> int:
    """One connection per concurrent job's finish, and one for the fetch loop;
    heartbeats and periodic deferrals borrow between them. Sized from
    ``WORKER_CONCURRENCY``: a ``--concurrency`` given on the command line does
    not resize it (more jobs than connections just wait for one)."""
    concurrency: int = settings.WORKER_CONCURRENCY
    return concurrency + 1


async def _autocommit(connection: psycopg.AsyncConnection[Any]) -> None:
    # Through the pool's configure hook, not kwargs: procrastinate opens its
    # LISTEN connection with the same kwargs plus its own autocommit=True.
    await connection.set_autocommit(True)


async def _note_returned(connection: psycopg.AsyncConnection[Any]) -> None:
    _returned_at[connection] = time.monotonic()


async def _probe_if_idle(connection: psycopg.AsyncConnection[Any]) -> None:
    returned = _returned_at.get(connection)
    if returned is None or time.monotonic() - returned > PROBE_IDLE_AFTER_S:
        await psycopg_pool.AsyncConnectionPool.check_connection(connection)


def _pool_probing_idle_connections(
    **options: Any,
) -> psycopg_pool.AsyncConnectionPool[Any]:
    # procrastinate passes check=check_connection (a probe on every checkout).
    return psycopg_pool.AsyncConnectionPool(**{**options, "check": _probe_if_idle})


class FulfilmentWorker(procrastinate_worker.Worker):
    """procrastinate 3.10's worker, with the fetch loop's wake-up kept.

    Upstream clears the "new job" event *after* each fetch. With concurrency > 1
    the loop fetches again while the job it just started is running; when that
    job defers another and commits during the fetch, the fetch misses the new
    row and the clear then drops its notification: the new job waits for
    ``fetch_job_polling_interval``. Clearing *before* the fetch keeps any
    notification that arrives during it, so the loop fetches once more.
    The method is upstream's ``_fetch_and_process_jobs`` with that one line moved
    (the upstream fix is proposed in the commit that added it);
    ``tests/test_worker.py`` fails if a new procrastinate loses wake-ups again or
    changes this method.
    """

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        side_tasks = super()._start_side_tasks()
        side_tasks.append(
            asyncio.create_task(
                self._keep_queue_statistics(), name="keep_queue_statistics"
            )
        )
        return side_tasks

    async def _keep_queue_statistics(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_STATISTICS_EVERY_S)
            try:
                await queue_statistics_refresh(
                    cast(connector.BaseAsyncConnector, self.app.connector)
                )
            except Exception:
                # A side task that raises stops the worker; a missed check
                # only delays the next ANALYZE by a second.
                logger.warning("queue statistics check failed", exc_info=True)

    async def _fetch_and_process_jobs(self) -> None:
        """Fetch and process jobs until there is no job left or asked to stop"""
        while not self._stop_event.is_set():
            acquire_sem_task = asyncio.create_task(self._job_semaphore.acquire())
            job = None
            try:
                await utils.wait_any(acquire_sem_task, self._stop_event.wait())
                if self._stop_event.is_set():
                    break

                assert self.worker_id is not None  # noqa: S101 (upstream's invariant)
                # The fix: a notification that arrives during the fetch stays set.
                self._new_job_event.clear()
                job = await self.app.job_manager.fetch_job(
                    queues=self.queues, worker_id=self.worker_id
                )
            finally:
                if (not job or self._stop_event.is_set()) and acquire_sem_task.done():
                    self._job_semaphore.release()

            if not job:
                break

            job_id = job.id

            context = job_context.JobContext(
                app=self.app,
                worker_name=self.worker_name,
                worker_queues=self.queues,
                additional_context=self.additional_context.copy()
                if self.additional_context
                else {},
                job=job,
                abort_reason=lambda job_id=job_id: (  # type: ignore[misc]
                    self._job_ids_to_abort.get(job_id) if job_id else None
                ),
                start_timestamp=time.time(),
            )
            job_task = asyncio.create_task(
                self._process_job(context),
                name=f"process job {job.task_name}[{job.id}]",
            )
            self._running_jobs[job_task] = context

            def on_job_complete(task: asyncio.Task[Any]) -> None:
                del self._running_jobs[task]
                self._job_semaphore.release()

            job_task.add_done_callback(on_job_complete)


# --- planner statistics of the queue ----------------------------------------------
# procrastinate's fetch is planned from procrastinate_jobs' statistics. Gathered
# while the queue was empty (autovacuum sees mostly finished jobs), they make the
# planner check each candidate's lock against every waiting job: a fetch then
# costs O(queue depth) just when a burst has made the queue deep. Statistics that
# overstate the queue cost nothing, so they are refreshed only in that direction.

QUEUE_STATISTICS_EVERY_S = 1.0
# Refresh when the queue holds this many times more waiting jobs than the planner
# believes, and at least STALE_MIN_WAITING of them.
STALE_FACTOR = 10
STALE_MIN_WAITING = 200


async def queue_statistics_refresh(connector: connector.BaseAsyncConnector) -> bool:
    """ANALYZE procrastinate_jobs if the planner believes the queue much emptier
    than it is; returns whether it did. Cheap when they agree: an estimate, and
    a count over the waiting jobs' partial index that stops at the threshold."""
    plan = await connector.execute_query_one_async(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM procrastinate_jobs WHERE status = 'todo'"
    )
    believed = int(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"])
    threshold = max(STALE_FACTOR * believed, STALE_MIN_WAITING)
    counted = await connector.execute_query_one_async(
        "SELECT count(*) AS waiting FROM (SELECT 1 FROM procrastinate_jobs "
        "WHERE status = 'todo' LIMIT %(threshold)s) AS waiting",
        threshold=threshold,
    )
    if counted["waiting"] < threshold:
        return False
    await connector.execute_query_async("ANALYZE procrastinate_jobs")
    logger.info(
        "queue statistics refreshed",
        extra={"believed_waiting": believed, "waiting_at_least": threshold},
    )
    return True
