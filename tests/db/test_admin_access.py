"""Who may see and do what in the ops console: staff only; the Operations group
acts, the Support group looks; every action checks its own permission.

Also home to the helpers the other console tests share (``sign_in``, ``buy``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client

from fulfillment.models import Purchase
from tests import helpers
from tests.helpers import ensure_groups, sign_in, waitlisted

pytestmark = pytest.mark.django_db

SignedPost = Callable[..., Any]

ACTION_PERMISSIONS = {
    "fulfillment.retry_allocation",
    "fulfillment.assign_trainer",
    "fulfillment.reprocess_payment",
    "fulfillment.retry_failed_jobs",
}


def group_permissions(name: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=name).permissions.select_related("content_type")
    }


# --- the groups -------------------------------------------------------------------


def test_the_migration_creates_an_operations_group_that_acts_and_a_support_group_that_looks() -> (  # noqa: E501
    None
):
    call_command("migrate", "admin_ui", "zero", verbosity=0)
    assert not Group.objects.filter(name__in=["Operations", "Support"]).exists()
    assert not Permission.objects.filter(codename="assign_trainer").exists()

    call_command("migrate", "admin_ui", verbosity=0)

    operations = group_permissions("Operations")
    support = group_permissions("Support")
    assert operations >= ACTION_PERMISSIONS
    assert {
        "fulfillment.view_purchase",
        "fulfillment.view_payment",
        "fulfillment.change_trainer",
        "procrastinate.view_procrastinatejob",
    } <= operations
    assert {
        "fulfillment.view_purchase",
        "fulfillment.view_trainer",
        "fulfillment.view_webhookdelivery",
        "procrastinate.view_procrastinatejob",
    } <= support
    assert all(name.split(".")[1].startswith("view_") for name in support)
    assert not {p for p in operations if p.split(".")[1].startswith("delete_")}


def test_creating_the_groups_again_adds_nothing() -> None:
    ensure_groups()
    before = group_permissions("Operations"), group_permissions("Support")

    ensure_groups()

    assert (group_permissions("Operations"), group_permissions("Support")) == before
    assert Group.objects.filter(name="Operations").count() == 1


# --- staff only -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/fulfillment/purchase/",
        "/admin/fulfillment/purchase/6f1c1d7e-3c1a-4c55-9a53-1d0a6d1b0001/assign-trainer/",
        "/admin/fulfillment/payment/6f1c1d7e-3c1a-4c55-9a53-1d0a6d1b0001/reprocess/",
    ],
)
def test_people_who_are_not_staff_are_sent_to_the_login_page(
    client: Client, path: str
) -> None:
    anonymous = client.get(path)
    sign_in(client, "Operations", staff=False)
    not_staff = client.get(path)

    for response in (anonymous, not_staff):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


def test_staff_without_a_group_see_no_fulfilment_data(
    client: Client, signed_post: SignedPost
) -> None:
    waitlisted(signed_post, helpers.course())
    sign_in(client)

    page = client.get("/admin/").content.decode()

    assert "Pending allocations" not in page
    assert "ask an administrator to add you to the Operations" in page
    assert client.get("/admin/fulfillment/purchase/").status_code == 403


# --- Support looks, Operations acts -----------------------------------------------


def test_support_sees_the_dashboard_and_pages_without_any_way_to_act(
    client: Client, signed_post: SignedPost
) -> None:
    purchase = waitlisted(signed_post, helpers.course())
    sign_in(client, "Support")

    dashboard = client.get("/admin/").content.decode()
    change = client.get(f"/admin/fulfillment/purchase/{purchase.pk}/change/")
    changelist = client.get("/admin/fulfillment/purchase/").content.decode()

    assert "Pending allocations (1)" in dashboard
    assert purchase.status_reason in dashboard
    assert "Assign trainer…" not in dashboard
    assert "Retry now" not in dashboard
    assert change.status_code == 200
    assert "Assign trainer…" not in change.content.decode()
    assert "Retry allocation now" not in change.content.decode()
    assert "retry_allocation_action" not in changelist


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/fulfillment/purchase/{purchase}/assign-trainer/"),
        ("post", "/admin/fulfillment/purchase/{purchase}/assign-trainer/"),
        ("post", "/admin/fulfillment/purchase/{purchase}/retry-allocation/"),
        ("get", "/admin/fulfillment/payment/{payment}/reprocess/"),
        ("post", "/admin/fulfillment/jobfailure/retry/"),
    ],
)
def test_support_is_refused_every_action(
    client: Client, signed_post: SignedPost, method: str, path: str
) -> None:
    purchase = waitlisted(signed_post, helpers.course())
    sign_in(client, "Support")

    url = path.format(purchase=purchase.pk, payment=purchase.payment_id)
    response = getattr(client, method)(url)

    assert response.status_code == 403
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.WAITLISTED


def test_each_action_needs_its_own_permission(
    client: Client, signed_post: SignedPost
) -> None:
    course = helpers.course()
    purchase = waitlisted(signed_post, course)
    trainer = helpers.trainer(courses=[course])
    sign_in(client, "Support", permissions=("fulfillment.assign_trainer",))

    retry = client.post(f"/admin/fulfillment/purchase/{purchase.pk}/retry-allocation/")
    assign_page = client.get(
        f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/"
    )
    assign = client.post(
        f"/admin/fulfillment/purchase/{purchase.pk}/assign-trainer/",
        {"trainer": str(trainer.pk)},
    )

    assert retry.status_code == 403
    assert assign_page.status_code == 200
    assert assign.status_code == 302
    purchase.refresh_from_db()
    assert purchase.trainer_id == trainer.pk
