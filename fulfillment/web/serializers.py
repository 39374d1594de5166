"""The JSON shapes of the API (CONTRACT §3), from the selectors' dataclasses.

Timestamps are ISO 8601 with their UTC offset, in ``TIME_ZONE`` (what people
read); ids are strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from fulfillment.selectors.purchases import (
    PurchaseDetail,
    SessionView,
    StudentLearnings,
    TrainerRef,
)
from fulfillment.selectors.trace import (
    EventEntry,
    JobEntry,
    PaymentTrace,
    TraceEntry,
    WebhookEntry,
)

JSON = dict[str, Any]


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return timezone.localtime(value).isoformat()


def purchase_json(detail: PurchaseDetail) -> JSON:
    return {
        "id": str(detail.id),
        "payment_intent": detail.payment_intent,
        "student_id": str(detail.student_id),
        "course_id": str(detail.course_id),
        "status": detail.status,
        "status_reason": detail.status_reason,
        "trainer": _trainer(detail.trainer),
        "sessions_total": detail.sessions_total,
        "sessions": [_session(s) for s in detail.sessions],
        "created_at": iso(detail.created_at),
        "allocated_at": iso(detail.allocated_at),
    }


def learnings_json(learnings: StudentLearnings) -> JSON:
    return {
        "student_id": str(learnings.student_id),
        "learnings": [
            {
                "purchase_id": str(learning.purchase_id),
                "course": {
                    "id": str(learning.course_id),
                    "title": learning.course_title,
                },
                "status": learning.status,
                "status_label": learning.status_label,
                "status_reason": learning.status_reason,
                "trainer": _trainer(learning.trainer),
                "sessions_total": learning.sessions_total,
                "next_sessions": [_session(s) for s in learning.next_sessions],
            }
            for learning in learnings.learnings
        ],
    }


def trace_json(trace: PaymentTrace) -> JSON:
    return {
        "payment_intent": trace.payment_intent,
        "purchase_id": str(trace.purchase_id) if trace.purchase_id else None,
        "status": trace.status,
        "status_reason": trace.status_reason,
        "entries": [trace_entry_json(entry) for entry in trace.entries],
    }


def trace_entry_json(entry: TraceEntry) -> JSON:
    if isinstance(entry, WebhookEntry):
        return {
            "at": iso(entry.at),
            "kind": entry.kind,
            "event_id": entry.event_id,
            "event_type": entry.event_type,
            "outcome": entry.outcome,
            "detail": entry.detail,
        }
    if isinstance(entry, JobEntry):
        return {
            "at": iso(entry.at),
            "kind": entry.kind,
            "job_id": entry.job_id,
            "task": entry.task,
            "queue": entry.queue,
            "status": entry.status,
            "attempts": entry.attempts,
            "worker_id": entry.worker_id,
            "failed_on": entry.failed_on,
            "deferred_at": iso(entry.deferred_at),
            "started_at": iso(entry.started_at),
            "finished_at": iso(entry.finished_at),
            "last_error": entry.last_error,
        }
    assert isinstance(entry, EventEntry)  # noqa: S101 (TraceEntry is this union)
    return {
        "at": iso(entry.at),
        "kind": entry.kind,
        "actor": entry.actor,
        "from_status": entry.from_status,
        "to_status": entry.to_status,
        "message": entry.message,
    }


def _trainer(trainer: TrainerRef | None) -> JSON | None:
    return None if trainer is None else {"id": str(trainer.id), "name": trainer.name}


def _session(session: SessionView) -> JSON:
    return {
        "sequence": session.sequence,
        "starts_at": iso(session.starts_at),
        "ends_at": iso(session.ends_at),
        "status": session.status,
    }
