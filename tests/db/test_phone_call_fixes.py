"""The fixes a phone call asks for (services/operations.py, issue #13 item 2),
on real PostgreSQL: change the schedule, re-assign, release, cancel, note.

A purchase is bought through the signed webhook, allocated on 1 Jan 2030 and
its window materialised; the fixes then happen on Wednesday 9 Jan at 17:30 in
Kolkata, after three sessions were given (7, 8, 9 Jan at 16:00). Each fix is
checked for the rows it changes, the next stage it defers, the trace it leaves
with the operator and the reason, and, when refused, for changing nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from fulfillment.domain.fit import Rule
from fulfillment.models import (
    Payment,
    Purchase,
    Reservation,
    Student,
    TraceEvent,
    Trainer,
    TrainerAllocation,
    TutoringSession,
)
from fulfillment.selectors.trainers import purchase_schedule, trainer_verdicts
from fulfillment.services import allocation, sessions
from fulfillment.services.operations import (
    OperationRefused,
    purchase_cancel,
    purchase_note_add,
    purchase_reassign_trainer,
    purchase_release_trainer,
    purchase_schedule_change,
)
from tests import helpers
from tests.helpers import jobs, sign_in

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2030, 1, 1, 6, 0, tzinfo=dt.UTC)
START = "2030-01-07"
# Wednesday 9 Jan 2030, 17:30 in Kolkata: sessions 1-3 given.
LATER = dt.datetime(2030, 1, 9, 12, 0, tzinfo=dt.UTC)
waitlisted = functools.partial(
    helpers.waitlisted, start_date=START, now=NOW, actor="test"
)


def allocated(
    signed_post: SignedPost, *, trainer_fields: dict[str, Any] | None = None
) -> tuple[Purchase, Trainer]:
    """A purchase allocated to Asha, with its first 7 sessions materialised."""
    course = helpers.course(title="Robotics")
    asha = helpers.trainer(courses=[course], name="Asha Rao", **(trainer_fields or {}))
    purchase = helpers.buy(signed_post, course, start_date=START)
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=NOW)
    sessions.sessions_materialise(purchase_id=purchase.pk, now=NOW)
    purchase.refresh_from_db()
    assert purchase.trainer_id == asha.pk
    return purchase, asha


def operator_actions(purchase: Purchase) -> list[str]:
    return list(
        TraceEvent.objects.filter(
            purchase=purchase, kind=TraceEvent.Kind.OPERATOR_ACTION
        ).values_list("message", flat=True)
    )


def version(purchase: Purchase) -> int:
    return Student.objects.get(pk=purchase.student_id).learnings_version


def snapshot(purchase: Purchase) -> tuple[Any, ...]:
    """Everything a refused fix must leave as it was."""
    purchase.refresh_from_db()
    return (
        purchase.status,
        purchase.status_reason,
        purchase.trainer_id,
        purchase.time_slot,
        sorted(
            TrainerAllocation.objects.filter(purchase=purchase).values_list(
                "trainer_id", "status"
            )
        ),
        sorted(
            Reservation.objects.filter(allocation__purchase=purchase).values_list(
                "sequence", "during"
            )
        ),
        sorted(
            TutoringSession.objects.filter(purchase=purchase).values_list(
                "sequence", "status"
            )
        ),
        operator_actions(purchase),
        len(jobs()),
        version(purchase),
    )


def given_sessions_kept(purchase: Purchase, trainer: Trainer) -> None:
    given = TutoringSession.objects.filter(purchase=purchase, sequence__lte=3)
    assert [(s.sequence, s.status, s.trainer_id) for s in given] == [
        (n, TutoringSession.Status.COMPLETED, trainer.pk) for n in (1, 2, 3)
    ]
    assert not TutoringSession.objects.filter(purchase=purchase, sequence__gt=3)


def active_reservations(purchase: Purchase) -> list[Reservation]:
    return list(
        Reservation.objects.filter(
            allocation__purchase=purchase,
            allocation__status=TrainerAllocation.Status.ACTIVE,
        ).order_by("sequence")
    )


# --- change the schedule ----------------------------------------------------------


def test_a_new_time_the_trainer_still_fits_keeps_them_and_moves_their_bookings(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post)
    before = version(purchase)

    result = purchase_schedule_change(
        purchase_id=purchase.pk,
        operator="olivia",
        reason="parent asked for evenings",
        time_slot=dt.time(18, 0),
        now=LATER,
    )

    assert result.status == Purchase.Status.ALLOCATED
    assert result.trainer_id == asha.pk
    moved = active_reservations(purchase)
    assert [r.sequence for r in moved] == [4, 5, 6, 7, 8, 9, 10]
    first = moved[0].during.lower.astimezone(KOLKATA)
    assert (first.date(), first.time()) == (dt.date(2030, 1, 10), dt.time(18, 0))
    assert {r.allocation.trainer_id for r in moved} == {asha.pk}
    given_sessions_kept(purchase, asha)
    assert jobs("materialise_sessions", args={"purchase_id": str(purchase.pk)})
    [action] = operator_actions(purchase)
    assert action.startswith("olivia changed the schedule from Monday to Friday at")
    assert "Asha Rao still fits; their sessions moved" in action
    assert action.endswith("Reason: parent asked for evenings.")
    assert version(purchase) > before

    sessions.sessions_materialise(purchase_id=purchase.pk, now=LATER)
    upcoming = TutoringSession.objects.filter(
        purchase=purchase, status=TutoringSession.Status.SCHEDULED
    )
    assert [s.sequence for s in upcoming] == [4, 5, 6, 7, 8, 9, 10]
    assert upcoming[0].starts_at == moved[0].during.lower


def test_a_new_time_the_trainer_cannot_do_reallocates_through_the_allocation_stage(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post, trainer_fields={"work_end": dt.time(17)})
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das", longitude=77.64)

    result = purchase_schedule_change(
        purchase_id=purchase.pk,
        operator="olivia",
        reason="parent asked for evenings",
        time_slot=dt.time(18, 0),
        now=LATER,
    )

    assert result.status == Purchase.Status.ALLOCATION_PENDING
    assert result.trainer_id is None
    assert "Asha Rao no longer fits (not working on those days and hours)" in (
        result.status_reason
    )
    assert not active_reservations(purchase)
    given_sessions_kept(purchase, asha)
    assert jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})

    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=LATER)

    purchase.refresh_from_db()
    assert purchase.trainer_id == bina.pk
    assert [r.sequence for r in active_reservations(purchase)] == list(range(4, 11))


def test_a_waitlisted_purchase_with_a_new_schedule_is_allocated_again(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    purchase = waitlisted(signed_post, course)

    result = purchase_schedule_change(
        purchase_id=purchase.pk,
        operator="olivia",
        reason="Sundays suit them",
        delivery_mode="SUNDAY_ONLY",
        start_date=dt.date(2030, 1, 13),
        now=NOW,
    )

    assert result.status == Purchase.Status.ALLOCATION_PENDING
    assert (result.delivery_mode, result.start_date) == (
        "SUNDAY_ONLY",
        dt.date(2030, 1, 13),
    )
    assert jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    [action] = operator_actions(purchase)
    assert "to Sundays at 16:00 from 13 Jan 2030: allocating again" in action


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        pytest.param({"reason": "  "}, "reason", "Say why", id="no-reason"),
        pytest.param(
            {"time_slot": dt.time(16, 0)}, None, "already the purchase's", id="same"
        ),
        pytest.param(
            {"start_date": dt.date(2030, 1, 2)}, "start_date", "has passed", id="past"
        ),
        pytest.param(
            {"delivery_mode": "WEEKENDS"}, "delivery_mode", "not a delivery", id="mode"
        ),
    ],
)
def test_a_schedule_change_that_cannot_be_done_changes_nothing(
    signed_post: SignedPost, changes: dict[str, Any], field: str | None, words: str
) -> None:
    purchase, _ = allocated(signed_post)
    before = snapshot(purchase)
    arguments: dict[str, Any] = {"reason": "asked", "time_slot": dt.time(18, 0)}

    with pytest.raises(OperationRefused, match=words) as refused:
        purchase_schedule_change(
            purchase_id=purchase.pk,
            operator="olivia",
            now=LATER,
            **{**arguments, **changes},
        )

    assert refused.value.field == field
    assert snapshot(purchase) == before


def test_a_schedule_change_is_refused_for_a_cancelled_purchase(
    signed_post: SignedPost,
) -> None:
    purchase, _ = allocated(signed_post)
    purchase_cancel(purchase_id=purchase.pk, operator="olivia", reason="x", now=LATER)
    before = snapshot(purchase)

    with pytest.raises(OperationRefused, match="is cancelled: nothing to reschedule"):
        purchase_schedule_change(
            purchase_id=purchase.pk,
            operator="olivia",
            reason="asked",
            time_slot=dt.time(18, 0),
            now=LATER,
        )

    assert snapshot(purchase) == before


# --- re-assign ------------------------------------------------------------------


def test_reassigning_moves_the_rest_of_the_sessions_to_the_chosen_trainer(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post)
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    before = version(purchase)

    result = purchase_reassign_trainer(
        purchase_id=purchase.pk,
        trainer_id=bina.pk,
        operator="olivia",
        reason="parent prefers Bina",
        now=LATER,
    )

    assert result.status == Purchase.Status.ALLOCATED
    assert result.trainer_id == bina.pk
    reservations = active_reservations(purchase)
    assert [r.sequence for r in reservations] == list(range(4, 11))
    assert {r.trainer_id for r in reservations} == {bina.pk}
    old = TrainerAllocation.objects.get(purchase=purchase, trainer=asha)
    assert (old.status, old.released_by) == ("released", "olivia")
    given_sessions_kept(purchase, asha)
    [action] = operator_actions(purchase)
    assert action == (
        "olivia re-assigned the purchase from Asha Rao to Bina Das. "
        "Reason: parent prefers Bina."
    )
    assert jobs("materialise_sessions", args={"purchase_id": str(purchase.pk)})
    assert version(purchase) > before
    # Automatic allocation will not hand the purchase back to Asha.
    slots = purchase_schedule(purchase=purchase, now=LATER)
    verdicts = {
        v.trainer.name: v for v in trainer_verdicts(purchase=purchase, slots=slots)
    }
    assert Rule.RELEASED in verdicts["Asha Rao"].broken


def test_reassigning_to_a_trainer_breaking_a_hard_rule_is_refused_and_changes_nothing(
    signed_post: SignedPost,
) -> None:
    purchase, _ = allocated(signed_post)
    sunday_only = helpers.trainer(
        courses=[purchase.course], name="Chitra Sen", weekdays=[6]
    )
    before = snapshot(purchase)

    with pytest.raises(
        OperationRefused,
        match="Chitra Sen cannot take this purchase: not working on those days",
    ) as refused:
        purchase_reassign_trainer(
            purchase_id=purchase.pk,
            trainer_id=sunday_only.pk,
            operator="olivia",
            reason="parent asked",
            now=LATER,
        )

    assert refused.value.field == "trainer"
    assert snapshot(purchase) == before


def test_reassigning_to_a_trainer_breaking_a_soft_rule_needs_an_override_reason(
    signed_post: SignedPost,
) -> None:
    purchase, _ = allocated(signed_post)
    far = helpers.trainer(
        courses=[purchase.course], name="Dev Iyer", longitude=77.9, max_travel_km=5
    )
    before = snapshot(purchase)

    with pytest.raises(OperationRefused, match="beyond their travel distance") as no:
        purchase_reassign_trainer(
            purchase_id=purchase.pk,
            trainer_id=far.pk,
            operator="olivia",
            reason="parent asked",
            now=LATER,
        )
    assert no.value.field == "override_reason"
    assert snapshot(purchase) == before

    purchase_reassign_trainer(
        purchase_id=purchase.pk,
        trainer_id=far.pk,
        operator="olivia",
        reason="parent asked",
        override_reason="Dev agreed on the phone",
        now=LATER,
    )

    current = TrainerAllocation.objects.get(purchase=purchase, status="active")
    assert (current.trainer_id, current.override_reason) == (
        far.pk,
        "Dev agreed on the phone",
    )
    [action] = operator_actions(purchase)
    assert "waiving: beyond their travel distance (Dev agreed on the phone)" in action


def test_reassigning_needs_a_reason_and_an_allocated_purchase(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post)
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    before = snapshot(purchase)

    with pytest.raises(OperationRefused, match="Say why"):
        purchase_reassign_trainer(
            purchase_id=purchase.pk, trainer_id=bina.pk, operator="o", reason=""
        )
    with pytest.raises(OperationRefused, match="already has this purchase"):
        purchase_reassign_trainer(
            purchase_id=purchase.pk, trainer_id=asha.pk, operator="o", reason="x"
        )
    assert snapshot(purchase) == before

    waiting = waitlisted(signed_post, helpers.course())
    with pytest.raises(OperationRefused, match="is waitlisted: nothing to re-assign"):
        purchase_reassign_trainer(
            purchase_id=waiting.pk, trainer_id=bina.pk, operator="o", reason="x"
        )


# --- release --------------------------------------------------------------------


def test_releasing_the_trainer_puts_the_purchase_back_on_the_waitlist(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post)
    before = version(purchase)

    result = purchase_release_trainer(
        purchase_id=purchase.pk,
        operator="olivia",
        reason="Asha cannot do Wednesdays any more",
        now=LATER,
    )

    assert result.status == Purchase.Status.WAITLISTED
    assert result.trainer_id is None
    assert result.status_reason == (
        "Asha Rao was released by olivia; waiting for another trainer."
    )
    assert not active_reservations(purchase)
    given_sessions_kept(purchase, asha)
    assert jobs("reallocate_waitlist")
    [action] = operator_actions(purchase)
    assert action == (
        "olivia released Asha Rao (4 upcoming sessions removed). "
        "Reason: Asha cannot do Wednesdays any more."
    )
    assert version(purchase) > before

    # The waitlist retry does not give it back to Asha; another trainer it does.
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=LATER)
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.WAITLISTED
    assert Rule.RELEASED.label in purchase.status_reason
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    allocation.purchase_allocate(purchase_id=purchase.pk, actor="test", now=LATER)
    purchase.refresh_from_db()
    assert purchase.trainer_id == bina.pk
    assert [r.sequence for r in active_reservations(purchase)] == list(range(4, 11))


def test_releasing_is_refused_without_a_reason_or_a_trainer(
    signed_post: SignedPost,
) -> None:
    purchase, _ = allocated(signed_post)
    before = snapshot(purchase)

    with pytest.raises(OperationRefused, match="Say why") as refused:
        purchase_release_trainer(purchase_id=purchase.pk, operator="o", reason=" ")

    assert refused.value.field == "reason"
    assert snapshot(purchase) == before
    waiting = waitlisted(signed_post, helpers.course())
    with pytest.raises(OperationRefused, match="nothing to release a trainer from"):
        purchase_release_trainer(purchase_id=waiting.pk, operator="o", reason="x")


# --- cancel ---------------------------------------------------------------------


def test_cancelling_ends_the_purchase_without_a_refund(
    signed_post: SignedPost,
) -> None:
    purchase, asha = allocated(signed_post)

    result = purchase_cancel(
        purchase_id=purchase.pk,
        operator="olivia",
        reason="family moved abroad; no refund agreed",
        now=LATER,
    )

    assert result.status == Purchase.Status.CANCELLED
    assert result.status_reason == (
        "Cancelled by olivia without a refund; 4 upcoming sessions cancelled."
    )
    assert Payment.objects.get(pk=purchase.payment_id).status == "succeeded"
    statuses = dict(
        TutoringSession.objects.filter(purchase=purchase).values_list(
            "sequence", "status"
        )
    )
    assert statuses == {
        **{n: "completed" for n in (1, 2, 3)},
        **{n: "cancelled" for n in (4, 5, 6, 7)},
    }
    assert not Reservation.objects.filter(
        trainer=asha, during__startswith__gte=LATER
    ).exists()
    assert jobs("reallocate_waitlist")
    [action] = operator_actions(purchase)
    assert action.endswith("Reason: family moved abroad; no refund agreed.")


def test_cancelling_a_refunded_purchase_is_refused(signed_post: SignedPost) -> None:
    purchase, _ = allocated(signed_post)
    purchase_cancel(purchase_id=purchase.pk, operator="o", reason="x", now=LATER)
    before = snapshot(purchase)

    with pytest.raises(OperationRefused, match="is cancelled: nothing to cancel"):
        purchase_cancel(purchase_id=purchase.pk, operator="o", reason="x", now=LATER)
    with pytest.raises(OperationRefused, match="Say why"):
        purchase_cancel(purchase_id=purchase.pk, operator="o", reason="")

    assert snapshot(purchase) == before


# --- note -----------------------------------------------------------------------


def test_a_note_goes_in_the_trace_and_changes_nothing_else(
    signed_post: SignedPost,
) -> None:
    purchase, _ = allocated(signed_post)
    before = snapshot(purchase)

    purchase_note_add(
        purchase_id=purchase.pk, operator="olivia", note="Mother called, all fine."
    )

    after = snapshot(purchase)
    assert after[-3] == ["Note by olivia: Mother called, all fine."]
    assert after[:-3] + after[-2:] == before[:-3] + before[-2:]
    with pytest.raises(OperationRefused, match="Write the note first"):
        purchase_note_add(purchase_id=purchase.pk, operator="olivia", note="  ")


# --- through the console: Operations acts, Support is refused ------------------------


def fix_url(purchase: Purchase) -> str:
    return f"/admin/fulfillment/purchase/{purchase.pk}/change/fix/"


def reassign_url(purchase: Purchase) -> str:
    return f"/admin/fulfillment/purchase/{purchase.pk}/reassign-trainer/"


POSTS = {
    "schedule": {
        "schedule-time_slot": "18:00",
        "schedule-start_date": "2030-01-07",
        "schedule-delivery_mode": "WEEKDAY_DAILY",
        "schedule-reason": "evenings",
    },
    "release": {"release-reason": "trainer asked"},
    "cancel": {"cancel-reason": "parent asked"},
    "note": {"note-note": "called back"},
}


@pytest.mark.parametrize("action", sorted(POSTS))
def test_support_is_refused_every_fix(
    client: Client, signed_post: SignedPost, action: str
) -> None:
    purchase, _ = allocated(signed_post)
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    sign_in(client, "Support")
    before = snapshot(purchase)

    assert client.get(fix_url(purchase)).status_code == 403
    posted = client.post(fix_url(purchase), {"action": action, **POSTS[action]})
    assert posted.status_code == 403
    assert client.get(reassign_url(purchase)).status_code == 403
    reassign = client.post(
        reassign_url(purchase), {"trainer": str(bina.pk), "reason": "x"}
    )
    assert reassign.status_code == 403
    assert snapshot(purchase) == before
    page = client.get(f"/admin/fulfillment/purchase/{purchase.pk}/change/")
    assert page.status_code == 200
    assert fix_url(purchase).encode() not in page.content


@pytest.mark.parametrize("action", sorted(POSTS))
def test_an_operator_without_that_permission_is_refused_that_fix(
    client: Client, signed_post: SignedPost, action: str
) -> None:
    purchase, _ = allocated(signed_post)
    # Every fix but this one.
    others = [
        f"fulfillment.{name}"
        for key, name in {
            "schedule": "change_purchase_schedule",
            "release": "release_trainer",
            "cancel": "cancel_purchase",
            "note": "add_purchase_note",
        }.items()
        if key != action
    ]
    sign_in(client, "Support", permissions=tuple(others))
    before = snapshot(purchase)

    posted = client.post(fix_url(purchase), {"action": action, **POSTS[action]})

    assert posted.status_code == 403
    assert snapshot(purchase) == before


def test_an_operator_changes_the_schedule_from_the_console(
    client: Client, signed_post: SignedPost
) -> None:
    purchase, _ = allocated(signed_post)
    sign_in(client, "Operations", username="olivia")
    page = client.get(f"/admin/fulfillment/purchase/{purchase.pk}/change/")
    assert fix_url(purchase).encode() in page.content

    response = client.post(
        fix_url(purchase), {"action": "schedule", **POSTS["schedule"]}
    )

    assert response.status_code == 302
    purchase.refresh_from_db()
    assert purchase.time_slot == dt.time(18, 0)
    [action] = operator_actions(purchase)
    assert action.startswith("olivia changed the schedule")


def test_a_refused_fix_shows_the_reason_on_the_form(
    client: Client, signed_post: SignedPost
) -> None:
    purchase, _ = allocated(signed_post)
    sign_in(client, "Operations")
    before = snapshot(purchase)

    response = client.post(
        fix_url(purchase),
        {"action": "schedule", **POSTS["schedule"], "schedule-time_slot": "16:00"},
    )

    assert response.status_code == 200
    assert b"That is already the purchase&#x27;s schedule." in response.content
    assert snapshot(purchase) == before


@pytest.mark.parametrize("action", ["release", "cancel", "note"])
def test_an_operator_releases_cancels_and_notes_from_the_console(
    client: Client, signed_post: SignedPost, action: str
) -> None:
    purchase, _ = allocated(signed_post)
    sign_in(client, "Operations", username="olivia")

    response = client.post(fix_url(purchase), {"action": action, **POSTS[action]})

    assert response.status_code == 302, response.content
    purchase.refresh_from_db()
    expected = {"release": "waitlisted", "cancel": "cancelled", "note": "allocated"}
    assert purchase.status == expected[action]
    assert len(operator_actions(purchase)) == 1


def test_an_operator_reassigns_from_the_verdict_table(
    client: Client, signed_post: SignedPost
) -> None:
    purchase, _ = allocated(signed_post)
    bina = helpers.trainer(courses=[purchase.course], name="Bina Das")
    helpers.trainer(courses=[purchase.course], name="Chitra Sen", weekdays=[6])
    sign_in(client, "Operations", username="olivia")

    page = client.get(reassign_url(purchase))
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-trainer="Bina Das"' in text
    assert 'data-trainer="Chitra Sen"' in text
    assert "not working on those days and hours" in text
    assert 'data-trainer="Asha Rao"' not in text  # the current trainer

    response = client.post(
        reassign_url(purchase), {"trainer": str(bina.pk), "reason": "parent asked"}
    )

    assert response.status_code == 302
    purchase.refresh_from_db()
    assert purchase.trainer_id == bina.pk
