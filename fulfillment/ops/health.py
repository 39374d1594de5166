"""Health checks shared by ``/healthz`` and ``manage.py doctor``.

Each check answers one of the failures in the old system's write-ups: the
database (and its schema: the "topics") missing, workers not running or not
serving a queue, jobs stalled or failed, purchases stuck, money not fulfilled.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from fulfillment.selectors.jobs import (
    failed_job_groups,
    queue_stats,
    stalled_jobs_count,
)
from fulfillment.selectors.purchases import (
    payments_needing_attention,
    purchases_stuck,
    purchases_waitlisted_past_sla,
)
from fulfillment.selectors.workers import live_workers, lost_workers

# A ready job nobody picked up for this long means no worker serves its queue.
QUEUE_WAIT_LIMIT_S = 60.0
# A purchase still allocation_pending after this is stuck (the pipeline takes ms).
ALLOCATION_SLA = dt.timedelta(minutes=5)
# Jobs stalled this long were missed by the rescue, which runs every 5 s.
STALLED_LIMIT_S = 30.0


class CheckVerdict(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: CheckVerdict
    summary: str
    value: float | int | None = None
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.verdict is not CheckVerdict.FAIL,
            "verdict": str(self.verdict),
            "detail": self.summary,
            "value": self.value,
            "details": self.details,
        }


def check_database() -> Check:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
    except DatabaseError as error:
        return Check("database", CheckVerdict.FAIL, f"unreachable: {error}"[:300])
    ms = (time.monotonic() - started) * 1000
    version = row[0] if row else "?"
    return Check(
        "database", CheckVerdict.OK, f"reachable, PostgreSQL {version}", round(ms, 1)
    )


def check_migrations() -> Check:
    loader = MigrationLoader(connection)
    # Every known migration, not just a plan to the leaves: a migration missing
    # in the middle of an app's history counts too.
    names = sorted(
        f"{app}.{name}"
        for app, name in set(loader.graph.nodes) - set(loader.applied_migrations)
    )
    if names:
        return Check(
            "migrations",
            CheckVerdict.FAIL,
            f"{len(names)} unapplied: run manage.py migrate",
            len(names),
            names[:20],
        )
    applied = len(loader.applied_migrations)
    return Check("migrations", CheckVerdict.OK, f"all {applied} applied", 0)


def check_workers() -> Check:
    workers = live_workers()
    # Where a silent worker ran (a host cut off, a process killed), until its
    # row is pruned: its jobs are rescued, the host still needs a look.
    lost = [
        f"lost: worker {w.worker_id} on {w.host or '?'}:{w.pid or '?'}, "
        f"no heartbeat for {w.heartbeat_age_s:.0f}s"
        for w in lost_workers()
    ]
    if not workers:
        return Check(
            "workers",
            CheckVerdict.FAIL,
            "no worker alive (no heartbeat in the last "
            f"{settings.WORKER_STALLED_AFTER_SECONDS:.0f}s): start one with "
            "manage.py procrastinate worker",
            0,
            lost,
        )
    details = [
        f"worker {w.worker_id} on {w.host or '?'}:{w.pid or '?'} "
        f"queues={','.join(w.queues) if w.queues else 'all' if w.queues == () else '?'}"
        f" heartbeat {w.heartbeat_age_s:.0f}s ago"
        for w in workers
    ]
    summary = f"{len(workers)} alive" + (f", {len(lost)} lost" if lost else "")
    return Check("workers", CheckVerdict.OK, summary, len(workers), details + lost)


def check_queues_served() -> Check:
    workers = live_workers()
    unserved = []
    for stats in queue_stats():
        waiting_too_long = (stats.oldest_ready_age_s or 0) > QUEUE_WAIT_LIMIT_S
        nobody = not any(worker.serves(stats.queue) for worker in workers)
        if stats.todo and (nobody or waiting_too_long):
            unserved.append(
                f"{stats.queue}: {stats.todo} ready, oldest "
                f"{stats.oldest_ready_age_s or 0:.0f}s, "
                f"{'no worker serves it' if nobody else 'nobody is taking them'}"
            )
    if unserved:
        return Check(
            "queues served",
            CheckVerdict.FAIL,
            f"{len(unserved)} queue(s) with work and nobody serving",
            len(unserved),
            unserved,
        )
    return Check(
        "queues served", CheckVerdict.OK, "every queue with work has a worker", 0
    )


def check_queue_depth() -> Check:
    stats = queue_stats()
    depth = sum(s.todo for s in stats)
    oldest = max((s.oldest_ready_age_s or 0.0 for s in stats), default=0.0)
    details = [
        f"{s.queue}: todo={s.todo} scheduled={s.scheduled} doing={s.doing} "
        f"failed={s.failed} oldest_ready={s.oldest_ready_age_s or 0:.1f}s"
        for s in stats
    ]
    verdict = CheckVerdict.WARN if oldest > QUEUE_WAIT_LIMIT_S else CheckVerdict.OK
    return Check(
        "queue depth",
        verdict,
        f"{depth} ready, oldest waiting {oldest:.1f}s",
        depth,
        details,
    )


def check_stalled_jobs() -> Check:
    count = stalled_jobs_count(stalled_after_s=STALLED_LIMIT_S)
    if count:
        return Check(
            "stalled jobs",
            CheckVerdict.FAIL,
            f"{count} job(s) in doing with a dead worker for over "
            f"{STALLED_LIMIT_S:.0f}s: is the rescue task running?",
            count,
        )
    return Check("stalled jobs", CheckVerdict.OK, "none", 0)


def check_failed_jobs() -> Check:
    since = timezone.now() - dt.timedelta(hours=24)
    groups = [g for g in failed_job_groups(limit=100) if g.last_seen >= since]
    count = sum(group.count for group in groups)
    if count:
        return Check(
            "failed jobs (24h)",
            CheckVerdict.FAIL,
            f"{count} failed: retry them from the admin once the cause is fixed",
            count,
            [f"{g.count}x {g.task_name}: {g.error}" for g in groups],
        )
    return Check("failed jobs (24h)", CheckVerdict.OK, "none", 0)


def check_stuck_purchases() -> Check:
    stuck = purchases_stuck(older_than=ALLOCATION_SLA)
    count = stuck.count()
    oldest = stuck.first()
    if count and oldest is not None:
        return Check(
            "stuck purchases",
            CheckVerdict.FAIL,
            f"{count} waiting for allocation longer than "
            f"{ALLOCATION_SLA.total_seconds() / 60:.0f} min",
            count,
            [f"oldest: {oldest.pk} since {oldest.created_at:%Y-%m-%d %H:%M}"],
        )
    return Check("stuck purchases", CheckVerdict.OK, "none past the SLA", 0)


def check_waitlist_sla() -> Check:
    hours = settings.WAITLIST_SLA_HOURS
    late = purchases_waitlisted_past_sla(sla=dt.timedelta(hours=hours))
    count = late.count()
    if count:
        details = [
            f"{p.pk} waitlisted since its payment at "
            f"{timezone.localtime(p.payment.created_at):%Y-%m-%d %H:%M %Z}: "
            f"{p.status_reason.splitlines()[0] if p.status_reason else '-'}"
            for p in late.select_related("payment")[:10]
        ]
        return Check(
            "waitlist SLA",
            CheckVerdict.FAIL,
            f"{count} waitlisted longer than {hours} h since payment: assign a "
            "trainer or widen the catalogue",
            count,
            details,
        )
    return Check("waitlist SLA", CheckVerdict.OK, f"none waiting over {hours} h", 0)


def check_payments_needing_attention() -> Check:
    payments = payments_needing_attention()
    count = payments.count()
    if count:
        return Check(
            "payments needing attention",
            CheckVerdict.FAIL,
            f"{count} paid but not fulfilled: correct and reprocess in the admin",
            count,
            [f"{p.payment_intent}: {p.attention_reason}" for p in payments[:10]],
        )
    return Check("payments needing attention", CheckVerdict.OK, "none", 0)


# A transaction holding locks longer than settings.DOCTOR_LOCK_HOLD_LIMIT_S (or
# idle inside one) is holding others up; PostgreSQL ends an idle one after
# DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S.

# Client sessions of this database in a transaction older than %s seconds that
# are idle in it or hold a lock on a table; the tables they lock, and how many
# sessions wait for them.
_LONG_LOCK_HOLDERS = """
    SELECT a.pid, a.application_name, a.state,
           extract(epoch FROM now() - a.xact_start),
           array_agg(DISTINCT c.relname ORDER BY c.relname)
               FILTER (WHERE c.relname IS NOT NULL),
           (SELECT count(*) FROM pg_stat_activity w
            WHERE a.pid = ANY(pg_blocking_pids(w.pid))),
           left(a.query, 120)
    FROM pg_stat_activity a
    LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted AND l.locktype = 'relation'
    LEFT JOIN pg_class c ON c.oid = l.relation AND c.relkind IN ('r', 'p')
        AND c.relnamespace <> 'pg_catalog'::regnamespace
    WHERE a.datname = current_database()
      AND a.backend_type = 'client backend'
      AND a.pid <> pg_backend_pid()
      AND a.xact_start < now() - make_interval(secs => %s)
    GROUP BY a.pid, a.application_name, a.state, a.xact_start, a.query
    HAVING a.state LIKE 'idle in transaction%%' OR count(c.relname) > 0
    ORDER BY a.xact_start
"""


def check_long_lock_holders() -> Check:
    """Sessions that have held locks, or idled in a transaction, too long: they
    stall whatever needs the same rows (a trainer's, a purchase's)."""
    with connection.cursor() as cursor:
        cursor.execute(_LONG_LOCK_HOLDERS, [settings.DOCTOR_LOCK_HOLD_LIMIT_S])
        holders = cursor.fetchall()
    if not holders:
        return Check(
            "long lock holders",
            CheckVerdict.OK,
            f"no transaction holding locks over {settings.DOCTOR_LOCK_HOLD_LIMIT_S}s",
            0,
        )
    details = [
        f"pid {pid} ({application_name or 'no application_name'}) {state} "
        f"for {age:.0f}s, locking {', '.join(tables or []) or 'no table'}"
        f"{f', blocking {blocked}' if blocked else ''}; last query: {query}"
        for pid, application_name, state, age, tables, blocked, query in holders
    ]
    return Check(
        "long lock holders",
        CheckVerdict.FAIL,
        f"{len(holders)} session(s) in a transaction holding locks for over "
        f"{settings.DOCTOR_LOCK_HOLD_LIMIT_S}s: end them "
        "(pg_terminate_backend(pid)) or find what keeps them open",
        len(holders),
        details,
    )


DOCTOR_CHECKS: tuple[Callable[[], Check], ...] = (
    check_database,
    check_migrations,
    check_workers,
    check_queues_served,
    check_queue_depth,
    check_stalled_jobs,
    check_failed_jobs,
    check_stuck_purchases,
    check_waitlist_sla,
    check_payments_needing_attention,
    check_long_lock_holders,
)
HEALTHZ_CHECKS: tuple[Callable[[], Check], ...] = (
    check_database,
    check_migrations,
    check_workers,
)


def run_checks(checks: tuple[Callable[[], Check], ...]) -> list[Check]:
    """Run ``checks`` in order; if the database is down the rest cannot run."""
    results: list[Check] = []
    for check in checks:
        try:
            result = check()
        except DatabaseError as error:
            result = Check(
                check.__name__.removeprefix("check_").replace("_", " "),
                CheckVerdict.FAIL,
                f"could not check: {error}"[:300],
            )
        results.append(result)
        if result.name == "database" and result.verdict is CheckVerdict.FAIL:
            break
    return results


def health_checks() -> dict[str, dict[str, Any]]:
    """What ``/healthz`` reports: database, migrations and live workers."""
    results = {check.name: check.as_dict() for check in run_checks(HEALTHZ_CHECKS)}
    for name in ("database", "migrations", "workers"):
        results.setdefault(
            name, {"ok": False, "verdict": "fail", "detail": "unknown: no database"}
        )
    return results
