"""``python -m tools.console_bench``: how fast the ops dashboard answers on a
big database (#13: p95 under 300 ms with 50,000 purchases and 500 trainers).

It migrates the database it is given, seeds it in SQL (one statement per table,
generate_series: seconds, not minutes), then renders ``/admin/`` and the live
fragment ``/admin/dashboard/live/`` as an Operations-level superuser through
Django's test client in a ``manage.py shell`` (no network in the figure: the
server's own time) and prints p50/p95/max and queries per page:

    createdb -h 127.0.0.1 -U root console_bench
    python -m tools.console_bench --database-url postgres://root@127.0.0.1/console_bench

The seed replaces what is there (it truncates the fulfilment tables).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent

SEED_SQL = """
TRUNCATE fulfillment_tutoringsession, fulfillment_reservation,
    fulfillment_trainerallocation, fulfillment_traceevent, fulfillment_purchase,
    fulfillment_payment, fulfillment_student, fulfillment_trainer_courses,
    fulfillment_trainer, fulfillment_course, fulfillment_jobfailure,
    fulfillment_webhookdelivery CASCADE;

INSERT INTO fulfillment_course (id, title, mode, created_at, updated_at)
SELECT gen_random_uuid(), 'Course ' || n, CASE WHEN n %% 2 = 0 THEN 'home'
    ELSE 'online' END, now(), now()
FROM generate_series(1, %(courses)s) n;

INSERT INTO fulfillment_trainer (id, name, email, latitude, longitude,
    max_travel_km, max_active_students, weekdays, work_start, work_end,
    is_active, created_at, updated_at)
SELECT gen_random_uuid(), 'Trainer ' || n, 'trainer' || n || '@example.com',
    12.9 + random() * 0.2, 77.5 + random() * 0.2, 5 + n %% 10, 200,
    ARRAY[0,1,2,3,4], '09:00', '20:00', n %% 20 <> 0, now(), now()
FROM generate_series(1, %(trainers)s) n;

INSERT INTO fulfillment_trainer_courses (trainer_id, course_id)
SELECT t.id, c.id FROM fulfillment_trainer t CROSS JOIN fulfillment_course c
WHERE random() < 0.5;

INSERT INTO fulfillment_student (id, name, email, phone, learnings_version,
    created_at)
SELECT gen_random_uuid(), 'Student ' || n, 'parent' || n || '@example.com',
    '+9198' || lpad(n::text, 8, '0'), 0, now()
FROM generate_series(1, %(purchases)s) n;

INSERT INTO fulfillment_payment (id, payment_intent, amount, currency, status,
    metadata, raw_event, attention_reason, created_at, updated_at)
SELECT gen_random_uuid(), 'pi_bench' || n, 499900, 'inr', 'succeeded',
    jsonb_build_object('student_name', 'Student ' || n),
    '{}'::jsonb,
    CASE WHEN n > %(purchases)s THEN 'course_id: not in the catalogue' ELSE '' END,
    now() - (n %% 2000) * interval '1 hour', now()
FROM generate_series(1, %(purchases)s + %(attention)s) n;

WITH numbered AS (
    SELECT p.id AS payment_id, s.id AS student_id,
           row_number() OVER (ORDER BY p.payment_intent) AS n
    FROM (SELECT id, payment_intent,
                 row_number() OVER (ORDER BY payment_intent) AS k
          FROM fulfillment_payment WHERE attention_reason = '') p
    JOIN (SELECT id, row_number() OVER (ORDER BY name) AS k
          FROM fulfillment_student) s ON s.k = p.k
),
courses AS (SELECT array_agg(id) AS ids FROM fulfillment_course),
trainers AS (SELECT array_agg(id) AS ids FROM fulfillment_trainer)
INSERT INTO fulfillment_purchase (id, payment_id, student_id, course_id,
    total_sessions, delivery_mode, start_date, time_slot, latitude, longitude,
    status, status_reason, trainer_id, created_at, allocated_at, updated_at)
SELECT gen_random_uuid(), payment_id, student_id,
    courses.ids[1 + n %% array_length(courses.ids, 1)], 10, 'WEEKDAY_DAILY',
    current_date + (n %% 40 - 5)::int, '16:00', 12.97, 77.6,
    CASE WHEN n %% 50 = 0 THEN 'waitlisted'
         WHEN n %% 97 = 0 THEN 'allocation_pending'
         WHEN n %% 31 = 0 THEN 'refunded' ELSE 'allocated' END,
    CASE WHEN n %% 50 = 0
         THEN E'No trainer within 5 km; nearest Trainer 7 at 7.8 km.\\nNo fit.'
         ELSE '' END,
    CASE WHEN n %% 50 = 0 OR n %% 97 = 0 THEN NULL
         ELSE trainers.ids[1 + n %% array_length(trainers.ids, 1)] END,
    now() - (n %% 2000) * interval '1 hour',
    CASE WHEN n %% 50 = 0 OR n %% 97 = 0 THEN NULL ELSE now() END, now()
FROM numbered, courses, trainers;

ANALYZE;
"""

MEASURE = """
import statistics, time
from django.contrib.auth.models import User
from django.db import connection, reset_queries
from django.conf import settings
from django.test import Client
from django.test.utils import CaptureQueriesContext
settings.ALLOWED_HOSTS = ["*"]
user, _ = User.objects.get_or_create(username="console-bench",
    defaults={"is_staff": True, "is_superuser": True})
client = Client()
client.force_login(user)
for url in ("/admin/", "/admin/dashboard/live/"):
    for _ in range(3):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"console_bench: url={url} runs={RUNS} p50_ms={statistics.median(times):.1f} "
          f"p95_ms={p95:.1f} max_ms={times[-1]:.1f} queries={len(queries)}")
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--purchases", type=int, default=50_000)
    parser.add_argument("--trainers", type=int, default=500)
    parser.add_argument("--courses", type=int, default=4)
    parser.add_argument("--attention", type=int, default=200)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--no-seed", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    env = {**os.environ, "DATABASE_URL": args.database_url, "LOG_LEVEL": "WARNING"}
    manage = [sys.executable, str(PROJECT / "manage.py")]
    if not args.no_seed:
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            # Several statements: simple query protocol, so the (integer)
            # sizes are formatted in here rather than bound.
            sizes = {
                "courses": int(args.courses),
                "trainers": int(args.trainers),
                "purchases": int(args.purchases),
                "attention": int(args.attention),
            }
            conn.execute((SEED_SQL % sizes).encode())
        print(
            f"console_bench: seeded {args.purchases} purchases, {args.trainers} "
            f"trainers, {args.attention} payments needing attention"
        )
    script = MEASURE.replace("RUNS", str(args.runs))
    completed = subprocess.run(
        [*manage, "shell", "-c", script], env=env, cwd=PROJECT, check=False
    )
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
