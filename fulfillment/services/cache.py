"""The app's cached views: a student's learnings.

Cache keys carry ``Student.learnings_version``, which every change to the
student's purchases, allocations or sessions bumps in its own transaction. A
reader that sees version *v* can therefore only ever be served a payload computed
at or after *v*: invalidation is exactly as transactional as the change itself,
and a slow refresh can never overwrite a newer payload with an older one.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from django.core.cache import cache
from django.db.models import F

from fulfillment import queue
from fulfillment.models import Student
from fulfillment.queue import names
from fulfillment.selectors.purchases import StudentLearnings, student_learnings

logger = logging.getLogger(__name__)


def learnings_cache_key(*, student_id: uuid.UUID, version: int) -> str:
    # v2: the value is a ``StudentLearnings`` (v1 held its JSON dict).
    return f"learnings:v2:{student_id}:{version}"


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
    """The student's learnings, from the cache when fresh; computed and cached
    otherwise. ``None`` when the student is unknown."""
    version = (
        Student.objects.filter(pk=student_id)
        .values_list("learnings_version", flat=True)
        .first()
    )
    if version is None:
        return None
    key = learnings_cache_key(student_id=student_id, version=version)
    payload: StudentLearnings | None = cache.get(key)
    if payload is None:
        payload = student_learnings(student_id=student_id)
        cache.set(key, payload)
    return payload


def learnings_refresh(*, student_id: uuid.UUID) -> StudentLearnings | None:
    """Compute and cache the learnings for the student's current version.

    Idempotent; safe to run concurrently with changes (see the module docstring).
    """
    payload = learnings_get(student_id=student_id)
    logger.info("learnings refreshed", extra={"student_id": str(student_id)})
    return payload
