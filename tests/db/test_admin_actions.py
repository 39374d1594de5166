"""The console's pages and actions through the Django test client, as an
Operations user: each action reaches its service and leaves its trace."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from fulfillment.domain.fit import Rule
from fulfillment.models import (
    Payment,
    Purchase,
    TraceEvent,
    TrainerAllocation,
    WebhookDelivery,
)
from fulfillment.services.allocation import purchase_allocate
from fulfillment.services.sessions import sessions_materialise
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import buy, jobs, sign_in, waitlisted

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]


def text(response: Any) -> str:
    return html.unescape(bytes(response.content).decode())


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def candidate_rows(page: str) -> list[str]:
    """The trainer names on the Assign trainer page, in order."""
    return re.findall(r'<tr class="[^"]*" data-trainer="([^"]+)">', page)


# --- assign trainer ---------------------------------------------------------------


def test_the_assign_page_lists_fitting_trainers_first_and_the_rule_each_other_breaks(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    helpers.trainer(courses=[course], name="Off Duty", work_end="16:30")
    helpers.trainer(courses=[course], name="Far Away", max_travel_km=0.5)
    helpers.trainer(courses=[course], name="Second", longitude=77.64)
    helpers.trainer(courses=[course], name="Best")
    helpers.trainer(courses=[helpers.course()], name="Other Course")
    purchase = buy(signed_post, course)
    sign_in(client, "Operations")

    page = text(
        client.get(f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/")
    )

    assert candidate_rows(page) == [
        "Best",
        "Second",
        "Far Away",
        "Off Duty",
        "Other Course",
    ]
    assert "best fit" in page
    assert "Assign Best" in page and "Assign Second" in page
    assert Rule.TOO_FAR.label in page
    assert "1.1 km away, travels up to 0.5 km" in page
    assert Rule.NOT_WORKING.label in page
    assert "sessions 16:00\N{EN DASH}17:00, works 09:00\N{EN DASH}16:30" in page
    assert Rule.NOT_TEACHING.label in page
    # Soft rules only: a reason box; hard rules: no way to choose them.
    assert page.count('name="reason"') == 1
    assert page.count("cannot be assigned") == 2
    assert "1 other trainer does not teach Robotics" in page


def test_choosing_a_fitting_trainer_allocates_and_starts_the_sessions(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course], name="Asha Rao")
    purchase = waitlisted(signed_post, helpers.course())
    Purchase.objects.filter(pk=purchase.pk).update(course=course)
    sign_in(client, "Operations", username="olivia")

    response = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/",
        {"trainer": str(trainer.pk)},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == (
        f"/admin/fulfillment/purchase/{purchase.pk}/change/"
    )
    assert any("Allocated to Asha Rao" in m for m in messages_of(response))
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.ALLOCATED
    assert TrainerAllocation.objects.get(purchase=purchase).assigned_by == "olivia"
    assert jobs("materialise_sessions", args={"purchase_id": str(purchase.pk)})
    page = text(response)
    assert "olivia assigned Asha Rao." in page  # the trace on the purchase page


def test_a_soft_rule_needs_a_reason_which_is_recorded(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    far = helpers.trainer(courses=[course], name="Far", max_travel_km=0.5)
    purchase = buy(signed_post, course)
    sign_in(client, "Operations", username="olivia")
    url = f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/"

    refused = client.post(url, {"trainer": str(far.pk), "reason": ""})

    assert refused.status_code == 200
    assert any("Say why they can take it anyway" in m for m in messages_of(refused))
    assert not TrainerAllocation.objects.filter(purchase=purchase).exists()

    client.post(url, {"trainer": str(far.pk), "reason": "Agreed on the phone"})

    row = TrainerAllocation.objects.get(purchase=purchase)
    assert (row.assigned_by, row.override_reason) == ("olivia", "Agreed on the phone")


def test_a_hard_rule_is_refused_whatever_the_reason(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    inactive = helpers.trainer(courses=[course], name="Gone", is_active=False)
    purchase = buy(signed_post, course)
    sign_in(client, "Operations")

    response = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/",
        {"trainer": str(inactive.pk), "reason": "Please"},
    )

    assert any("Gone cannot take this purchase" in m for m in messages_of(response))
    assert not TrainerAllocation.objects.filter(purchase=purchase).exists()


def test_the_assign_action_opens_the_assign_page_for_one_purchase(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    first, second = buy(signed_post, course), buy(signed_post, course)
    sign_in(client, "Operations")

    one = client.post(
        "/admin/fulfillment/purchase/",
        {"action": "assign_trainer_action", "_selected_action": [str(first.pk)]},
    )
    two = client.post(
        "/admin/fulfillment/purchase/",
        {
            "action": "assign_trainer_action",
            "_selected_action": [str(first.pk), str(second.pk)],
        },
        follow=True,
    )

    assert one["Location"] == f"/admin/fulfillment/purchase/{first.pk}/assign-trainer/"
    assert "Choose one purchase to assign a trainer to." in messages_of(two)


# --- retry allocation -------------------------------------------------------------


def test_retry_now_from_the_dashboard_allocates_and_comes_back(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    purchase = waitlisted(signed_post, course)
    helpers.trainer(courses=[course], name="New Hire")
    sign_in(client, "Operations", username="olivia")

    response = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/retry-allocation/",
        {"next": "/admin/"},
    )

    assert response["Location"] == "/admin/"
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.ALLOCATED
    assert TraceEvent.objects.filter(
        purchase=purchase, kind=TraceEvent.Kind.OPERATOR_ACTION, actor="olivia"
    ).exists()


def test_retry_never_redirects_off_site(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    sign_in(client, "Operations")

    response = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/retry-allocation/",
        {"next": "https://evil.example.com/"},
    )

    assert response["Location"] == f"/admin/fulfillment/purchase/{purchase.pk}/change/"


def test_the_retry_action_retries_every_selected_waiting_purchase(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    waiting = [waitlisted(signed_post, course, time_slot=t) for t in ("10:00", "12:00")]
    helpers.trainer(courses=[course])
    sign_in(client, "Operations")

    response = client.post(
        "/admin/fulfillment/purchase/",
        {
            "action": "retry_allocation_action",
            "_selected_action": [str(p.pk) for p in waiting],
        },
        follow=True,
    )

    assert "Allocation retried: 2 allocated." in messages_of(response)
    assert Purchase.objects.filter(status=Purchase.Status.ALLOCATED).count() == 2


# --- reprocess a payment ----------------------------------------------------------


def flagged(signed_post: SignedPost, **metadata: str) -> Payment:
    event = stripe_events.payment_intent_succeeded(
        metadata=helpers.metadata_for(course=helpers.course(), **metadata)
    )
    assert signed_post(event).json()["status"] == "needs_attention"
    return Payment.objects.get(payment_intent=event["data"]["object"]["id"])


def test_the_reprocess_page_shows_the_reason_and_the_stored_values(
    client: Client, signed_post: SignedPost
) -> None:
    payment = flagged(signed_post, time_slot="25:00")
    sign_in(client, "Operations")

    page = text(client.get(f"/admin/fulfillment/payment/{payment.pk}/reprocess/"))

    assert f"Could not be used: {payment.attention_reason}" in page
    assert 'value="25:00"' in page
    assert "The payment carried “25:00”: this is what could not be used." in page


def test_corrected_metadata_becomes_a_purchase(
    client: Client, signed_post: SignedPost
) -> None:
    payment = flagged(signed_post, time_slot="25:00")
    form = {**payment.metadata, "time_slot": "17:00"}
    sign_in(client, "Operations", username="olivia")

    response = client.post(f"/admin/fulfillment/payment/{payment.pk}/reprocess/", form)

    purchase = Purchase.objects.get(payment=payment)
    assert response["Location"] == f"/admin/fulfillment/purchase/{purchase.pk}/change/"
    assert purchase.time_slot.hour == 17
    assert jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    assert TraceEvent.objects.get(
        payment=payment, kind=TraceEvent.Kind.OPERATOR_ACTION
    ).actor == ("olivia")


def test_still_wrong_metadata_is_shown_on_its_field_and_nothing_is_saved(
    client: Client, signed_post: SignedPost
) -> None:
    payment = flagged(signed_post, time_slot="25:00")
    form = {**payment.metadata, "time_slot": "26:00"}
    sign_in(client, "Operations")

    response = client.post(f"/admin/fulfillment/payment/{payment.pk}/reprocess/", form)

    assert response.status_code == 200
    assert "time_slot" in response.context["form"].errors
    payment.refresh_from_db()
    assert payment.metadata["time_slot"] == "25:00"
    assert not Purchase.objects.filter(payment=payment).exists()


# --- failed jobs ------------------------------------------------------------------


def test_retrying_a_failed_job_group_requeues_its_jobs(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    [job] = jobs("allocate_trainer", args={"purchase_id": str(purchase.pk)})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job.id]
        )
    sign_in(client, "Operations")

    response = client.post(
        "/admin/fulfillment/jobfailure/retry/",
        {"job": [str(job.id)], "next": "/admin/"},
        follow=True,
    )

    assert "1 failed job(s) queued again." in messages_of(response)
    assert jobs(id=job.id)[0].status == "todo"


# --- pages ------------------------------------------------------------------------


def test_the_purchase_page_explains_shows_the_trace_and_offers_the_fixes(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    purchase = waitlisted(signed_post, course, student_name="Ira")
    sign_in(client, "Operations")

    page = text(client.get(f"/admin/fulfillment/purchase/{purchase.pk}/change/"))

    assert "Robotics for Ira" in page
    assert "No trainer teaches Robotics" in page
    assert "Stripe payment_intent.succeeded" in page  # the trace timeline
    assert "allocation_pending → waitlisted" in page
    assert f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/" in page
    assert "Retry allocation now" in page


def test_the_purchase_page_of_an_allocated_purchase_shows_its_sessions(
    client: Client, signed_post: SignedPost
) -> None:

    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase = buy(signed_post, course)
    purchase_allocate(purchase_id=purchase.pk, actor="test")
    sessions_materialise(purchase_id=purchase.pk)
    sign_in(client, "Operations")

    page = text(client.get(f"/admin/fulfillment/purchase/{purchase.pk}/change/"))

    assert page.count('<td class="field-sequence">') == 7
    assert "Assign trainer…" not in page
    assert "automatically" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=waitlisted", {"Waiting Wu"}),
        ("status__exact=allocated", {"Allocated Ade"}),
        ("q=Wu", {"Waiting Wu"}),
        ("q=ade%40example.com", {"Allocated Ade"}),
    ],
)
def test_purchases_can_be_filtered_and_searched(
    client: Client, signed_post: SignedPost, query: str, expected: set[str]
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course], max_active_students=1)
    allocated = buy(
        signed_post,
        course,
        student_name="Allocated Ade",
        student_email="ade@example.com",
    )
    purchase_allocate(purchase_id=allocated.pk, actor="test")
    waitlisted(signed_post, course, student_name="Waiting Wu")
    sign_in(client, "Operations")

    response = client.get(f"/admin/fulfillment/purchase/?{query}")

    shown = {str(p.student.name) for p in response.context["cl"].result_list}
    assert shown == expected


def test_purchases_can_be_found_by_payment_intent_course_and_trainer(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course])
    purchase = buy(signed_post, course)
    purchase_allocate(purchase_id=purchase.pk, actor="test")
    buy(signed_post, helpers.course())
    sign_in(client, "Operations")

    for query in (
        f"q={purchase.payment.payment_intent}",
        f"course__id__exact={course.pk}",
        f"trainer__id__exact={trainer.pk}",
    ):
        response = client.get(f"/admin/fulfillment/purchase/?{query}")
        assert [p.pk for p in response.context["cl"].result_list] == [purchase.pk]


def test_the_trainer_pages_show_load_and_upcoming_sessions(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    trainer = helpers.trainer(courses=[course], name="Asha Rao")
    purchase = buy(signed_post, course, student_name="Ira")
    purchase_allocate(purchase_id=purchase.pk, actor="test")
    sign_in(client, "Operations")

    listing = text(client.get("/admin/fulfillment/trainer/"))
    page = text(client.get(f"/admin/fulfillment/trainer/{trainer.pk}/change/"))

    assert "1 of 5 (20%)" in listing
    assert "Robotics" in listing
    assert "Ira · Robotics" in page  # active allocations
    assert page.count("(session ") == 10  # upcoming reservations


def test_changing_a_trainer_retries_the_waitlist(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course], is_active=False)
    sign_in(client, "Operations")
    form = {
        "name": trainer.name,
        "email": "",
        "is_active": "on",
        "courses": [str(course.pk)],
        "latitude": trainer.latitude,
        "longitude": trainer.longitude,
        "max_travel_km": trainer.max_travel_km,
        "weekdays": [str(day) for day in range(7)],
        "work_start": "09:00",
        "work_end": "20:00",
        "max_active_students": 5,
    }

    response = client.post(f"/admin/fulfillment/trainer/{trainer.pk}/change/", form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    trainer.refresh_from_db()
    assert trainer.is_active
    assert jobs("reallocate_waitlist", status="todo")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/fulfillment/course/",
        "/admin/fulfillment/student/",
        "/admin/fulfillment/payment/",
        "/admin/fulfillment/payment/?attention=yes",
        "/admin/fulfillment/tutoringsession/",
        "/admin/fulfillment/webhookdelivery/",
        "/admin/fulfillment/jobfailure/",
        "/admin/procrastinate/procrastinatejob/",
        # The dashboard's links.
        "/admin/fulfillment/purchase/?status__in=allocation_pending%2Cwaitlisted",
        "/admin/procrastinate/procrastinatejob/?status__exact=failed",
        "/admin/procrastinate/procrastinatejob/?id__in=1%2C2",
        "/admin/procrastinate/procrastinatejob/?queue_name=allocation",
    ],
)
def test_every_console_page_opens(
    client: Client, signed_post: SignedPost, path: str
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase = buy(signed_post, course)
    purchase_allocate(purchase_id=purchase.pk, actor="test")
    sign_in(client, "Operations")

    assert client.get(path).status_code == 200


def test_webhook_deliveries_are_read_only(
    client: Client, signed_post: SignedPost
) -> None:
    buy(signed_post, helpers.course())
    delivery = WebhookDelivery.objects.get()
    sign_in(client, "Operations")
    url = f"/admin/fulfillment/webhookdelivery/{delivery.pk}/change/"

    page = text(client.get(url))
    post = client.post(url, {"outcome": "duplicate"})

    assert 'name="_save"' not in page
    assert post.status_code == 403
    delivery.refresh_from_db()
    assert delivery.outcome == "accepted"


def test_the_menu_groups_the_fulfilment_pages(client: Client) -> None:
    sign_in(client, "Operations")

    page = text(client.get("/admin/"))

    menu = page[page.index('id="navigation-menu"') :]
    for group in ("Fulfilment", "Catalogue", "Jobs"):
        assert group in menu
    for link in (
        "/admin/fulfillment/purchase/",
        "/admin/fulfillment/trainer/",
        "/admin/procrastinate/procrastinatejob/",
    ):
        assert link in menu
