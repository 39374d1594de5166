"""``make chaos``: the pipeline under fire, then its invariants checked in SQL.

Starts a PostgreSQL of its own, the web app under gunicorn and W workers, then
sends N signed payments at a steady rate: 10 % delivered twice or more (some
concurrently, each with a new event id, as Stripe does), 2 % refunded later, 2 %
refunded at the very moment they are paid (the refund racing its payment), 2 %
partly refunded then fully, 1 % only partly refunded, and a sprinkling of bad
deliveries (bad signature, stale, malformed, unknown course, impossible date)
and of refunds of charges made without a PaymentIntent (not ours: ignored).
Deliveries without an answer or with a 5xx are retried with backoff.
Meanwhile a random worker is SIGKILLed every K seconds and replaced,
PostgreSQL is restarted once halfway, and a session holds the busiest
trainer's row locked for 60 s (FOR NO KEY UPDATE, as a worker cut off
mid-allocation would; from just after the restart): allocations must go on
meanwhile, and ``doctor`` must name the holder. When the queue has drained it checks:

- every payment Stripe would have delivered has exactly one purchase (lost, double);
- every purchase is allocated (one active allocation, a reservation per session,
  its session window), waitlisted with a reason, refunded with nothing scheduled,
  or needs attention; every refunded payment's purchase is refunded, whatever
  the order its events came in; a partly refunded one is not, and records the
  amount;
- no two reservations of a trainer overlap; no trainer is over capacity;
- no pipeline job is left todo or doing; no job failed;
- every delivery got an answer from the contract's table (503 only while
  PostgreSQL was down).

It prints a table, writes it as JSON next to the logs, and exits 1 if any
invariant broke.

    python -m tools.chaos                         # defaults: 2000 payments, ...
    python -m tools.chaos --postgres system       # the machine's PostgreSQL binaries
    python -m tools.chaos --database-url URL      # a database on an existing server
                                                    # (no restart: it is not ours)
    python -m tools.chaos --payments 300 --kills 1 --no-restart   # the short one
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from fulfillment.testing import stripe_events
from tools import stack
from tools.stack import PIPELINE_TASKS, Database, Delivery, Sender, Stack

# How long after PostgreSQL is back a 503 may still be the restart's doing: a web
# process notices its connection is gone on the next request and reconnects.
RESTART_GRACE_S = 2.0
# Expected final answers (status code, body "status" or "error"), per delivery kind.
EXPECTED: dict[str, set[tuple[int, str]]] = {
    "payment": {(200, "accepted"), (200, "duplicate")},
    "duplicate": {(200, "accepted"), (200, "duplicate")},
    "refund": {(200, "refunded")},
    # Sent with its payment: it either waits for the payment and cancels it, or
    # goes first and is remembered (needs attention until the payment comes).
    "race_refund": {(200, "refunded"), (200, "needs_attention")},
    "partial_refund": {(200, "partially_refunded")},
    "orphan_refund": {(200, "ignored")},
    "bad_signature": {(400, "invalid_signature")},
    "stale_signature": {(400, "invalid_signature")},
    "malformed": {(400, "malformed_payload")},
    "unknown_course": {(200, "needs_attention")},
    "impossible_date": {(200, "needs_attention")},
}
# What a partial refund gives back (of the 4,999.00 INR every payment takes).
PART = 100000
BAD_KINDS = [
    "bad_signature",
    "stale_signature",
    "malformed",
    "unknown_course",
    "impossible_date",
]


@dataclasses.dataclass
class Chaos:
    kills: int = 0
    worker_exits: int = 0
    restarts: int = 0
    down: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    # (kill time, ids of the jobs the killed worker was running)
    killed_jobs: list[tuple[float, list[int]]] = dataclasses.field(default_factory=list)
    lock: LockHold | None = None


@dataclasses.dataclass
class LockHold:
    """A session holding one trainer's row, and what happened meanwhile."""

    trainer_id: str = ""
    held_s: float = 0.0
    allocated_meanwhile: int = 0  # allocations committed while the lock was held
    accepted_meanwhile: int = 0  # purchases recorded while the lock was held
    doctor_named_it: bool = False
    ended_by_server: bool = False


# --- the plan ----------------------------------------------------------------------


def plan(
    *,
    payments: int,
    rate: float,
    seed: int,
    courses: list[dict[str, Any]],
    secret: str,
) -> tuple[list[tuple[float, Delivery]], dict[str, set[str]]]:
    """What to send when: (offset in seconds, delivery), and the payment intents
    by what should become of them (``stored``, ``refunded``, ``partial``,
    ``attention``)."""
    rng = random.Random(seed)
    students = stack.Students(random.Random(seed + 1))
    schedule: list[tuple[float, Delivery]] = []
    fate: dict[str, set[str]] = {
        "stored": set(),
        "refunded": set(),
        "partial": set(),
        "attention": set(),
    }
    for number in range(payments):
        offset = number / rate
        metadata = stack.payment_metadata(rng, students, courses)
        pi = stripe_events.new_id("pi")
        fate["stored"].add(pi)

        def event(pi: str = pi, metadata: dict[str, str] = metadata) -> dict[str, Any]:
            return stripe_events.payment_intent_succeeded(
                metadata=metadata, payment_intent=pi
            )

        first = Delivery("payment", pi, event())
        schedule.append((offset, first))
        roll = rng.random()
        if roll < 0.10:  # delivered again, with a new event id each time
            for _ in range(rng.choice([1, 1, 2])):
                twin_at = offset if rng.random() < 0.4 else offset + rng.uniform(0.2, 8)
                schedule.append((twin_at, Delivery("duplicate", pi, event())))
        elif roll < 0.12:  # refunded a little later
            fate["refunded"].add(pi)
            refund = Delivery(
                "refund", pi, stripe_events.charge_refunded(payment_intent=pi)
            )
            first.then.append((rng.uniform(1, 10), refund))
        elif roll < 0.14:  # refunded at the moment it is paid: the two race
            fate["refunded"].add(pi)
            race = stripe_events.charge_refunded(payment_intent=pi)
            schedule.append((offset, Delivery("race_refund", pi, race)))
        elif roll < 0.17:  # partly refunded; two in three are fully refunded later
            partial = Delivery(
                "partial_refund",
                pi,
                stripe_events.charge_refunded(payment_intent=pi, amount_refunded=PART),
            )
            if roll < 0.16:
                fate["refunded"].add(pi)
                full = stripe_events.charge_refunded(payment_intent=pi)
                partial.then.append((rng.uniform(0.5, 5), Delivery("refund", pi, full)))
            else:
                fate["partial"].add(pi)
            first.then.append((rng.uniform(1, 8), partial))
        if rng.random() < 0.02:  # a charge made without a PaymentIntent: not ours
            orphan = stripe_events.charge_refunded(payment_intent=None)
            at = offset + rng.uniform(0, 1 / rate)
            schedule.append((at, Delivery("orphan_refund", "", orphan)))
        if rng.random() < 0.03:
            kind = rng.choice(BAD_KINDS)
            metadata = stack.payment_metadata(rng, students, courses)
            bad = _bad_delivery(kind, metadata, secret=secret)
            if kind in ("unknown_course", "impossible_date"):
                fate["attention"].add(bad.payment_intent)
            schedule.append((offset + rng.uniform(0, 1 / rate), bad))
    schedule.sort(key=lambda item: item[0])
    return schedule, fate


def _bad_delivery(kind: str, metadata: dict[str, str], *, secret: str) -> Delivery:
    pi = stripe_events.new_id("pi")
    if kind == "unknown_course":
        metadata["course_id"] = str(uuid.uuid4())
    elif kind == "impossible_date":
        metadata["start_date"] = "2027-02-30"
    event = stripe_events.payment_intent_succeeded(metadata=metadata, payment_intent=pi)
    if kind == "bad_signature":
        return Delivery(
            kind,
            pi,
            event,
            signature=lambda body: stripe_events.signature_header(
                body,
                secret="whsec_not_the_right_one",  # noqa: S106  (a wrong one on purpose)
            ),
        )
    if kind == "stale_signature":
        return Delivery(
            kind,
            pi,
            event,
            signature=lambda body: stripe_events.signature_header(
                body, secret=secret, timestamp=int(time.time()) - 3600
            ),
        )
    if kind == "malformed":
        return Delivery(kind, pi, raw=b'{"id": "evt_1", "type": "payment_intent.succ')
    return Delivery(kind, pi, event)


# --- the chaos ---------------------------------------------------------------------


def monkey(
    stk: Stack,
    chaos: Chaos,
    *,
    every: float,
    max_kills: int | None,
    restart_at: float | None,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    """SIGKILL a random worker every ``every`` seconds and start a new one;
    restart PostgreSQL once at ``restart_at`` (monotonic); replace any worker
    that exits on its own."""
    next_kill = time.monotonic() + every
    while not stop.wait(0.2):
        now = time.monotonic()
        for process in list(stk.workers):
            if process.poll() is not None:
                chaos.worker_exits += 1
                stk.workers.remove(process)
                stk.start_worker()
        if restart_at is not None and now >= restart_at and not chaos.restarts:
            began = time.monotonic()
            stk.database.restart()
            chaos.down.append((began, time.monotonic()))
            chaos.restarts += 1
            print(
                f"chaos: PostgreSQL restarted ({time.monotonic() - began:.1f}s down)",
                flush=True,
            )
        if now >= next_kill and (max_kills is None or chaos.kills < max_kills):
            next_kill = now + every
            if not stk.workers:
                continue
            victim = rng.choice(stk.workers)
            running = _running_jobs(stk, victim.pid)
            stk.kill_worker(victim)
            chaos.kills += 1
            chaos.killed_jobs.append((time.time(), running))
            stk.start_worker()


LOCK_HOLDER = "chaos-lock-holder"


def hold_trainer_lock(
    stk: Stack, chaos: Chaos, *, seconds: float, at: float, stop: threading.Event
) -> None:
    """At ``at`` (monotonic), lock the row of the trainer with the most active
    allocations for ``seconds`` in an open transaction, idle: what a worker cut
    off mid-allocation leaves behind. Halfway, ask ``doctor`` whether it names
    the holder. The server may end the session first
    (idle_in_transaction_session_timeout): that is recorded, not an error."""
    if stop.wait(max(0.0, at - time.monotonic())):
        return
    hold = chaos.lock = LockHold()
    began_wall: tuple[Any, ...] | None = None
    with stk.database.connect() as conn:  # autocommit: the hold is explicit
        conn.execute("SELECT set_config('application_name', %s, false)", [LOCK_HOLDER])
        row = conn.execute(
            """
            SELECT t.id::text FROM fulfillment_trainer t
            LEFT JOIN fulfillment_trainerallocation a
              ON a.trainer_id = t.id AND a.status = 'active'
            GROUP BY t.id ORDER BY count(a.id) DESC, t.id LIMIT 1
            """
        ).fetchone()
        if row is None:
            return
        hold.trainer_id = row[0]
        began = time.monotonic()
        try:
            with conn.transaction():
                conn.execute(
                    # The lock a worker cut off mid-allocation (or an admin
                    # mid-edit) holds on a trainer: FOR NO KEY UPDATE.
                    "SELECT 1 FROM fulfillment_trainer WHERE id = %s FOR NO KEY UPDATE",
                    [hold.trainer_id],
                )
                began, began_wall = (
                    time.monotonic(),
                    conn.execute("SELECT now()").fetchone(),
                )
                # doctor's own limit (30 s) when the hold outlasts it; a shorter
                # hold (the suite's short run) asks doctor with a limit to match.
                limit = 30 if seconds >= 36 else max(1, int(seconds // 3))
                stop.wait(limit + 2)
                doctor = subprocess_output(
                    stk,
                    "doctor",
                    "--details",
                    env={"DOCTOR_LOCK_HOLD_LIMIT_S": str(limit)},
                )
                (stk.run_dir / "doctor-while-locked.txt").write_text(doctor)
                hold.doctor_named_it = (
                    LOCK_HOLDER in doctor and "fulfillment_trainer" in doctor
                )
                stop.wait(max(0.0, seconds - (time.monotonic() - began)))
        except psycopg.Error:
            hold.ended_by_server = True
        hold.held_s = round(time.monotonic() - began, 1)
    with stk.database.connect() as conn:
        since = began_wall[0] if began_wall else None
        counts = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM fulfillment_trainerallocation
               WHERE created_at >= %(since)s
                 AND created_at < %(since)s + make_interval(secs => %(held)s)),
              (SELECT count(*) FROM fulfillment_purchase
               WHERE created_at >= %(since)s
                 AND created_at < %(since)s + make_interval(secs => %(held)s))
            """,
            {"since": since, "held": hold.held_s},
        ).fetchone()
        if counts:
            hold.allocated_meanwhile, hold.accepted_meanwhile = counts


def subprocess_output(stk: Stack, *args: str, env: dict[str, str]) -> str:
    """``manage.py ARGS`` output whatever its exit status (doctor exits 1 when a
    check fails, which is what it is asked about here)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=stk.project,
        env={**stk.env, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


def _running_jobs(stk: Stack, pid: int) -> list[int]:
    with contextlib.suppress(psycopg.Error), stk.database.connect() as conn:
        rows = conn.execute(
            """
            SELECT j.id FROM procrastinate_jobs j
            JOIN fulfillment_workerpresence w ON w.worker_id = j.worker_id
            WHERE j.status = 'doing' AND w.pid = %s
            """,
            [pid],
        ).fetchall()
        return [row[0] for row in rows]
    return []


# --- the checks --------------------------------------------------------------------


def drain(stk: Stack, *, timeout: float) -> float:
    """Wait until the pipeline is idle, then stop the workers (gracefully) so no
    periodic tick adds work while the invariants are read; a job a stopping
    worker deferred is run by one more worker. Return how long it took."""
    began = time.monotonic()
    for _ in range(3):
        _until_idle(stk, began + timeout)
        for process in list(stk.workers):
            process.terminate()
        for process in list(stk.workers):
            process.wait(timeout=60)
            stk.workers.remove(process)
        if _until_idle(stk, time.monotonic()):  # idle at once, nobody running
            break
        stk.start_worker()
    return time.monotonic() - began


def _until_idle(stk: Stack, deadline: float) -> bool:
    """Until no pipeline job is todo or doing and no purchase waits for its
    allocation (checked at least once); whether that was reached."""
    while True:
        with contextlib.suppress(psycopg.Error), stk.database.connect() as conn:
            if stack.pipeline_busy(conn) == 0:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def check(
    stk: Stack, fate: dict[str, set[str]], deliveries: list[Delivery], chaos: Chaos
) -> dict[str, Any]:
    with stk.database.connect() as conn:
        stored = dict(
            conn.execute(
                """
                SELECT p.payment_intent, count(pu.id)
                FROM fulfillment_payment p
                LEFT JOIN fulfillment_purchase pu ON pu.payment_id = p.id
                WHERE p.payment_intent = ANY(%s)
                GROUP BY p.payment_intent
                """,
                [sorted(fate["stored"])],
            ).fetchall()
        )
        attention = {
            row[0]
            for row in conn.execute(
                "SELECT payment_intent FROM fulfillment_payment "
                "WHERE payment_intent = ANY(%s) AND attention_reason <> ''",
                [sorted(fate["attention"])],
            )
        }
        partial = dict(
            conn.execute(
                """
                SELECT p.payment_intent, p.amount_refunded
                FROM fulfillment_payment p
                WHERE p.payment_intent = ANY(%s) AND p.status = 'succeeded'
                """,
                [sorted(fate["partial"])],
            ).fetchall()
        )
        early_refunds = conn.execute(
            "SELECT count(*) FROM fulfillment_earlyrefund"
        ).fetchone()[0]  # type: ignore[index]
        purchases = conn.execute(
            """
            SELECT p.id, pay.payment_intent, p.status, p.status_reason,
                   p.total_sessions, p.trainer_id IS NOT NULL,
                   (SELECT count(*) FROM fulfillment_trainerallocation a
                    WHERE a.purchase_id = p.id AND a.status = 'active'),
                   (SELECT count(*) FROM fulfillment_reservation r
                    JOIN fulfillment_trainerallocation a ON a.id = r.allocation_id
                    WHERE a.purchase_id = p.id AND a.status = 'active'),
                   (SELECT count(*) FROM fulfillment_reservation r
                    JOIN fulfillment_trainerallocation a ON a.id = r.allocation_id
                    WHERE a.purchase_id = p.id AND a.status = 'active'
                      AND upper(r.during) > now()),
                   (SELECT count(*) FROM fulfillment_tutoringsession s
                    WHERE s.purchase_id = p.id AND s.status = 'scheduled'
                      AND s.ends_at > now()),
                   (SELECT count(*) FROM fulfillment_tutoringsession s
                    WHERE s.purchase_id = p.id AND s.status = 'scheduled')
            FROM fulfillment_purchase p
            JOIN fulfillment_payment pay ON pay.id = p.payment_id
            """
        ).fetchall()
        overlaps = conn.execute(
            """
            SELECT count(*) FROM fulfillment_reservation a
            JOIN fulfillment_reservation b
              ON a.trainer_id = b.trainer_id AND a.id < b.id AND a.during && b.during
            """
        ).fetchone()[0]  # type: ignore[index]
        over_capacity = conn.execute(
            """
            SELECT count(*) FROM (
                SELECT t.id FROM fulfillment_trainer t
                JOIN fulfillment_trainerallocation a
                  ON a.trainer_id = t.id AND a.status = 'active'
                GROUP BY t.id HAVING count(*) > max(t.max_active_students)) x
            """
        ).fetchone()[0]  # type: ignore[index]
        jobs = dict(
            conn.execute(
                """
                SELECT status, count(*) FROM procrastinate_jobs
                WHERE status = 'failed'
                   OR (status IN ('todo', 'doing')
                       AND split_part(task_name, '.', -1) = ANY(%s))
                GROUP BY status
                """,
                [list(PIPELINE_TASKS)],
            ).fetchall()
        )
        failed_tasks = conn.execute(
            "SELECT task_name, count(*) FROM procrastinate_jobs "
            "WHERE status = 'failed' GROUP BY task_name ORDER BY 1"
        ).fetchall()
        rescued, rescued_done = _rescue_times(conn, chaos)

    problems: list[str] = []
    lost = sorted(pi for pi in fate["stored"] if stored.get(pi, 0) == 0)
    double = sorted(pi for pi, n in stored.items() if n > 1)
    problems += [f"lost: {pi} has no purchase" for pi in lost[:10]]
    problems += [f"double: {pi} has {stored[pi]} purchases" for pi in double[:10]]
    accepted = Counter(
        d.payment_intent
        for d in deliveries
        for a in d.attempts
        if a.status == 200 and a.body.get("status") == "accepted"
    )
    accepted_twice = sorted(pi for pi, n in accepted.items() if n > 1)
    problems += [
        f"double: {pi} was accepted {accepted[pi]} times" for pi in accepted_twice
    ]
    unflagged = sorted(fate["attention"] - attention)
    problems += [f"attention: {pi} was not kept for operators" for pi in unflagged]

    unrecorded = sorted(pi for pi in fate["partial"] if partial.get(pi) != PART)
    problems += [f"partial: {pi} has not its partial refund" for pi in unrecorded]

    states: Counter[str] = Counter()
    bad_purchases = 0
    for purchase_id, pi, status, reason, *counts in purchases:
        states[status] += 1
        fault = _purchase_fault(status, reason, *counts)
        if fault is None and pi in fate["refunded"] and status != "refunded":
            fault = f"refunded payment but purchase is {status}"
        if fault is None and pi in fate["partial"] and status == "refunded":
            fault = "partly refunded payment but purchase is refunded"
        if fault:
            bad_purchases += 1
            if bad_purchases <= 10:
                problems.append(f"purchase {purchase_id} ({pi}): {fault}")

    unexpected = _unexpected_answers(deliveries, chaos.down)
    problems += [f"answer: {text}" for text in unexpected[:10]]
    if overlaps:
        problems.append(f"{overlaps} pairs of overlapping reservations")
    if over_capacity:
        problems.append(f"{over_capacity} trainers over capacity")
    left = jobs.get("todo", 0) + jobs.get("doing", 0)
    if left:
        problems.append(f"{left} pipeline jobs left todo or doing")
    problems += [f"{n} failed jobs of {task}" for task, n in failed_tasks]
    hold = chaos.lock
    if hold is not None and hold.trainer_id:
        if hold.accepted_meanwhile and not hold.allocated_meanwhile:
            problems.append(
                f"no allocation in the {hold.held_s}s a trainer row was locked "
                f"({hold.accepted_meanwhile} purchases arrived meanwhile)"
            )
        if not hold.doctor_named_it:
            problems.append("doctor did not name the session holding a trainer lock")
    lock_rows: dict[str, Any] = (
        {
            "trainer lock held s": hold.held_s,
            "allocated while locked": hold.allocated_meanwhile,
            "doctor named holder": hold.doctor_named_it,
        }
        if hold is not None
        else {}
    )
    return {
        "payments": len(fate["stored"]),
        "deliveries": len(deliveries),
        "attempts": sum(len(d.attempts) for d in deliveries),
        "duplicates": sum(d.kind == "duplicate" for d in deliveries),
        "refunds": sum(d.kind == "refund" for d in deliveries),
        "race refunds": sum(d.kind == "race_refund" for d in deliveries),
        "race refunds first": sum(
            d.answer is not None and d.answer.body.get("status") == "needs_attention"
            for d in deliveries
            if d.kind == "race_refund"
        ),
        "partial refunds": sum(d.kind == "partial_refund" for d in deliveries),
        "refunds without PI": sum(d.kind == "orphan_refund" for d in deliveries),
        "bad deliveries": sum(d.kind in BAD_KINDS for d in deliveries),
        "answers 503": sum(a.status == 503 for d in deliveries for a in d.attempts),
        "no answer": sum(a.status is None for d in deliveries for a in d.attempts),
        "kills": chaos.kills,
        "worker exits": chaos.worker_exits,
        "restarts": chaos.restarts,
        "rescued jobs": len(rescued),
        "longest rescue s": round(max(rescued, default=0.0), 1),
        "longest kill to done s": round(max(rescued_done, default=0.0), 1),
        "allocated": states["allocated"],
        "waitlisted": states["waitlisted"],
        "refunded": states["refunded"],
        "partly refunded": len(partial) - len(unrecorded),
        "early refunds": early_refunds,
        "needs attention": len(attention),
        "lost": len(lost),
        "partial unrecorded": len(unrecorded),
        "double": len(double) + len(accepted_twice),
        "bad purchases": bad_purchases,
        "overlaps": overlaps,
        "over capacity": over_capacity,
        "jobs left": left,
        "failed jobs": jobs.get("failed", 0),
        "unexpected answers": len(unexpected),
        **lock_rows,
        "problems": problems,
    }


def _purchase_fault(
    status: str,
    reason: str,
    total: int,
    has_trainer: bool,
    allocations: int,
    reservations: int,
    ahead: int,
    upcoming: int,
    scheduled: int,
) -> str | None:
    if status == "allocated":
        if allocations != 1 or not has_trainer:
            return f"allocated with {allocations} active allocations"
        if reservations != total:
            return f"allocated with {reservations} of {total} reservations"
        if upcoming < min(7, ahead):
            return f"allocated with {upcoming} sessions in its window"
        return None
    if status == "waitlisted":
        if not reason.strip():
            return "waitlisted without a reason"
        return (
            f"waitlisted with {allocations} active allocations" if allocations else None
        )
    if status == "refunded":
        if allocations or scheduled:
            return f"refunded with {allocations} allocations, {scheduled} sessions"
        return None
    if status == "needs_attention":
        return None
    return f"left {status}"


def _unexpected_answers(
    deliveries: list[Delivery], down: list[tuple[float, float]]
) -> list[str]:
    def while_down(attempt: stack.Attempt) -> bool:
        return any(
            attempt.started <= end + RESTART_GRACE_S and attempt.ended >= begin
            for begin, end in down
        )

    found = []
    for delivery in deliveries:
        for attempt in delivery.attempts[:-1]:
            if not while_down(attempt):
                found.append(
                    f"{delivery.kind} {delivery.payment_intent}: "
                    f"{attempt.status or 'no answer'} while PostgreSQL was up"
                )
        final = delivery.answer
        if final is None:
            found.append(f"{delivery.kind} {delivery.payment_intent}: never sent")
            continue
        key = final.body.get("status") or final.body.get("error") or ""
        if (final.status, key) not in EXPECTED[delivery.kind]:
            found.append(
                f"{delivery.kind} {delivery.payment_intent}: "
                f"{final.status or 'no answer'} {key}".rstrip()
            )
    return found


def _rescue_times(
    conn: psycopg.Connection[Any], chaos: Chaos
) -> tuple[list[float], list[float]]:
    """For each job a killed worker was running: seconds from the kill until the
    job ran again (or was closed as superseded), and until it was done."""
    rescued, done = [], []
    for killed_at, job_ids in chaos.killed_jobs:
        if not job_ids:
            continue
        rows = conn.execute(
            """
            SELECT job_id,
                   extract(epoch FROM min(at) FILTER (
                       WHERE type IN ('started', 'aborted', 'failed')
                         AND at > to_timestamp(%s))),
                   extract(epoch FROM max(at) FILTER (
                       WHERE type IN ('succeeded', 'failed', 'aborted', 'cancelled')))
            FROM procrastinate_events WHERE job_id = ANY(%s)
            GROUP BY job_id
            """,
            [killed_at, job_ids],
        ).fetchall()
        found = {job_id: (again, end) for job_id, again, end in rows}
        for job_id in job_ids:
            again, end = found.get(job_id, (None, None))
            if end is not None and float(end) < killed_at:
                continue  # it finished between our look and the kill
            rescued.append(float(again) - killed_at if again else float("inf"))
            done.append(float(end) - killed_at if end else float("inf"))
    return rescued, done


# --- main --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0, help="payments per second")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--trainers", type=int, default=300)
    parser.add_argument("--kill-every", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--kills", type=int, default=None, help="at most this many")
    parser.add_argument(
        "--no-restart", action="store_true", help="do not restart PostgreSQL"
    )
    parser.add_argument(
        "--postgres",
        default="embedded",
        help="embedded (default), system (this machine's PostgreSQL programs), "
        "or a directory holding the postgres program",
    )
    parser.add_argument(
        "--database-url",
        help="use a database of this name on an existing server instead "
        "(it is dropped and created; PostgreSQL is not restarted)",
    )
    parser.add_argument(
        "--lock-trainer-for",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="hold the busiest trainer's row locked this long from a quarter of "
        "the run (0: never)",
    )
    parser.add_argument("--dbname", default="fulfillment_chaos")
    parser.add_argument("--run-dir", type=Path, default=stack.ROOT / ".data" / "chaos")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--keep", action="store_true", help="leave the database (and its server) up"
    )
    return parser


def _database(args: argparse.Namespace) -> Database:
    if args.database_url:
        return Database(dbname=args.dbname, server_url=args.database_url)
    return Database(
        dbname=args.dbname,
        data_dir=args.run_dir / "pg",
        postgres_bin=stack.postgres_programs(args.postgres),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir: Path = args.run_dir
    shutil.rmtree(run_dir / "logs", ignore_errors=True)
    database = _database(args)
    restart = not args.no_restart and database.restartable
    stk = Stack(
        database=database,
        run_dir=run_dir / "logs",
        web_workers=args.web_workers,
        worker_concurrency=args.concurrency,
    )
    catalogue = stack.catalogue(trainers=args.trainers, seed=args.seed)
    schedule, fate = plan(
        payments=args.payments,
        rate=args.rate,
        seed=args.seed,
        courses=catalogue["courses"],
        secret=stk.webhook_secret,
    )
    duration = schedule[-1][0] if schedule else 0.0
    print(
        f"chaos: {args.payments} payments at {args.rate:g}/s (~{duration:.0f}s), "
        f"{args.workers} workers x {args.concurrency}, kill every "
        f"{args.kill_every:g}s, {'one restart' if restart else 'no restart'}; "
        f"{database.description}",
        flush=True,
    )
    chaos = Chaos()
    stop = threading.Event()
    lock_stop = threading.Event()
    began = time.monotonic()
    try:
        stk.prepare(catalogue)
        stk.start_web()
        for _ in range(args.workers):
            stk.start_worker()
        stk.wait_workers_ready(args.workers)
        start = time.monotonic()
        chaos_thread = threading.Thread(
            target=monkey,
            kwargs={
                "stk": stk,
                "chaos": chaos,
                "every": args.kill_every,
                "max_kills": args.kills,
                "restart_at": start + duration / 2 if restart else None,
                "stop": stop,
                "rng": random.Random(args.seed + 2),
            },
            daemon=True,
        )
        chaos_thread.start()
        lock_thread = threading.Thread(
            target=hold_trainer_lock,
            kwargs={
                "stk": stk,
                "chaos": chaos,
                "seconds": args.lock_trainer_for,
                # After the restart (which would end the holder's session), or
                # a quarter of the way in when there is none.
                "at": start + (duration / 2 + 5 if restart else duration / 4),
                # Its own event: the hold lasts its time even past the sending.
                "stop": lock_stop,
            },
            daemon=True,
        )
        if args.lock_trainer_for > 0:
            lock_thread.start()
        with Sender(port=stk.port, secret=stk.webhook_secret) as sender:
            for offset, delivery in schedule:
                delay = start + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sender.submit(delivery)
            sender.wait_idle(sender.give_up_after + 60)
            stop.set()
            chaos_thread.join()
            if lock_thread.is_alive():
                lock_thread.join()
            drained = drain(stk, timeout=args.drain_timeout)
            report = check(stk, fate, sender.deliveries, chaos)
        report["drain s"] = round(drained, 1)
        report["run s"] = round(time.monotonic() - began, 1)
    finally:
        stop.set()
        lock_stop.set()
        stk.stop()
        if not args.keep:
            database.stop()
    problems = report.pop("problems")
    rows = [(name, value) for name, value in report.items()]
    stack.print_table(rows, title="chaos: results")
    (run_dir / "report.json").write_text(
        json.dumps({**report, "problems": problems, "args": vars(args)}, default=str)
    )
    if problems:
        print("\nchaos: FAILED", *[f"  - {p}" for p in problems], sep="\n")
        return 1
    print("\nchaos: every invariant held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
