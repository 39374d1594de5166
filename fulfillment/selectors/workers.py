"""Workers alive: procrastinate's heartbeats with what the task middleware
records of each (queues, host, pid)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateWorker

from fulfillment.models import WorkerPresence


@dataclass(frozen=True)
class LiveWorker:
    worker_id: int
    heartbeat_age_s: float
    name: str
    host: str
    pid: int | None
    queues: tuple[str, ...] | None  # None: not known yet (no job run); (): all

    def serves(self, queue: str) -> bool:
        return self.queues is None or not self.queues or queue in self.queues


def live_workers(*, stalled_after_s: float | None = None) -> list[LiveWorker]:
    """Workers whose heartbeat is fresher than ``stalled_after_s``."""
    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    now = timezone.now()
    workers = list(
        ProcrastinateWorker.objects.filter(
            last_heartbeat__gte=now - dt.timedelta(seconds=limit)
        ).order_by("id")
    )
    presence = {
        p.worker_id: p
        for p in WorkerPresence.objects.filter(worker_id__in=[w.id for w in workers])
    }
    result = []
    for worker in workers:
        known = presence.get(worker.id)
        result.append(
            LiveWorker(
                worker_id=worker.id,
                heartbeat_age_s=(now - worker.last_heartbeat).total_seconds(),
                name=known.name if known else "",
                host=known.host if known else "",
                pid=known.pid if known else None,
                queues=tuple(known.queues) if known else None,
            )
        )
    return result


# A lost worker is shown this long after its last heartbeat, unless pruned first
# (procrastinate prunes stalled rows when a worker starts).
LOST_SHOWN_FOR_S = 3600.0


def lost_workers(*, stalled_after_s: float | None = None) -> list[LiveWorker]:
    """Workers whose heartbeat stopped (older than ``stalled_after_s``) within the
    last hour and whose row is still there: a host cut off or a process killed.
    Their jobs are rescued; operators still need to see where they ran."""
    limit = stalled_after_s or settings.WORKER_STALLED_AFTER_SECONDS
    now = timezone.now()
    workers = list(
        ProcrastinateWorker.objects.filter(
            last_heartbeat__lt=now - dt.timedelta(seconds=limit),
            last_heartbeat__gte=now - dt.timedelta(seconds=LOST_SHOWN_FOR_S),
        ).order_by("id")
    )
    presence = {
        p.worker_id: p
        for p in WorkerPresence.objects.filter(worker_id__in=[w.id for w in workers])
    }
    return [
        LiveWorker(
            worker_id=worker.id,
            heartbeat_age_s=(now - worker.last_heartbeat).total_seconds(),
            name=known.name if known else "",
            host=known.host if known else "",
            pid=known.pid if known else None,
            queues=tuple(known.queues) if known else None,
        )
        for worker in workers
        for known in [presence.get(worker.id)]
    ]
