"""A purchase as the API and the app's learnings screen see it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from fulfillment.models import Payment, Purchase, TutoringSession

UPCOMING_IN_LEARNINGS = 3


@dataclass(frozen=True)
class TrainerRef:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class SessionView:
    sequence: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str


@dataclass(frozen=True)
class PurchaseDetail:
    id: uuid.UUID
    payment_intent: str
    student_id: uuid.UUID
    course_id: uuid.UUID
    status: str
    status_reason: str
    trainer: TrainerRef | None
    sessions_total: int
    sessions: tuple[SessionView, ...]
    created_at: dt.datetime
    allocated_at: dt.datetime | None


@dataclass(frozen=True)
class Learning:
    """One purchase on the learnings screen."""

    purchase_id: uuid.UUID
    course_id: uuid.UUID
    course_title: str
    status: str
    status_label: str
    status_reason: str
    trainer: TrainerRef | None
    sessions_total: int
    next_sessions: tuple[SessionView, ...]


@dataclass(frozen=True)
class StudentLearnings:
    student_id: uuid.UUID
    learnings: tuple[Learning, ...]


def purchase_detail(*, purchase_id: uuid.UUID) -> PurchaseDetail | None:
    purchase = (
        Purchase.objects.select_related("payment", "trainer")
        .filter(pk=purchase_id)
        .first()
    )
    if purchase is None:
        return None
    sessions = purchase.sessions.order_by("sequence")
    return PurchaseDetail(
        id=purchase.pk,
        payment_intent=purchase.payment.payment_intent,
        student_id=purchase.student_id,
        course_id=purchase.course_id,
        status=purchase.status,
        status_reason=purchase.status_reason,
        trainer=_trainer(purchase),
        sessions_total=purchase.total_sessions,
        sessions=tuple(_session(s) for s in sessions),
        created_at=purchase.created_at,
        allocated_at=purchase.allocated_at,
    )


def student_learnings(*, student_id: uuid.UUID) -> StudentLearnings:
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
    return StudentLearnings(
        student_id=student_id,
        learnings=tuple(
            Learning(
                purchase_id=p.pk,
                course_id=p.course_id,
                course_title=p.course.title,
                status=p.status,
                status_label=str(Purchase.Status(p.status).label),
                status_reason=p.status_reason,
                trainer=_trainer(p),
                sessions_total=p.total_sessions,
                next_sessions=tuple(
                    _session(s) for s in upcoming.get(p.pk, [])[:UPCOMING_IN_LEARNINGS]
                ),
            )
            for p in purchases
        ),
    )


def payment_for(reference: str) -> Payment | None:
    """The payment named by a PaymentIntent id or by a purchase id."""
    try:
        purchase_id = uuid.UUID(reference)
    except ValueError:
        return Payment.objects.filter(payment_intent=reference).first()
    return Payment.objects.filter(purchase__pk=purchase_id).first()


def purchases_stuck(*, older_than: dt.timedelta) -> QuerySet[Purchase]:
    """Purchases still waiting for allocation after ``older_than``."""
    return Purchase.objects.filter(
        status=Purchase.Status.ALLOCATION_PENDING,
        created_at__lt=timezone.now() - older_than,
    ).order_by("created_at")


def purchases_waitlisted_past_sla(
    *, sla: dt.timedelta, now: dt.datetime | None = None
) -> QuerySet[Purchase]:
    """Waitlisted purchases paid longer than ``sla`` ago, longest waiting first.
    Waiting counts from the payment: a retry or a reprocess does not restart it."""
    now = now or timezone.now()
    return Purchase.objects.filter(
        status=Purchase.Status.WAITLISTED, payment__created_at__lt=now - sla
    ).order_by("payment__created_at")


def payments_needing_attention() -> QuerySet[Payment]:
    """Payments whose metadata could not become a purchase, still unresolved."""
    return Payment.objects.filter(
        purchase__isnull=True, status=Payment.Status.SUCCEEDED
    ).exclude(attention_reason="")


def _trainer(purchase: Purchase) -> TrainerRef | None:
    if purchase.trainer is None or purchase.status != Purchase.Status.ALLOCATED:
        return None
    return TrainerRef(id=purchase.trainer.pk, name=purchase.trainer.name)


def _session(session: TutoringSession) -> SessionView:
    return SessionView(
        sequence=session.sequence,
        starts_at=session.starts_at,
        ends_at=session.ends_at,
        status=session.status,
    )
