"""Liveness of the whole service: database, schema, workers (``/healthz``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone


def health_checks() -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "detail": "reachable"}
    except DatabaseError as error:
        checks["database"] = {"ok": False, "detail": f"unreachable: {error}"[:300]}
        checks["migrations"] = {"ok": False, "detail": "unknown: no database"}
        checks["workers"] = {"ok": False, "detail": "unknown: no database"}
        return checks
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    checks["migrations"] = {
        "ok": not pending,
        "detail": f"{len(pending)} unapplied" if pending else "all applied",
        "unapplied": [f"{m.app_label}.{m.name}" for m, _ in pending][:20],
    }
    fresh_after = timezone.now() - dt.timedelta(
        seconds=settings.WORKER_STALLED_AFTER_SECONDS
    )
    try:
        from procrastinate.contrib.django.models import ProcrastinateWorker

        alive = ProcrastinateWorker.objects.filter(
            last_heartbeat__gte=fresh_after
        ).count()
        checks["workers"] = {
            "ok": alive > 0,
            "detail": f"{alive} alive" if alive else "no worker heartbeat is fresh",
            "alive": alive,
        }
    except DatabaseError as error:
        checks["workers"] = {"ok": False, "detail": f"unknown: {error}"[:300]}
    return checks
