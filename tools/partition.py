"""``make partition``: workers on other hosts, one of them cut off mid-job, and a
slow link (issue #14 item 3).

Hosts are network namespaces of the run's own (tools/netns.py): ``host-a`` and
``host-b`` each run a ``procrastinate worker`` under a restarter (as systemd or
compose would), reaching a PostgreSQL of the run's own over a veth link; that
server listens only on the unix socket and on the host ends of those links, and
trusts only their /30s. The web app (gunicorn) and a local worker run on this
machine, over the unix socket. Nothing else on any network is touched.

1. **Slow link.** ~20 payments one at a time, each timed from the webhook's 200
   to its purchase leaving ``allocation_pending``: with a local worker, with a
   worker on host-b over the bare link, and over the link delayed 100 ms (``tc
   netem delay`` on host-b's side: +100 ms per round trip). pg_stat_statements
   counts what host-b's worker sent per payment (its own database role), which
   is where the round trips go. Asserted: the delayed latency stays within the
   local one plus (statements per payment + 2) round trips (the NOTIFY and the
   fetch), with 25 % slack. Whether it is within 2x of local is reported.
2. **Partition.** A payment's allocation job starts on host-a and, mid-job
   (allocation and reservations written, not committed: it waits for the
   student's row, which the run holds), host-a is cut off (``netem loss 100%``
   both ways: a dead peer, not a reset) for ``--cut`` seconds, then healed.
   Meanwhile more payments arrive. Asserted: the job is rescued and succeeds on
   host-b within 30 s of the cut; host-a's transaction is ``aborted`` in
   PostgreSQL's commit log (its writes never committed); the job succeeded
   exactly once; ``manage.py doctor`` names host-a as lost while it is cut;
   host-a's worker rejoins after the heal (the same process or one its
   restarter started); every purchase has one active allocation and a
   reservation per session, no session twice, no overlap, no job failed or
   left behind.

How fast a cut worker's sessions die is ``DATABASE_DEAD_PEER_TIMEOUT_S``
(``--dead-peer-timeout``, default 15 here; the service's default is 60): the
server drops host-a's backend, and with it the purchase's row lock, after that
long, and only then can the rescued job lock the purchase. host-a's own client
side is given keepalives longer than the cut, so its worker is still waiting
when the link heals and does try to go on: what it then finds is reported.

    python -m tools.partition                       # the full run (~4 minutes)
    python -m tools.partition --cut 20 --latency-payments 5   # the suite's size

Prints a table, writes it as JSON under the run's directory, exits 1 if an
assertion failed. Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg

from fulfillment.testing import stripe_events
from tools import netns, stack
from tools.stack import Database, Sender, Stack

ROOT = stack.ROOT
DBNAME = "partition"
REMOTE_ROLE = "remote_worker"  # host-b's role, so its statements can be counted
RESCUE_DEADLINE_S = 30.0
RESTART_DELAY_S = 2.0
POLL_S = 0.005
SLACK = 1.25


@dataclasses.dataclass
class Options:
    cut_s: float = 60.0
    dead_peer_s: int = 15
    latency_payments: int = 20
    delay_ms: int = 100
    during_cut_payments: int = 5
    trainers: int = 200
    seed: int = 14
    data_dir: Path = ROOT / ".data" / "partition"


@dataclasses.dataclass
class Result:
    rows: list[tuple[str, object]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self, name: str, value: object) -> None:
        self.rows.append((name, value))

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


class Restarter(threading.Thread):
    """Runs ``argv`` and starts it again ``RESTART_DELAY_S`` after it exits, as
    a service manager does, until ``stop``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        super().__init__(name=f"restarter-{name}", daemon=True)
        self.argv, self.env, self.log_path = argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []
        self.exits: list[tuple[float, int]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        with self.log_path.open("ab") as log:
            while not self._stopping.is_set():
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self.process = subprocess.Popen(
                        self.argv,
                        cwd=ROOT,
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    self.starts.append(time.monotonic())
                code = self.process.wait()
                self.exits.append((time.monotonic(), code))
                self._stopping.wait(RESTART_DELAY_S)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.join(timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclasses.dataclass
class Run:
    options: Options
    hosts: netns.Hosts
    host_a: netns.Host
    host_b: netns.Host
    stack: Stack
    catalogue: dict[str, Any]
    restarters: list[Restarter] = dataclasses.field(default_factory=list)
    proxies: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.stack.database.connect() as conn:
            cursor = conn.execute(query, params or None)
            return cursor.fetchall() if cursor.description else []

    def worker_env(
        self,
        host: netns.Host | None,
        *,
        user: str,
        via: str | None,
        extra: dict[str, str],
    ) -> dict[str, str]:
        env = {**self.stack.env, "LOG_LEVEL": "INFO", **extra}
        if host is None:
            return env
        query = "connect_timeout=5"
        if host is self.host_a:
            # host-a's client notices the dead link only after it heals, so its
            # worker is still there to try to finish its job.
            idle = int(self.options.cut_s) + 5
            query += (
                f"&keepalives_idle={idle}&keepalives_interval=2"
                f"&keepalives_count=3&tcp_user_timeout={(idle + 30) * 1000}"
            )
        address = via or f"{host.gateway}:5432"
        env["DATABASE_URL"] = f"postgres://{user}@{address}/{DBNAME}?{query}"
        return env

    def start_worker(
        self,
        name: str,
        host: netns.Host | None,
        *,
        user: str = "postgres",
        via: str | None = None,
        **env: str,
    ) -> Restarter:
        argv = [sys.executable, "manage.py", "procrastinate", "worker"]
        restarter = Restarter(
            name,
            host.command(argv) if host else argv,
            self.worker_env(host, user=user, via=via, extra=env),
            self.stack.run_dir / f"worker-{name}.log",
        )
        restarter.start()
        self.restarters.append(restarter)
        return restarter

    def stop_worker(self, restarter: Restarter) -> None:
        restarter.stop()
        self.restarters.remove(restarter)

    def fresh_workers(self) -> int:
        return int(
            self.sql(
                "SELECT count(*) FROM procrastinate_workers "
                "WHERE last_heartbeat > now() - interval '4 seconds'"
            )[0][0]
        )

    def wait(self, what: str, predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                value = predicate()
                if value:
                    return value
            time.sleep(0.05)
        raise TimeoutError(f"{what}: not within {timeout:.0f}s")

    def payment(self, rng_seed: int, student: str | None = None) -> dict[str, Any]:
        rng = random.Random(rng_seed)
        students = stack.Students(rng)
        metadata = stack.payment_metadata(rng, students, self.catalogue["courses"])
        if student:
            metadata["student_id"] = student
        return stripe_events.payment_intent_succeeded(metadata=metadata)

    def pay(self, event: dict[str, Any]) -> tuple[str, float]:
        """Deliver ``event``; its purchase id and when the 200 came."""
        sender = Sender(port=self.stack.port, secret=self.stack.webhook_secret)
        body = json.dumps(event).encode()
        for _ in range(20):
            attempt = sender.post(
                body, stripe_events.signature_header(body, secret=sender.secret)
            )
            if attempt.status == 200:
                return str(attempt.body["purchase_id"]), attempt.ended
            time.sleep(0.25)
        raise RuntimeError(f"payment not accepted: {attempt.status} {attempt.body}")

    def decided(self, purchase_id: str, timeout: float = 60.0) -> float:
        """Seconds until the purchase left allocation_pending (polled)."""
        with self.stack.database.connect() as conn:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT status FROM fulfillment_purchase WHERE id = %s",
                    [purchase_id],
                ).fetchone()
                if row and row[0] != "allocation_pending":
                    return time.monotonic()
                time.sleep(POLL_S)
        raise TimeoutError(f"purchase {purchase_id} not decided in {timeout:.0f}s")


# --- 1. the slow link ------------------------------------------------------------


def _statements(run: Run) -> int:
    return int(
        run.sql(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
            "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s",
            REMOTE_ROLE,
        )[0][0]
    )


def latencies(run: Run, count: int, seed: int) -> list[float]:
    values = []
    for number in range(count):
        purchase_id, answered = run.pay(run.payment(seed + number))
        values.append(run.decided(purchase_id) - answered)
    return values


def slow_link(run: Run, result: Result) -> None:
    """Local, bare link and delayed link latencies; leaves host-b's worker on."""
    count, rtt = run.options.latency_payments, run.options.delay_ms / 1000
    local = run.start_worker("local", None)
    run.wait("the local worker", lambda: run.fresh_workers() >= 1, 60)
    latencies(run, 3, 1000)  # warm-up: connections, caches, planner
    local_s = latencies(run, count, 2000)
    local.stop()
    run.sql(f"CREATE ROLE {REMOTE_ROLE} LOGIN SUPERUSER")
    remote = run.start_worker("host-b", run.host_b, user=REMOTE_ROLE)
    run.wait("host-b's worker", lambda: run.fresh_workers() >= 1, 60)
    latencies(run, 3, 3000)
    bare_s = latencies(run, count, 4000)
    run.stop_worker(remote)
    proxy_port = 6543
    run.proxies.append(
        run.host_b.delayed_port(
            port=proxy_port,
            to=f"{run.host_b.gateway}:5432",
            milliseconds=run.options.delay_ms,
        )
    )
    netns.wait_for_port(run.host_b, proxy_port)
    slow = run.start_worker(
        "host-b-slow", run.host_b, user=REMOTE_ROLE, via=f"127.0.0.1:{proxy_port}"
    )
    run.wait("host-b's worker", lambda: run.fresh_workers() >= 1, 60)
    latencies(run, 2, 5000)
    # What the idle worker sends (heartbeats, queue statistics) is no payment's.
    run.sql("SELECT pg_stat_statements_reset()")
    idle_began = time.monotonic()
    time.sleep(5)
    idle = _statements(run) / (time.monotonic() - idle_began)
    run.sql("SELECT pg_stat_statements_reset()")
    began = time.monotonic()
    delayed_s = latencies(run, count, 5100)
    background = idle * (time.monotonic() - began)
    statements = run.sql(
        """
        SELECT s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70)
        FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
        WHERE r.rolname = %s ORDER BY s.calls DESC
        """,
        REMOTE_ROLE,
    )
    run.stop_worker(slow)
    per_payment = (sum(int(calls) for calls, _ in statements) - background) / count
    samples = {"local": local_s, "veth": bare_s, "delayed": delayed_s}
    med = {k: statistics.median(v) for k, v in samples.items()}
    p95 = {k: stack.percentile(v, 0.95) for k, v in samples.items()}
    round_trips = (med["delayed"] - med["veth"]) / rtt
    bound = med["local"] + (per_payment + 2) * rtt * SLACK
    labels = {"local": "local", "veth": "veth", "delayed": f"+{run.options.delay_ms}ms"}
    result.row("slow: payments per setting", count)
    for key, label in labels.items():
        result.row(
            f"slow: {label} median / p95 ms",
            f"{med[key] * 1000:.0f} / {p95[key] * 1000:.0f}",
        )
    result.row("slow: delayed / local", f"{med['delayed'] / med['local']:.1f}x")
    result.row("slow: within 2x of local", med["delayed"] <= 2 * med["local"])
    result.row("slow: round trips (delay/RTT)", f"{round_trips:.1f}")
    result.row("slow: statements per payment", f"{per_payment:.1f}")
    result.row("slow: bound local+(k+2)RTT ms", f"{bound * 1000:.0f}")
    result.facts["slow_link"] = {
        "local_s": local_s,
        "bare_s": bare_s,
        "delayed_s": delayed_s,
        "statements": [[int(c), q] for c, q in statements[:15]],
    }
    result.expect(
        med["delayed"] <= bound,
        f"slow link: median {med['delayed']:.3f}s over the bound {bound:.3f}s",
    )


# --- 2. the partition --------------------------------------------------------------


def partition(run: Run, result: Result) -> None:
    options = run.options
    # No worker may take the job before host-a.
    run.wait("no worker left", lambda: run.fresh_workers() == 0, 30)
    # A student who bought before: the row the job will wait for exists.
    student = run.payment(2000)["data"]["object"]["metadata"]["student_id"]
    purchase_id, _ = run.pay(run.payment(6001, student=student))
    job_id = int(
        run.sql(
            "SELECT id FROM procrastinate_jobs WHERE status = 'todo' "
            "AND task_name LIKE '%%allocate_trainer' AND args->>'purchase_id' = %s",
            purchase_id,
        )[0][0]
    )
    holder = psycopg.connect(run.stack.database.url, autocommit=False)
    try:
        holder.execute(
            "SELECT 1 FROM fulfillment_student WHERE id = %s FOR NO KEY UPDATE",
            [student],
        )
        # host-a waits up to 30 s for the student's row (not the default 10 s):
        # long enough for host-b to start before the cut.
        worker_a = run.start_worker("host-a", run.host_a, DATABASE_LOCK_TIMEOUT_S="30")
        backend = run.wait(
            "host-a's job waiting for the student's row",
            lambda: run.sql(
                "SELECT pid, backend_xid::text FROM pg_stat_activity "
                "WHERE client_addr = %s AND wait_event_type = 'Lock' "
                "AND backend_xid IS NOT NULL",
                run.host_a.address,
            ),
            60,
        )[0]
        a_worker_id = run.sql(
            "SELECT worker_id FROM procrastinate_jobs WHERE id = %s", job_id
        )[0][0]
        worker_b = run.start_worker("host-b2", run.host_b, user=REMOTE_ROLE)
        run.wait("host-b's worker", lambda: run.fresh_workers() >= 2, 25)
        run.host_a.cut()
        cut_at = time.monotonic()
        holder.commit()  # host-a's backend takes the row and answers into the void
    finally:
        holder.close()
    result.row("cut: seconds", options.cut_s)
    result.row("cut: dead-peer timeout s", options.dead_peer_s)
    during = [run.payment(7000 + n) for n in range(options.during_cut_payments)]
    during_ids = [run.pay(event)[0] for event in during]

    def succeeded_elsewhere() -> float | None:
        rows = run.sql(
            "SELECT status, worker_id FROM procrastinate_jobs WHERE id = %s", job_id
        )
        return time.monotonic() if rows and rows[0][0] == "succeeded" else None

    lost_seen: str | None = None
    done_at: float | None = None
    heal_at = cut_at + options.cut_s
    while time.monotonic() < heal_at:
        if done_at is None:
            done_at = succeeded_elsewhere()
        age = time.monotonic() - cut_at
        if lost_seen is None and age > 12 and time.monotonic() < heal_at - 3:
            doctor = subprocess.run(
                [sys.executable, "manage.py", "doctor", "--details"],
                cwd=ROOT,
                env=run.stack.env,
                capture_output=True,
                text=True,
                check=False,
            )
            lost_seen = doctor.stdout
        time.sleep(0.1)
    xact_at_heal = run.sql("SELECT pg_xact_status(%s::xid8)::text", backend[1])[0][0]
    backend_alive = bool(
        run.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", backend[0])
    )
    run.host_a.heal()
    healed_at = time.monotonic()
    rejoined = run.wait(
        "host-a's worker back",
        lambda: (
            run.sql(
                "SELECT min(backend_start) FROM pg_stat_activity "
                "WHERE client_addr = %s AND application_name = 'fulfillment-worker' "
                "AND state_change > now() - interval '3 seconds'",
                run.host_a.address,
            )[0][0]
            and run.fresh_workers() >= 2
        ),
        90,
    )
    rejoin_s = time.monotonic() - healed_at
    while done_at is None and time.monotonic() < cut_at + RESCUE_DEADLINE_S + 5:
        done_at = succeeded_elsewhere()
        time.sleep(0.1)
    for purchase in during_ids:
        run.decided(purchase, timeout=30)
    run.wait("the pipeline to drain", lambda: _drained(run), 60)

    events = dict(
        run.sql(
            "SELECT type::text, count(*) FROM procrastinate_events "
            "WHERE job_id = %s GROUP BY type",
            job_id,
        )
    )
    job = run.sql(
        "SELECT status::text, attempts, worker_id FROM procrastinate_jobs "
        "WHERE id = %s",
        job_id,
    )[0]
    a_log = worker_a.output()
    rescue_s = (done_at - cut_at) if done_at else None
    result.row(
        "cut: job rescued, succeeded after s",
        f"{rescue_s:.1f}" if rescue_s else "never",
    )
    result.row("cut: job status / attempts", f"{job[0]} / {job[1]}")
    result.row(
        "cut: job events", ", ".join(f"{k}={v}" for k, v in sorted(events.items()))
    )
    result.row("cut: job ran on worker (a / final)", f"{a_worker_id} / {job[2]}")
    result.row("cut: host-a xact at heal", xact_at_heal)
    result.row("cut: host-a backend alive at heal", backend_alive)
    named = bool(lost_seen and re.search(r"lost: worker \d+ on host-a:", lost_seen))
    result.row("cut: doctor named host-a lost", named)
    result.row(
        "cut: host-a exits / starts", f"{len(worker_a.exits)} / {len(worker_a.starts)}"
    )
    result.row("cut: host-a rejoined after heal s", f"{rejoin_s:.1f}")
    old_tried = f"invalid status to retry (job id: {job_id})" in a_log
    if old_tried:
        late = "retry refused: job done"
    elif "server closed the connection" in a_log:
        late = "connection gone"
    else:
        late = "-"
    result.row("cut: host-a's old worker met", late)
    result.facts["partition"] = {
        "job_id": job_id,
        "purchase_id": purchase_id,
        "doctor": lost_seen,
        "events": events,
        "host_a_log_tail": a_log[-4000:],
        "host_a_exits": worker_a.exits,
        "rejoined_backend_start": str(rejoined),
    }
    result.expect(
        rescue_s is not None and rescue_s <= RESCUE_DEADLINE_S,
        f"partition: job {job_id} not finished elsewhere within "
        f"{RESCUE_DEADLINE_S:.0f}s of the cut ({rescue_s})",
    )
    result.expect(job[0] == "succeeded", f"partition: job {job_id} is {job[0]}")
    result.expect(
        events.get("succeeded") == 1,
        f"partition: job {job_id} succeeded {events.get('succeeded', 0)} times",
    )
    result.expect(
        job[2] != a_worker_id or job[2] is None,
        "partition: the job is recorded on host-a's worker",
    )
    result.expect(
        xact_at_heal == "aborted",
        f"partition: host-a's transaction is {xact_at_heal}, not aborted",
    )
    result.expect(
        old_tried or "server closed the connection" in a_log or len(worker_a.exits) > 0,
        "partition: host-a's worker neither failed its job nor exited",
    )
    result.expect(
        named,
        "partition: doctor did not name host-a as lost while it was cut",
    )
    del worker_b


def _drained(run: Run) -> bool:
    with run.stack.database.connect() as conn:
        return stack.pipeline_busy(conn) == 0


PURCHASES_SQL = """
    SELECT p.id, p.status, p.status_reason, p.total_sessions,
           p.trainer_id IS NOT NULL,
           (SELECT count(*) FROM fulfillment_trainerallocation a
            WHERE a.purchase_id = p.id AND a.status = 'active'),
           (SELECT count(*) FROM fulfillment_reservation r
            JOIN fulfillment_trainerallocation a ON a.id = r.allocation_id
            WHERE a.purchase_id = p.id AND a.status = 'active'),
           (SELECT count(*) FROM fulfillment_tutoringsession s
            WHERE s.purchase_id = p.id AND s.status = 'scheduled')
    FROM fulfillment_purchase p
"""
# A scheduled session of an allocated purchase with no reservation of its trainer
# at the same place in the schedule and the same time.
UNRESERVED_SESSIONS_SQL = """
    SELECT count(*) FROM fulfillment_tutoringsession s
    JOIN fulfillment_purchase p ON p.id = s.purchase_id
    WHERE p.status = 'allocated' AND s.status = 'scheduled'
      AND NOT EXISTS (
        SELECT 1 FROM fulfillment_reservation r
        JOIN fulfillment_trainerallocation a ON a.id = r.allocation_id
        WHERE a.purchase_id = p.id AND a.status = 'active'
          AND a.trainer_id = s.trainer_id AND r.sequence = s.sequence
          AND lower(r.during) = s.starts_at AND upper(r.during) = s.ends_at)
"""
SESSIONS_TWICE_SQL = """
    SELECT count(*) FROM (SELECT purchase_id, sequence
    FROM fulfillment_tutoringsession GROUP BY 1, 2 HAVING count(*) > 1) twice
"""
OVERLAPS_SQL = """
    SELECT count(*) FROM fulfillment_reservation a
    JOIN fulfillment_reservation b
      ON a.trainer_id = b.trainer_id AND a.id < b.id AND a.during && b.during
"""
FAILED_OR_LEFT_SQL = """
    SELECT count(*) FROM procrastinate_jobs
    WHERE status = 'failed' OR (status IN ('todo', 'doing')
      AND split_part(task_name, '.', -1) = ANY(%s))
"""


def purchase_fault(
    status: str,
    reason: str,
    total: int,
    has_trainer: bool,
    allocations: int,
    reservations: int,
    scheduled: int,
) -> str | None:
    if status == "allocated":
        if allocations != 1 or not has_trainer:
            return f"allocated with {allocations} active allocations"
        if reservations != total:
            return f"allocated with {reservations} of {total} reservations"
        if scheduled == 0:
            return "allocated without sessions"
        return None
    if status == "waitlisted":
        if not reason.strip():
            return "waitlisted without a reason"
        return f"waitlisted with {allocations} allocations" if allocations else None
    return f"left {status}"


def invariants(run: Run, result: Result) -> None:
    with run.stack.database.connect() as conn:
        purchases = conn.execute(PURCHASES_SQL).fetchall()
        counts = {
            name: int(conn.execute(query, params).fetchone()[0])  # type: ignore[index]
            for name, query, params in (
                ("sessions without their reservation", UNRESERVED_SESSIONS_SQL, None),
                ("sessions twice", SESSIONS_TWICE_SQL, None),
                ("overlapping reservations", OVERLAPS_SQL, None),
                (
                    "jobs failed or left",
                    FAILED_OR_LEFT_SQL,
                    [list(stack.PIPELINE_TASKS)],
                ),
            )
        }
    faults = [
        f"purchase {row[0]}: {fault}"
        for row in purchases
        if (fault := purchase_fault(*row[1:]))
    ]
    states: dict[str, int] = {}
    for row in purchases:
        states[row[1]] = states.get(row[1], 0) + 1
    result.row(
        "end: purchases", ", ".join(f"{k}={v}" for k, v in sorted(states.items()))
    )
    result.row("end: purchase faults", len(faults))
    result.problems += faults[:10]
    for name, count in counts.items():
        result.row(f"end: {name}", count)
        result.expect(count == 0, f"{name}: {count}")


# --- the run -------------------------------------------------------------------------


@contextlib.contextmanager
def environment(options: Options) -> Iterator[Run]:
    """Hosts, a PostgreSQL reachable from them, the web app; all removed after."""
    hosts = netns.Hosts()
    database: Database | None = None
    run_stack: Stack | None = None
    run: Run | None = None
    data_dir = options.data_dir / hosts.tag
    try:
        host_a, host_b = hosts.add("host-a"), hosts.add("host-b")
        data_dir.mkdir(parents=True, exist_ok=True)
        hba = data_dir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            + "".join(f"host all all {h.subnet} trust\n" for h in (host_a, host_b))
        )
        hba.chmod(0o644)
        database = Database(
            dbname=DBNAME,
            data_dir=data_dir,
            fsync=False,
            settings={
                "listen_addresses": f"{host_a.gateway},{host_b.gateway}",
                "hba_file": str(hba),
                "shared_preload_libraries": "pg_stat_statements",
            },
        )
        run_stack = Stack(
            database=database,
            run_dir=data_dir / "logs",
            web_workers=2,
            extra_env={"DATABASE_DEAD_PEER_TIMEOUT_S": str(options.dead_peer_s)},
        )
        catalogue = stack.catalogue(trainers=options.trainers, seed=options.seed)
        run_stack.prepare(catalogue)
        run_stack._sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        run_stack.start_web()
        run = Run(options, hosts, host_a, host_b, run_stack, catalogue)
        yield run
    finally:
        if run is not None:
            for restarter in run.restarters:
                restarter.stop()
            for proxy in run.proxies:
                proxy.kill()
                proxy.wait()
        if run_stack is not None:
            run_stack.stop()
        hosts.destroy()  # also kills anything still running inside
        if database is not None:
            with contextlib.suppress(Exception):
                database.stop()


def run(options: Options) -> Result:
    missing = netns.missing()
    if missing:
        raise SystemExit("partition needs: " + "; ".join(missing))
    result = Result()
    with environment(options) as env:
        slow_link(env, result)
        partition(env, result)
        invariants(env, result)
        (env.stack.run_dir / "partition.json").write_text(
            json.dumps(
                {"rows": env_rows(result), "problems": result.problems, **result.facts},
                indent=2,
                default=str,
            )
        )
        result.facts["run_dir"] = str(env.stack.run_dir)
    return result


def env_rows(result: Result) -> list[list[object]]:
    return [[name, value] for name, value in result.rows]


def print_result(result: Result, out: TextIO = sys.stdout) -> None:
    width = max(len(name) for name, _ in result.rows)
    print("\npartition: workers on other hosts, a cut, a slow link", file=out)
    print(f"  {'-' * (width + 22)}", file=out)
    for name, value in result.rows:
        print(f"  {name:<{width}}  {value!s:>18}", file=out)
    print(f"  {'-' * (width + 22)}", file=out)
    for problem in result.problems:
        print(f"  VIOLATED: {problem}", file=out)
    print(f"  {'OK' if not result.problems else 'FAILED'}", file=out, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.partition", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cut", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--dead-peer-timeout", type=int, default=15, metavar="SECONDS")
    parser.add_argument("--latency-payments", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the run's logs")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(
        cut_s=args.cut,
        dead_peer_s=args.dead_peer_timeout,
        latency_payments=args.latency_payments,
        delay_ms=args.delay_ms,
    )
    # SIGTERM unwinds like Ctrl-C: the finally blocks remove every namespace.
    signal.signal(signal.SIGTERM, _interrupt)
    result = run(options)
    print_result(result)
    run_dir = Path(result.facts.get("run_dir", ""))
    print(f"  logs and JSON: {run_dir}")
    if not args.keep and not result.problems and run_dir.name == "logs":
        shutil.rmtree(run_dir.parent / "postgres", ignore_errors=True)
    return 1 if result.problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
