"""Reads that several places share (API, commands, admin, dashboard)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db.models import Q
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from fulfillment.models import (
    JobFailure,
    Payment,
    Purchase,
    TraceEvent,
    TutoringSession,
    WebhookDelivery,
)

UPCOMING_IN_LEARNINGS = 3


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, in TIME_ZONE (what people read)."""
    if value is None:
        return None
    return timezone.localtime(value).isoformat()


def purchase_detail(*, purchase_id: uuid.UUID) -> dict[str, Any] | None:
    purchase = (
        Purchase.objects.select_related("payment", "trainer")
        .filter(pk=purchase_id)
        .first()
    )
    if purchase is None:
        return None
    sessions = purchase.sessions.order_by("sequence")
    return {
        "id": str(purchase.pk),
        "payment_intent": purchase.payment.payment_intent,
        "student_id": str(purchase.student_id),
        "course_id": str(purchase.course_id),
        "status": purchase.status,
        "status_reason": purchase.status_reason,
        "trainer": _trainer(purchase),
        "sessions_total": purchase.total_sessions,
        "sessions": [_session(s) for s in sessions],
        "created_at": iso(purchase.created_at),
        "allocated_at": iso(purchase.allocated_at),
    }


def student_learnings(*, student_id: uuid.UUID) -> dict[str, Any]:
    """What the app's learnings screen shows: one entry per purchase."""
    now = timezone.now()
    purchases = (
        Purchase.objects.filter(student_id=student_id)
        .select_related("course", "trainer")
        .order_by("created_at")
    )
    upcoming: dict[uuid.UUID, list[TutoringSession]] = {}
    for session in TutoringSession.objects.filter(
        purchase__student_id=student_id,
        status=TutoringSession.Status.SCHEDULED,
        ends_at__gt=now,
    ).order_by("starts_at"):
        upcoming.setdefault(session.purchase_id, []).append(session)
    return {
        "student_id": str(student_id),
        "learnings": [
            {
                "purchase_id": str(p.pk),
                "course": {"id": str(p.course_id), "title": p.course.title},
                "status": p.status,
                "status_label": Purchase.Status(p.status).label,
                "status_reason": p.status_reason,
                "trainer": _trainer(p),
                "sessions_total": p.total_sessions,
                "next_sessions": [
                    _session(s) for s in upcoming.get(p.pk, [])[:UPCOMING_IN_LEARNINGS]
                ],
            }
            for p in purchases
        ],
    }


def payment_for(reference: str) -> Payment | None:
    """The payment named by a PaymentIntent id or by a purchase id."""
    try:
        purchase_id = uuid.UUID(reference)
    except ValueError:
        return Payment.objects.filter(payment_intent=reference).first()
    return Payment.objects.filter(purchase__pk=purchase_id).first()


def payment_trace(*, reference: str) -> dict[str, Any] | None:
    """The whole path of one payment, oldest first: deliveries, state changes,
    jobs (with attempts, worker, timings and last error) and operator actions."""
    payment = payment_for(reference)
    if payment is None:
        return None
    purchase = Purchase.objects.filter(payment=payment).first()
    entries: list[dict[str, Any]] = []
    for delivery in WebhookDelivery.objects.filter(
        payment_intent=payment.payment_intent
    ).order_by("received_at", "id"):
        entries.append(
            {
                "at": delivery.received_at,
                "kind": "webhook",
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
                "outcome": delivery.outcome,
                "detail": delivery.detail,
            }
        )
    for event in TraceEvent.objects.filter(payment=payment):
        entries.append(
            {
                "at": event.created_at,
                "kind": event.kind,
                "actor": event.actor,
                "from_status": event.from_status,
                "to_status": event.to_status,
                "message": event.message,
            }
        )
    if purchase is not None:
        entries.extend(_job_entries(purchase))
    entries.sort(key=lambda entry: entry["at"])
    for entry in entries:
        entry["at"] = iso(entry["at"])
    return {
        "payment_intent": payment.payment_intent,
        "purchase_id": str(purchase.pk) if purchase else None,
        "status": purchase.status if purchase else _payment_status(payment),
        "status_reason": purchase.status_reason
        if purchase
        else payment.attention_reason,
        "entries": entries,
    }


def _job_entries(purchase: Purchase) -> list[dict[str, Any]]:
    jobs = list(
        ProcrastinateJob.objects.filter(
            Q(args__purchase_id=str(purchase.pk))
            | Q(
                args__student_id=str(purchase.student_id),
                id__in=ProcrastinateEvent.objects.filter(
                    type="deferred", at__gte=purchase.created_at
                ).values("job_id"),
            )
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
        deferred_at = times.get("deferred") or job.scheduled_at or timezone.now()
        finished = next(
            (
                times[f"last_{t}"]
                for t in ("succeeded", "failed", "cancelled", "aborted")
                if f"last_{t}" in times
            ),
            None,
        )
        entries.append(
            {
                "at": deferred_at,
                "kind": "job",
                "job_id": job.id,
                "task": job.task_name,
                "queue": job.queue_name,
                "status": job.status,
                "attempts": job.attempts,
                "worker_id": job.worker_id,
                "failed_on": failure.worker if failure else None,
                "deferred_at": iso(times.get("deferred")),
                "started_at": iso(times.get("last_started")),
                "finished_at": iso(finished),
                "last_error": (
                    f"{failure.error_type}: {failure.error_message}"
                    if failure
                    else None
                ),
            }
        )
    return entries


def _payment_status(payment: Payment) -> str:
    if payment.status == Payment.Status.REFUNDED:
        return "refunded"
    return "needs_attention" if payment.attention_reason else payment.status


def _trainer(purchase: Purchase) -> dict[str, str] | None:
    if purchase.trainer is None or purchase.status != Purchase.Status.ALLOCATED:
        return None
    return {"id": str(purchase.trainer.pk), "name": purchase.trainer.name}


def _session(session: TutoringSession) -> dict[str, Any]:
    return {
        "sequence": session.sequence,
        "starts_at": iso(session.starts_at),
        "ends_at": iso(session.ends_at),
        "status": session.status,
    }
