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
from fulfillment.exceptions import FulfillmentError, TrainerTaken
from fulfillment.models import (
    WAITING_STATUSES,
    Payment,
    Purchase,
    TraceEvent,
    Trainer,
)
from fulfillment.selectors.trainers import purchase_schedule, trainer_verdicts
from fulfillment.services import allocation, purchases
from fulfillment.services.trace import trace_record

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
        # Locked before the verdict is read, so what is checked is what holds at
        # commit: a concurrent allocation of this trainer waits for us.
        if not Trainer.objects.filter(pk=trainer_id).exists():
            raise OperationRefused("That trainer does not exist.", field="trainer")
        # Never waits for a lock another session holds (it may be a worker cut
        # off mid-allocation): the operator is told at once instead.
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
        slots = purchase_schedule(purchase=purchase, now=now)
        verdict = next(
            v
            for v in trainer_verdicts(purchase=purchase, slots=slots, all_trainers=True)
            if v.trainer.id == str(trainer_id)
        )
        name = verdict.trainer.name
        hard = [rule.label for rule in verdict.broken if rule.hard]
        if hard:
            raise OperationRefused(
                f"{name} cannot take this purchase: {'; '.join(hard)}.",
                field="trainer",
            )
        waived = [rule.label for rule in verdict.broken]
        if waived and not reason:
            raise OperationRefused(
                f"{name} is {'; '.join(waived)}. Say why they can take it anyway "
                "(for example: agreed on the phone).",
                field="reason",
            )
        try:
            allocation.allocation_create(
                purchase=purchase,
                trainer_id=trainer_id,
                slots=slots,
                now=now,
                enforce_capacity=fit.Rule.AT_CAPACITY not in verdict.broken,
                assigned_by=operator,
                override_reason=reason,
            )
        except TrainerTaken as error:
            raise OperationRefused(
                f"{name} was just booked by another allocation; choose again.",
                field="trainer",
            ) from error
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
