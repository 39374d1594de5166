"""The admin menu: the fulfilment pages grouped the way operators work.

``ModelList`` items show only the pages the user may see.
"""

from __future__ import annotations

from typing import Any

from admin_tools.menu import Menu, items
from django.urls import reverse


class SearchItem(items.MenuItem):  # type: ignore[misc]
    """The one search box, on every console page."""

    template = "admin_ui/menu_search.html"

    def init_with_context(self, context: Any) -> None:
        self.url = reverse("console-search")

    def is_empty(self) -> bool:
        return False


class OperationsMenu(Menu):  # type: ignore[misc]
    class Media:
        # The menu is on every admin page, so the console's styles are too.
        css = {"all": ("admin_ui/console.css",)}

    def init_with_context(self, context: Any) -> None:
        self.children += [
            items.MenuItem("Dashboard", reverse("admin:index")),
            items.ModelList(
                "Fulfilment",
                models=(
                    "fulfillment.models.Purchase",
                    "fulfillment.models.Payment",
                    "fulfillment.models.TutoringSession",
                    "fulfillment.models.Student",
                    "fulfillment.models.WebhookDelivery",
                ),
            ),
            items.ModelList(
                "Catalogue",
                models=("fulfillment.models.Course", "fulfillment.models.Trainer"),
            ),
            items.ModelList(
                "Jobs",
                models=(
                    "procrastinate.contrib.django.models.*",
                    "fulfillment.models.JobFailure",
                ),
            ),
            items.AppList("Administration", models=("django.contrib.*",)),
            SearchItem("Search"),
        ]
