"""The console's permissions and its two groups.

- Operations: sees everything and acts (retry, assign, reprocess, retry failed
  jobs; keeps the catalogue of courses and trainers).
- Support: sees everything, changes nothing.

Action permissions are rows on existing models' content types rather than
``Meta.permissions``, so no model changes. Safe to run again: it only adds what
is missing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations

# (app label, model, codename, name)
ACTIONS = [
    (
        "fulfillment",
        "purchase",
        "retry_allocation",
        "Can retry a purchase's allocation",
    ),
    ("fulfillment", "purchase", "assign_trainer", "Can assign a trainer by hand"),
    (
        "fulfillment",
        "payment",
        "reprocess_payment",
        "Can correct and reprocess a payment",
    ),
    ("fulfillment", "jobfailure", "retry_failed_jobs", "Can retry failed jobs"),
]
VIEWED = {
    "fulfillment": [
        "course",
        "trainer",
        "student",
        "payment",
        "webhookdelivery",
        "purchase",
        "trainerallocation",
        "reservation",
        "tutoringsession",
        "traceevent",
        "jobfailure",
        "workerpresence",
    ],
    "procrastinate": [
        "procrastinatejob",
        "procrastinateevent",
        "procrastinateperiodicdefer",
        "procrastinateworker",
    ],
}
CATALOGUE = [("fulfillment", "course"), ("fulfillment", "trainer")]


def create_groups(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    # On a fresh database the default permissions are only created after the
    # last migration (post_migrate); create them now to attach them to groups.
    for label in VIEWED:
        config = apps.get_app_config(label)
        # Historical app configs have no models module, which makes
        # create_permissions skip them; restored after.
        models_module = getattr(config, "models_module", None)
        config.models_module = models_module or True
        try:
            create_permissions(config, verbosity=0, apps=apps)
        finally:
            config.models_module = models_module

    def permission(app_label: str, codename: str) -> Any:
        return Permission.objects.get(
            content_type__app_label=app_label, codename=codename
        )

    actions = []
    for app_label, model, codename, name in ACTIONS:
        content_type, _ = ContentType.objects.get_or_create(
            app_label=app_label, model=model
        )
        action, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        actions.append(action)
    views = [
        permission(app_label, f"view_{model}")
        for app_label, models in VIEWED.items()
        for model in models
    ]
    catalogue = [
        permission(app_label, f"{verb}_{model}")
        for app_label, model in CATALOGUE
        for verb in ("add", "change")
    ]
    support, _ = Group.objects.get_or_create(name="Support")
    support.permissions.add(*views)
    operations, _ = Group.objects.get_or_create(name="Operations")
    operations.permissions.add(*views, *catalogue, *actions)


def remove_groups(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(
        name__in=["Operations", "Support"]
    ).delete()
    apps.get_model("auth", "Permission").objects.filter(
        codename__in=[codename for _, _, codename, _ in ACTIONS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("fulfillment", "0003_worker_presence"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
