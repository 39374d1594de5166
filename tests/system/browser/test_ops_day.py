"""A day of an operations lead in the console (#13), in a real Chromium against
a live server and a real worker: find parents by phone and email (one whose
payment needs attention), export a CSV, watch the dashboard update by itself
when a payment arrives and when the worker stops; as Support, every change is
refused. Each step is photographed at 1440 px and at 390 px."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from fulfillment.models import Purchase, TutoringSession
from fulfillment.testing import stripe_events
from tests import helpers
from tests.helpers import WorkerProcess, ensure_groups, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDE, PHONE = 1440, 390
# Everything shown: the header (user tools, admin_tools menu) and the content.
WIDEST = """Math.max(0,
  ...[...document.querySelectorAll('body *')].filter(e => e.offsetParent !== null)
     .map(e => e.getBoundingClientRect().right)) - window.innerWidth"""
OFFENDERS = """[...document.querySelectorAll('body *')]
  .filter(e => e.offsetParent !== null
     && e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className)"""


def user(username: str, group: str) -> None:
    ensure_groups()
    created = User.objects.create_user(
        username=username, password="a-long-test-password", is_staff=True
    )
    created.groups.add(Group.objects.get(name=group))


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")


def shoot(page: Page, artifacts: Path, name: str) -> None:
    """The page at both widths; at phone width no content reaches past the
    viewport's right edge."""
    page.set_viewport_size({"width": WIDE, "height": 900})
    page.screenshot(path=artifacts / f"ops-day-{name}-1440.png", full_page=True)
    page.set_viewport_size({"width": PHONE, "height": 844})
    # Widest right edge of anything shown, against the viewport (scrollWidth
    # alone misses what a parent clips).
    overflow = page.evaluate(WIDEST)
    offenders = page.evaluate(OFFENDERS)
    page.screenshot(path=artifacts / f"ops-day-{name}-390.png", full_page=True)
    page.set_viewport_size({"width": WIDE, "height": 900})
    assert overflow <= 1, f"{name}: {overflow}px too wide at 390 px: {offenders}"


def test_a_day_in_the_console(
    live_server: Any,
    worker_process: Callable[..., WorkerProcess],
    signed_post: Callable[..., Any],
    page: Page,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    chess = helpers.course(title="Chess")
    asha = helpers.trainer(courses=[chess], name="Asha Rao")
    # Further away: Rohan gets Asha first, and Vikram when she leaves.
    vikram = helpers.trainer(
        courses=[chess], name="Vikram Iyer", longitude=helpers.HOME[1] + 0.05
    )
    rohan = helpers.buy(
        signed_post,
        chess,
        student_name="Rohan Mehta",
        student_email="rohan.parent@example.com",
        student_phone="+91 98450 12345",
    )
    robotics = helpers.course(title="Robotics")
    helpers.buy(signed_post, robotics, student_name="Kabir Shah")
    fields = helpers.metadata_for(
        course=chess,
        student_name="Meera Pillai",
        student_email="meera.p@example.com",
        student_phone="+91 99000 11122",
        course_id="00000000-0000-4000-8000-000000000000",
    )
    attention = signed_post(stripe_events.payment_intent_succeeded(metadata=fields))
    assert attention.json()["status"] == "needs_attention"
    user("olivia", "Operations")
    user("sam", "Support")
    worker = worker_process()
    wait_until(
        lambda: helpers.jobs("allocate_trainer", status="succeeded"),
        timeout=20,
        what="the worker to allocate",
    )

    # 1. The dashboard: alarms on top (none), one search box.
    log_in(page, base, "olivia")
    expect(page.locator(".ops-alarms")).to_contain_text("No alarms")
    shoot(page, artifacts, "1-dashboard")
    expect(page.locator("#navigation-menu")).to_contain_text("Fulfilment")

    # 2. A parent calls: found by phone, typed as they say it.
    page.locator(".ops-search input[type=search]").first.fill("98450 12345")
    page.locator(".ops-search button").first.click()
    purchases = page.locator('section[data-kind="purchases"]')
    expect(purchases).to_contain_text("Chess for Rohan Mehta")
    shoot(page, artifacts, "2-search-by-phone")
    purchases.get_by_role("link", name="Chess for Rohan Mehta").click()
    expect(page.locator(".field-contact")).to_contain_text(
        "rohan.parent@example.com · +919845012345"
    )
    expect(page.locator(".breadcrumbs")).to_contain_text("Chess for Rohan Mehta")
    shoot(page, artifacts, "3-purchase")

    # 3. By email, from the search box every page has.
    page.locator("#header .ops-menu-search input").fill("rohan.parent@")
    page.locator("#header .ops-menu-search input").press("Enter")
    expect(page.locator('section[data-kind="students"]')).to_contain_text("Rohan Mehta")
    shoot(page, artifacts, "4-search-by-email")

    # 4. A parent whose payment needs attention: only its metadata knows her.
    page.goto(f"{base}/admin/search/?q=99000+11122")
    found = page.locator('section[data-kind="attention_payments"]')
    expect(found).to_contain_text("Meera Pillai · meera.p@example.com")
    shoot(page, artifacts, "5-search-attention")

    # 5. Export the filtered purchase list.
    page.goto(f"{base}/admin/fulfillment/purchase/?course__id__exact={chess.pk}")
    with page.expect_download() as download:
        page.locator("a.ops-export").click()
    text = Path(download.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["student"] for row in rows] == ["Rohan Mehta"]
    assert rows[0]["phone"] == "+919845012345"
    shoot(page, artifacts, "6-purchases-filtered")

    # 6. Rohan's parent asks for 5 PM instead of 4 PM: the schedule changes,
    # the trainer is checked against it, and the sessions follow.
    assert Purchase.objects.get(pk=rohan.pk).trainer_id == asha.pk
    page.goto(f"{base}/admin/fulfillment/purchase/{rohan.pk}/change/fix/")
    schedule = page.locator('form[data-action="schedule"]')
    schedule.locator('input[name="schedule-time_slot"]').fill("17:00")
    schedule.locator('input[name="schedule-reason"]').fill("parent asked on the phone")
    schedule.locator('input[type="submit"]').click()
    page.wait_for_load_state()
    expect(page.locator(".messagelist")).to_be_visible()

    def sessions_at_five() -> bool:
        purchase = Purchase.objects.get(pk=rohan.pk)
        upcoming = TutoringSession.objects.filter(purchase=purchase, status="scheduled")
        return (
            purchase.status == "allocated"
            and purchase.time_slot.hour == 17
            and upcoming.exists()
            and all(timezone.localtime(s.starts_at).hour == 17 for s in upcoming)
        )

    wait_until(sessions_at_five, timeout=30, what="the sessions to move to 5 PM")
    shoot(page, artifacts, "7-slot-changed")

    # 7. Asha leaves: deactivated in the console, her student moves to Vikram.
    page.goto(f"{base}/admin/fulfillment/trainer/{asha.pk}/change/")
    page.locator("#id_is_active").uncheck()
    page.locator('input[name="_save"]').click()
    expect(page.locator(".messagelist")).to_contain_text("Asha Rao")
    wait_until(
        lambda: Purchase.objects.filter(
            pk=rohan.pk, status="allocated", trainer=vikram
        ).exists(),
        timeout=30,
        what="Rohan to be reallocated to Vikram",
    )
    page.goto(f"{base}/admin/fulfillment/purchase/{rohan.pk}/change/")
    expect(page.locator("body")).to_contain_text("Vikram Iyer")
    shoot(page, artifacts, "8-trainer-deactivated")

    # 8. The dashboard updates by itself when a payment arrives ...
    page.goto(f"{base}/admin/")
    page.evaluate("window.__notReloaded = true")
    helpers.buy(signed_post, robotics, student_name="Zoya New", time_slot="10:00")
    pending = page.locator(".dashboard-module", has_text="Pending allocations")
    expect(pending).to_contain_text("Zoya New", timeout=15_000)
    assert page.evaluate("window.__notReloaded === true")
    shoot(page, artifacts, "9-payment-arrived")

    # ... and when the worker stops: an alarm in red at the top.
    worker.stop()
    expect(page.locator(".ops-alarms .ops-alert")).to_contain_text(
        "No worker is alive", timeout=30_000
    )
    assert page.evaluate("window.__notReloaded === true")
    shoot(page, artifacts, "10-worker-stopped")

    # 9. As Support every change is refused.
    page.context.clear_cookies()
    log_in(page, base, "sam")
    expect(page.locator(".ops-alarms")).to_contain_text("No worker is alive")
    assert page.get_by_role("button", name="Retry now").count() == 0
    assert page.get_by_role("link", name="Assign trainer…").count() == 0
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    for url in (
        f"/admin/fulfillment/purchase/{rohan.pk}/retry-allocation/",
        "/admin/fulfillment/jobfailure/discard/",
        "/admin/fulfillment/jobfailure/retry/",
    ):
        answer = page.request.post(
            base + url, headers={"X-CSRFToken": token, "Referer": base + "/admin/"}
        )
        assert answer.status == 403, url
    page.goto(f"{base}/admin/fulfillment/purchase/{rohan.pk}/assign-trainer/")
    expect(page.locator(".ops-forbidden")).to_contain_text("You may not do that")
    expect(page.get_by_role("link", name="Go to the dashboard")).to_be_visible()
    shoot(page, artifacts, "11-support-refused")
