"""``make bench``: the pipeline's speed, and procrastinate's ceiling, in one run.

On a PostgreSQL of its own (tools/stack.py), with gunicorn and a catalogue of
hundreds of trainers, it measures:

1. webhook: answer time p50/p99 and deliveries/s at a fixed offered rate
   (workers stopped, so this is the web path alone);
2. latency: payment -> allocated with its session window, one payment at a
   time, through the webhook and real workers;
3. burst: N payments sent through the webhook as fast as it answers, with 1, 2
   and 4 worker processes; fulfilled purchases/s from the first payment stored
   to the last pipeline job done, and SQL statements and commits per purchase;
4. ceiling: the same burst of procrastinate no-op chains with as many stages
   as the pipeline (record, allocate, schedule, refresh), the same worker
   settings and 1 and 2 worker processes.

It prints the figures with ratios, writes them as JSON under tools/bench/results/,
and ends with one line:
``bench: fulfilled_per_s=… ceiling_chain_per_s=… ratio=… p50_ms=… p99_ms=…``

    python -m tools.benchmark                   # defaults
    python -m tools.benchmark --burst 500 --latency-payments 30   # quicker
    python -m tools.benchmark --postgres system # this machine's PostgreSQL programs
    python -m tools.benchmark --database-url URL  # a database on an existing server
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fulfillment.testing import stripe_events
from tools import stack
from tools.stack import Database, Delivery, Sender, Stack, percentile

RESULTS = stack.ROOT / "tools" / "bench" / "results"
LEARNINGS_READS = 100  # students whose learnings each burst reads back
CURVE_SEED_PURCHASES = 40  # each holds up to 32,767 seeded reservations
CHAIN_STAGES = 4  # record, allocate, schedule, refresh
# A job the burst caused: every job of the emptied database but the clock's
# periodic ones (and the ceiling's no-op chains, on a queue of their own).
BURST_JOB = (
    "j.queue_name <> 'bench' AND NOT EXISTS (SELECT FROM "
    "procrastinate_periodic_defers d WHERE d.job_id = j.id)"
)
APP_TABLES = [
    "fulfillment_tutoringsession",
    "fulfillment_reservation",
    "fulfillment_trainerallocation",
    "fulfillment_traceevent",
    "fulfillment_purchase",
    "fulfillment_webhookdelivery",
    "fulfillment_payment",
    "fulfillment_student",
    "fulfillment_jobfailure",
    "fulfillment_webhookoutcomecount",
    "fulfillment_cache",
    "fulfillment_cachedlearnings",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
]


class Bench:
    def __init__(self, stk: Stack, args: argparse.Namespace) -> None:
        self.stk = stk
        self.args = args
        self.rng = random.Random(args.seed)
        self.students = stack.Students(random.Random(args.seed + 1))
        self.courses: list[dict[str, Any]] = []
        self.statements = False

    # --- set-up ---------------------------------------------------------------------

    def reset(self) -> None:
        """No workers, no payments, no jobs; fresh planner statistics."""
        self.stop_workers()
        with self.stk.database.connect() as conn:
            conn.execute(f"TRUNCATE {', '.join(APP_TABLES)} CASCADE")
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")

    def stop_workers(self) -> None:
        for process in list(self.stk.workers):
            process.terminate()
            process.wait(timeout=30)
            self.stk.workers.remove(process)

    def start_workers(self, count: int, queues: str | None = None) -> None:
        for _ in range(count):
            self.stk.start_worker(queues=queues)
        self.stk.wait_workers_ready(count)

    def payment(self) -> Delivery:
        metadata = stack.payment_metadata(self.rng, self.students, self.courses)
        pi = stripe_events.new_id("pi")
        event = stripe_events.payment_intent_succeeded(
            metadata=metadata, payment_intent=pi
        )
        return Delivery("payment", pi, event)

    @contextlib.contextmanager
    def counting(self, into: dict[str, float]) -> Iterator[None]:
        """SQL statements and commits of the whole database while inside."""
        before = self._counters()
        yield
        after = self._counters()
        into.update({key: after[key] - before[key] for key in after})

    def _counters(self) -> dict[str, float]:
        with self.stk.database.connect() as conn:
            commits = conn.execute(
                "SELECT xact_commit FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
            counters = {"commits": float(commits[0]) if commits else 0.0}
            if self.statements:
                calls = conn.execute(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database "
                    "              WHERE datname = current_database())"
                ).fetchone()
                counters["statements"] = float(calls[0]) if calls else 0.0
        return counters

    # --- 1. the webhook alone -------------------------------------------------------

    def webhook(self) -> dict[str, Any]:
        rate, seconds = self.args.webhook_rate, self.args.webhook_seconds
        count = int(rate * seconds)
        deliveries = [self.payment() for _ in range(count)]
        with self.stk.database.connect() as conn:
            postmaster = stack.postmaster_pid(conn)
        cpu_before = self._cpu(postmaster)
        with Sender(port=self.stk.port, secret=self.stk.webhook_secret) as sender:
            start = time.monotonic()
            for number, delivery in enumerate(deliveries):
                delay = start + number / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sender.submit(delivery)
            sender.wait_idle(120)
        cpu = self._cpu_ms_per(count, cpu_before, self._cpu(postmaster))
        firsts = [d.attempts[0] for d in deliveries if d.attempts]
        times = [(a.ended - a.started) * 1000 for a in firsts]
        span = max(a.ended for a in firsts) - min(a.started for a in firsts)
        ok = sum(a.status == 200 for a in firsts)
        return {
            "offered_per_s": rate,
            "deliveries": count,
            "answered_200": ok,
            "deliveries_per_s": round(ok / span, 1),
            "p50_ms": round(percentile(times, 0.50), 1),
            "p99_ms": round(percentile(times, 0.99), 1),
            "max_ms": round(max(times), 1),
            # Workers are stopped: web and PostgreSQL only.
            "cpu_ms_per_delivery": round(sum(cpu.values()), 2),
            "cpu_ms_per_delivery_by_group": cpu,
        }

    # --- 2. one payment at a time ---------------------------------------------------

    def latency(self) -> dict[str, Any]:
        self.start_workers(self.args.latency_workers)
        sender = Sender(port=self.stk.port, secret=self.stk.webhook_secret)
        allocated, waitlisted = [], 0
        with self.stk.database.connect() as conn:
            for _ in range(self.args.latency_payments):
                delivery = self.payment()
                body = json.dumps(delivery.event).encode()
                began = time.monotonic()
                attempt = sender.post(
                    body,
                    stripe_events.signature_header(
                        body, secret=self.stk.webhook_secret
                    ),
                )
                purchase = attempt.body.get("purchase_id")
                if attempt.status != 200 or not purchase:
                    raise RuntimeError(f"payment not accepted: {attempt}")
                state = self._wait_fulfilled(conn, purchase, timeout=30)
                if state == "allocated":
                    allocated.append((time.monotonic() - began) * 1000)
                else:
                    waitlisted += 1
                time.sleep(0.05)  # idle between payments, as in real traffic
        self.stop_workers()
        return {
            "payments": self.args.latency_payments,
            "allocated": len(allocated),
            "waitlisted": waitlisted,
            "worker_processes": self.args.latency_workers,
            "p50_ms": round(percentile(allocated, 0.50), 1),
            "p99_ms": round(percentile(allocated, 0.99), 1),
            "max_ms": round(max(allocated, default=0.0), 1),
        }

    @staticmethod
    def _wait_fulfilled(conn: Any, purchase_id: str, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(
                """
                SELECT p.status, p.total_sessions,
                       (SELECT count(*) FROM fulfillment_tutoringsession s
                        WHERE s.purchase_id = p.id)
                FROM fulfillment_purchase p WHERE p.id = %s
                """,
                [purchase_id],
            ).fetchone()
            status, total, sessions = row
            if status == "allocated" and sessions >= min(7, total):
                return "allocated"
            if status == "waitlisted":
                return "waitlisted"
            time.sleep(0.002)
        raise RuntimeError(f"purchase {purchase_id} not fulfilled in {timeout}s")

    # --- 3. bursts through the pipeline ---------------------------------------------

    def burst(self, processes: int) -> dict[str, Any]:
        self.reset()
        self.start_workers(processes)
        count = self.args.burst
        deliveries = [self.payment() for _ in range(count)]
        counters: dict[str, float] = {}
        with self.stk.database.connect() as conn:
            postmaster = stack.postmaster_pid(conn)
            if self.statements:
                conn.execute("SELECT pg_stat_statements_reset()")
        cpu_before, sender_before = self._cpu(postmaster), stack.own_cpu_seconds()
        with self.counting(counters):
            with Sender(
                port=self.stk.port, secret=self.stk.webhook_secret, threads=16
            ) as sender:
                for delivery in deliveries:
                    sender.submit(delivery)
                sender.wait_idle(300)
            self._wait_every_job_done(timeout=600)
        cpu_after, sender_after = self._cpu(postmaster), stack.own_cpu_seconds()
        self.stop_workers()
        learnings = self._learnings_reads(deliveries)
        with self.stk.database.connect() as conn:
            row = conn.execute(
                f"""
                SELECT extract(epoch FROM
                         (SELECT max(e.at) FROM procrastinate_events e
                          JOIN procrastinate_jobs j ON j.id = e.job_id
                          WHERE e.type IN ('succeeded', 'failed', 'cancelled',
                                           'aborted')
                            AND {BURST_JOB})
                         - (SELECT min(created_at) FROM fulfillment_payment)),
                       (SELECT count(*) FROM fulfillment_purchase
                        WHERE status = 'allocated'),
                       (SELECT count(*) FROM fulfillment_purchase
                        WHERE status = 'waitlisted'),
                       (SELECT count(*) FROM procrastinate_jobs j
                        WHERE {BURST_JOB}),
                       (SELECT count(*) FROM procrastinate_jobs j
                        WHERE j.status <> 'succeeded' AND {BURST_JOB})
                """  # noqa: S608 (BURST_JOB is a constant)
            ).fetchone()
        if row is None or row[0] is None:
            raise RuntimeError("no pipeline job succeeded")
        seconds = float(row[0])
        allocated, waitlisted, jobs, unsuccessful = (int(v) for v in row[1:])
        cpu_ms = self._cpu_ms_per(count, cpu_before, cpu_after)
        result = {
            "worker_processes": processes,
            "payments": count,
            "allocated": allocated,
            "waitlisted": waitlisted,
            "jobs": jobs,
            "jobs_not_succeeded": unsuccessful,
            "seconds": round(seconds, 2),
            "fulfilled_per_s": round(count / seconds, 1),
            "commits_per_purchase": round(counters["commits"] / count, 1),
            "cpu_ms_per_purchase": round(sum(cpu_ms.values()), 2),
            "cpu_ms_per_purchase_by_group": cpu_ms,
            "learnings_read": learnings,
            "sender_cpu_ms_per_purchase": round(
                (sender_after - sender_before) * 1000 / count, 2
            ),
        }
        if "statements" in counters:
            result["statements_per_purchase"] = round(counters["statements"] / count, 1)
            result["top_statements"] = self._top_statements(count)
        return result

    def _top_statements(self, purchases: int) -> list[dict[str, Any]]:
        """Where PostgreSQL spent the burst: the statements of most execution
        time, per purchase (pg_stat_statements was reset as the burst began)."""
        with self.stk.database.connect() as conn:
            rows = conn.execute(
                """
                SELECT total_exec_time, calls, left(regexp_replace(query,
                       '\\s+', ' ', 'g'), 160)
                FROM pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database
                              WHERE datname = current_database())
                ORDER BY total_exec_time DESC LIMIT 12
                """
            ).fetchall()
        return [
            {
                "exec_ms_per_purchase": round(total / purchases, 3),
                "calls_per_purchase": round(calls / purchases, 2),
                "query": query,
            }
            for total, calls, query in rows
        ]

    def _learnings_reads(self, deliveries: list[Delivery]) -> dict[str, float]:
        """The API's learnings of some students of the burst, read twice: the
        first read finds whatever the pipeline left in the cache (a miss if no
        refresh warmed it), the second a hit."""
        students = sorted(
            {str((d.event or {})["data"]["object"]["metadata"]["student_id"])
             for d in deliveries}
        )[:LEARNINGS_READS]  # fmt: skip
        times: dict[str, list[float]] = {"first": [], "second": []}
        headers = {"Authorization": f"Bearer {self.stk.api_token}"}
        for read in ("first", "second"):
            for student in students:
                conn = http.client.HTTPConnection(stack.HOST, self.stk.port, timeout=10)
                began = time.monotonic()
                conn.request(
                    "GET", f"/api/students/{student}/learnings", headers=headers
                )
                response = conn.getresponse()
                response.read()
                times[read].append((time.monotonic() - began) * 1000)
                conn.close()
                if response.status != 200:
                    raise RuntimeError(f"learnings answered {response.status}")
        return {
            f"{read}_{name}_ms": round(percentile(values, fraction), 1)
            for read, values in times.items()
            for name, fraction in (("p50", 0.5), ("p99", 0.99))
        }

    def _cpu(self, postmaster: int | None) -> dict[str, float]:
        return stack.cpu_seconds(
            web=self.stk.web.pid if self.stk.web else None,
            workers=[process.pid for process in self.stk.workers],
            postmaster=postmaster,
        )

    @staticmethod
    def _cpu_ms_per(
        count: int, before: dict[str, float], after: dict[str, float]
    ) -> dict[str, float]:
        return {
            group: round((after[group] - before[group]) * 1000 / count, 2)
            for group in after
        }

    def _wait_every_job_done(self, *, timeout: float) -> None:
        """Until no purchase waits for its allocation and every job the burst
        caused (a refresh scheduled for later included) has finished."""
        deadline = time.monotonic() + timeout
        with self.stk.database.connect() as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    f"""
                    SELECT (SELECT count(*) FROM procrastinate_jobs j
                            WHERE j.status IN ('todo', 'doing') AND {BURST_JOB})
                         + (SELECT count(*) FROM fulfillment_purchase
                            WHERE status = 'allocation_pending')
                    """  # noqa: S608 (BURST_JOB is a constant)
                ).fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"the burst's jobs did not finish in {timeout}s")

    # --- 4. procrastinate's ceiling -----------------------------------------------

    def ceiling(self, processes: int) -> dict[str, Any]:
        self.reset()
        self.start_workers(processes, queues="bench")
        count = self.args.burst
        counters: dict[str, float] = {}
        with self.stk.database.connect() as conn:
            postmaster = stack.postmaster_pid(conn)
        # The command deferring the chains' first stages is left out, as the
        # burst's load generator is (its backend's CPU is in PostgreSQL's).
        cpu_before = self._cpu(postmaster)
        with self.counting(counters):
            self.stk.manage(
                "bench_defer_chains", f"--chains={count}", f"--stages={CHAIN_STAGES}"
            )
            deadline = time.monotonic() + 600
            with self.stk.database.connect() as conn:
                while time.monotonic() < deadline:
                    left = conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs "
                        "WHERE queue_name = 'bench' AND status IN ('todo', 'doing')"
                    ).fetchone()
                    done = conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs "
                        "WHERE queue_name = 'bench' AND status = 'succeeded'"
                    ).fetchone()
                    if (
                        left
                        and done
                        and left[0] == 0
                        and done[0] >= count * CHAIN_STAGES
                    ):
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError("the no-op chains did not drain in 600s")
                cpu = self._cpu_ms_per(count, cpu_before, self._cpu(postmaster))
                row = conn.execute(
                    """
                    SELECT extract(epoch FROM
                        max(e.at) FILTER (WHERE type = 'succeeded')
                        - min(e.at) FILTER (WHERE type = 'deferred'))
                    FROM procrastinate_events e
                    JOIN procrastinate_jobs j ON j.id = e.job_id
                    WHERE j.queue_name = 'bench'
                    """
                ).fetchone()
        self.stop_workers()
        if row is None or row[0] is None:
            raise RuntimeError("no chain stage succeeded")
        seconds = float(row[0])
        return {
            "worker_processes": processes,
            "chains": count,
            "stages": CHAIN_STAGES,
            "seconds": round(seconds, 2),
            "chains_per_s": round(count / seconds, 1),
            "commits_per_chain": round(counters["commits"] / count, 1),
            "cpu_ms_per_chain": round(sum(cpu.values()), 2),
            "cpu_ms_per_chain_by_group": cpu,
        }

    # --- 5. allocation cost as the business grows (--curve) -----------------------

    def curve(self) -> list[dict[str, Any]]:
        """Allocation of the same waiting purchases over more trainers and more
        existing reservations, both seeded in SQL (not through the pipeline)."""
        self.reset()
        seeds = [self.payment() for _ in range(CURVE_SEED_PURCHASES)]
        measured = [self.payment() for _ in range(self.args.curve_payments)]
        with Sender(port=self.stk.port, secret=self.stk.webhook_secret) as sender:
            for delivery in seeds:
                sender.submit(delivery)
            sender.wait_idle(120)
            with self.stk.database.connect() as conn:
                # The seed purchases hold the seeded reservations, under
                # allocations long completed: no capacity used, only time.
                conn.execute(
                    """
                    UPDATE fulfillment_purchase SET status = 'cancelled';
                    CREATE TABLE bench_seed_allocation AS
                    SELECT gen_random_uuid() AS id, p.id AS purchase_id,
                           row_number() OVER (ORDER BY p.id) - 1 AS number
                    FROM fulfillment_purchase p;
                    INSERT INTO fulfillment_trainerallocation
                        (id, purchase_id, trainer_id, status, assigned_by,
                         override_reason, released_by, created_at, ended_at)
                    SELECT a.id, a.purchase_id,
                           (SELECT id FROM fulfillment_trainer ORDER BY id LIMIT 1),
                           'completed', '', '', '', now(), now()
                    FROM bench_seed_allocation a;
                    CREATE TABLE bench_source_trainer AS
                    SELECT id, row_number() OVER (ORDER BY id) - 1 AS number
                    FROM fulfillment_trainer;
                    """
                )
            for delivery in measured:
                sender.submit(delivery)
            sender.wait_idle(120)
        points = []
        for trainers in _ints(self.args.curve_trainers):
            self._seed_trainers(trainers)
            for reservations in _ints(self.args.curve_reservations):
                seeded = time.monotonic()
                self._seed_reservations(reservations)
                seed_s = time.monotonic() - seeded
                output = json.loads(self.stk.manage("bench_allocation_cost"))
                wall, selector = output["allocate_ms"], output["selector_ms"]
                point = {
                    "trainers": trainers,
                    "reservations": reservations,
                    "allocations_timed": len(wall),
                    "outcomes": output["outcomes"],
                    "allocate_p50_ms": round(percentile(wall, 0.5), 2),
                    "allocate_mean_ms": round(sum(wall) / len(wall), 2),
                    "selector_ms_per_allocation": round(sum(selector) / len(wall), 2),
                    "seed_s": round(seed_s, 1),
                    "slowest_statement_plan": output.get("slowest_statement_plan", ""),
                }
                print(
                    "bench: curve",
                    {k: v for k, v in point.items() if k != "slowest_statement_plan"},
                    flush=True,
                )
                points.append(point)
        with self.stk.database.connect() as conn:
            conn.execute("DROP TABLE bench_seed_allocation, bench_source_trainer")
        return points

    def _seed_trainers(self, total: int) -> None:
        """Copies of the catalogue's trainers, nearby, until ``total``."""
        with self.stk.database.connect() as conn:
            conn.execute(
                """
                TRUNCATE fulfillment_reservation;
                DELETE FROM fulfillment_trainer_courses
                WHERE trainer_id NOT IN (SELECT id FROM bench_source_trainer);
                DELETE FROM fulfillment_trainer
                WHERE id NOT IN (SELECT id FROM bench_source_trainer);
                """
            )
            conn.execute(
                """
                CREATE TEMP TABLE clone AS
                SELECT gen_random_uuid() AS id, s.id AS source
                FROM generate_series(1, %(extra)s) g
                JOIN bench_source_trainer s
                  ON s.number = g %% (SELECT count(*) FROM bench_source_trainer)
                """,
                {"extra": max(total - self.args.trainers, 0)},
            )
            conn.execute(
                """
                INSERT INTO fulfillment_trainer
                    (id, name, email, latitude, longitude, max_travel_km,
                     max_active_students, weekdays, work_start, work_end,
                     is_active, created_at, updated_at)
                SELECT c.id, t.name || ' (copy)', '',
                       t.latitude + (random() - 0.5) * 0.05,
                       t.longitude + (random() - 0.5) * 0.05, t.max_travel_km,
                       t.max_active_students, t.weekdays, t.work_start,
                       t.work_end, t.is_active, now(), now()
                FROM clone c JOIN fulfillment_trainer t ON t.id = c.source;
                INSERT INTO fulfillment_trainer_courses (trainer_id, course_id)
                SELECT c.id, tc.course_id
                FROM clone c
                JOIN fulfillment_trainer_courses tc ON tc.trainer_id = c.source;
                DROP TABLE clone;
                ANALYZE fulfillment_trainer, fulfillment_trainer_courses;
                """
            )

    def _seed_reservations(self, total: int) -> None:
        """``total`` one-hour reservations spread evenly over every trainer's
        next two years, never overlapping one another."""
        with self.stk.database.connect() as conn:
            conn.execute("TRUNCATE fulfillment_reservation")
            conn.execute(
                """
                WITH trainer AS (
                    SELECT id, row_number() OVER (ORDER BY id) - 1 AS number
                    FROM fulfillment_trainer
                ), sizes AS (
                    SELECT (SELECT count(*) FROM fulfillment_trainer) AS trainers,
                           (SELECT count(*) FROM bench_seed_allocation) AS seeds
                ), slot AS (
                    -- Reservation k: the (k / trainers)-th of trainer k mod trainers
                    -- (both sides of each join hashable: no nested loop).
                    SELECT k, k %% sizes.trainers AS trainer_number,
                           k %% sizes.seeds AS seed_number,
                           k / sizes.seeds + 1 AS sequence,
                           date_trunc('day', now())
                           + (k / sizes.trainers) * interval '1 hour'
                             * greatest(1, floor(17520.0 * sizes.trainers
                                                 / %(total)s))
                           + (k %% sizes.trainers %% 7) * interval '5 minutes'
                             AS start
                    FROM generate_series(0, %(total)s - 1) k CROSS JOIN sizes
                )
                INSERT INTO fulfillment_reservation
                    (trainer_id, allocation_id, sequence, during)
                SELECT t.id, a.id, slot.sequence,
                       tstzrange(slot.start, slot.start + interval '1 hour', '[)')
                FROM slot
                JOIN bench_seed_allocation a ON a.number = slot.seed_number
                JOIN trainer t ON t.number = slot.trainer_number
                """,
                {"total": total},
            )
            conn.execute("VACUUM ANALYZE fulfillment_reservation")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--burst", type=int, default=1000, help="payments per burst")
    parser.add_argument("--processes", default="1,2,4", help="worker processes")
    parser.add_argument("--ceiling-processes", default="1,2")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--webhook-rate", type=float, default=200.0)
    parser.add_argument("--webhook-seconds", type=float, default=10.0)
    parser.add_argument("--latency-payments", type=int, default=60)
    parser.add_argument("--latency-workers", type=int, default=2)
    parser.add_argument("--trainers", type=int, default=600)
    parser.add_argument(
        "--postgres",
        default="embedded",
        help="embedded (default), system (this machine's PostgreSQL programs), "
        "or a directory holding the postgres program",
    )
    parser.add_argument("--database-url", help="an existing server to use instead")
    parser.add_argument("--dbname", default="fulfillment_bench")
    parser.add_argument("--run-dir", type=Path, default=stack.ROOT / ".data" / "bench")
    parser.add_argument("--label", default="", help="stored with the results")
    parser.add_argument(
        "--project",
        type=Path,
        default=stack.ROOT,
        help="the checkout whose code to measure (e.g. a worktree of an older "
        "commit, with this one's tools/ package copied in)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--curve",
        action="store_true",
        help="only the allocation-cost curve over trainers and reservations "
        "(about 6 minutes; not part of the default run, which it would take "
        "past 10 minutes)",
    )
    parser.add_argument("--curve-trainers", default="600,5000,20000")
    parser.add_argument("--curve-reservations", default="10000,100000,1000000")
    parser.add_argument("--curve-payments", type=int, default=20)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = {"shared_preload_libraries": "pg_stat_statements"}
    if args.database_url:
        database = Database(dbname=args.dbname, server_url=args.database_url)
    else:
        database = Database(
            dbname=args.dbname,
            data_dir=args.run_dir / "pg",
            postgres_bin=stack.postgres_programs(args.postgres),
            settings=settings,
        )
    stk = Stack(
        database=database,
        run_dir=args.run_dir / "logs",
        web_workers=args.web_workers,
        worker_concurrency=args.concurrency,
        extra_env={"FULFILMENT_BENCH": "1"},
        project=args.project.resolve(),
    )
    bench = Bench(stk, args)
    catalogue = stack.catalogue(trainers=args.trainers, seed=args.seed)
    bench.courses = catalogue["courses"]
    results: dict[str, Any] = {
        "label": args.label,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({_cpus()} CPUs)",
        "database": database.description,
        "commit": _commit(args.project),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    began = time.monotonic()
    print(f"bench: {database.description}; {args.trainers} trainers", flush=True)
    try:
        stk.prepare(catalogue)
        with database.connect() as conn, contextlib.suppress(Exception):
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
            bench.statements = True
        stk.start_web()
        if args.curve:
            print("bench: allocation cost over trainers and reservations ...")
            results["curve"] = bench.curve()
            return _curve_report(results)
        print("bench: webhook at a fixed rate ...", flush=True)
        results["webhook"] = bench.webhook()
        bench.reset()
        print("bench: one payment at a time ...", flush=True)
        results["latency"] = bench.latency()
        results["burst"] = []
        for processes in _ints(args.processes):
            print(f"bench: burst with {processes} worker processes ...", flush=True)
            results["burst"].append(bench.burst(processes))
        results["ceiling"] = []
        for processes in _ints(args.ceiling_processes):
            print(f"bench: no-op chains with {processes} worker processes ...")
            results["ceiling"].append(bench.ceiling(processes))
    finally:
        stk.stop()
        database.stop()
    results["seconds"] = round(time.monotonic() - began, 1)
    _report(results)
    _save(results)
    summary = results["summary"]
    print(
        f"bench: fulfilled_per_s={summary['fulfilled_per_s']} "
        f"ceiling_chain_per_s={summary['ceiling_chain_per_s']} "
        f"ratio={summary['ratio']} p50_ms={summary['p50_ms']} "
        f"p99_ms={summary['p99_ms']} "
        f"cpu_ms_per_purchase={summary['cpu_ms_per_purchase']}"
    )
    return 0


def _curve_report(results: dict[str, Any]) -> int:
    rows: list[tuple[str, object]] = [
        (f"{p['trainers']:>6} trainers, {p['reservations']:>8} reservations: "
         "allocate p50 / selector ms",
         f"{p['allocate_p50_ms']} / {p['selector_ms_per_allocation']}")
        for p in results["curve"]
    ]  # fmt: skip
    stack.print_table(rows, title="bench: allocation cost (ms per allocation)")
    _save(results, suffix="curve")
    base = results["curve"][0]["allocate_p50_ms"]
    worst = max(p["allocate_p50_ms"] for p in results["curve"])
    print(f"bench: curve allocate_p50_ms={base} worst_p50_ms={worst} "
          f"growth={worst / base:.2f}")  # fmt: skip
    return 0


def _save(results: dict[str, Any], *, suffix: str = "") -> None:
    label = results["label"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = "-".join(part for part in (f"bench-{stamp}", suffix, label) if part)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"bench: results in {path.relative_to(stack.ROOT)}")


def _report(results: dict[str, Any]) -> None:
    webhook, latency = results["webhook"], results["latency"]
    bursts = {b["worker_processes"]: b for b in results["burst"]}
    ceilings = {c["worker_processes"]: c for c in results["ceiling"]}
    rows: list[tuple[str, object]] = [
        (f"webhook p50 / p99 ms at {webhook['offered_per_s']:g}/s offered",
         f"{webhook['p50_ms']} / {webhook['p99_ms']}"),
        ("webhook deliveries/s answered", webhook["deliveries_per_s"]),
        ("webhook CPU ms / delivery (web + PostgreSQL)",
         webhook.get("cpu_ms_per_delivery", "-")),
        ("payment -> allocated p50 / p99 ms",
         f"{latency['p50_ms']} / {latency['p99_ms']}"),
    ]  # fmt: skip
    for processes, burst in sorted(bursts.items()):
        rows.append((f"fulfilled/s, {processes} worker processes",
                     burst["fulfilled_per_s"]))  # fmt: skip
    for processes, ceiling in sorted(ceilings.items()):
        rows.append((f"ceiling chains/s ({ceiling['stages']} no-op stages), "
                     f"{processes} processes", ceiling["chains_per_s"]))  # fmt: skip
    reference = bursts.get(2) or next(iter(bursts.values()))
    ceiling = ceilings.get(reference["worker_processes"]) or next(
        iter(ceilings.values())
    )
    ratio = reference["fulfilled_per_s"] / ceiling["chains_per_s"]
    rows.append((f"fulfilled / ceiling, {reference['worker_processes']} processes",
                 f"{ratio:.2f}"))  # fmt: skip
    if 1 in bursts and 2 in bursts:
        scale = bursts[2]["fulfilled_per_s"] / bursts[1]["fulfilled_per_s"]
        rows.append(("scaling 1 -> 2 worker processes", f"{scale:.2f}x"))
    by_group = reference["cpu_ms_per_purchase_by_group"]
    rows.append((f"box CPU ms / purchase, {reference['worker_processes']} processes",
                 reference["cpu_ms_per_purchase"]))  # fmt: skip
    rows.append(("  web / workers / PostgreSQL",
                 f"{by_group['web']} / {by_group['workers']} / "
                 f"{by_group['postgres']}"))  # fmt: skip
    rows.append(("  load generator (not in the box figure)",
                 reference["sender_cpu_ms_per_purchase"]))  # fmt: skip
    rows.append(("jobs per purchase (burst)",
                 round(reference["jobs"] / reference["payments"], 2)))  # fmt: skip
    read = reference["learnings_read"]
    rows.append(("learnings API after the burst: first / second read p50 ms",
                 f"{read['first_p50_ms']} / {read['second_p50_ms']}"))  # fmt: skip
    rows.append(("learnings API after the burst: first / second read p99 ms",
                 f"{read['first_p99_ms']} / {read['second_p99_ms']}"))  # fmt: skip
    rows.append(("commits per purchase (burst)", reference["commits_per_purchase"]))
    if "statements_per_purchase" in reference:
        rows.append(("SQL statements per purchase (burst)",
                     reference["statements_per_purchase"]))  # fmt: skip
    rows.append(("commits per no-op chain", ceiling["commits_per_chain"]))
    if "cpu_ms_per_chain" in ceiling:
        chain = ceiling["cpu_ms_per_chain_by_group"]
        rows.append((f"box CPU ms / no-op chain, {ceiling['worker_processes']} "
                     "processes (workers / PostgreSQL)",
                     f"{ceiling['cpu_ms_per_chain']} ({chain['workers']} / "
                     f"{chain['postgres']})"))  # fmt: skip
    stack.print_table(rows, title="bench: results")
    results["summary"] = {
        "fulfilled_per_s": reference["fulfilled_per_s"],
        "ceiling_chain_per_s": ceiling["chains_per_s"],
        "ratio": round(ratio, 2),
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "cpu_ms_per_purchase": reference["cpu_ms_per_purchase"],
        "webhook_p99_ms": webhook["p99_ms"],
    }


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _cpus() -> int:
    return os.cpu_count() or 0


def _commit(project: Path) -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
