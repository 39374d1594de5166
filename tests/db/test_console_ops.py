"""The console ops live in all day (#13): one search, contact fields, urgent
first, the waitlist SLA, alarms, the live fragment, CSV exports and filters,
discarding failed jobs, and pages that read the same everywhere."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from fulfillment import queue
from fulfillment.models import Payment, Purchase, Student, TraceEvent
from fulfillment.queue import names
from fulfillment.services.jobs import failed_jobs_discard
from fulfillment.services.operations import OperationRefused
from fulfillment.services.purchases import webhook_outcome_count
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import buy, jobs, sign_in, waitlisted

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def attention_payment(signed_post: SignedPost, **metadata: str) -> Payment:
    """A payment whose metadata names a course that does not exist."""
    fields = helpers.metadata_for(course=helpers.course(), **metadata)
    fields["course_id"] = "00000000-0000-4000-8000-000000000000"
    event = stripe_events.payment_intent_succeeded(metadata=fields)
    response = signed_post(event)
    assert response.json()["status"] == "needs_attention", response.content
    return Payment.objects.get(payment_intent=event["data"]["object"]["id"])


# --- the phone a payment brings ---------------------------------------------------


def test_the_phone_of_the_payment_is_stored_on_the_student_and_shown(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course(), student_phone="+91 98450 12345")
    sign_in(client, "Support")

    student = Student.objects.get(pk=purchase.student_id)
    shown = page(client, f"/admin/fulfillment/purchase/{purchase.pk}/change/")

    assert student.phone == "+919845012345"
    assert "anya.parent@example.com · +919845012345" in shown


def test_a_later_payment_fills_in_a_phone_the_first_lacked(
    signed_post: SignedPost,
) -> None:
    course = helpers.course()
    first = buy(signed_post, course)
    buy(
        signed_post,
        course,
        student_id=str(first.student_id),
        student_phone="98450 12345",
        time_slot="10:00",
    )

    assert Student.objects.get(pk=first.student_id).phone == "9845012345"


def test_a_bad_phone_makes_the_payment_need_attention_in_words(
    signed_post: SignedPost,
) -> None:
    fields = helpers.metadata_for(course=helpers.course(), student_phone="call me")
    response = signed_post(stripe_events.payment_intent_succeeded(metadata=fields))

    assert response.json()["status"] == "needs_attention"
    assert response.json()["reason"].startswith(
        "student_phone: 'call me' is not a phone number"
    )


# --- one search for anything ------------------------------------------------------


def test_search_finds_a_parent_by_phone_email_name_and_payment(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(
        signed_post,
        helpers.course(title="Chess"),
        student_name="Rohan Mehta",
        student_email="rohan.parent@example.com",
        student_phone="+91 98450 12345",
    )
    buy(signed_post, helpers.course(), student_name="Someone Else")
    sign_in(client, "Support")
    link = f"/admin/fulfillment/purchase/{purchase.pk}/change/"

    for query in (
        "98450 12345",
        "+919845012345",
        "rohan.parent@",
        "rohan meh",
        purchase.payment.payment_intent,
        str(purchase.pk),
    ):
        found = page(client, f"/admin/search/?q={query.replace('+', '%2B')}")
        assert link in found, query
        assert "Someone Else" not in found, query


def test_search_finds_a_payment_that_needs_attention_by_its_metadata(
    client: Client, signed_post: SignedPost
) -> None:
    payment = attention_payment(
        signed_post,
        student_name="Meera Pillai",
        student_email="meera.p@example.com",
        student_phone="+91 99000 11122",
    )
    sign_in(client, "Support")
    link = f"/admin/fulfillment/payment/{payment.pk}/change/"

    for query in ("99000 11122", "meera.p@example", "Meera Pil"):
        found = page(client, f"/admin/search/?q={query}")
        assert link in found, query
        assert "Payments that need attention (no student yet) (1)" in found


def test_search_finds_trainers_and_says_so_when_nothing_matches(
    client: Client,
) -> None:
    trainer = helpers.trainer(courses=[helpers.course()], name="Asha Rao")
    sign_in(client, "Support")

    assert f"/admin/fulfillment/trainer/{trainer.pk}/change/" in page(
        client, "/admin/search/?q=asha"
    )
    assert "Nothing matches “zzz”" in page(client, "/admin/search/?q=zzz")


def test_every_list_searches_contacts_and_attention_metadata(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course(), student_phone="+91 98450 12345")
    payment = attention_payment(signed_post, student_phone="+91 99000 11122")
    sign_in(client, "Support")

    purchases = page(client, "/admin/fulfillment/purchase/?q=98450")
    payments = page(client, "/admin/fulfillment/payment/?q=99000")

    assert f"/admin/fulfillment/purchase/{purchase.pk}/change/" in purchases
    assert f"/admin/fulfillment/payment/{payment.pk}/change/" in payments


def test_search_is_refused_to_staff_without_any_view_permission(
    client: Client,
) -> None:
    sign_in(client)

    response = client.get("/admin/search/?q=a")

    assert response.status_code == 403
    assert "Back to where you were" in response.content.decode()
    assert "Go to the dashboard" in response.content.decode()


# --- urgent first, the waitlist SLA -----------------------------------------------


def test_waiting_purchases_show_how_soon_they_start(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Robotics")
    today = timezone.localdate()
    soon = waitlisted(
        signed_post,
        course,
        student_name="Soon Student",
        delivery_mode="WEEKDAY_DAILY",
        start_date=(
            today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7)
        ).isoformat(),
    )
    passed = waitlisted(
        signed_post,
        course,
        student_name="Late Student",
        start_date=(today - dt.timedelta(days=10)).isoformat(),
    )
    sign_in(client, "Operations")

    pending = page(client, "/admin/")
    rows = pending.split('data-purchase="')

    assert pending.index("Late Student") < pending.index("Soon Student")
    late_row = next(row for row in rows if row.startswith(str(passed.pk)))
    soon_row = next(row for row in rows if row.startswith(str(soon.pk)))
    assert "start date passed" in late_row
    assert "starts in" in soon_row or "starts tomorrow" in soon_row


def test_a_waitlisted_purchase_past_the_sla_fails_doctor_and_turns_red(
    client: Client, signed_post: SignedPost, settings: Any
) -> None:
    settings.WAITLIST_SLA_HOURS = 24
    purchase = waitlisted(signed_post, helpers.course(title="Robotics"))
    Payment.objects.filter(pk=purchase.payment_id).update(
        created_at=timezone.now() - dt.timedelta(hours=25)
    )
    # A recent retry or reprocess does not restart the clock.
    Purchase.objects.filter(pk=purchase.pk).update(created_at=timezone.now())
    sign_in(client, "Operations")
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command("doctor", stdout=out)
    dashboard = page(client, "/admin/")

    assert "[FAIL] waitlist SLA" in out.getvalue()
    assert "1 waitlisted longer than 24 h since payment" in out.getvalue()
    assert "1 purchase(s) waitlisted for over 24 h since payment." in dashboard
    assert "over SLA" in dashboard


def test_a_waitlisted_purchase_within_the_sla_passes(
    signed_post: SignedPost, settings: Any
) -> None:
    settings.WAITLIST_SLA_HOURS = 24
    waitlisted(signed_post, helpers.course())
    out = io.StringIO()

    with pytest.raises(CommandError):  # no worker: other checks fail
        call_command("doctor", stdout=out)

    assert "[ OK ] waitlist SLA" in out.getvalue()


# --- short reasons ------------------------------------------------------------------


def test_the_dashboard_reads_the_headline_and_the_purchase_page_the_breakdown(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course(title="Python for Kids")
    helpers.trainer(courses=[course], name="Meera Nair", max_travel_km=0.5)
    purchase = waitlisted(signed_post, course)
    sign_in(client, "Operations")

    row = page(client, "/admin/").split(f'data-purchase="{purchase.pk}"')[1]
    row = row.split("</tr>")[0]
    detail = page(client, f"/admin/fulfillment/purchase/{purchase.pk}/change/")

    headline = "No trainer within 0.5 km; nearest Meera Nair at 1.1 km."
    assert f">{headline}</span>" in row
    assert headline in detail
    assert "No trainer fits: 1 of 1 trainers for Python for Kids are beyond" in detail


def test_repeated_cache_refreshes_fold_into_one_trace_line(
    client: Client, signed_post: SignedPost, run_worker: Callable[..., None]
) -> None:
    course = helpers.course()
    helpers.trainer(courses=[course])
    purchase = buy(signed_post, course)
    run_worker()
    for _ in range(3):
        # Three more refreshes of the student's learnings, each run to the end.
        queue.defer(names.REFRESH_LEARNINGS, student_id=str(purchase.student_id))
        run_worker()
    sign_in(client, "Operations")

    detail = page(client, f"/admin/fulfillment/purchase/{purchase.pk}/change/")

    refreshes = len(jobs("refresh_learnings", status="succeeded"))
    assert refreshes >= 3
    assert f"{refreshes} jobs refresh_learnings, the last #" in detail
    assert detail.count("refresh_learnings") == 1


# --- alarms and the live fragment -------------------------------------------------


def test_refused_signatures_in_the_last_hour_are_an_alarm(client: Client) -> None:
    sign_in(client, "Operations")
    assert "signatures are being refused" not in page(client, "/admin/")

    webhook_outcome_count(outcome="invalid_signature")

    assert "Stripe webhook signatures are being refused" in page(client, "/admin/")


def test_old_refused_signatures_are_no_alarm(client: Client) -> None:
    webhook_outcome_count(outcome="invalid_signature")
    with connection.cursor() as cursor:
        # The trigger keeps last_at on every write; age it as time would.
        cursor.execute(
            "ALTER TABLE fulfillment_webhookoutcomecount DISABLE TRIGGER ALL"
        )
        cursor.execute(
            "UPDATE fulfillment_webhookoutcomecount "
            "SET last_at = now() - interval '2 hours'"
        )
        cursor.execute("ALTER TABLE fulfillment_webhookoutcomecount ENABLE TRIGGER ALL")
    sign_in(client, "Operations")

    assert "signatures are being refused" not in page(client, "/admin/")


def test_the_live_fragment_holds_the_modules_and_the_alarms(
    client: Client, signed_post: SignedPost
) -> None:
    waitlisted(signed_post, helpers.course(title="Robotics"), student_name="Ira")
    sign_in(client, "Operations")

    fragment = page(client, "/admin/dashboard/live/")

    assert "No worker is alive" in fragment
    assert "Pending allocations (1)" in fragment
    assert "Ira" in fragment
    assert "<html" not in fragment


def test_the_live_fragment_needs_a_staff_login(client: Client) -> None:
    response = client.get("/admin/dashboard/live/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_after_assigning_with_no_worker_the_message_says_so(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    purchase = waitlisted(signed_post, course)
    trainer = helpers.trainer(courses=[course], name="Asha Rao")
    sign_in(client, "Operations")

    response = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/",
        {"trainer": str(trainer.pk), "reason": ""},
        follow=True,
    )

    text = html.unescape(response.content.decode())
    assert "No live worker serves the sessions queue" in text
    assert "Sessions are being created" not in text


# --- CSV exports and filters ------------------------------------------------------


def rows_of(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_the_purchase_list_exports_as_filtered(
    client: Client, signed_post: SignedPost
) -> None:
    chess, robotics = helpers.course(title="Chess"), helpers.course(title="Robotics")
    kept = buy(signed_post, chess, student_name="Kept", student_phone="+91 98450 12345")
    buy(signed_post, robotics, student_name="Filtered Out")
    sign_in(client, "Support")

    listing = page(client, f"/admin/fulfillment/purchase/?course__id__exact={chess.pk}")
    rows = rows_of(
        client.get(
            f"/admin/fulfillment/purchase/export.csv?course__id__exact={chess.pk}"
        )
    )

    assert f"export.csv?course__id__exact={chess.pk}" in listing
    assert [row["student"] for row in rows] == ["Kept"]
    assert rows[0]["phone"] == "+919845012345"
    assert rows[0]["payment_intent"] == kept.payment.payment_intent


def test_the_payment_list_exports_by_date_range_and_the_action_exports_a_choice(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    old = buy(signed_post, course, student_name="Old")
    new = buy(signed_post, course, student_name="New", time_slot="10:00")
    Payment.objects.filter(pk=old.payment_id).update(
        created_at=timezone.now() - dt.timedelta(days=40)
    )
    sign_in(client, "Support")
    since = (timezone.localdate() - dt.timedelta(days=7)).isoformat()

    ranged = rows_of(
        client.get(f"/admin/fulfillment/payment/export.csv?created_at__from={since}")
    )
    chosen = rows_of(
        client.post(
            "/admin/fulfillment/payment/",
            {"action": "export_csv_action", "_selected_action": [str(old.payment_id)]},
        )
    )

    assert [row["payment_intent"] for row in ranged] == [new.payment.payment_intent]
    assert [row["payment_intent"] for row in chosen] == [old.payment.payment_intent]


def test_a_formula_in_a_name_is_neutralised_in_the_csv(
    client: Client, signed_post: SignedPost
) -> None:
    buy(signed_post, helpers.course(), student_name="=HYPERLINK(1)")
    sign_in(client, "Support")

    rows = rows_of(client.get("/admin/fulfillment/purchase/export.csv"))

    assert rows[0]["student"] == "'=HYPERLINK(1)"


def test_the_urgency_filter_lists_purchases_past_the_sla(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    late = waitlisted(signed_post, course, student_name="Late One")
    waitlisted(signed_post, course, student_name="Fresh One", time_slot="10:00")
    Payment.objects.filter(pk=late.payment_id).update(
        created_at=timezone.now() - dt.timedelta(days=3)
    )
    sign_in(client, "Support")

    listing = page(client, "/admin/fulfillment/purchase/?urgency=sla")

    assert "Late One" in listing
    assert "Fresh One" not in listing


# --- discarding failed jobs -------------------------------------------------------


def failed_allocation_job(signed_post: SignedPost) -> tuple[Purchase, int]:
    purchase = buy(signed_post, helpers.course())
    (job,) = jobs("allocate_trainer")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job.id]
        )
    return purchase, job.id


def test_a_failed_job_is_discarded_with_a_reason_in_the_trace(
    signed_post: SignedPost,
) -> None:
    purchase, job_id = failed_allocation_job(signed_post)

    discarded = failed_jobs_discard(
        job_ids=[job_id], operator="olivia", reason="duplicate of a refunded order"
    )

    assert discarded == 1
    assert jobs(id=job_id)[0].status == "cancelled"
    assert TraceEvent.objects.filter(
        purchase=purchase,
        kind=TraceEvent.Kind.OPERATOR_ACTION,
        actor="olivia",
        message__endswith="(allocate_trainer): duplicate of a refunded order",
    ).exists()


def test_discarding_needs_a_reason_and_leaves_other_jobs_alone(
    signed_post: SignedPost,
) -> None:
    _, job_id = failed_allocation_job(signed_post)
    waiting = buy(signed_post, helpers.course())
    (todo,) = jobs("allocate_trainer", args__purchase_id=str(waiting.pk))

    with pytest.raises(OperationRefused):
        failed_jobs_discard(job_ids=[job_id], operator="olivia", reason="  ")
    discarded = failed_jobs_discard(
        job_ids=[job_id, todo.id], operator="olivia", reason="not needed"
    )

    assert discarded == 1
    assert jobs(id=todo.id)[0].status == "todo"


def test_the_dashboard_discards_a_group_for_operations_not_for_support(
    client: Client, signed_post: SignedPost
) -> None:
    _, job_id = failed_allocation_job(signed_post)
    sign_in(client, "Support", username="sam")

    refused = client.post(
        "/admin/fulfillment/jobfailure/discard/", {"job": [job_id], "reason": "x"}
    )
    assert refused.status_code == 403
    assert jobs(id=job_id)[0].status == "failed"

    sign_in(client, "Operations", username="olivia")
    done = client.post(
        "/admin/fulfillment/jobfailure/discard/",
        {"job": [job_id], "reason": "the payment was refunded", "next": "/admin/"},
        follow=True,
    )
    assert "1 failed job(s) discarded" in done.content.decode()
    assert jobs(id=job_id)[0].status == "cancelled"


# --- readable everywhere ----------------------------------------------------------


def test_times_read_in_the_service_zone_with_its_label(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course())
    sign_in(client, "Support")

    detail = page(client, f"/admin/fulfillment/purchase/{purchase.pk}/change/")
    listing = page(client, "/admin/fulfillment/purchase/")

    stamp = timezone.localtime(purchase.created_at)
    shown = f"{stamp:%a} {stamp.day} {stamp:%b %Y, %H:%M} IST"
    assert shown in detail
    assert shown in listing


def test_the_trainer_form_has_weekday_boxes_and_errors_in_words(
    client: Client,
) -> None:
    course = helpers.course()
    trainer = helpers.trainer(courses=[course])
    sign_in(client, "Operations")
    url = f"/admin/fulfillment/trainer/{trainer.pk}/change/"

    form_page = page(client, url)
    response = client.post(
        url,
        {
            "name": trainer.name,
            "email": "",
            "is_active": "on",
            "courses": [str(course.pk)],
            "latitude": "95",
            "longitude": trainer.longitude,
            "max_travel_km": "-1",
            "weekdays": [],
            "work_start": "18:00",
            "work_end": "09:00",
            "max_active_students": 5,
        },
    )

    assert 'type="checkbox" name="weekdays" value="0"' in form_page
    assert "Monday" in form_page
    text = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert "Tick at least one day the trainer works." in text
    assert "The working day must end after it starts (18:00)." in text
    assert "Latitude goes from -90 to 90 degrees." in text
    assert "Travel distance cannot be negative." in text
    assert "Constraint" not in text


def test_view_site_leads_to_the_dashboard_and_history_shows_the_trace(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = buy(signed_post, helpers.course(title="Chess"), student_name="Ira")
    sign_in(client, "Support")

    history = page(client, f"/admin/fulfillment/purchase/{purchase.pk}/history/")

    assert '<a href="/admin/">View site</a>' in history
    assert (
        ">Chess for Ira</a>\n  \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} History"
        in history
    )
    assert "Purchase of Chess for 4,999.00 INR recorded" in history
