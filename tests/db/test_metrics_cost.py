"""``/metrics`` costs the same at 20 000 rows as at 20: every query it runs is
answered from an index (fulfillment/migrations/0005_metrics_indexes.py), none
reads a whole table that grows with traffic. Proved with EXPLAIN on the very SQL
one scrape sends, against tables seeded in SQL and vacuumed, as autovacuum keeps
them in production (index-only scans rely on the visibility map)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fulfillment.ops.metrics import render

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 20_000
# Tables that grow with payments, deliveries and jobs. The others (workers, their
# presence, the outcome counters) hold a handful of rows: a scan is the cheapest read.
GROWING_TABLES = frozenset(
    {
        "fulfillment_purchase",
        "fulfillment_payment",
        "fulfillment_webhookdelivery",
        "fulfillment_traceevent",
        "procrastinate_jobs",
        "procrastinate_events",
    }
)

SEED = """
INSERT INTO fulfillment_course (id, title, mode, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-0000000000c1', 'Seeded course', 'online', now(),
    now());
INSERT INTO fulfillment_student (id, name, email, phone, learnings_version,
    created_at)
VALUES ('00000000-0000-0000-0000-0000000000d1', 'Seeded student', 's@example.com', '',
    0, now());
INSERT INTO fulfillment_trainer (id, name, email, latitude, longitude, max_travel_km,
    max_active_students, weekdays, work_start, work_end, is_active, created_at,
    updated_at)
VALUES ('00000000-0000-0000-0000-0000000000e1', 'Seeded trainer', 't@example.com', 12.9,
    77.6, 10, 100000, '{0,1,2,3,4}', '09:00', '18:00', true, now(), now());
INSERT INTO fulfillment_payment (id, payment_intent, amount, amount_refunded, currency,
    status, metadata, raw_event, attention_reason, created_at, updated_at)
SELECT md5('payment' || g)::uuid, 'pi_seeded_' || g, 150000, 0, 'inr', 'succeeded',
    '{}', '{}', '', now() - g * interval '1 minute', now()
FROM generate_series(1, 20000) g;
INSERT INTO fulfillment_purchase (id, total_sessions, delivery_mode, start_date,
    time_slot, status, status_reason, created_at, allocated_at, updated_at, course_id,
    payment_id, student_id, trainer_id)
SELECT md5('purchase' || g)::uuid, 10, 'online', current_date, '10:00',
    CASE WHEN g % 500 = 0 THEN 'allocation_pending' WHEN g % 499 = 0 THEN 'waitlisted'
         ELSE 'allocated' END,
    '', now() - g * interval '1 minute',
    CASE WHEN g % 500 = 0 OR g % 499 = 0 THEN NULL
         ELSE now() - g * interval '1 minute' + interval '2 seconds' END,
    now(), '00000000-0000-0000-0000-0000000000c1', md5('payment' || g)::uuid,
    '00000000-0000-0000-0000-0000000000d1',
    CASE WHEN g % 500 = 0 OR g % 499 = 0 THEN NULL
         ELSE '00000000-0000-0000-0000-0000000000e1'::uuid END
FROM generate_series(1, 20000) g;
INSERT INTO fulfillment_webhookdelivery (event_id, event_type, payment_intent, outcome,
    detail, received_at)
SELECT 'evt_seeded_' || g, 'payment_intent.succeeded', 'pi_seeded_' || g,
    CASE WHEN g % 100 = 0 THEN 'duplicate' ELSE 'accepted' END, '',
    now() - g * interval '1 minute'
FROM generate_series(1, 20000) g;
INSERT INTO fulfillment_traceevent (kind, actor, from_status, to_status, message,
    created_at, payment_id, purchase_id)
SELECT CASE WHEN g % 1000 = 0 THEN 'healing' ELSE 'state_change' END, 'system', '', '',
    'seeded', now() - g * interval '1 minute', md5('payment' || g)::uuid,
    md5('purchase' || g)::uuid
FROM generate_series(1, 20000) g;
INSERT INTO procrastinate_jobs (id, queue_name, task_name, status, args)
SELECT g, CASE WHEN g % 3 = 0 THEN 'sessions' ELSE 'allocation' END,
    CASE WHEN g % 3 = 0 THEN 'fulfillment.tasks.create_sessions'
         ELSE 'fulfillment.tasks.allocate_trainer' END,
    (CASE WHEN g % 1000 = 0 THEN 'todo' WHEN g % 999 = 0 THEN 'failed'
          ELSE 'succeeded' END)::procrastinate_job_status, '{}'
FROM generate_series(1, 20000) g;
INSERT INTO procrastinate_events (job_id, type, at)
SELECT g, 'deferred'::procrastinate_job_event_type, now() - g * interval '1 minute'
FROM generate_series(1, 20000) g
UNION ALL
SELECT g, 'started', now() - g * interval '1 minute' + interval '1 second'
FROM generate_series(1, 20000) g
UNION ALL
SELECT g, 'succeeded', now() - g * interval '1 minute' + interval '2 seconds'
FROM generate_series(1, 20000) g WHERE g % 1000 <> 0 AND g % 999 <> 0;
SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), 20000)
"""


def _seed() -> None:
    with connection.cursor() as cursor:
        cursor.execute(SEED)
        for table in sorted(GROWING_TABLES):
            cursor.execute(f"VACUUM ANALYZE {table}")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(sql: str) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (document,) = cursor.fetchone()
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def _scrape_queries() -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        render()
    return [query["sql"] for query in captured.captured_queries]


def test_no_metrics_query_scans_a_growing_table() -> None:
    _seed()

    queries = _scrape_queries()

    assert len(queries) >= 8, queries
    scans = []
    for sql in queries:
        for node in _nodes(_plan(sql)):
            if (
                node["Node Type"] == "Seq Scan"
                and node.get("Relation Name") in GROWING_TABLES
            ):
                scans.append(f"{node['Relation Name']}: {' '.join(sql.split())}")
    assert not scans, "sequential scans of growing tables:\n" + "\n".join(scans)


def test_windowed_queries_read_only_the_last_hour() -> None:
    """The latency histograms start from an index range on the time column, so
    their cost follows the last hour's traffic, not the table's age."""
    _seed()

    windowed = [sql for sql in _scrape_queries() if "interval" in sql]

    assert len(windowed) == 2, windowed
    for sql in windowed:
        ranges = [
            node
            for node in _nodes(_plan(sql))
            if "Index Cond" in node and ("at >" in node["Index Cond"])
        ]
        assert ranges, f"no index range on the time window: {sql}"
        # One success a minute was seeded: about 60 rows in the window, not 20 000.
        assert all(node["Plan Rows"] < ROWS / 10 for node in ranges), ranges


def test_index_only_counts_are_exact(client: Any) -> None:
    _seed()

    text = client.get("/metrics").content.decode()

    assert 'fulfilment_purchases{status="allocated"} 19920.0' in text
    assert 'fulfilment_purchases{status="allocation_pending"} 40.0' in text
    assert 'fulfilment_purchases{status="waitlisted"} 40.0' in text
    assert 'fulfilment_webhooks_total{outcome="accepted"} 19800.0' in text
    assert 'fulfilment_webhooks_total{outcome="duplicate"} 200.0' in text
    assert "fulfilment_heals_total 20.0" in text
    assert 'fulfilment_jobs{status="todo",task="allocate_trainer"} 14.0' in text
    assert 'fulfilment_stage_latency_seconds_count{task="allocate_trainer"}' in text
