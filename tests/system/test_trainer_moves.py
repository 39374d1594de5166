"""A trainer deactivated in the console, with a real worker (issue #13 item 3):
their student's rest of the schedule goes to another fitting trainer, sessions
already given kept; with nobody else, the purchase is waitlisted with the reason.

The purchase started ten days ago (allocated as of then), so several sessions
have really been given when the operator saves the trainer.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from fulfillment.models import Purchase, Reservation, Trainer, TutoringSession
from fulfillment.services import allocation, sessions
from tests import helpers
from tests.helpers import WorkerProcess, pay, sign_in, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")


def started_ten_days_ago(*trainers_far_km: float) -> tuple[Purchase, Trainer]:
    """A 20-session purchase allocated to Asha (the nearest) ten days ago, its
    passed sessions recorded as given; other trainers further away."""
    course = helpers.course(title="Robotics")
    asha = helpers.trainer(courses=[course], name="Asha Rao")
    for number, km in enumerate(trainers_far_km):
        helpers.trainer(
            courses=[course],
            name=f"Other {number}",
            longitude=helpers.HOME[1] + km / 108,
        )
    start = timezone.localdate() - dt.timedelta(days=10)
    _, paid = pay(course=course, start_date=start.isoformat(), total_sessions="20")
    purchase_id = uuid.UUID(paid)
    then = dt.datetime.combine(start, dt.time(), tzinfo=KOLKATA)
    allocation.purchase_allocate(purchase_id=purchase_id, actor="test", now=then)
    sessions.sessions_materialise(purchase_id=purchase_id)
    purchase = Purchase.objects.get(pk=purchase_id)
    assert purchase.trainer_id == asha.pk
    return purchase, asha


def deactivate_in_the_console(client: Client, trainer: Trainer) -> None:
    sign_in(client, "Operations", username="olivia")
    form = {
        "name": trainer.name,
        "email": "",
        "courses": [str(c.pk) for c in trainer.courses.all()],
        "latitude": trainer.latitude,
        "longitude": trainer.longitude,
        "max_travel_km": trainer.max_travel_km,
        "weekdays": [str(day) for day in trainer.weekdays],
        "work_start": "09:00",
        "work_end": "20:00",
        "max_active_students": trainer.max_active_students,
    }  # no "is_active": the box unticked
    response = client.post(
        f"/admin/fulfillment/trainer/{trainer.pk}/change/", form, follow=True
    )
    assert response.status_code == 200
    messages = " ".join(str(m) for m in response.context["messages"])
    assert "1 booking(s) of Asha Rao go to allocation again" in messages


def kept_in_order(
    before: list[TutoringSession], after: list[TutoringSession], *, trainer: Trainer
) -> bool:
    """Every session given before is still given, with ``trainer``, numbered
    from 1 without a gap; at most the one under way at the save was added."""
    return (
        [s.sequence for s in after] == list(range(1, len(after) + 1))
        and {s.trainer_id for s in after} == {trainer.pk}
        and {s.sequence for s in before} <= {s.sequence for s in after}
        and len(after) - len(before) in (0, 1)
    )


def given(purchase: Purchase) -> list[TutoringSession]:
    return list(
        TutoringSession.objects.filter(
            purchase=purchase, status=TutoringSession.Status.COMPLETED
        ).order_by("sequence")
    )


def test_a_deactivated_trainers_student_moves_to_another_trainer_keeping_sessions_given(
    client: Client, worker_process: Callable[..., WorkerProcess]
) -> None:
    purchase, asha = started_ten_days_ago(5.0)
    before = given(purchase)
    assert len(before) >= 5  # ten days in: at least five weekday sessions

    deactivate_in_the_console(client, asha)
    worker_process()

    def reallocated() -> bool:
        purchase.refresh_from_db()
        return purchase.status == "allocated" and purchase.trainer_id != asha.pk

    wait_until(reallocated, timeout=30, what="the worker to reallocate the purchase")
    wait_until(
        lambda: (
            TutoringSession.objects.filter(
                purchase=purchase, status="scheduled", trainer=purchase.trainer
            ).count()
            == 7
        ),
        timeout=30,
        what="the new trainer's sessions",
    )
    assert purchase.trainer is not None
    assert purchase.trainer.name == "Other 0"
    # Sessions given stay, with Asha; the rest continues the numbering. (A
    # session under way when the operator saves counts as given too, so the
    # given ones may be one more than before the save.)
    after = given(purchase)
    assert kept_in_order(before, after, trainer=asha)
    upcoming = TutoringSession.objects.filter(
        purchase=purchase, status="scheduled"
    ).order_by("sequence")
    assert upcoming[0].sequence == len(after) + 1
    assert {s.trainer_id for s in upcoming} == {purchase.trainer_id}
    assert Reservation.objects.filter(allocation__purchase=purchase).count() == 20
    assert not Reservation.objects.filter(
        trainer=asha, during__startswith__gte=timezone.now()
    ).exists()
    messages = list(purchase.trace_events.values_list("message", flat=True))
    assert any(m.startswith("Asha Rao was deactivated: ") for m in messages)
    assert any(m.startswith("Allocated to Other 0") for m in messages)


def test_a_deactivated_trainers_student_with_nobody_else_is_waitlisted_with_the_reason(
    client: Client, worker_process: Callable[..., WorkerProcess]
) -> None:
    purchase, asha = started_ten_days_ago()
    before = given(purchase)

    deactivate_in_the_console(client, asha)
    worker_process()

    def waitlisted() -> bool:
        purchase.refresh_from_db()
        return purchase.status == "waitlisted"

    wait_until(waitlisted, timeout=30, what="the worker to waitlist the purchase")
    assert purchase.status_reason == (
        "No trainer fits: 1 of 1 trainers for Robotics are inactive."
    )
    assert purchase.trainer_id is None
    assert kept_in_order(before, given(purchase), trainer=asha)
    assert not TutoringSession.objects.filter(
        purchase=purchase, status="scheduled"
    ).exists()
