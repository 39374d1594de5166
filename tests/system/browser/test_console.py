"""The ops console in a real browser, against a live server and a real worker:
an operator finds why a purchase waits and fixes it from the dashboard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Group, User

from fulfillment.models import Purchase, TrainerAllocation, TutoringSession
from tests import helpers
from tests.helpers import WorkerProcess, ensure_groups, wait_until, waitlisted

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_an_operator_sees_why_a_purchase_waits_and_assigns_the_trainer_that_fits(
    live_server: Any,
    worker_process: Callable[..., WorkerProcess],
    signed_post: Callable[..., Any],
    page: Page,
    artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    course = helpers.course(title="Python for Kids")
    helpers.trainer(courses=[course], name="Vikram Iyer", work_end=dt.time(16, 30))
    helpers.trainer(courses=[course], name="Meera Nair", max_travel_km=0.5)
    purchase = waitlisted(signed_post, course, student_name="Anya Sharma")
    # Joined after the purchase was waitlisted, and fits.
    asha = helpers.trainer(courses=[course], name="Asha Rao")
    ensure_groups()
    operator = User.objects.create_user(
        username="olivia", password="a-long-test-password", is_staff=True
    )
    operator.groups.add(Group.objects.get(name="Operations"))
    # Sessions and the cache are served; allocation is left to the operator (a
    # worker on that queue would retry the waitlist on its own, racing the test).
    worker = worker_process("--queues", "sessions,cache")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")

    pending = page.locator(".dashboard-module", has_text="Pending allocations (1)")
    row = pending.locator(f'tr[data-purchase="{purchase.pk}"]')
    expect(row).to_contain_text("Anya Sharma")
    expect(row).to_contain_text("Waitlisted")
    # The one line read at a glance: Meera is excluded by distance alone.
    expect(row).to_contain_text(
        "No trainer within 0.5 km; nearest Meera Nair at 1.1 km."
    )
    page.wait_for_load_state("networkidle")  # the dashboard's scripts have run
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)

    row.get_by_role("link", name="Assign trainer…").click()  # click 1

    candidates = page.locator("table.ops-candidates tr[data-trainer]")
    expect(candidates.nth(0)).to_have_attribute("data-trainer", "Asha Rao")
    expect(candidates.nth(0)).to_contain_text("Fits")
    expect(page.locator('tr[data-trainer="Meera Nair"]')).to_contain_text(
        "beyond their travel distance"
    )
    expect(page.locator('tr[data-trainer="Vikram Iyer"]')).to_contain_text(
        "cannot be assigned"
    )
    page.screenshot(path=artifacts / "assign-trainer.png", full_page=True)

    page.get_by_role("button", name="Assign Asha Rao").click()  # click 2

    expect(page.locator(".messagelist")).to_contain_text("Allocated to Asha Rao")
    expect(page.locator(".field-status_display")).to_contain_text("Allocated")
    try:
        wait_until(
            lambda: TutoringSession.objects.filter(purchase=purchase).count() == 7,
            timeout=15,
            what="the worker to create the sessions",
        )
    except pytest.fail.Exception:
        print(worker.output())
        raise
    page.reload()
    expect(page.locator("td.field-sequence")).to_have_count(7)
    expect(page.locator(".ops-timeline")).to_contain_text("olivia assigned Asha Rao")
    page.screenshot(path=artifacts / "purchase-allocated.png", full_page=True)

    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.ALLOCATED
    assert purchase.trainer_id == asha.pk
    assert TrainerAllocation.objects.get(purchase=purchase).assigned_by == "olivia"
