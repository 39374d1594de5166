"""Trainers leave and take leave (issue #13 item 3), on real PostgreSQL: the
bookings a trainer no longer fits go back to allocation, keeping the sessions
already given, whether the change comes from the console or ``import_catalog``;
leave blocks new allocations on its days; the trainer's week calendar.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from fulfillment.models import (
    Purchase,
    Reservation,
    TraceEvent,
    Trainer,
    TrainerAllocation,
    TrainerLeave,
    TutoringSession,
)
from fulfillment.services import allocation, sessions
from fulfillment.services.trainers import trainer_bookings_recheck
from tests import helpers
from tests.helpers import jobs, sign_in

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]
NOW = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
START = "2030-01-07"
# Wednesday 9 Jan 2030, 17:30 in Kolkata: sessions 1-3 (16:00) given.
LATER = dt.datetime(2030, 1, 9, 12, 0, tzinfo=dt.UTC)


def booked(
    signed_post: SignedPost, *, start: str = START, now: dt.datetime = NOW
) -> tuple[Purchase, Trainer]:
    course = helpers.course(title="Robotics")
    asha = helpers.trainer(courses=[course], name="Asha Rao")
    purchase = helpers.buy(signed_post, course, start_date=start)
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=now)
    sessions.sessions_materialise(purchase_id=purchase.pk, now=now)
    purchase.refresh_from_db()
    assert purchase.trainer_id == asha.pk
    return purchase, asha


def trainer_form(trainer: Trainer, **changes: Any) -> dict[str, Any]:
    """The trainer's change form as the console posts it."""
    form = {
        "name": trainer.name,
        "email": trainer.email,
        "courses": [str(c.pk) for c in trainer.courses.all()],
        "latitude": trainer.latitude,
        "longitude": trainer.longitude,
        "max_travel_km": trainer.max_travel_km,
        "weekdays": [str(day) for day in trainer.weekdays],
        "work_start": f"{trainer.work_start:%H:%M}",
        "work_end": f"{trainer.work_end:%H:%M}",
        "max_active_students": trainer.max_active_students,
    }
    if trainer.is_active:
        form["is_active"] = "on"
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def moved_back(purchase: Purchase) -> bool:
    purchase.refresh_from_db()
    return (
        purchase.status == Purchase.Status.ALLOCATION_PENDING
        and purchase.trainer_id is None
        and not TrainerAllocation.objects.filter(
            purchase=purchase, status="active"
        ).exists()
        and bool(jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)}))
    )


# --- the service ----------------------------------------------------------------------


def test_a_deactivated_trainers_bookings_go_back_to_allocation_keeping_sessions_given(
    signed_post: SignedPost,
) -> None:
    purchase, asha = booked(signed_post)
    Trainer.objects.filter(pk=asha.pk).update(is_active=False)

    [moved] = trainer_bookings_recheck(trainer_id=asha.pk, actor="olivia", now=LATER)

    assert moved.purchase_id == purchase.pk
    assert str(moved) == "Anya Test · Robotics (was deactivated)"
    assert moved_back(purchase)
    assert purchase.status_reason == (
        "Asha Rao was deactivated: 4 upcoming session(s) released; reallocating "
        "(sessions given are kept)."
    )
    kept = TutoringSession.objects.filter(purchase=purchase)
    assert [(s.sequence, s.status) for s in kept] == [
        (n, "completed") for n in (1, 2, 3)
    ]
    assert not Reservation.objects.filter(
        trainer=asha, during__startswith__gte=LATER
    ).exists()
    change = TraceEvent.objects.filter(
        purchase=purchase, to_status="allocation_pending"
    ).last()
    assert change is not None
    assert change.actor == "olivia"

    # The allocation stage then finds another trainer for the rest.
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=LATER)
    purchase.refresh_from_db()
    assert purchase.trainer_id == bina.pk
    assert list(
        Reservation.objects.filter(trainer=bina).values_list("sequence", flat=True)
    ) == list(range(4, 11))
    # Rechecking again moves nothing.
    assert trainer_bookings_recheck(trainer_id=asha.pk, actor="o", now=LATER) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"work_end": dt.time(16, 30)}, "no longer works on", id="hours"),
        pytest.param({"weekdays": [5, 6]}, "no longer works on", id="days"),
        pytest.param({"max_travel_km": 0.5}, "no longer travels that far", id="km"),
    ],
)
def test_narrowing_days_hours_or_radius_moves_the_bookings_it_breaks(
    signed_post: SignedPost, change: dict[str, Any], why: str
) -> None:
    purchase, asha = booked(signed_post)
    Trainer.objects.filter(pk=asha.pk).update(**change)

    [moved] = trainer_bookings_recheck(trainer_id=asha.pk, actor="olivia", now=LATER)

    assert why in moved.why
    assert moved_back(purchase)


def test_a_change_the_bookings_still_fit_moves_nothing(
    signed_post: SignedPost,
) -> None:
    purchase, asha = booked(signed_post)
    Trainer.objects.filter(pk=asha.pk).update(
        work_start=dt.time(15), max_active_students=1, email="asha@example.com"
    )

    assert trainer_bookings_recheck(trainer_id=asha.pk, actor="o", now=LATER) == []
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.ALLOCATED
    assert len(jobs("allocate_trainer")) == 1  # the webhook's, nothing more


def test_a_radius_an_operator_waived_when_assigning_stays_waived(
    signed_post: SignedPost,
) -> None:
    purchase, asha = booked(signed_post)
    TrainerAllocation.objects.filter(purchase=purchase).update(
        assigned_by="olivia", override_reason="agreed to travel"
    )
    Trainer.objects.filter(pk=asha.pk).update(max_travel_km=0.5)

    assert trainer_bookings_recheck(trainer_id=asha.pk, actor="o", now=LATER) == []
    Trainer.objects.filter(pk=asha.pk).update(is_active=False)
    assert len(trainer_bookings_recheck(trainer_id=asha.pk, actor="o", now=LATER)) == 1


def test_leave_moves_the_bookings_it_covers_and_blocks_new_ones(
    signed_post: SignedPost,
) -> None:
    purchase, asha = booked(signed_post)
    TrainerLeave.objects.create(
        trainer=asha,
        starts_on=dt.date(2030, 1, 14),
        ends_on=dt.date(2030, 1, 18),
        reason="wedding",
    )

    [moved] = trainer_bookings_recheck(trainer_id=asha.pk, actor="olivia", now=LATER)

    assert moved.why == "is on leave 14 Jan\N{EN DASH}18 Jan 2030"
    assert moved_back(purchase)
    # Nobody else teaches Robotics: allocation waitlists it, Asha's leave
    # counting as days she does not work.
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=LATER)
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.WAITLISTED
    assert "not working on those days and hours" in purchase.status_reason


def test_leave_after_the_last_session_moves_nothing(signed_post: SignedPost) -> None:
    _, asha = booked(signed_post)
    TrainerLeave.objects.create(
        trainer=asha, starts_on=dt.date(2030, 3, 1), ends_on=dt.date(2030, 3, 9)
    )

    assert trainer_bookings_recheck(trainer_id=asha.pk, actor="o", now=LATER) == []


# --- the console --------------------------------------------------------------------


def test_deactivating_a_trainer_in_the_console_moves_their_students_and_says_so(
    client: Client, signed_post: SignedPost
) -> None:
    # Starts next week, in real time: the admin save runs now.
    purchase, asha = booked(
        signed_post,
        start=helpers.metadata_for(course=helpers.course())["start_date"],
        now=dt.datetime.now(dt.UTC),
    )
    sign_in(client, "Operations", username="olivia")

    response = client.post(
        f"/admin/fulfillment/trainer/{asha.pk}/change/",
        trainer_form(asha, is_active=None),
        follow=True,
    )

    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any(
        "1 booking(s) of Asha Rao go to allocation again" in m
        and "Anya Test · Robotics (was deactivated)" in m
        for m in messages
    ), messages
    assert moved_back(purchase)
    assert TraceEvent.objects.filter(
        purchase=purchase, actor="olivia", kind="operator_action"
    ).exists()


def test_a_leave_added_in_the_console_moves_the_bookings_it_covers(
    client: Client, signed_post: SignedPost
) -> None:
    start = dt.date.fromisoformat(
        helpers.metadata_for(course=helpers.course())["start_date"]
    )
    purchase, asha = booked(
        signed_post, start=start.isoformat(), now=dt.datetime.now(dt.UTC)
    )
    sign_in(client, "Operations", username="olivia")

    response = client.post(
        "/admin/fulfillment/trainerleave/add/",
        {
            "trainer": str(asha.pk),
            "starts_on": start.isoformat(),
            "ends_on": (start + dt.timedelta(days=2)).isoformat(),
            "reason": "ill",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert TrainerLeave.objects.filter(trainer=asha).exists()
    assert moved_back(purchase)
    assert "is on leave" in purchase.status_reason


def test_a_leave_ending_before_it_starts_is_refused_in_words(client: Client) -> None:
    asha = helpers.trainer(courses=[], name="Asha Rao")
    sign_in(client, "Operations")

    response = client.post(
        "/admin/fulfillment/trainerleave/add/",
        {"trainer": str(asha.pk), "starts_on": "2030-01-10", "ends_on": "2030-01-09"},
    )

    assert response.status_code == 200
    assert b"The leave must end on or after its start." in response.content
    assert not TrainerLeave.objects.exists()


def test_support_cannot_add_leave_or_change_a_trainer(
    client: Client, signed_post: SignedPost
) -> None:
    purchase, asha = booked(signed_post)
    sign_in(client, "Support")

    assert client.get("/admin/fulfillment/trainerleave/add/").status_code == 403
    refused = client.post(
        "/admin/fulfillment/trainerleave/add/",
        {"trainer": str(asha.pk), "starts_on": "2030-01-08", "ends_on": "2030-01-09"},
    )
    assert refused.status_code == 403
    change = client.post(
        f"/admin/fulfillment/trainer/{asha.pk}/change/",
        trainer_form(asha, is_active=None),
    )
    assert change.status_code == 403
    assert not TrainerLeave.objects.exists()
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.ALLOCATED


# --- import_catalog -----------------------------------------------------------------


def test_import_catalog_removing_a_course_moves_the_bookings_and_prints_them(
    signed_post: SignedPost, tmp_path: Path
) -> None:
    start = helpers.metadata_for(course=helpers.course())["start_date"]
    purchase, asha = booked(signed_post, start=start, now=dt.datetime.now(dt.UTC))
    entry = {
        "id": str(asha.pk),
        "name": asha.name,
        "courses": [],
        "latitude": asha.latitude,
        "longitude": asha.longitude,
        "max_travel_km": asha.max_travel_km,
        "max_active_students": asha.max_active_students,
        "weekdays": asha.weekdays,
        "work_start": "09:00",
        "work_end": "20:00",
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"trainers": [entry]}))
    out = io.StringIO()

    call_command("import_catalog", str(path), stdout=out)

    assert "1 booking(s) moved: Anya Test · Robotics (no longer teaches Robotics)" in (
        out.getvalue()
    )
    assert moved_back(purchase)
    change = TraceEvent.objects.filter(
        purchase=purchase, to_status="allocation_pending"
    ).last()
    assert change is not None
    assert change.actor == "import_catalog"


# --- the week calendar --------------------------------------------------------------


def test_the_week_calendar_shows_bookings_free_hours_and_leave(
    client: Client, signed_post: SignedPost
) -> None:
    _, asha = booked(signed_post)
    TrainerLeave.objects.create(
        trainer=asha, starts_on=dt.date(2030, 1, 10), ends_on=dt.date(2030, 1, 10)
    )
    sign_in(client, "Support")  # a page to look at: Support may
    page = client.get(f"/admin/fulfillment/trainer/{asha.pk}/change/")
    week = f"/admin/fulfillment/trainer/{asha.pk}/week/"
    assert week.encode() in page.content

    response = client.get(week, {"week": "2030-01-09"})

    assert response.status_code == 200
    text = response.content.decode()
    assert "week of 07 Jan 2030" in text
    # Mon, Tue, Wed and Fri at 16:00 (Thu is leave, but still booked: 5 sessions
    # that week, the recheck moves them).
    assert text.count("16:00 Anya Test · Robotics") == 5
    assert "?week=2029-12-31" in text and "?week=2030-01-14" in text
    assert response.context["sessions"] == 5
    # 11 working hours a day, 7 days, minus 5 booked, minus 11 of leave (Thu),
    # whose one booked hour is shown as booked.
    assert response.context["free_hours"] == 7 * 11 - 5 - 10
    assert 'class="ops-week-leave"' in text
