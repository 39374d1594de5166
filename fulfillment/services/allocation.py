"""Stage 2: allocate a trainer to a purchase (CONTRACT §6).

Safe under any number of concurrent workers: the purchase row is locked for the
whole decision, and each candidate trainer's row is locked before its capacity
is counted and its reservations checked for an overlap: every writer of a
trainer's reservations holds that lock, so the check is exact, and a trainer
found taken just means "try the next one". The exclusion constraint on
reservations stays the last word on overlaps.

A trainer row locked by someone else (a worker cut off mid-allocation, a
session idle in a transaction) is never waited for: that trainer is busy for
now and the next one is tried; only when every fitting trainer is busy does the
job come back a few seconds later (``TrainersBusy``), the purchase untouched.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid

from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from fulfillment import queue
from fulfillment.domain import fit
from fulfillment.domain.schedule import Slot
from fulfillment.exceptions import PurchaseNotFound, TrainerTaken
from fulfillment.models import (
    WAITING_STATUSES,
    Course,
    Purchase,
    Reservation,
    Trainer,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.queue import names
from fulfillment.selectors.trainers import (
    CANDIDATES,
    purchase_schedule,
    trainer_candidates,
    trainer_verdicts,
)
from fulfillment.services import cache
from fulfillment.services.trace import purchase_transition

logger = logging.getLogger(__name__)


class TrainerBusy(TrainerTaken):
    """Another transaction holds the trainer's row: taken for now, perhaps
    free in a moment."""


class TrainersBusy(OperationalError):
    """Every trainer that fits is locked by another transaction right now.

    A database condition, not a verdict, so it is an ``OperationalError`` like
    the lock timeout it replaces: the allocation job's retry policy runs it
    again in seconds, and the purchase is not waitlisted for a lock.
    """


def purchase_allocate(
    *, purchase_id: uuid.UUID, actor: str, now: dt.datetime | None = None
) -> Purchase:
    """Allocate the best fitting trainer, or waitlist the purchase with a reason.

    Idempotent: a purchase that is no longer waiting is returned untouched. On
    success, reserves the trainer for every session and defers the sessions job,
    all in one transaction.
    """
    now = now or timezone.now()
    with transaction.atomic():
        purchase = _purchase_locked(purchase_id)
        if purchase is None:
            raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
        if purchase.status not in WAITING_STATUSES:
            return purchase
        slots = purchase_schedule(purchase=purchase, now=now)
        # The few best candidates, ranked in SQL; the rest of the fitting list
        # only when every one of them was taken meanwhile.
        verdicts = trainer_candidates(purchase=purchase, slots=slots)
        home_visit = purchase.course.mode == Course.Mode.HOME
        busy: list[str] = []
        tried: set[str] = set()
        more = len(verdicts) == CANDIDATES
        ranked = verdicts
        while ranked:
            for verdict in ranked:
                tried.add(verdict.trainer.id)
                try:
                    allocation_create(
                        purchase=purchase,
                        trainer_id=uuid.UUID(verdict.trainer.id),
                        slots=slots,
                        now=now,
                    )
                except TrainerBusy:
                    busy.append(verdict.trainer.id)
                    continue
                except TrainerTaken:
                    continue
                return allocation_complete(
                    purchase=purchase, actor=actor, now=now, verdict=verdict
                )
            if not more:
                break
            more = False
            verdicts = trainer_verdicts(
                purchase=purchase, slots=slots, fitting_only=True
            )
            ranked = [
                verdict
                for verdict in fit.rank(verdicts, home_visit=home_visit)
                if verdict.trainer.id not in tried
            ]
        if busy:
            # Rolls the transaction back: the purchase stays waiting.
            logger.warning(
                "every fitting trainer is locked",
                extra={"purchase_id": str(purchase.pk), "trainer_ids": busy},
            )
            raise TrainersBusy(
                f"every fitting trainer ({len(busy)}) is locked by another "
                "transaction; allocation will be retried"
            )
        if not verdicts:
            # Nobody may fit: the whole roster's verdicts say why, for operators.
            # (Candidates that were all taken meanwhile say so themselves.)
            verdicts = trainer_verdicts(purchase=purchase, slots=slots)
        reason = fit.waitlist_reason(verdicts, course_title=purchase.course.title)
        return purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.WAITLISTED,
            reason=reason,
            actor=actor,
        )


def _purchase_locked(purchase_id: uuid.UUID) -> Purchase | None:
    """``SELECT … FOR NO KEY UPDATE`` of the purchase, with its course, in SQL
    written once: the ORM's ``select_related`` query, built and compiled per
    allocation, was a sixth of the allocation job's CPU (py-spy, #15). The
    instances come from ``Model.from_db``, as the ORM makes them; no field of
    either model has a database converter (a test holds that)."""
    sql, purchase_names, course_names = _purchase_lock_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [purchase_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(purchase_names)
    purchase = Purchase.from_db(connection.alias, purchase_names, row[:split])
    purchase.course = Course.from_db(connection.alias, course_names, row[split:])
    return purchase


@functools.cache
def _purchase_lock_sql() -> tuple[str, list[str], list[str]]:
    quote = connection.ops.quote_name
    purchase_fields = Purchase._meta.concrete_fields
    course_fields = Course._meta.concrete_fields
    columns = ", ".join(
        [f"p.{quote(field.column)}" for field in purchase_fields]
        + [f"c.{quote(field.column)}" for field in course_fields]
    )
    sql = (
        f"SELECT {columns} FROM {Purchase._meta.db_table} p "  # noqa: S608
        f"JOIN {Course._meta.db_table} c ON c.id = p.course_id "
        "WHERE p.id = %s FOR NO KEY UPDATE OF p"
    )
    return (
        sql,
        [field.attname for field in purchase_fields],
        [field.attname for field in course_fields],
    )


def allocation_create(
    *,
    purchase: Purchase,
    trainer_id: uuid.UUID,
    slots: list[Slot],
    now: dt.datetime,
    enforce_capacity: bool = True,
    assigned_by: str = "",
    override_reason: str = "",
) -> TrainerAllocation:
    """Reserve the trainer for every slot, or raise ``TrainerTaken`` having
    changed nothing (``TrainerBusy`` if another transaction holds the trainer's
    row: it is never waited for). Must run inside the caller's transaction.

    Two statements. The trainer's row is locked first (our own lock, an
    operator's assignment that locked first, is no conflict); every writer of
    a trainer's reservations holds that lock, so the next statement's snapshot
    sees all of them and checks capacity and overlaps exactly, then writes the
    allocation and every reservation, or nothing. A trainer found taken stays
    locked until the caller's transaction ends (no savepoint to roll back: two
    round trips fewer per allocation); the exclusion constraint stays the last
    word, and a violation of it fails the transaction for its retry.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT max_active_students FROM fulfillment_trainer "
            "WHERE id = %s FOR NO KEY UPDATE SKIP LOCKED",
            [trainer_id],
        )
        locked = cursor.fetchone()
        if locked is None:
            if Trainer.objects.filter(pk=trainer_id).exists():
                raise TrainerBusy
            raise Trainer.DoesNotExist(f"trainer {trainer_id} does not exist")
        allocation = TrainerAllocation(
            id=uuid.uuid4(),
            purchase=purchase,
            trainer_id=trainer_id,
            status=TrainerAllocation.Status.ACTIVE,
            assigned_by=assigned_by,
            override_reason=override_reason,
            created_at=now,
        )
        cursor.execute(
            _ALLOCATE_SQL,
            {
                "id": allocation.id,
                "purchase": purchase.pk,
                "trainer": trainer_id,
                "enforce": enforce_capacity,
                "capacity": locked[0],
                "assigned_by": assigned_by,
                "override_reason": override_reason,
                "now": now,
                "sequences": [slot.sequence for slot in slots],
                "starts": [slot.starts_at for slot in slots],
                "ends": [slot.ends_at for slot in slots],
            },
        )
        created = cursor.fetchone()
        if not created or not created[0]:
            raise TrainerTaken  # at capacity, or a slot overlaps a reservation
        allocation._state.adding = False
        return allocation


_ALLOCATE_SQL = """
WITH allowed AS (
    SELECT WHERE (NOT %(enforce)s OR (
        SELECT count(*) FROM fulfillment_trainerallocation
        WHERE trainer_id = %(trainer)s AND status = 'active'
    ) < %(capacity)s) AND NOT EXISTS (
        -- The GiST index of the exclusion constraint, by trainer and time.
        SELECT FROM fulfillment_reservation
        WHERE trainer_id = %(trainer)s AND during && (
            SELECT range_agg(tstzrange(starts_at, ends_at, '[)'))
            FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[])
                AS slot(starts_at, ends_at)
        )
    )
), allocation AS (
    INSERT INTO fulfillment_trainerallocation
        (id, purchase_id, trainer_id, status, assigned_by, override_reason,
         released_by, created_at, ended_at)
    SELECT %(id)s, %(purchase)s, %(trainer)s, 'active', %(assigned_by)s,
           %(override_reason)s, '', %(now)s, NULL
    FROM allowed
    RETURNING id
), reserved AS (
    INSERT INTO fulfillment_reservation (trainer_id, allocation_id, sequence, during)
    SELECT %(trainer)s, allocation.id, slot.sequence,
           tstzrange(slot.starts_at, slot.ends_at, '[)')
    FROM allocation,
         unnest(%(sequences)s::smallint[], %(starts)s::timestamptz[],
                %(ends)s::timestamptz[]) AS slot(sequence, starts_at, ends_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM allocation), (SELECT count(*) FROM reserved)
"""


_ALLOCATED_SQL = """
WITH purchase AS (
    UPDATE fulfillment_purchase
    SET status = 'allocated', status_reason = %(reason)s, trainer_id = %(trainer)s,
        allocated_at = %(now)s, updated_at = %(updated_at)s
    WHERE id = %(purchase)s
    RETURNING payment_id, student_id
), trace AS (
    INSERT INTO fulfillment_traceevent
        (payment_id, purchase_id, kind, actor, from_status, to_status, message,
         created_at)
    SELECT payment_id, %(purchase)s, 'state_change', %(actor)s, %(from_status)s,
           'allocated', %(reason)s, now()
    FROM purchase
), student AS (
    UPDATE fulfillment_student SET learnings_version = learnings_version + 1
    WHERE id = (SELECT student_id FROM purchase)
)
SELECT {job} FROM purchase
"""


def allocation_complete(
    *, purchase: Purchase, actor: str, now: dt.datetime, verdict: fit.Verdict
) -> Purchase:
    """Mark the locked purchase allocated to the verdict's trainer (whose
    reservations ``allocation_create`` made) and defer the sessions stage, in
    the caller's transaction."""
    purchase.trainer_id = uuid.UUID(verdict.trainer.id)
    purchase.allocated_at = now
    distance = (
        f", {verdict.distance_km:.1f} km away"
        if verdict.distance_km is not None
        else ""
    )
    reason = f"Allocated to {verdict.trainer.name}{distance}."
    from_status = purchase.status
    if from_status == Purchase.Status.ALLOCATED:
        # A re-assignment: the shared transition decides what changes.
        with cache.next_stage_refreshes():
            purchase_transition(
                purchase=purchase,
                to_status=Purchase.Status.ALLOCATED,
                reason=reason,
                actor=actor,
                update_fields=("trainer", "allocated_at"),
            )
        queue.defer(names.MATERIALISE_SESSIONS, purchase_id=str(purchase.pk))
    else:
        # ``purchase_transition`` in one statement: the purchase, its trace row,
        # the student's learnings version (no refresh: the sessions stage
        # changes the learnings again) and the sessions job.
        purchase.status = Purchase.Status.ALLOCATED
        purchase.status_reason = reason
        purchase.updated_at = timezone.now()
        job, job_params = queue.deferral(
            names.MATERIALISE_SESSIONS, purchase_id=str(purchase.pk)
        ).named()
        with connection.cursor() as cursor:
            cursor.execute(
                _ALLOCATED_SQL.format(job=job),
                {
                    **job_params,
                    "purchase": purchase.pk,
                    "reason": reason,
                    "trainer": purchase.trainer_id,
                    "now": now,
                    "updated_at": purchase.updated_at,
                    "actor": actor,
                    "from_status": from_status,
                },
            )
        logger.info(
            "purchase status changed",
            extra={
                "purchase_id": str(purchase.pk),
                "from_status": from_status,
                "to_status": str(Purchase.Status.ALLOCATED),
                "actor": actor,
            },
        )
    logger.info(
        "trainer allocated",
        extra={"purchase_id": str(purchase.pk), "trainer_id": verdict.trainer.id},
    )
    return purchase


def allocation_release(
    *,
    purchase: Purchase,
    now: dt.datetime,
    moving: bool = False,
    released_by: str = "",
) -> int:
    """Release the purchase's trainer: future reservations are deleted, sessions
    already given (or under way) completed, and future sessions cancelled, or,
    when the purchase is ``moving`` to another schedule or trainer, deleted: the
    next allocation gives them again under the same sequence numbers. Returns
    the number of future sessions cancelled (or removed). Runs in the caller's
    transaction, with the purchase locked."""
    allocations = list(
        purchase.allocations.select_for_update(no_key=True).filter(
            status=TrainerAllocation.Status.ACTIVE
        )
    )
    for allocation in allocations:
        Reservation.objects.filter(
            allocation=allocation, during__startswith__gte=now
        ).delete()
        allocation.status = TrainerAllocation.Status.RELEASED
        allocation.ended_at = now
        allocation.released_by = released_by
        allocation.save(update_fields=["status", "ended_at", "released_by"])
    scheduled = TutoringSession.objects.filter(
        purchase=purchase, status=TutoringSession.Status.SCHEDULED
    )
    # Sessions already given (or under way) stay in the history as completed.
    scheduled.filter(starts_at__lt=now).update(status=TutoringSession.Status.COMPLETED)
    future = scheduled.filter(starts_at__gte=now)
    if moving:
        removed, _ = future.delete()
        return removed
    return future.update(status=TutoringSession.Status.CANCELLED)


# Purchases one sweep retries: its cost is bounded whatever the waitlist's length;
# a sweep that leaves purchases untried since the last change defers the next.
WAITLIST_BATCH = 200


def waitlist_retry_soon() -> None:
    """Something changed that may let waitlisted purchases fit (the catalogue, a
    trainer's capacity): mark every one untried and defer a sweep (coalesced
    with one already waiting). In the caller's transaction; one statement over
    the waitlist's index.

    It never waits for a row: concurrent changes (two refunds at once) would
    otherwise lock the waitlist in different orders and deadlock. A purchase
    locked meanwhile is being retried or marked by someone else already.
    """
    table = Purchase._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET waitlist_checked_at = NULL WHERE id IN ("  # noqa: S608
            f"SELECT id FROM {table} WHERE status = %s "
            "AND waitlist_checked_at IS NOT NULL FOR UPDATE SKIP LOCKED)",
            [Purchase.Status.WAITLISTED],
        )
    queue.defer(names.REALLOCATE_WAITLIST)


def waitlist_reallocate(
    *, actor: str, limit: int = WAITLIST_BATCH, now: dt.datetime | None = None
) -> int:
    """Try up to ``limit`` waitlisted purchases again, each in its own
    transaction, and return how many got a trainer.

    Untried since the last change first, then the longest untried, the soonest
    start first among equals: every purchase is retried in turn, however long
    the waitlist. The batch is claimed (marked tried) with ``SKIP LOCKED``, so
    concurrent sweeps take different purchases. When purchases untried since
    a change remain, the next sweep is deferred at once.
    """
    now = now or timezone.now()
    with transaction.atomic():
        batch = list(
            Purchase.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Purchase.Status.WAITLISTED)
            .order_by(
                F("waitlist_checked_at").asc(nulls_first=True),
                "start_date",
                "created_at",
            )
            .values_list("pk", flat=True)[:limit]
        )
        Purchase.objects.filter(pk__in=batch).update(waitlist_checked_at=now)
    allocated = 0
    for purchase_id in batch:
        try:
            purchase = purchase_allocate(purchase_id=purchase_id, actor=actor)
        except TrainersBusy:
            # Its trainers are locked for now: first in line for the next sweep.
            Purchase.objects.filter(pk=purchase_id).update(waitlist_checked_at=None)
            continue
        if purchase.status == Purchase.Status.ALLOCATED:
            allocated += 1
    if Purchase.objects.filter(
        status=Purchase.Status.WAITLISTED, waitlist_checked_at__isnull=True
    ).exists():
        queue.defer(names.REALLOCATE_WAITLIST)
    if batch:
        logger.info(
            "waitlist retried",
            extra={"tried": len(batch), "allocated": allocated},
        )
    return allocated
