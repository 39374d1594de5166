"""Stage 3 on real PostgreSQL: the rolling window of student-facing sessions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from fulfillment.models import (
    Course,
    Purchase,
    Student,
    Trainer,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.services.allocation import purchase_allocate
from fulfillment.services.sessions import (
    SESSION_WINDOW,
    purchases_needing_top_up,
    session_windows_top_up,
    sessions_materialise,
)
from fulfillment.testing import stripe_events
from tests import helpers

pytestmark = pytest.mark.django_db

KOLKATA = ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
START = "2030-01-07"  # a Monday
# The ten weekday sessions of a purchase starting Monday 7 January 2030.
WEEKDAY_DATES = [dt.date(2030, 1, day) for day in (7, 8, 9, 10, 11, 14, 15, 16, 17, 18)]

SignedPost = Callable[..., Any]


def allocated_purchase(
    signed_post: SignedPost, course: Course | None = None, **metadata: str
) -> Purchase:
    """A purchase bought through the webhook and allocated at ``NOW``."""
    if course is None:
        course = helpers.course()
        helpers.trainer(courses=[course])
    fields = helpers.metadata_for(course=course, **{"start_date": START, **metadata})
    body = signed_post(stripe_events.payment_intent_succeeded(metadata=fields)).json()
    assert body["status"] == "accepted", body
    purchase = purchase_allocate(purchase_id=body["purchase_id"], actor="test", now=NOW)
    assert purchase.status == Purchase.Status.ALLOCATED, purchase.status_reason
    return purchase


def session_end(day: dt.date) -> dt.datetime:
    """When the weekday session on ``day`` ends: 17:00 in Kolkata."""
    return dt.datetime.combine(day, dt.time(17), tzinfo=KOLKATA)


def statuses(purchase: Purchase) -> dict[int, str]:
    return dict(
        purchase.sessions.order_by("sequence").values_list("sequence", "status")
    )


def scheduled(purchase: Purchase) -> list[int]:
    return list(
        purchase.sessions.filter(status=TutoringSession.Status.SCHEDULED)
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )


def version(purchase: Purchase) -> int:
    return Student.objects.get(pk=purchase.student_id).learnings_version


def test_materialise_creates_the_next_seven_sessions_at_local_time(
    signed_post: SignedPost,
) -> None:
    purchase = allocated_purchase(signed_post)

    created = sessions_materialise(purchase_id=purchase.pk, now=NOW)

    assert len(created) == SESSION_WINDOW == 7
    sessions = list(purchase.sessions.order_by("sequence"))
    assert [s.sequence for s in sessions] == [1, 2, 3, 4, 5, 6, 7]
    for session, day in zip(sessions, WEEKDAY_DATES, strict=False):
        local_start = session.starts_at.astimezone(KOLKATA)
        assert local_start.date() == day
        assert local_start.time() == dt.time(16, 0)
        # 4:00 PM in Kolkata is 10:30 UTC.
        assert session.starts_at.astimezone(dt.UTC).time() == dt.time(10, 30)
        assert session.ends_at - session.starts_at == dt.timedelta(minutes=60)
        assert session.status == TutoringSession.Status.SCHEDULED
        assert session.trainer_id == purchase.trainer_id


def test_sunday_sessions_last_eighty_minutes(signed_post: SignedPost) -> None:
    purchase = allocated_purchase(signed_post, delivery_mode="SUNDAY_ONLY")

    sessions_materialise(purchase_id=purchase.pk, now=NOW)

    sessions = list(purchase.sessions.order_by("sequence"))
    assert len(sessions) == 7
    first_sunday = dt.date(2030, 1, 13)
    for index, session in enumerate(sessions):
        local_start = session.starts_at.astimezone(KOLKATA)
        local_end = session.ends_at.astimezone(KOLKATA)
        assert local_start.date() == first_sunday + dt.timedelta(weeks=index)
        assert (local_start.time(), local_end.time()) == (dt.time(16), dt.time(17, 20))


def test_materialising_twice_creates_nothing_the_second_time(
    signed_post: SignedPost,
) -> None:
    purchase = allocated_purchase(signed_post)
    first = sessions_materialise(purchase_id=purchase.pk, now=NOW)
    before = version(purchase)

    second = sessions_materialise(purchase_id=purchase.pk, now=NOW)

    assert second == []
    assert sorted(s.pk for s in purchase.sessions.all()) == sorted(s.pk for s in first)
    assert version(purchase) == before


def test_materialise_bumps_the_learnings_version(signed_post: SignedPost) -> None:
    purchase = allocated_purchase(signed_post)
    before = version(purchase)

    sessions_materialise(purchase_id=purchase.pk, now=NOW)

    assert version(purchase) == before + 1


def test_materialise_does_nothing_for_a_waitlisted_purchase(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    fields = helpers.metadata_for(course=course, start_date=START)
    body = signed_post(stripe_events.payment_intent_succeeded(metadata=fields)).json()
    purchase = purchase_allocate(purchase_id=body["purchase_id"], actor="test", now=NOW)
    assert purchase.status == Purchase.Status.WAITLISTED

    assert sessions_materialise(purchase_id=purchase.pk, now=NOW) == []
    assert not TutoringSession.objects.exists()


def test_top_up_completes_passed_sessions_and_refills_the_window(
    signed_post: SignedPost,
) -> None:
    purchase = allocated_purchase(signed_post)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)
    before = version(purchase)
    # The moment Tuesday's session ends: sessions 1 and 2 have passed.
    later = session_end(WEEKDAY_DATES[1])

    created = session_windows_top_up(now=later)

    assert created == 2
    assert statuses(purchase) == {
        **{n: TutoringSession.Status.COMPLETED for n in (1, 2)},
        **{n: TutoringSession.Status.SCHEDULED for n in range(3, 10)},
    }
    assert version(purchase) == before + 1
    allocation = TrainerAllocation.objects.get(purchase=purchase)
    assert allocation.status == TrainerAllocation.Status.ACTIVE


def test_top_up_with_nothing_passed_changes_nothing(signed_post: SignedPost) -> None:
    purchase = allocated_purchase(signed_post)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)
    before = version(purchase)
    # Monday's session is still running.
    during_first = dt.datetime(2030, 1, 7, 11, 0, tzinfo=dt.UTC)

    assert session_windows_top_up(now=during_first) == 0

    assert scheduled(purchase) == [1, 2, 3, 4, 5, 6, 7]
    assert version(purchase) == before


def test_window_shrinks_only_when_the_schedule_runs_out_then_completes(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course], max_active_students=1)
    purchase = allocated_purchase(signed_post, course)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)

    for passed, day in enumerate(WEEKDAY_DATES, start=1):
        session_windows_top_up(now=session_end(day))
        remaining = len(WEEKDAY_DATES) - passed
        assert scheduled(purchase) == list(
            range(passed + 1, passed + 1 + min(SESSION_WINDOW, remaining))
        ), f"after session {passed}"

    assert set(statuses(purchase).values()) == {TutoringSession.Status.COMPLETED}
    assert sorted(statuses(purchase)) == list(range(1, 11))
    allocation = TrainerAllocation.objects.get(purchase=purchase)
    assert allocation.status == TrainerAllocation.Status.COMPLETED
    assert allocation.ended_at == session_end(WEEKDAY_DATES[-1])
    assert purchases_needing_top_up(now=session_end(WEEKDAY_DATES[-1])) == []
    assert_capacity_is_free(signed_post, trainer, course)


def assert_capacity_is_free(
    signed_post: SignedPost, trainer: Trainer, course: Course
) -> None:
    # A full trainer (capacity 1) takes a new student once the course is over.
    fields = helpers.metadata_for(course=course, start_date="2030-02-04")
    body = signed_post(stripe_events.payment_intent_succeeded(metadata=fields)).json()
    after = dt.datetime(2030, 1, 20, tzinfo=dt.UTC)
    purchase = purchase_allocate(
        purchase_id=body["purchase_id"], actor="test", now=after
    )
    assert purchase.status == Purchase.Status.ALLOCATED, purchase.status_reason
    assert purchase.trainer_id == trainer.pk


def test_purchases_needing_top_up_are_those_with_a_passed_scheduled_session(
    signed_post: SignedPost,
) -> None:
    monday = allocated_purchase(signed_post)
    sessions_materialise(purchase_id=monday.pk, now=NOW)
    wednesday = allocated_purchase(signed_post, start_date="2030-01-09")
    sessions_materialise(purchase_id=wednesday.pk, now=NOW)

    needing = purchases_needing_top_up(now=session_end(WEEKDAY_DATES[0]))

    assert needing == [monday.pk]


def test_top_up_after_an_outage_still_records_every_session(
    signed_post: SignedPost,
) -> None:
    purchase = allocated_purchase(signed_post)
    sessions_materialise(purchase_id=purchase.pk, now=NOW)

    # No top-up ran until after the ninth session (the worker was down).
    session_windows_top_up(now=session_end(WEEKDAY_DATES[8]))

    assert sorted(statuses(purchase)) == list(range(1, 11))
    assert scheduled(purchase) == [10]


def test_refunded_purchase_passed_sessions_are_completed(
    signed_post: SignedPost,
) -> None:
    # Sessions from Monday of last week, allocated and materialised back then.
    today = timezone.localdate()
    last_monday = today - dt.timedelta(days=today.weekday() + 7)
    course = helpers.course()
    helpers.trainer(courses=[course])
    fields = helpers.metadata_for(course=course, start_date=last_monday.isoformat())
    event = stripe_events.payment_intent_succeeded(metadata=fields)
    body = signed_post(event).json()
    then = dt.datetime.combine(last_monday, dt.time(9), tzinfo=KOLKATA)
    purchase_allocate(purchase_id=body["purchase_id"], actor="test", now=then)
    sessions_materialise(purchase_id=body["purchase_id"], now=then)
    pi = event["data"]["object"]["id"]
    signed_post(stripe_events.charge_refunded(payment_intent=pi))

    session_windows_top_up(now=timezone.now())

    purchase = Purchase.objects.get(pk=body["purchase_id"])
    assert purchase.status == Purchase.Status.REFUNDED
    passed = purchase.sessions.filter(ends_at__lte=timezone.now())
    assert passed.count() >= 5
    assert set(passed.values_list("status", flat=True)) == {
        TutoringSession.Status.COMPLETED
    }
    assert purchases_needing_top_up(now=timezone.now()) == []
