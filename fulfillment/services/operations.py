"""What an operator does from the console, as services.

Each action owns its transaction, reuses the pipeline's own services (so a hand
assignment continues exactly like an automatic one) and records an
``operator_action`` event with the operator's username in the payment's trace,
in the same transaction as the change. An action that cannot be done raises
``OperationRefused`` having changed nothing; its message is for the operator.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Mapping

from django.db import IntegrityError, transaction
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from fulfillment import queue
from fulfillment.domain import fit
from fulfillment.domain.metadata import MetadataError
from fulfillment.domain.schedule import DeliveryMode, Slot
from fulfillment.exceptions import FulfillmentError, TrainerTaken
from fulfillment.models import (
    WAITING_STATUSES,
    Payment,
    Purchase,
    TraceEvent,
    Trainer,
    TrainerAllocation,
)
from fulfillment.queue import names
from fulfillment.selectors.trainers import purchase_schedule, trainer_verdicts
from fulfillment.services import allocation, cache, purchases
from fulfillment.services.trace import purchase_transition, trace_record

logger = logging.getLogger(__name__)


class OperationRefused(FulfillmentError):
    """The action cannot be done as asked; ``field`` names the culprit input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def purchase_retry_allocation(
    *, purchase_id: uuid.UUID, operator: str, now: dt.datetime | None = None
) -> Purchase:
    """Run the allocation of a waiting purchase now, in this request, instead of
    waiting for its job or the periodic retry. Allocated or (still) waitlisted,
    the outcome is in the trace with the operator's name. One transaction;
    refused, changing nothing, when every trainer who fits is busy."""
    try:
        with transaction.atomic():
            purchase = _locked_purchase(purchase_id)
            _require_waiting(purchase, action="retry its allocation")
            event = trace_record(
                payment=purchase.payment,
                purchase=purchase,
                kind=TraceEvent.Kind.OPERATOR_ACTION,
                actor=operator,
                message=f"{operator} retried the allocation now.",
            )
            # Re-locks the same row in the same transaction: allocation decides
            # exactly as its job would, with the operator as the actor.
            purchase = allocation.purchase_allocate(
                purchase_id=purchase.pk, actor=operator, now=now
            )
            event.message = (
                f"{operator} retried the allocation now: "
                f"{Purchase.Status(purchase.status).label.lower()}. "
                f"{purchase.status_reason}"
            )
            event.save(update_fields=["message"])
    except allocation.TrainersBusy as error:
        raise OperationRefused(
            "Every trainer who fits is busy in another transaction right now; "
            "try again in a moment (the purchase's own job retries by itself)."
        ) from error
    logger.info(
        "allocation retried by operator",
        extra={"purchase_id": str(purchase.pk), "operator": operator},
    )
    return purchase


def purchase_assign_trainer(
    *,
    purchase_id: uuid.UUID,
    trainer_id: uuid.UUID,
    operator: str,
    reason: str = "",
    now: dt.datetime | None = None,
) -> Purchase:
    """Allocate the trainer an operator chose, then continue as an automatic
    allocation does (sessions job, learnings refreshed); all in one transaction.

    The rules are checked again with the purchase and the trainer locked. A
    trainer breaking soft rules only (travel distance, capacity) may be chosen
    with a ``reason``, which is recorded on the allocation and in the trace; one
    breaking a hard rule never.
    """
    now = now or timezone.now()
    reason = reason.strip()
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        _require_waiting(purchase, action="assign a trainer to it")
        _lock_trainer(trainer_id)
        slots = purchase_schedule(purchase=purchase, now=now)
        verdict = _verdict_of(purchase, trainer_id, slots)
        name = verdict.trainer.name
        waived = _waived_by_hand(verdict, reason=reason, reason_field="reason")
        _reserve_by_hand(
            purchase,
            verdict,
            slots=slots,
            now=now,
            operator=operator,
            override_reason=reason,
        )
        message = f"{operator} assigned {name}"
        if waived:
            message += f", waiving: {'; '.join(waived)}"
        if reason:
            message += f". Reason: {reason}"
        trace_record(
            payment=purchase.payment,
            purchase=purchase,
            kind=TraceEvent.Kind.OPERATOR_ACTION,
            actor=operator,
            message=message + ".",
        )
        # The same continuation as automatic allocation: status, trace, cache,
        # and the sessions job, in this transaction.
        purchase = allocation.allocation_complete(
            purchase=purchase, actor=operator, now=now, verdict=verdict
        )
    logger.info(
        "trainer assigned by operator",
        extra={
            "purchase_id": str(purchase.pk),
            "trainer_id": str(trainer_id),
            "operator": operator,
            "waived": waived,
        },
    )
    return purchase


def payment_reprocess(
    *, payment_id: uuid.UUID, metadata: Mapping[str, str], operator: str
) -> Purchase:
    """Correct the metadata of a payment that needed attention and turn it into
    a purchase, whose allocation job is deferred; in one transaction.

    ``metadata`` replaces the named keys (a blank value removes the key); keys
    not named are kept. If the corrected metadata still cannot be used, raises
    ``OperationRefused`` naming the field, having changed nothing.
    """
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(no_key=True).filter(pk=payment_id).first()
        )
        if payment is None:
            raise OperationRefused("That payment does not exist.")
        if Purchase.objects.filter(payment=payment).exists():
            raise OperationRefused("This payment already has its purchase.")
        if payment.status == Payment.Status.REFUNDED:
            raise OperationRefused("This payment was refunded: nothing to fulfil.")
        before = dict(payment.metadata) if isinstance(payment.metadata, dict) else {}
        after = dict(before)
        for key, value in metadata.items():
            if value.strip():
                after[key] = value.strip()
            else:
                after.pop(key, None)
        changed = sorted(
            key
            for key in after.keys() | before.keys()
            if before.get(key) != after.get(key)
        )
        previous_reason = payment.attention_reason
        payment.metadata = after
        payment.attention_reason = ""
        payment.save(update_fields=["metadata", "attention_reason", "updated_at"])
        trace_record(
            payment=payment,
            kind=TraceEvent.Kind.OPERATOR_ACTION,
            actor=operator,
            message=(
                f"{operator} corrected the metadata "
                f"({', '.join(changed) if changed else 'no field changed'}) and "
                f"reprocessed the payment (it needed attention: {previous_reason})."
            ),
        )
        try:
            purchase = purchases.purchase_create_from_payment(
                payment=payment, actor=operator
            )
        except MetadataError as error:
            raise OperationRefused(str(error), field=error.field) from error
    logger.info(
        "payment reprocessed by operator",
        extra={
            "payment_intent": payment.payment_intent,
            "purchase_id": str(purchase.pk),
            "operator": operator,
        },
    )
    return purchase


def failed_jobs_retry(*, job_ids: Iterable[int], operator: str) -> int:
    """Run failed jobs again as soon as a worker is free; jobs in any other
    state are left alone (a job still running would run twice). Each retried
    job's purchase gets the action in its trace. One transaction; returns how
    many jobs were put back in the queue."""
    now = timezone.now()
    retried: list[ProcrastinateJob] = []
    with transaction.atomic():
        failed = ProcrastinateJob.objects.select_for_update().filter(
            id__in=list(job_ids), status="failed"
        )
        for job in failed.order_by("id"):
            try:
                # A savepoint: a twin already waiting under the job's queueing
                # lock makes this one's retry a unique violation; skip it.
                with transaction.atomic():
                    queue.job_manager.retry_job_by_id(job.id, now)
            except IntegrityError:
                continue
            retried.append(job)
        purchase_ids = {
            job.args["purchase_id"]: job
            for job in retried
            if isinstance(job.args.get("purchase_id"), str)
        }
        for purchase in Purchase.objects.select_related("payment").filter(
            pk__in=list(purchase_ids)
        ):
            job = purchase_ids[str(purchase.pk)]
            trace_record(
                payment=purchase.payment,
                purchase=purchase,
                kind=TraceEvent.Kind.OPERATOR_ACTION,
                actor=operator,
                message=(
                    f"{operator} retried the failed job #{job.id} "
                    f"({job.task_name.rsplit('.', 1)[-1]}, after "
                    f"{job.attempts} attempt(s))."
                ),
            )
    logger.info(
        "failed jobs retried by operator",
        extra={"job_ids": [job.id for job in retried], "operator": operator},
    )
    return len(retried)


# --- the fixes a phone call asks for ---------------------------------------------
# Each takes the operator's reason (required: it goes in the trace), locks the
# purchase, and continues the pipeline as an automatic change would, deferring
# the next stage by name in the same transaction.

# Purchases a phone call can still change: not refunded, cancelled, or unusable.
CHANGEABLE_STATUSES = (*WAITING_STATUSES, Purchase.Status.ALLOCATED)


def purchase_schedule_change(
    *,
    purchase_id: uuid.UUID,
    operator: str,
    reason: str,
    time_slot: dt.time | None = None,
    start_date: dt.date | None = None,
    delivery_mode: str | None = None,
    now: dt.datetime | None = None,
) -> Purchase:
    """Change when a purchase's sessions take place (``None`` keeps a field).

    An allocated purchase keeps its trainer when they still fit the new
    schedule (their future reservations move to the new times, in this
    transaction, and the sessions stage rebuilds the window); otherwise the
    trainer is released and the allocation stage runs again. A waiting purchase
    is allocated again. Sessions already given stay given. One transaction.
    """
    now = now or timezone.now()
    reason = _required_reason(reason)
    if delivery_mode is not None and delivery_mode not in set(DeliveryMode):
        raise OperationRefused(
            f"{delivery_mode!r} is not a delivery mode.", field="delivery_mode"
        )
    if start_date is not None and start_date < timezone.localdate(now):
        raise OperationRefused(
            f"{start_date:%d %b %Y} has passed: choose today or later.",
            field="start_date",
        )
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        _require_status(purchase, CHANGEABLE_STATUSES, action="reschedule")
        changes = {
            field: value
            for field, value in (
                ("time_slot", time_slot),
                ("start_date", start_date),
                ("delivery_mode", delivery_mode),
            )
            if value is not None and getattr(purchase, field) != value
        }
        if not changes:
            raise OperationRefused("That is already the purchase's schedule.")
        before = _schedule_words(purchase)
        for field, value in changes.items():
            setattr(purchase, field, value)
        purchase.save(update_fields=[*changes, "updated_at"])
        what = f"{operator} changed the schedule from {before} to "
        what += f"{_schedule_words(purchase)}"
        if purchase.status == Purchase.Status.ALLOCATED:
            outcome = _keep_or_reallocate(purchase, operator=operator, now=now)
        else:
            outcome = "allocating again"
            _allocate_again(
                purchase, operator=operator, reason="Schedule changed; allocating."
            )
        _operator_trace(purchase, operator, f"{what}: {outcome}. Reason: {reason}.")
        # The next stage deferred above invalidates again, and refreshes.
        cache.learnings_invalidate(student_id=purchase.student_id, refresh=False)
    logger.info(
        "schedule changed by operator",
        extra={"purchase_id": str(purchase.pk), "operator": operator},
    )
    return purchase


def purchase_reassign_trainer(
    *,
    purchase_id: uuid.UUID,
    trainer_id: uuid.UUID,
    operator: str,
    reason: str,
    override_reason: str = "",
    now: dt.datetime | None = None,
) -> Purchase:
    """Move an allocated purchase to another trainer, judged like the Assign
    page: a hard rule refuses, soft rules need ``override_reason``. The old
    trainer's future reservations and sessions go; sessions given stay; the new
    trainer is reserved for the rest and the sessions stage deferred. The old
    trainer is not chosen again automatically for this purchase. One
    transaction; refused, it changes nothing.
    """
    now = now or timezone.now()
    reason = _required_reason(reason)
    override_reason = override_reason.strip()
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        _require_status(
            purchase, (Purchase.Status.ALLOCATED,), action="re-assign (assign instead)"
        )
        if purchase.trainer_id == trainer_id:
            raise OperationRefused(
                "That trainer already has this purchase.", field="trainer"
            )
        _lock_trainer(trainer_id)
        previous = _current_trainer_name(purchase)
        allocation.allocation_release(
            purchase=purchase, now=now, moving=True, released_by=operator
        )
        slots = purchase_schedule(purchase=purchase, now=now)
        verdict = _verdict_of(purchase, trainer_id, slots)
        name = verdict.trainer.name
        waived = _waived_by_hand(
            verdict, reason=override_reason, reason_field="override_reason"
        )
        _reserve_by_hand(
            purchase,
            verdict,
            slots=slots,
            now=now,
            operator=operator,
            override_reason=override_reason,
        )
        message = f"{operator} re-assigned the purchase from {previous} to {name}"
        if waived:
            message += f", waiving: {'; '.join(waived)} ({override_reason})"
        _operator_trace(purchase, operator, f"{message}. Reason: {reason}.")
        purchase = allocation.allocation_complete(
            purchase=purchase, actor=operator, now=now, verdict=verdict
        )
        # The sessions stage deferred above invalidates again, and refreshes.
        cache.learnings_invalidate(student_id=purchase.student_id, refresh=False)
    logger.info(
        "trainer re-assigned by operator",
        extra={
            "purchase_id": str(purchase.pk),
            "trainer_id": str(trainer_id),
            "operator": operator,
        },
    )
    return purchase


def purchase_release_trainer(
    *,
    purchase_id: uuid.UUID,
    operator: str,
    reason: str,
    now: dt.datetime | None = None,
) -> Purchase:
    """Take the trainer off an allocated purchase and put it back on the
    waitlist: future reservations and sessions go, sessions given stay, and the
    waitlist retry is deferred (which will not choose the released trainer
    again for it). One transaction."""
    now = now or timezone.now()
    reason = _required_reason(reason)
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        _require_status(
            purchase, (Purchase.Status.ALLOCATED,), action="release a trainer from"
        )
        previous = _current_trainer_name(purchase)
        removed = allocation.allocation_release(
            purchase=purchase, now=now, moving=True, released_by=operator
        )
        purchase.trainer = None
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.WAITLISTED,
            reason=(
                f"{previous} was released by {operator}; waiting for another trainer."
            ),
            actor=operator,
            update_fields=("trainer",),
        )
        _operator_trace(
            purchase,
            operator,
            f"{operator} released {previous} ({removed} upcoming sessions "
            f"removed). Reason: {reason}.",
        )
        allocation.waitlist_retry_soon()
    logger.info(
        "trainer released by operator",
        extra={"purchase_id": str(purchase.pk), "operator": operator},
    )
    return purchase


def purchase_cancel(
    *,
    purchase_id: uuid.UUID,
    operator: str,
    reason: str,
    now: dt.datetime | None = None,
) -> Purchase:
    """End a purchase without refunding it (the money stays taken, as agreed
    with the parent): future sessions cancelled, sessions given kept, the
    trainer's time released and the waitlist retried. One transaction."""
    now = now or timezone.now()
    reason = _required_reason(reason)
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        _require_status(purchase, CHANGEABLE_STATUSES, action="cancel")
        cancelled = allocation.allocation_release(purchase=purchase, now=now)
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.CANCELLED,
            reason=(
                f"Cancelled by {operator} without a refund; {cancelled} upcoming "
                "sessions cancelled."
            ),
            actor=operator,
        )
        _operator_trace(
            purchase, operator, f"{operator} cancelled the purchase. Reason: {reason}."
        )
        allocation.waitlist_retry_soon()
    logger.info(
        "purchase cancelled by operator",
        extra={"purchase_id": str(purchase.pk), "operator": operator},
    )
    return purchase


def purchase_note_add(
    *, purchase_id: uuid.UUID, operator: str, note: str
) -> TraceEvent:
    """Write an operator's note in the purchase's trace; nothing else changes."""
    note = note.strip()
    if not note:
        raise OperationRefused("Write the note first.", field="note")
    with transaction.atomic():
        purchase = _locked_purchase(purchase_id)
        event = _operator_trace(purchase, operator, f"Note by {operator}: {note}")
    return event


def _keep_or_reallocate(purchase: Purchase, *, operator: str, now: dt.datetime) -> str:
    """The allocated purchase's schedule changed: keep its trainer if they still
    fit (their reservations move), else release them and allocate again. Says
    which, for the trace."""
    current = (
        purchase.allocations.select_for_update(no_key=True)
        .filter(status=TrainerAllocation.Status.ACTIVE)
        .first()
    )
    allocation.allocation_release(purchase=purchase, now=now, moving=True)
    if current is None:
        _allocate_again(purchase, operator=operator, reason="Schedule changed.")
        return "allocating again"
    slots = purchase_schedule(purchase=purchase, now=now)
    if not slots:
        raise OperationRefused("Every session has been given: nothing to move.")
    verdict = _verdict_of(purchase, current.trainer_id, slots)
    name = verdict.trainer.name
    # Soft rules the operator waived when assigning stay waived; capacity
    # counts this very purchase no more.
    kept = all(
        not rule.hard and (current.override_reason or rule is fit.Rule.AT_CAPACITY)
        for rule in verdict.broken
    )
    if kept:
        try:
            allocation.allocation_create(
                purchase=purchase,
                trainer_id=current.trainer_id,
                slots=slots,
                now=now,
                enforce_capacity=False,
                assigned_by=current.assigned_by,
                override_reason=current.override_reason,
            )
        except TrainerTaken:
            kept = False
        else:
            allocation.allocation_complete(
                purchase=purchase, actor=operator, now=now, verdict=verdict
            )
            return f"{name} still fits; their sessions moved"
    rules = "; ".join(rule.label for rule in verdict.broken) or "booked meanwhile"
    _allocate_again(
        purchase,
        operator=operator,
        reason=f"Schedule changed; {name} no longer fits ({rules}). Reallocating.",
    )
    return f"{name} no longer fits ({rules}); reallocating"


def _allocate_again(purchase: Purchase, *, operator: str, reason: str) -> None:
    """Back to the allocation stage: pending, trainer cleared, job deferred."""
    purchase.trainer = None
    # The allocation stage invalidates again and refreshes when it decides.
    with cache.next_stage_refreshes():
        purchase_transition(
            purchase=purchase,
            to_status=Purchase.Status.ALLOCATION_PENDING,
            reason=reason,
            actor=operator,
            update_fields=("trainer",),
        )
        # Pending already, with an unchanged reason: the change still counts.
        cache.learnings_invalidate(student_id=purchase.student_id)
    queue.defer(names.ALLOCATE_TRAINER, purchase_id=str(purchase.pk))


def _lock_trainer(trainer_id: uuid.UUID) -> None:
    """Lock the trainer an operator chose before their verdict is read, so what
    is checked holds at commit (a concurrent allocation of them goes around
    us). Never waits for a lock another session holds (it may be a worker cut
    off mid-allocation): the operator is told at once instead."""
    if not Trainer.objects.filter(pk=trainer_id).exists():
        raise OperationRefused("That trainer does not exist.", field="trainer")
    if (
        not Trainer.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(pk=trainer_id)
        .exists()
    ):
        raise OperationRefused(
            "That trainer is being booked by another transaction right now; "
            "try again in a moment.",
            field="trainer",
        )


def _waived_by_hand(
    verdict: fit.Verdict, *, reason: str, reason_field: str
) -> list[str]:
    """The soft rules an operator's choice waives; refused for a hard rule, or
    for soft ones without a reason (in ``reason_field``)."""
    name = verdict.trainer.name
    hard = [rule.label for rule in verdict.broken if rule.hard]
    if hard:
        raise OperationRefused(
            f"{name} cannot take this purchase: {'; '.join(hard)}.", field="trainer"
        )
    waived = [rule.label for rule in verdict.broken]
    if waived and not reason:
        raise OperationRefused(
            f"{name} is {'; '.join(waived)}. Say why they can take it anyway "
            "(for example: agreed on the phone).",
            field=reason_field,
        )
    return waived


def _reserve_by_hand(
    purchase: Purchase,
    verdict: fit.Verdict,
    *,
    slots: list[Slot],
    now: dt.datetime,
    operator: str,
    override_reason: str,
) -> None:
    """Reserve the operator's trainer for ``slots``; a capacity they waived is
    not enforced. Refused if the trainer was booked meanwhile."""
    try:
        allocation.allocation_create(
            purchase=purchase,
            trainer_id=uuid.UUID(verdict.trainer.id),
            slots=slots,
            now=now,
            enforce_capacity=fit.Rule.AT_CAPACITY not in verdict.broken,
            assigned_by=operator,
            override_reason=override_reason,
        )
    except TrainerTaken as error:
        raise OperationRefused(
            f"{verdict.trainer.name} was just booked by another allocation; "
            "choose again.",
            field="trainer",
        ) from error


def _verdict_of(
    purchase: Purchase, trainer_id: uuid.UUID, slots: list[Slot]
) -> fit.Verdict:
    return next(
        v
        for v in trainer_verdicts(purchase=purchase, slots=slots, all_trainers=True)
        if v.trainer.id == str(trainer_id)
    )


def _current_trainer_name(purchase: Purchase) -> str:
    if purchase.trainer_id is None:
        return "the trainer"
    trainer = Trainer.objects.filter(pk=purchase.trainer_id).first()
    return trainer.name if trainer else "the trainer"


def _schedule_words(purchase: Purchase) -> str:
    mode = DeliveryMode(purchase.delivery_mode).label
    return f"{mode} at {purchase.time_slot:%H:%M} from {purchase.start_date:%d %b %Y}"


def _required_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise OperationRefused(
            "Say why (it goes in the purchase's trace).", field="reason"
        )
    return reason


def _require_status(
    purchase: Purchase, statuses: tuple[str, ...], *, action: str
) -> None:
    if purchase.status not in statuses:
        label = Purchase.Status(purchase.status).label.lower()
        raise OperationRefused(f"This purchase is {label}: nothing to {action}.")


def _operator_trace(purchase: Purchase, operator: str, message: str) -> TraceEvent:
    return trace_record(
        payment=purchase.payment,
        purchase=purchase,
        kind=TraceEvent.Kind.OPERATOR_ACTION,
        actor=operator,
        message=message,
    )


def waitlist_recheck() -> None:
    """Ask for the whole waitlist to be tried again soon (the catalogue
    changed), in the caller's transaction; coalesced with any retry waiting."""
    allocation.waitlist_retry_soon()


def _locked_purchase(purchase_id: uuid.UUID) -> Purchase:
    purchase = (
        Purchase.objects.select_for_update(no_key=True, of=("self",))
        .select_related("course", "payment")
        .filter(pk=purchase_id)
        .first()
    )
    if purchase is None:
        raise OperationRefused("That purchase does not exist.")
    return purchase


def _require_waiting(purchase: Purchase, *, action: str) -> None:
    if purchase.status not in WAITING_STATUSES:
        label = Purchase.Status(purchase.status).label.lower()
        raise OperationRefused(f"This purchase is {label}: nothing to {action}.")


def jobs_cancel(*, job_ids: Iterable[int], operator: str, abort: bool) -> int:
    """Cancel jobs still waiting (``todo``) and, with ``abort``, ask running ones
    to stop; finished jobs are left alone. Returns how many were cancelled or
    asked to abort."""
    statuses = ("todo", "doing") if abort else ("todo",)
    changed = 0
    with transaction.atomic():
        for job in ProcrastinateJob.objects.select_for_update().filter(
            id__in=list(job_ids), status__in=statuses
        ):
            if queue.job_manager.cancel_job_by_id(job.id, abort=abort):
                changed += 1
    logger.info(
        "jobs cancelled by operator",
        extra={"count": changed, "abort": abort, "operator": operator},
    )
    return changed
