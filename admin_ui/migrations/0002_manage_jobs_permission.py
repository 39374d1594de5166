"""``fulfillment.manage_jobs``: cancel or abort queued and running jobs from
procrastinate's job pages, for the Operations group only (Support views)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

CODENAME = "manage_jobs"


def add_permission(apps: Any, schema_editor: Any) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(
        app_label="fulfillment", model="jobfailure"
    )
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type,
        codename=CODENAME,
        defaults={"name": "Can cancel or abort jobs"},
    )
    operations, _ = Group.objects.get_or_create(name="Operations")
    operations.permissions.add(permission)


def remove_permission(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Permission").objects.filter(codename=CODENAME).delete()


class Migration(migrations.Migration):
    dependencies = [("admin_ui", "0001_operations_groups")]

    operations = [migrations.RunPython(add_permission, remove_permission)]
