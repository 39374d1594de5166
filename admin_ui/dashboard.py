"""The operations dashboard: the first page staff see after logging in.

Modules read through ``fulfillment.selectors``; the full console (failed jobs,
workers, queues, actions) is built on this in the ops-console issue.
"""

from __future__ import annotations

from typing import Any

from admin_tools.dashboard import Dashboard, modules
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from fulfillment.models import Purchase


class PendingAllocationsModule(modules.DashboardModule):  # type: ignore[misc]
    """Purchases waiting for a trainer, oldest first, with the reason."""

    title = "Pending allocations"
    template = "admin_ui/dashboard/pending_allocations.html"
    limit = 20
    _initialized: bool

    def init_with_context(self, context: Any) -> None:
        if self._initialized:
            return
        waiting = Purchase.objects.filter(
            status__in=[Purchase.Status.ALLOCATION_PENDING, Purchase.Status.WAITLISTED]
        ).select_related("student", "course")
        total = waiting.count()
        now = timezone.now()
        self.title = f"Pending allocations ({total})"
        self.children = [
            {
                "purchase": purchase,
                "age": timesince(purchase.created_at, now),
                "url": reverse("admin:fulfillment_purchase_change", args=[purchase.pk]),
            }
            for purchase in waiting.order_by("created_at")[: self.limit]
        ]
        if not self.children:
            self.pre_content = "Nothing is waiting for a trainer."
        self._initialized = True


class OperationsDashboard(Dashboard):  # type: ignore[misc]
    columns = 2

    def init_with_context(self, context: Any) -> None:
        self.children.append(PendingAllocationsModule())
        self.children.append(
            modules.ModelList(
                "Fulfilment",
                models=["fulfillment.models.*"],
            )
        )
        self.children.append(
            modules.ModelList(
                "Job queue", models=["procrastinate.contrib.django.models.*"]
            )
        )
        self.children.append(modules.RecentActions("Recent actions", 10))
