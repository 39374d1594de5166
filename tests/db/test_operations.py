"""Operator actions (services/operations.py) on real PostgreSQL.

Purchases come from signed webhook deliveries, as in production; each action is
checked for the rows it changes, the job it defers and the trace it leaves with
the operator's name, and, when refused, for changing nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from fulfillment.domain.fit import Rule
from fulfillment.models import (
    WAITING_STATUSES,
    Course,
    Payment,
    Purchase,
    Reservation,
    Student,
    TraceEvent,
    Trainer,
    TrainerAllocation,
)
from fulfillment.selectors.trainers import trainer_verdicts
from fulfillment.services import allocation, operations
from fulfillment.services.operations import (
    OperationRefused,
    failed_jobs_retry,
    payment_reprocess,
    purchase_assign_trainer,
    purchase_retry_allocation,
)
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import jobs

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]

# A week before the first session (Monday 7 January 2030, 16:00 in Kolkata).
NOW = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
START = "2030-01-07"
pay = functools.partial(helpers.buy, start_date=START)
waitlisted = functools.partial(
    helpers.waitlisted, start_date=START, now=NOW, actor="test"
)


def operator_actions(purchase: Purchase) -> list[TraceEvent]:
    return list(
        TraceEvent.objects.filter(
            purchase=purchase, kind=TraceEvent.Kind.OPERATOR_ACTION
        )
    )


def untouched(purchase: Purchase) -> bool:
    """Still waiting, with no allocation, reservation or operator trace."""
    purchase.refresh_from_db()
    return (
        purchase.status in WAITING_STATUSES
        and not TrainerAllocation.objects.filter(purchase=purchase).exists()
        and not Reservation.objects.filter(allocation__purchase=purchase).exists()
        and not operator_actions(purchase)
    )


# --- retry allocation now ---------------------------------------------------------


def test_retry_allocates_a_waitlisted_purchase_once_a_trainer_fits(
    signed_post: SignedPost,
) -> None:
    course = helpers.course(title="Robotics")
    purchase = waitlisted(signed_post, course)
    trainer = helpers.trainer(courses=[course], name="Asha Rao")

    result = purchase_retry_allocation(
        purchase_id=purchase.pk, operator="olivia", now=NOW
    )

    assert result.status == Purchase.Status.ALLOCATED
    assert result.trainer_id == trainer.pk
    [action] = operator_actions(purchase)
    assert action.actor == "olivia"
    assert action.message.startswith("olivia retried the allocation now: allocated.")
    change = TraceEvent.objects.get(purchase=purchase, to_status="allocated")
    assert change.actor == "olivia"
    assert action.id < change.id  # the request, then what it did
    assert jobs("materialise_sessions", args={"purchase_id": str(purchase.pk)})


def test_retry_of_a_still_unfit_purchase_records_the_attempt_and_the_reason(
    signed_post: SignedPost,
) -> None:
    course = helpers.course(title="Robotics")
    purchase = waitlisted(signed_post, course)

    result = purchase_retry_allocation(
        purchase_id=purchase.pk, operator="olivia", now=NOW
    )

    assert result.status == Purchase.Status.WAITLISTED
    [action] = operator_actions(purchase)
    assert "waitlisted" in action.message
    assert "No trainer teaches Robotics" in action.message


def test_retry_refuses_a_purchase_that_is_not_waiting(signed_post: SignedPost) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase = pay(signed_post, course)
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=NOW)

    with pytest.raises(OperationRefused, match="is allocated: nothing to retry"):
        purchase_retry_allocation(purchase_id=purchase.pk, operator="olivia", now=NOW)

    assert not operator_actions(purchase)


# --- assign trainer ---------------------------------------------------------------


def test_assigning_a_fitting_trainer_continues_like_an_automatic_allocation(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course], name="Nearest")
    chosen = helpers.trainer(
        courses=[course], name="Further", longitude=helpers.HOME[1] + 0.03
    )
    purchase = pay(signed_post, course)
    version = Student.objects.get(pk=purchase.student_id).learnings_version

    result = purchase_assign_trainer(
        purchase_id=purchase.pk, trainer_id=chosen.pk, operator="olivia", now=NOW
    )

    assert result.status == Purchase.Status.ALLOCATED
    assert result.trainer_id == chosen.pk
    assert result.allocated_at == NOW
    assert result.status_reason.startswith("Allocated to Further, 3.")
    row = TrainerAllocation.objects.get(purchase=purchase)
    assert (row.trainer_id, row.assigned_by, row.override_reason) == (
        chosen.pk,
        "olivia",
        "",
    )
    assert Reservation.objects.filter(allocation=row).count() == 10
    assert jobs("materialise_sessions", args={"purchase_id": str(purchase.pk)})
    assert Student.objects.get(pk=purchase.student_id).learnings_version > version
    [action] = operator_actions(purchase)
    assert action.actor == "olivia"
    assert action.message == "olivia assigned Further."
    assert TraceEvent.objects.get(purchase=purchase, to_status="allocated").actor == (
        "olivia"
    )


def test_a_trainer_beyond_their_travel_distance_needs_a_reason(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    far = helpers.trainer(courses=[course], name="Far", max_travel_km=0.5)
    purchase = pay(signed_post, course)

    with pytest.raises(OperationRefused, match=Rule.TOO_FAR.label) as refused:
        purchase_assign_trainer(
            purchase_id=purchase.pk, trainer_id=far.pk, operator="olivia", now=NOW
        )
    assert refused.value.field == "reason"
    assert untouched(purchase)

    result = purchase_assign_trainer(
        purchase_id=purchase.pk,
        trainer_id=far.pk,
        operator="olivia",
        reason="  Agreed on the phone to travel 1 km more  ",
        now=NOW,
    )

    assert result.status == Purchase.Status.ALLOCATED
    row = TrainerAllocation.objects.get(purchase=purchase)
    assert row.override_reason == "Agreed on the phone to travel 1 km more"
    [action] = operator_actions(purchase)
    assert action.message == (
        f"olivia assigned Far, waiving: {Rule.TOO_FAR.label}. "
        "Reason: Agreed on the phone to travel 1 km more."
    )


def test_a_trainer_at_capacity_may_be_assigned_with_a_reason(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    full = helpers.trainer(courses=[course], name="Full", max_active_students=1)
    first = pay(signed_post, course, time_slot="10:00 AM")
    allocation.purchase_allocate(purchase_id=first.pk, actor="test", now=NOW)
    second = waitlisted(signed_post, course)

    purchase_assign_trainer(
        purchase_id=second.pk,
        trainer_id=full.pk,
        operator="olivia",
        reason="Takes one more student this term",
        now=NOW,
    )

    assert full.allocations.filter(status="active").count() == 2
    assert f"waiving: {Rule.AT_CAPACITY.label}" in operator_actions(second)[0].message


def _inactive(course: Course) -> Trainer:
    return helpers.trainer(courses=[course], is_active=False)


def _other_course(course: Course) -> Trainer:
    return helpers.trainer(courses=[helpers.course()])


def _off_duty(course: Course) -> Trainer:
    # The 16:00 session lasts an hour; this trainer stops at 16:30.
    return helpers.trainer(courses=[course], work_end=dt.time(16, 30))


@pytest.mark.parametrize(
    ("make_trainer", "rule"),
    [
        (_inactive, Rule.INACTIVE),
        (_other_course, Rule.NOT_TEACHING),
        (_off_duty, Rule.NOT_WORKING),
    ],
)
def test_a_trainer_breaking_a_hard_rule_is_never_assigned_even_with_a_reason(
    signed_post: SignedPost, make_trainer: Callable[[Course], Trainer], rule: Rule
) -> None:
    course = helpers.course()
    trainer = make_trainer(course)
    purchase = pay(signed_post, course)

    with pytest.raises(OperationRefused, match=rule.label) as refused:
        purchase_assign_trainer(
            purchase_id=purchase.pk,
            trainer_id=trainer.pk,
            operator="olivia",
            reason="Please",
            now=NOW,
        )

    assert refused.value.field == "trainer"
    assert untouched(purchase)


def test_a_trainer_reserved_at_an_overlapping_time_is_never_assigned(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    busy = helpers.trainer(courses=[course])
    first = pay(signed_post, course)
    allocation.purchase_allocate(purchase_id=first.pk, actor="test", now=NOW)
    second = waitlisted(signed_post, course)

    with pytest.raises(OperationRefused, match=Rule.ALREADY_RESERVED.label):
        purchase_assign_trainer(
            purchase_id=second.pk,
            trainer_id=busy.pk,
            operator="olivia",
            reason="Please",
            now=NOW,
        )

    assert untouched(second)


def test_a_booking_the_verdict_missed_is_caught_by_the_database(
    signed_post: SignedPost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the verdicts say, the exclusion constraint has the last word:
    the assignment is refused and nothing is left behind."""
    course = helpers.course()
    trainer = helpers.trainer(courses=[course])
    first = pay(signed_post, course)
    allocation.purchase_allocate(purchase_id=first.pk, actor="test", now=NOW)
    second = waitlisted(signed_post, course)
    real_verdicts = trainer_verdicts

    def verdicts_blind_to_reservations(**kwargs: Any) -> Any:
        return [
            type(verdict)(trainer=verdict.trainer, broken=(), distance_km=1.0)
            for verdict in real_verdicts(**kwargs)
        ]

    monkeypatch.setattr(operations, "trainer_verdicts", verdicts_blind_to_reservations)

    with pytest.raises(OperationRefused, match="just booked"):
        purchase_assign_trainer(
            purchase_id=second.pk, trainer_id=trainer.pk, operator="olivia", now=NOW
        )

    assert untouched(second)


def test_assigning_refuses_a_purchase_that_is_not_waiting(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course])
    purchase = pay(signed_post, course)
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=NOW)

    with pytest.raises(OperationRefused, match="is allocated"):
        purchase_assign_trainer(
            purchase_id=purchase.pk, trainer_id=trainer.pk, operator="olivia", now=NOW
        )

    assert TrainerAllocation.objects.filter(purchase=purchase).count() == 1


# --- reprocess a payment that needed attention ------------------------------------


def flagged_payment(signed_post: SignedPost, **metadata: str) -> Payment:
    fields = helpers.metadata_for(
        course=helpers.course(), **{"start_date": START, **metadata}
    )
    event = stripe_events.payment_intent_succeeded(metadata=fields)
    body = signed_post(event).json()
    assert body["status"] == "needs_attention", body
    return Payment.objects.get(payment_intent=event["data"]["object"]["id"])


def test_corrected_metadata_turns_the_payment_into_a_purchase(
    signed_post: SignedPost,
) -> None:
    course = helpers.course(title="Chess")
    payment = flagged_payment(
        signed_post, course_id="00000000-0000-4000-8000-000000000000"
    )

    purchase = payment_reprocess(
        payment_id=payment.pk, metadata={"course_id": str(course.pk)}, operator="olivia"
    )

    payment.refresh_from_db()
    assert purchase.payment_id == payment.pk
    assert purchase.course_id == course.pk
    assert purchase.status == Purchase.Status.ALLOCATION_PENDING
    assert payment.attention_reason == ""
    assert payment.metadata["course_id"] == str(course.pk)
    assert payment.metadata["student_name"] == "Anya Test"  # the rest is kept
    assert jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    [action] = TraceEvent.objects.filter(
        payment=payment, kind=TraceEvent.Kind.OPERATOR_ACTION
    )
    assert action.actor == "olivia"
    assert "corrected the metadata (course_id)" in action.message
    assert "no course 00000000-0000-4000-8000-000000000000" in action.message


def test_still_unusable_metadata_changes_nothing_and_names_the_field(
    signed_post: SignedPost,
) -> None:
    payment = flagged_payment(signed_post, start_date="2030-02-30")
    before = (payment.metadata, payment.attention_reason)
    traced = TraceEvent.objects.filter(payment=payment).count()

    with pytest.raises(OperationRefused, match="start_date") as refused:
        payment_reprocess(
            payment_id=payment.pk,
            metadata={"start_date": "2030-13-01"},
            operator="olivia",
        )

    assert refused.value.field == "start_date"
    payment.refresh_from_db()
    assert (payment.metadata, payment.attention_reason) == before
    assert not Purchase.objects.filter(payment=payment).exists()
    assert TraceEvent.objects.filter(payment=payment).count() == traced


def test_a_blank_value_removes_the_key(signed_post: SignedPost) -> None:
    payment = flagged_payment(signed_post, student_email="not-an-email")

    payment_reprocess(
        payment_id=payment.pk, metadata={"student_email": "  "}, operator="olivia"
    )

    payment.refresh_from_db()
    assert "student_email" not in payment.metadata
    assert Purchase.objects.get(payment=payment).student.email == ""


def test_a_payment_with_a_purchase_is_not_reprocessed(signed_post: SignedPost) -> None:
    purchase = pay(signed_post, helpers.course())

    with pytest.raises(OperationRefused, match="already has its purchase"):
        payment_reprocess(
            payment_id=purchase.payment_id, metadata={}, operator="olivia"
        )


# --- failed jobs ------------------------------------------------------------------


def fail(job_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed', attempts = 1"
            " WHERE id = %s",
            [job_id],
        )


def test_failed_jobs_are_queued_again_and_traced(signed_post: SignedPost) -> None:
    purchase = pay(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    fail(job.id)

    retried = failed_jobs_retry(job_ids=[job.id], operator="olivia")

    assert retried == 1
    [again] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    assert (again.id, again.status, again.attempts) == (
        job.id,
        "todo",
        2,
    )
    [action] = operator_actions(purchase)
    assert action.actor == "olivia"
    assert action.message == (
        f"olivia retried the failed job #{job.id} "
        "(allocate_trainer, after 1 attempt(s))."
    )


def test_jobs_no_longer_failed_are_left_alone(signed_post: SignedPost) -> None:
    purchase = pay(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})

    assert failed_jobs_retry(job_ids=[job.id, 999_999], operator="olivia") == 0

    [same] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    assert (same.status, same.attempts) == ("todo", job.attempts)
    assert not operator_actions(purchase)
