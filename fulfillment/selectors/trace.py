"""The whole path of one payment: deliveries, state changes, jobs, operator
actions (the trace API, ``manage.py trace`` and the console's timeline)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from django.db.models import Q
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from fulfillment.models import (
    JobFailure,
    Payment,
    Purchase,
    TraceEvent,
    WebhookDelivery,
)
from fulfillment.selectors.purchases import payment_for


@dataclass(frozen=True)
class WebhookEntry:
    at: dt.datetime
    event_id: str
    event_type: str
    outcome: str
    detail: str
    kind: Literal["webhook"] = "webhook"


@dataclass(frozen=True)
class EventEntry:
    """A state change, an operator action or a heal (``TraceEvent.Kind``)."""

    at: dt.datetime
    kind: str
    actor: str
    from_status: str
    to_status: str
    message: str


@dataclass(frozen=True)
class JobEntry:
    at: dt.datetime  # when deferred
    job_id: int
    task: str
    queue: str
    status: str
    attempts: int
    worker_id: int | None
    failed_on: str | None
    deferred_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str | None
    kind: Literal["job"] = "job"


TraceEntry = WebhookEntry | EventEntry | JobEntry


@dataclass(frozen=True)
class PaymentTrace:
    payment_intent: str
    purchase_id: uuid.UUID | None
    status: str
    status_reason: str
    entries: tuple[TraceEntry, ...]


def payment_trace(*, reference: str) -> PaymentTrace | None:
    """The whole path of one payment, oldest first: deliveries, state changes,
    jobs (with attempts, worker, timings and last error) and operator actions."""
    payment = payment_for(reference)
    if payment is None:
        return None
    purchase = Purchase.objects.filter(payment=payment).first()
    entries: list[TraceEntry] = [
        WebhookEntry(
            at=delivery.received_at,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            outcome=delivery.outcome,
            detail=delivery.detail,
        )
        for delivery in WebhookDelivery.objects.filter(
            payment_intent=payment.payment_intent
        ).order_by("received_at", "id")
    ]
    purchase_began: dt.datetime | None = None
    for event in TraceEvent.objects.filter(payment=payment):
        if event.purchase_id is not None and purchase_began is None:
            purchase_began = event.created_at
        entries.append(
            EventEntry(
                at=event.created_at,
                kind=event.kind,
                actor=event.actor,
                from_status=event.from_status,
                to_status=event.to_status,
                message=event.message,
            )
        )
    if purchase is not None:
        entries.extend(_job_entries(purchase, since=purchase_began))
    # One transaction's rows share its clock: the delivery, then what it changed,
    # then the jobs it deferred.
    rank = {"webhook": 0, "job": 2}
    entries.sort(key=lambda entry: (entry.at, rank.get(entry.kind, 1)))
    return PaymentTrace(
        payment_intent=payment.payment_intent,
        purchase_id=purchase.pk if purchase else None,
        status=purchase.status if purchase else _payment_status(payment),
        status_reason=purchase.status_reason if purchase else payment.attention_reason,
        entries=tuple(entries),
    )


def _job_entries(purchase: Purchase, *, since: dt.datetime | None) -> list[JobEntry]:
    """The purchase's own jobs, and the student's cache refreshes deferred since
    the purchase was recorded (they serve all of the student's purchases)."""
    student_jobs = Q(
        args__student_id=str(purchase.student_id),
        id__in=ProcrastinateEvent.objects.filter(
            type="deferred", at__gte=since or purchase.created_at
        ).values("job_id"),
    )
    jobs = list(
        ProcrastinateJob.objects.filter(
            Q(args__purchase_id=str(purchase.pk)) | student_jobs
        ).order_by("id")
    )
    events: dict[int, dict[str, dt.datetime]] = {}
    for event in ProcrastinateEvent.objects.filter(job__in=jobs).order_by("at", "id"):
        if event.at is not None:
            events.setdefault(event.job_id, {}).setdefault(event.type, event.at)
            if event.type in {"started", "succeeded", "failed", "cancelled", "aborted"}:
                events[event.job_id][f"last_{event.type}"] = event.at
    failures: dict[int, JobFailure] = {}
    for recorded in JobFailure.objects.filter(job_id__in=[j.id for j in jobs]).order_by(
        "failed_at"
    ):
        failures[recorded.job_id] = recorded
    entries = []
    for job in jobs:
        times = events.get(job.id, {})
        failure = failures.get(job.id)
        finished = next(
            (
                times[f"last_{t}"]
                for t in ("succeeded", "failed", "cancelled", "aborted")
                if f"last_{t}" in times
            ),
            None,
        )
        entries.append(
            JobEntry(
                at=times.get("deferred") or job.scheduled_at or timezone.now(),
                job_id=job.id,
                task=job.task_name,
                queue=job.queue_name,
                status=job.status,
                attempts=job.attempts,
                worker_id=job.worker_id,
                failed_on=failure.worker if failure else None,
                deferred_at=times.get("deferred"),
                started_at=times.get("last_started"),
                finished_at=finished,
                last_error=(
                    f"{failure.error_type}: {failure.error_message}"
                    if failure
                    else None
                ),
            )
        )
    return entries


def _payment_status(payment: Payment) -> str:
    if payment.status == Payment.Status.REFUNDED:
        return "refunded"
    return "needs_attention" if payment.attention_reason else payment.status
