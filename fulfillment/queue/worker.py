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
* **A worker's life** (``FulfilmentWorker``): it beats until its last job ends,
  and comes back if its row was pruned, instead of stopping.
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
import psycopg.errors
import psycopg_pool
from django.conf import settings
from procrastinate import connector, exceptions, job_context, utils
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


# Upstream's name for its heartbeat side task (Worker._start_side_tasks).
HEARTBEAT_TASK_NAME = "update_heartbeats"
# One round trip: upstream's heartbeat function, and whether the row is there.
HEARTBEAT_QUERY = (
    "SELECT procrastinate_update_heartbeat_v1(%(worker_id)s), EXISTS ("
    "SELECT 1 FROM procrastinate_workers WHERE id = %(worker_id)s) AS registered"
)
# Our running jobs lost their worker when the row was pruned (ON DELETE SET
# NULL); unless they are given back, the rescue sees them stalled.
REATTACH_JOBS_QUERY = (
    "UPDATE procrastinate_jobs SET worker_id = %(worker_id)s "
    "WHERE id = ANY(%(job_ids)s) AND status = 'doing' AND worker_id IS NULL"
)


class FulfilmentWorker(procrastinate_worker.Worker):
    """procrastinate 3.10's worker, with the fetch loop's wake-up kept, a
    heartbeat that lasts as long as its jobs, and a pruned row re-registered.

    * **Wake-ups.** Upstream clears the "new job" event *after* each fetch. With
      concurrency > 1 the loop fetches again while the job it just started is
      running; when that job defers another and commits during the fetch, the
      fetch misses the new row and the clear then drops its notification: the
      new job waits for ``fetch_job_polling_interval``. Clearing *before* the
      fetch keeps any notification that arrives during it, so the loop fetches
      once more. (The upstream fix is proposed in the commit that added it.)
    * **Beating until the last job ends.** Upstream's ``_shutdown`` cancels every
      side task, the heartbeat included, and only then waits up to
      ``shutdown_graceful_timeout`` (20 s) for running jobs; after
      ``stalled_worker_timeout`` (10 s) the rescue took them for stalled and ran
      them again elsewhere. ``_shutdown`` keeps the heartbeat task (found by
      upstream's name for it) out of what upstream cancels and cancels it after.
    * **A pruned row.** A worker that missed beats (a frozen VM, a partition) can
      have its row deleted by another worker's ``prune_stalled_workers``; its
      next fetch then violated the jobs' foreign key and the worker stopped.
      Now the heartbeat (``HEARTBEAT_QUERY``, still upstream's function) and
      the fetch notice, and the worker registers again, handing its running
      jobs to the new row (``_register_again``).

    ``_fetch_and_process_jobs`` is upstream's with the clear moved and the fetch
    through ``_fetch_job``; ``_update_heartbeat`` is upstream's loop with
    ``HEARTBEAT_QUERY``. ``tests/test_worker.py`` fails if a new procrastinate
    loses wake-ups again; ``tests/test_worker_lifecycle.py`` fails if upstream
    changes any method, query or name these rely on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registering = asyncio.Lock()

    async def _shutdown(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        heartbeat = [t for t in side_tasks if t.get_name() == HEARTBEAT_TASK_NAME]
        try:
            await super()._shutdown([t for t in side_tasks if t not in heartbeat])
        finally:
            await utils.cancel_and_capture_errors(heartbeat)

    async def _update_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            worker_id = self.worker_id
            if worker_id is None:  # unregistered: shutdown is over
                return
            beat = await cast(
                connector.BaseAsyncConnector, self.app.connector
            ).execute_query_one_async(HEARTBEAT_QUERY, worker_id=worker_id)
            if not beat["registered"]:
                await self._register_again(pruned_id=worker_id)

    async def _fetch_job(self) -> Any:
        assert self.worker_id is not None  # noqa: S101 (upstream's invariant)
        worker_id = self.worker_id
        try:
            return await self.app.job_manager.fetch_job(
                queues=self.queues, worker_id=worker_id
            )
        except exceptions.ConnectorException as error:
            if not isinstance(error.__cause__, psycopg.errors.ForeignKeyViolation):
                raise
        await self._register_again(pruned_id=worker_id)
        assert self.worker_id is not None  # noqa: S101
        return await self.app.job_manager.fetch_job(
            queues=self.queues, worker_id=self.worker_id
        )

    async def _register_again(self, *, pruned_id: int) -> None:
        """Register anew after ``pruned_id``'s row was deleted; idempotent."""
        async with self._registering:
            if self.worker_id != pruned_id:
                return  # done meanwhile, or unregistered by shutdown
            if self._stop_event.is_set() and not self._running_jobs:
                return  # about to unregister: no ghost row
            self.worker_id = await self.app.job_manager.register_worker()
            job_ids = [c.job.id for c in self._running_jobs.values() if c.job.id]
            if job_ids:
                await cast(
                    connector.BaseAsyncConnector, self.app.connector
                ).execute_query_async(
                    REATTACH_JOBS_QUERY, worker_id=self.worker_id, job_ids=job_ids
                )
        logger.warning(
            "worker row was pruned; registered again",
            extra={
                "pruned_worker_id": pruned_id,
                "worker_id": self.worker_id,
                "running_job_ids": job_ids,
            },
        )

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

                # The fix: a notification that arrives during the fetch stays set.
                self._new_job_event.clear()
                job = await self._fetch_job()
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
