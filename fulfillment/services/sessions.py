"""Stage 3: the student-facing sessions, a rolling window over the reservations.

The trainer is reserved for the whole schedule at allocation; only the next
``SESSION_WINDOW`` sessions exist as ``TutoringSession`` rows. A periodic job
tops the window up as sessions pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.db import connection, transaction
from django.utils import timezone

from fulfillment.exceptions import PurchaseNotFound
from fulfillment.models import Purchase, TrainerAllocation, TutoringSession
from fulfillment.services.allocation import waitlist_retry_soon

logger = logging.getLogger(__name__)

SESSION_WINDOW = 7


def sessions_materialise(
    *, purchase_id: uuid.UUID, now: dt.datetime | None = None
) -> list[TutoringSession]:
    """Complete the sessions that have ended and materialise upcoming ones until
    ``SESSION_WINDOW`` are scheduled (or the schedule is exhausted).

    Idempotent: sessions are unique per (purchase, sequence) and a second run
    finds nothing to do. Returns the sessions created.
    """
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, student_id FROM fulfillment_purchase "
            "WHERE id = %s FOR NO KEY UPDATE",
            [purchase_id],
        )
        locked = cursor.fetchone()
        if locked is None:
            raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
        status, student_id = locked
        if status != Purchase.Status.ALLOCATED:
            return []
        # Under the purchase's lock, one statement does what the window needs
        # from what allocation already wrote: no row comes back to Python but
        # the sessions created.
        cursor.execute(
            _MATERIALISE_SQL,
            {
                "purchase": purchase_id,
                "student": student_id,
                "now": now,
                "window": SESSION_WINDOW,
            },
        )
        row = cursor.fetchone()
        if row is None or row[0] is None:  # no active allocation
            return []
        allocation_id, trainer_id, completed, future, any_left, rows = row
        created = sorted(
            (
                TutoringSession(
                    id=uuid.UUID(session["id"]),
                    purchase_id=purchase_id,
                    trainer_id=trainer_id,
                    sequence=session["sequence"],
                    starts_at=dt.datetime.fromisoformat(session["starts_at"]),
                    ends_at=dt.datetime.fromisoformat(session["ends_at"]),
                    status=session["status"],
                )
                for session in rows or []
            ),
            key=lambda session: session.sequence,
        )
        for session in created:
            session._state.adding = False
        if not future and not any_left:
            # Every session has passed: the trainer's capacity is free again.
            TrainerAllocation.objects.filter(pk=allocation_id).update(
                status=TrainerAllocation.Status.COMPLETED, ended_at=now
            )
            # The trainer's capacity changed: waiting purchases may fit now.
            waitlist_retry_soon()
        if created or completed:
            # The statement bumped the learnings version, and no refresh job
            # follows: the learnings API fills the cache on a miss at about the
            # cost of a hit plus one read (measured by `make bench`), so a
            # refresh per purchase would warm entries nobody may read, at a
            # job's cost, on the pipeline's hot path.
            logger.info(
                "sessions materialised",
                extra={
                    "purchase_id": str(purchase_id),
                    "sessions_created": len(created),
                    "sessions_completed": completed,
                },
            )
        return created


# Sessions that passed while nothing topped the window up (an outage) still get
# their row, born completed: the history has no holes. The CTEs share one
# snapshot, so ``window`` counts the sessions still scheduled after the update.
_MATERIALISE_SQL = """
WITH allocation AS (
    SELECT id, trainer_id FROM fulfillment_trainerallocation
    WHERE purchase_id = %(purchase)s AND status = 'active'
    LIMIT 1
), completed AS (
    UPDATE fulfillment_tutoringsession SET status = 'completed'
    WHERE purchase_id = %(purchase)s AND status = 'scheduled'
      AND ends_at <= %(now)s AND EXISTS (SELECT FROM allocation)
    RETURNING 1
), session_window AS (
    SELECT coalesce(max(sequence), 0) AS last,
           count(*) FILTER (WHERE status = 'scheduled' AND ends_at > %(now)s)
             AS still_scheduled
    FROM fulfillment_tutoringsession WHERE purchase_id = %(purchase)s
), later AS (
    SELECT r.sequence, lower(r.during) AS starts_at, upper(r.during) AS ends_at,
           row_number() OVER (
               PARTITION BY upper(r.during) > %(now)s ORDER BY r.sequence
           ) AS number
    FROM fulfillment_reservation r, allocation, session_window
    WHERE r.allocation_id = allocation.id AND r.sequence > session_window.last
), created AS (
    INSERT INTO fulfillment_tutoringsession
        (id, purchase_id, trainer_id, sequence, starts_at, ends_at, status)
    SELECT gen_random_uuid(), %(purchase)s, allocation.trainer_id, later.sequence,
           later.starts_at, later.ends_at,
           CASE WHEN later.ends_at <= %(now)s THEN 'completed' ELSE 'scheduled' END
    FROM later, allocation, session_window
    WHERE later.ends_at <= %(now)s
       OR later.number <= greatest(%(window)s - session_window.still_scheduled, 0)
    RETURNING id, sequence, starts_at, ends_at, status
), bumped AS (
    -- The learnings changed: the student's version moves on (the cache's key).
    UPDATE fulfillment_student SET learnings_version = learnings_version + 1
    WHERE id = %(student)s
      AND (EXISTS (SELECT FROM created) OR EXISTS (SELECT FROM completed))
)
SELECT (SELECT id FROM allocation), (SELECT trainer_id FROM allocation),
       (SELECT count(*) FROM completed),
       (SELECT count(*) FROM later WHERE ends_at > %(now)s),
       EXISTS (SELECT FROM fulfillment_reservation r, allocation
               WHERE r.allocation_id = allocation.id AND upper(r.during) > %(now)s),
       (SELECT json_agg(created) FROM created)
"""


def purchases_needing_top_up(*, now: dt.datetime | None = None) -> list[uuid.UUID]:
    """Allocated purchases with a scheduled session that has already ended."""
    now = now or timezone.now()
    return list(
        TutoringSession.objects.filter(
            status=TutoringSession.Status.SCHEDULED,
            ends_at__lte=now,
            purchase__status=Purchase.Status.ALLOCATED,
        )
        .values_list("purchase_id", flat=True)
        .distinct()
    )


def session_windows_top_up(*, now: dt.datetime | None = None) -> int:
    """Top up every window with passed sessions, each purchase in its own
    transaction. Returns the number of sessions created."""
    now = now or timezone.now()
    return sum(
        len(sessions_materialise(purchase_id=purchase_id, now=now))
        for purchase_id in purchases_needing_top_up(now=now)
    )
