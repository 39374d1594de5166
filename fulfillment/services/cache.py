"""The app's cached views: a student's learnings.

Each cached payload (``CachedLearnings``, one row per student) carries the
``Student.learnings_version`` it was computed for, which every change to the
student's purchases, allocations or sessions bumps in its own transaction. A
reader that sees version *v* is only ever served a payload computed for *v*:
invalidation is exactly as transactional as the change itself, and a slow
refresh can never overwrite a newer payload with an older one.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from django.db import connection
from django.db.models import F

from fulfillment import queue
from fulfillment.models import CachedLearnings, Student
from fulfillment.queue import names
from fulfillment.selectors.purchases import StudentLearnings, student_learnings

logger = logging.getLogger(__name__)


# Set while a pipeline stage changes a purchase whose next stage is deferred in
# the same transaction: that stage invalidates (and so refreshes) again.
_next_stage_refreshes: ContextVar[bool] = ContextVar(
    "next_stage_refreshes", default=False
)


def learnings_invalidate(*, student_id: uuid.UUID, refresh: bool = True) -> None:
    """Bump the student's version and, with ``refresh``, defer a refresh
    (coalesced per student); in the caller's transaction.

    The bump alone keeps readers correct; the refresh only warms the cache, so
    it is left out when the next pipeline stage will invalidate again (see
    ``next_stage_refreshes``): one refresh per purchase instead of one per stage.
    """
    Student.objects.filter(pk=student_id).update(
        learnings_version=F("learnings_version") + 1
    )
    if refresh and not _next_stage_refreshes.get():
        learnings_refresh_defer(student_id=student_id)


@contextlib.contextmanager
def next_stage_refreshes() -> Iterator[None]:
    """Within the block, invalidations only bump the version: the caller defers,
    in the same transaction, a next stage that invalidates and refreshes again.
    Warming the cache for the intermediate state would be a wasted job."""
    token = _next_stage_refreshes.set(True)
    try:
        yield
    finally:
        _next_stage_refreshes.reset(token)


def learnings_refresh_defer(
    *, student_id: uuid.UUID, schedule_in: dict[str, int] | None = None
) -> None:
    """Defer a refresh, coalesced per student: one waiting refresh is enough."""
    queue.defer(
        names.REFRESH_LEARNINGS,
        queueing_lock=f"learnings:{student_id}",
        schedule_in=schedule_in,
        student_id=str(student_id),
    )


def learnings_get(*, student_id: uuid.UUID) -> StudentLearnings | None:
    """The student's learnings, cached for their current version when fresh;
    computed and cached otherwise. ``None`` when the student is unknown. One
    indexed read on a hit."""
    row = (
        Student.objects.filter(pk=student_id)
        .values_list(
            "learnings_version",
            "cached_learnings__version",
            "cached_learnings__payload",
        )
        .first()
    )
    if row is None:
        return None
    version, cached_version, payload = row
    if cached_version == version and payload is not None:
        cached: StudentLearnings = pickle.loads(payload)  # noqa: S301 (our own rows)
        return cached
    learnings = student_learnings(student_id=student_id)
    _store(student_id=student_id, version=version, learnings=learnings)
    return learnings


def _store(*, student_id: uuid.UUID, version: int, learnings: StudentLearnings) -> None:
    """Keep ``learnings`` as the payload of ``version`` unless a newer version
    is already stored (a slow refresh must not overwrite a faster, newer one)."""
    table = CachedLearnings._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS c (student_id, version, payload, computed_at) "  # noqa: S608
            "VALUES (%s, %s, %s, now()) ON CONFLICT (student_id) DO UPDATE SET "
            "version = EXCLUDED.version, payload = EXCLUDED.payload, "
            "computed_at = EXCLUDED.computed_at WHERE c.version <= EXCLUDED.version",
            [student_id, version, pickle.dumps(learnings)],
        )


def learnings_refresh(*, student_id: uuid.UUID) -> StudentLearnings | None:
    """Compute and cache the learnings for the student's current version.

    Idempotent; safe to run concurrently with changes (see the module docstring).
    """
    payload = learnings_get(student_id=student_id)
    logger.info("learnings refreshed", extra={"student_id": str(student_id)})
    return payload
