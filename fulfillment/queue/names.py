"""Every task's name, as stored in ``procrastinate_jobs.task_name``.

Services defer by these names (``fulfillment.queue.defer``), so they never import
``fulfillment.tasks``; the maintenance SQL and the console match job rows by
them. A name is part of every job row ever written: never change one.
``tests/unit/test_layers.py`` checks that each names a registered task.
"""

from __future__ import annotations

from typing import Final

ALLOCATE_TRAINER: Final = "fulfillment.tasks.allocate_trainer"
MATERIALISE_SESSIONS: Final = "fulfillment.tasks.materialise_sessions"
REFRESH_LEARNINGS: Final = "fulfillment.tasks.refresh_learnings"
REALLOCATE_WAITLIST: Final = "fulfillment.tasks.reallocate_waitlist"
TOP_UP_SESSION_WINDOWS: Final = "fulfillment.tasks.top_up_session_windows"
RESCUE_STALLED_JOBS: Final = "fulfillment.tasks.rescue_stalled_jobs"
RECONCILE_INVARIANTS: Final = "fulfillment.tasks.reconcile_invariants"
PRUNE_FINISHED_JOBS: Final = "fulfillment.tasks.prune_finished_jobs"

# Queues, one per stage, and the maintenance queue of the periodic sweeps.
ALLOCATION_QUEUE: Final = "allocation"
SESSIONS_QUEUE: Final = "sessions"
CACHE_QUEUE: Final = "cache"
MAINTENANCE_QUEUE: Final = "maintenance"
STAGE_QUEUES: Final = (ALLOCATION_QUEUE, SESSIONS_QUEUE, CACHE_QUEUE)
