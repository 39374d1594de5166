"""``/metrics``: Prometheus text format, computed from the database at scrape time.

Nothing is counted in process memory, so every web process tells the same truth
and a restart loses nothing. A scrape must stay cheap as tables grow: every
query below is answered from an index (migration 0007_metrics_indexes): counts
index-only, latencies from a range on the last hour; tests/db/test_metrics_cost.py
EXPLAINs each against 20 000 rows. A query added here needs its index there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db import connection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from fulfillment.models import WebhookOutcomeCount
from fulfillment.selectors.jobs import queue_stats
from fulfillment.selectors.workers import live_workers

# Seconds from a job's defer to its end, per task; and payment to allocation.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENCY_WINDOW = "1 hour"


class FulfilmentCollector(Collector):
    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        yield self._webhooks()
        yield self._jobs()
        yield from self._latencies()
        yield self._oldest_waiting()
        workers = GaugeMetricFamily(
            "fulfilment_workers_alive", "Workers with a fresh heartbeat."
        )
        workers.add_metric([], len(live_workers()))
        yield workers
        yield self._purchases()
        yield self._heals()

    def _webhooks(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "fulfilment_webhooks",
            "Stripe webhook deliveries answered, by outcome.",
            labels=["outcome"],
        )
        counts: dict[str, int] = dict(
            WebhookOutcomeCount.objects.values_list("outcome", "count")
        )
        for outcome, count in _rows(
            "SELECT outcome, count(*) FROM fulfillment_webhookdelivery GROUP BY 1"
        ):
            counts[outcome] = counts.get(outcome, 0) + count
        for outcome, total in sorted(counts.items()):
            family.add_metric([outcome], total)
        return family

    def _jobs(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "fulfilment_jobs",
            "Jobs in the queue table, by task and status.",
            labels=["task", "status"],
        )
        for task, status, count in _rows(
            "SELECT task_name, status, count(*) FROM procrastinate_jobs "
            "GROUP BY task_name, status ORDER BY 1, 2"
        ):
            family.add_metric([task.rsplit(".", 1)[-1], status], count)
        return family

    def _latencies(self) -> Iterator[HistogramMetricFamily]:
        stages = HistogramMetricFamily(
            "fulfilment_stage_latency_seconds",
            f"From a job's defer to its success, per task (last {LATENCY_WINDOW}).",
            labels=["task"],
        )
        rows = _rows(
            """
            SELECT j.task_name, extract(epoch FROM s.at - d.at)
            FROM procrastinate_jobs j
            JOIN procrastinate_events d ON d.job_id = j.id AND d.type = 'deferred'
            JOIN procrastinate_events s ON s.job_id = j.id AND s.type = 'succeeded'
            WHERE s.at > now() - %s::interval
            """,
            [LATENCY_WINDOW],
        )
        by_task: dict[str, list[float]] = {}
        for task, seconds in rows:
            by_task.setdefault(task.rsplit(".", 1)[-1], []).append(float(seconds))
        for task, values in sorted(by_task.items()):
            buckets, total = _buckets(values)
            stages.add_metric([task], buckets, total)
        yield stages
        allocation = HistogramMetricFamily(
            "fulfilment_payment_to_allocation_seconds",
            f"From the payment's arrival to its trainer (last {LATENCY_WINDOW}).",
        )
        values = [
            float(seconds)
            for (seconds,) in _rows(
                """
                SELECT extract(epoch FROM allocated_at - created_at)
                FROM fulfillment_purchase
                WHERE allocated_at > now() - %s::interval
                """,
                [LATENCY_WINDOW],
            )
        ]
        buckets, total = _buckets(values)
        allocation.add_metric([], buckets, total)
        yield allocation

    def _oldest_waiting(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "fulfilment_oldest_waiting_seconds",
            "Age of the oldest item waiting at each stage (0 when none).",
            labels=["stage"],
        )
        for stats in queue_stats():
            family.add_metric([f"queue:{stats.queue}"], stats.oldest_ready_age_s or 0)
        for status, (age,) in (
            (
                status,
                _rows(
                    "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                    "FROM fulfillment_purchase WHERE status = %s",
                    [status],
                )[0],
            )
            for status in ("allocation_pending", "waitlisted")
        ):
            family.add_metric([f"purchase:{status}"], float(age))
        return family

    def _purchases(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "fulfilment_purchases", "Purchases by status.", labels=["status"]
        )
        for status, count in _rows(
            "SELECT status, count(*) FROM fulfillment_purchase GROUP BY status"
        ):
            family.add_metric([status], count)
        return family

    def _heals(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "fulfilment_heals", "Invariants healed by the reconciliation sweeper."
        )
        ((count,),) = _rows(
            "SELECT count(*) FROM fulfillment_traceevent WHERE kind = 'healing'"
        )
        family.add_metric([], count)
        return family


def _rows(sql: str, params: list[str] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return list(cursor.fetchall())


def _buckets(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    cumulative = [
        (str(bound), float(sum(1 for v in values if v <= bound)))
        for bound in LATENCY_BUCKETS
    ]
    cumulative.append(("+Inf", float(len(values))))
    return cumulative, sum(values)


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FulfilmentCollector())
    return generate_latest(registry)
