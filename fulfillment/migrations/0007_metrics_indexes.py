"""Indexes that keep every ``/metrics`` query off a sequential scan of the tables
that grow with traffic (fulfillment/ops/metrics.py; tests/db/test_metrics_cost.py).

Raw SQL rather than ``Meta.indexes``: two are on procrastinate's tables, which
have no model of ours, and the others serve only these reads. Built
CONCURRENTLY, so a deploy does not block webhook writes while they build (hence
``atomic = False``); IF NOT EXISTS makes a retried half-done migrate safe.
"""

from django.db import migrations

INDEXES = {
    # Deliveries by outcome: an index-only count (the heap is never read).
    "fulfillment_webhookdelivery_outcome_idx": (
        "fulfillment_webhookdelivery (outcome)"
    ),
    # Jobs by status and task: an index-only count; status first so the queue
    # overview's `status IN ('todo', 'doing', 'failed')` skips succeeded jobs.
    "procrastinate_jobs_status_task_idx": "procrastinate_jobs (status, task_name)",
    # Stage latencies look back one hour from the success event.
    "procrastinate_events_succeeded_at_idx": (
        "procrastinate_events (at) WHERE type = 'succeeded'"
    ),
    # Payment-to-allocation latency looks back one hour.
    "fulfillment_purchase_allocated_at_idx": (
        "fulfillment_purchase (allocated_at) WHERE allocated_at IS NOT NULL"
    ),
    # Purchases by status: an index-only count on the narrowest index.
    "fulfillment_purchase_status_idx": "fulfillment_purchase (status)",
    # Heals are a few rows among millions of trace events.
    "fulfillment_traceevent_healing_idx": (
        "fulfillment_traceevent (id) WHERE kind = 'healing'"
    ),
}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("fulfillment", "0006_waitlist_order"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
        )
        for name, target in INDEXES.items()
    ]
