"""The waitlist sweep reaches every purchase, the most urgent first, at a
bounded cost; a healer that changes sessions leaves no stale learnings
(#12 items 7 and 10). Payments arrive through the signed webhook; the jobs run
on a real worker."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from fulfillment.models import Purchase
from fulfillment.services import allocation
from fulfillment.services.maintenance import invariants_reconcile
from tests import helpers
from tests.helpers import jobs, pay

API = {"Authorization": "Bearer dev-fulfilment-api-token"}


def sweep(limit: int) -> int:
    return allocation.waitlist_reallocate(actor="reallocate_waitlist", limit=limit)


def waitlisted(course: Any, *, start_date: str, time_slot: str) -> Purchase:
    _, purchase_id = pay(course=course, start_date=start_date, time_slot=time_slot)
    allocation.purchase_allocate(
        purchase_id=uuid.UUID(purchase_id), actor="allocate_trainer"
    )
    purchase = Purchase.objects.get(pk=purchase_id)
    assert purchase.status == Purchase.Status.WAITLISTED, purchase.status_reason
    return purchase


def in_weeks(weeks: int) -> str:
    today = timezone.localdate()
    monday = today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7)
    return (monday + dt.timedelta(weeks=weeks)).isoformat()


@pytest.mark.django_db(transaction=True)
def test_a_newer_purchase_that_now_fits_is_reached_behind_a_long_waitlist() -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course], work_end=dt.time(12))
    # Older purchases nobody will ever fit (evenings), then a newer one that
    # fits as soon as the trainer works afternoons.
    hopeless = [
        waitlisted(course, start_date=in_weeks(1), time_slot="9:00 PM")
        for _ in range(6)
    ]
    newer = waitlisted(course, start_date=in_weeks(1), time_slot="4:00 PM")
    trainer.work_end = dt.time(20)
    trainer.save(update_fields=["work_end"])
    allocation.waitlist_retry_soon()

    sweeps = 0
    while Purchase.objects.get(pk=newer.pk).status != Purchase.Status.ALLOCATED:
        assert sweeps < 3, "the newer purchase was never retried"
        sweep(limit=3)
        sweeps += 1

    assert sweeps == 3  # 7 untried purchases, 3 a sweep: everyone had a turn
    assert all(
        Purchase.objects.get(pk=p.pk).status == Purchase.Status.WAITLISTED
        for p in hopeless
    )


@pytest.mark.django_db(transaction=True)
def test_a_sweep_tries_the_soonest_start_first_and_defers_the_rest() -> None:
    course = helpers.course()
    later = waitlisted(course, start_date=in_weeks(4), time_slot="4:00 PM")
    soon = waitlisted(course, start_date=in_weeks(1), time_slot="4:00 PM")
    Purchase.objects.update(waitlist_checked_at=None)
    assert jobs("reallocate_waitlist") == []

    sweep(limit=1)

    tried = {
        p.pk: p.waitlist_checked_at
        for p in Purchase.objects.filter(pk__in=[later.pk, soon.pk])
    }
    assert tried[soon.pk] is not None and tried[later.pk] is None
    # One purchase is still untried since the change: the next sweep is queued.
    assert len(jobs("reallocate_waitlist", status="todo")) == 1


@pytest.mark.django_db(transaction=True)
def test_without_changes_the_sweep_takes_everyone_in_turn_at_a_bounded_cost() -> None:
    course = helpers.course()
    purchases = [
        waitlisted(course, start_date=in_weeks(1), time_slot="4:00 PM")
        for _ in range(4)
    ]
    tried_in: list[set[Any]] = []
    for _ in range(2):
        before = dict(Purchase.objects.values_list("pk", "waitlist_checked_at"))
        sweep(limit=2)
        after = dict(Purchase.objects.values_list("pk", "waitlist_checked_at"))
        tried_in.append({pk for pk in after if after[pk] != before[pk]})

    assert [len(tried) for tried in tried_in] == [2, 2]
    assert tried_in[0] | tried_in[1] == {p.pk for p in purchases}


@pytest.mark.django_db(transaction=True)
def test_the_refund_healer_leaves_no_stale_learnings(
    run_worker: Callable[..., None],
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    _, purchase_id = pay(course=course)
    run_worker()
    purchase = Purchase.objects.get(pk=purchase_id)
    url = f"/api/students/{purchase.student_id}/learnings"
    warm = Client().get(url, headers=API).json()
    assert len(warm["learnings"][0]["next_sessions"]) == 3
    # A refund whose release was lost: the status says refunded, bookings remain.
    Purchase.objects.filter(pk=purchase_id).update(status="refunded")

    report = invariants_reconcile(now=timezone.now() + dt.timedelta(minutes=1))
    run_worker()

    assert report.refunds_released == 1
    fresh = Client().get(url, headers=API).json()
    assert fresh["learnings"][0]["status"] == "refunded"
    assert fresh["learnings"][0]["next_sessions"] == []


@pytest.mark.django_db(transaction=True)
def test_marking_the_waitlist_untried_never_waits_for_a_locked_purchase() -> None:
    """Two refunds at once each mark the waitlist untried: waiting for rows the
    other holds would deadlock them (chaos found it). A row another session
    holds is left to it."""
    course = helpers.course()
    held, other = (
        waitlisted(course, start_date=in_weeks(1), time_slot="4:00 PM")
        for _ in range(2)
    )
    Purchase.objects.update(waitlist_checked_at=timezone.now())
    with psycopg.connect(helpers.database_url_for_tests(), autocommit=False) as lock:
        lock.execute(
            "SELECT 1 FROM fulfillment_purchase WHERE id = %s FOR UPDATE", [held.pk]
        )
        began = time.monotonic()
        with transaction.atomic():
            allocation.waitlist_retry_soon()
        took = time.monotonic() - began
        lock.rollback()

    assert took < 2  # lock_timeout would make a wait last 10 s
    checked = dict(Purchase.objects.values_list("pk", "waitlist_checked_at"))
    assert checked[other.pk] is None and checked[held.pk] is not None
    assert len(jobs("reallocate_waitlist", status="todo")) == 1
