"""The admin menu: fulfilment pages grouped together."""

from __future__ import annotations

from typing import Any

from admin_tools.menu import Menu, items
from django.urls import reverse


class OperationsMenu(Menu):  # type: ignore[misc]
    def init_with_context(self, context: Any) -> None:
        self.children += [
            items.MenuItem("Dashboard", reverse("admin:index")),
            items.ModelList("Fulfilment", models=("fulfillment.models.*",)),
            items.ModelList(
                "Job queue", models=("procrastinate.contrib.django.models.*",)
            ),
            items.AppList("Administration", models=("django.contrib.*",)),
        ]
