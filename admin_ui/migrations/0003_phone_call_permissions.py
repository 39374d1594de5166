"""The fixes a phone call asks for, one permission each, for the Operations
group only (Support looks, it changes nothing), and the trainers' leave: kept by
Operations, seen by both groups."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations

# (codename, name), all on the purchase's content type.
ACTIONS = [
    ("change_purchase_schedule", "Can change a purchase's schedule"),
    ("reassign_trainer", "Can re-assign a purchase to another trainer"),
    ("release_trainer", "Can release a purchase's trainer"),
    ("cancel_purchase", "Can cancel a purchase without a refund"),
    ("add_purchase_note", "Can add a note to a purchase's trace"),
]
# No delete: Operations never deletes (a leave ended early is edited).
LEAVE_KEPT = ["add_trainerleave", "change_trainerleave"]
LEAVE_VIEWED = "view_trainerleave"


def add_permissions(apps: Any, schema_editor: Any) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    # TrainerLeave's default permissions are only made after the last migration
    # (post_migrate); make them now to give them to the groups.
    config = apps.get_app_config("fulfillment")
    models_module = getattr(config, "models_module", None)
    config.models_module = models_module or True
    try:
        create_permissions(config, verbosity=0, apps=apps)
    finally:
        config.models_module = models_module
    purchase, _ = ContentType.objects.get_or_create(
        app_label="fulfillment", model="purchase"
    )
    actions = [
        Permission.objects.get_or_create(
            content_type=purchase, codename=codename, defaults={"name": name}
        )[0]
        for codename, name in ACTIONS
    ]
    leave = {
        p.codename: p
        for p in Permission.objects.filter(
            content_type__app_label="fulfillment",
            codename__in=[*LEAVE_KEPT, LEAVE_VIEWED],
        )
    }
    operations, _ = Group.objects.get_or_create(name="Operations")
    operations.permissions.add(*actions, *leave.values())
    support, _ = Group.objects.get_or_create(name="Support")
    support.permissions.add(leave[LEAVE_VIEWED])


def remove_permissions(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="fulfillment",
        codename__in=[codename for codename, _ in ACTIONS],
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("admin_ui", "0002_manage_jobs_permission"),
        ("fulfillment", "0009_trainer_leave"),
    ]

    operations = [migrations.RunPython(add_permissions, remove_permissions)]
