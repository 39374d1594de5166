"""The operations dashboard: the first page staff see after logging in.

It answers "why is this purchase not allocated?" and links straight to the fix.
Modules read through ``fulfillment.selectors`` (and the console-only reads of
``admin_ui.selectors``); the buttons post to admin views that call
``fulfillment.services.operations``. Each module needs a view permission and each
button its action permission. Every query here runs on each dashboard load, so
each module costs one to three cheap queries.
"""

from __future__ import annotations

from typing import Any

from admin_tools.dashboard import Dashboard, modules
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from admin_ui import display
from admin_ui import selectors as console_selectors
from fulfillment.models import WAITING_STATUSES
from fulfillment.selectors.jobs import (
    failed_job_groups,
    queue_stats,
    stalled_jobs_count,
)
from fulfillment.selectors.purchases import payments_needing_attention
from fulfillment.selectors.workers import live_workers, lost_workers


def duration(seconds: float | None) -> str:
    """A short age for people: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


class OpsModule(modules.DashboardModule):  # type: ignore[misc]
    """A console module: fixed in place (an ops page must not lose its panes to
    a stray click), collapsible, shown only with ``permission``."""

    draggable = False
    deletable = False
    collapsible = True
    permission = "fulfillment.view_purchase"
    layout = "wide"  # or "third": three side by side
    _initialized: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.css_classes.append(f"ops-{self.layout}")

    def init_with_context(self, context: Any) -> None:
        if self._initialized:
            return
        self.user = context["request"].user
        self.load()
        self._initialized = True

    def load(self) -> None:
        raise NotImplementedError

    def is_empty(self) -> bool:
        # Empty is news too ("nothing waiting"): always show the module.
        return False


class AlarmsModule(OpsModule):
    """What is broken right now, in red at the top: no worker alive, a queue
    nobody serves, stalled jobs, webhook signatures refused within the hour,
    waitlisted purchases past the SLA. Also where the live refresh says when
    the modules were last updated (static/admin_ui/live.js)."""

    title = ""
    show_title = False
    collapsible = False
    template = "admin_ui/dashboard/alarms.html"

    def load(self) -> None:
        self.css_classes.append("ops-alarms")
        self.live_url = reverse("console-dashboard-live")
        self.children = [
            {"alarm": alarm, "url": reverse(alarm.url_name) if alarm.url_name else ""}
            for alarm in console_selectors.console_alarms()
        ]
        self.checked_at = timezone.now()


class SearchModule(OpsModule):
    """One box for anything: names, emails, phones, pi_…, purchase ids, trainers."""

    title = "Find"
    show_title = False
    collapsible = False
    template = "admin_ui/dashboard/search.html"

    def load(self) -> None:
        self.search_url = reverse("console-search")


class PendingAllocationsModule(OpsModule):
    """Purchases waiting for a trainer, urgent first (the soonest first session),
    with a badge for how soon it is and the reason in one line."""

    title = "Pending allocations"
    template = "admin_ui/dashboard/pending_allocations.html"
    limit = 25

    def load(self) -> None:
        total, waiting = console_selectors.waiting_purchases(limit=self.limit)
        self.total = total
        self.title = f"Pending allocations ({total})"
        self.title_url = (
            reverse("admin:fulfillment_purchase_changelist")
            + "?"
            + urlencode({"status__in": ",".join(WAITING_STATUSES)})
        )
        self.can_assign = self.user.has_perm("fulfillment.assign_trainer")
        self.can_retry = self.user.has_perm("fulfillment.retry_allocation")
        self.sla_hours = settings.WAITLIST_SLA_HOURS
        self.back_url = reverse("admin:index")
        self.children = [
            {
                "row": row,
                "first_session": display.when(row.first_session_at),
                "age": duration(row.waiting_s),
                "url": reverse(
                    "admin:fulfillment_purchase_change", args=[row.purchase.pk]
                ),
                "assign_url": reverse(
                    "admin:fulfillment_purchase_assign", args=[row.purchase.pk]
                ),
                "retry_url": reverse(
                    "admin:fulfillment_purchase_retry", args=[row.purchase.pk]
                ),
            }
            for row in waiting
        ]


class NeedsAttentionModule(OpsModule):
    """Payments whose metadata could not become a purchase."""

    title = "Payments that need attention"
    template = "admin_ui/dashboard/needs_attention.html"
    permission = "fulfillment.view_payment"
    limit = 10

    def load(self) -> None:
        unresolved = payments_needing_attention()
        payments = list(unresolved.order_by("created_at")[: self.limit])
        total = len(payments) if len(payments) < self.limit else unresolved.count()
        self.title = f"Payments that need attention ({total})"
        self.title_url = (
            reverse("admin:fulfillment_payment_changelist") + "?attention=yes"
        )
        self.can_reprocess = self.user.has_perm("fulfillment.reprocess_payment")
        now = timezone.now()
        self.children = [
            {
                "payment": payment,
                "amount": display.payment_amount(payment),
                "age": duration((now - payment.created_at).total_seconds()),
                "url": reverse("admin:fulfillment_payment_change", args=[payment.pk]),
                "reprocess_url": reverse(
                    "admin:fulfillment_payment_reprocess", args=[payment.pk]
                ),
            }
            for payment in payments
        ]


class FailedJobsModule(OpsModule):
    """Failed jobs grouped by task and error shape, with a retry per group."""

    title = "Failed jobs"
    template = "admin_ui/dashboard/failed_jobs.html"
    permission = "procrastinate.view_procrastinatejob"

    def load(self) -> None:
        groups = failed_job_groups()
        self.total = sum(group.count for group in groups)
        self.title = f"Failed jobs ({self.total})"
        jobs_url = reverse("admin:procrastinate_procrastinatejob_changelist")
        self.title_url = jobs_url + "?status__exact=failed"
        self.can_retry = self.user.has_perm("fulfillment.retry_failed_jobs")
        self.retry_url = reverse("admin:fulfillment_jobfailure_retry")
        self.discard_url = reverse("admin:fulfillment_jobfailure_discard")
        self.back_url = reverse("admin:index")
        now = timezone.now()
        self.children = [
            {
                "group": group,
                "task": group.task_name.rsplit(".", 1)[-1],
                # Groups whose error was never recorded have no time either.
                "last_seen": f"{duration((now - group.last_seen).total_seconds())} ago"
                if group.last_seen.year > 1
                else "unknown",
                "jobs_url": jobs_url
                + "?"
                + urlencode({"id__in": ",".join(map(str, group.job_ids))}),
            }
            for group in groups
        ]


class WorkersModule(OpsModule):
    """Live workers, and loud warnings when work has nobody to run it."""

    title = "Workers"
    template = "admin_ui/dashboard/workers.html"
    permission = "procrastinate.view_procrastinatejob"
    layout = "third"

    def load(self) -> None:
        workers = live_workers()
        queues = queue_stats()
        self.title = f"Workers ({len(workers)} alive)"
        self.title_url = (
            reverse("admin:procrastinate_procrastinatejob_changelist")
            + "?status__exact=doing"
        )
        self.alarms: list[str] = []
        if not workers:
            self.alarms.append(
                "No worker is alive: nothing is being processed. Start one "
                "(make worker, or docker compose up worker)."
            )
        else:
            for stats in queues:
                waiting = stats.todo + stats.scheduled + stats.doing
                if waiting and not any(w.serves(stats.queue) for w in workers):
                    self.alarms.append(
                        f"Queue {stats.queue} has {waiting} job(s) and no live "
                        "worker serves it."
                    )
        stalled = stalled_jobs_count()
        if stalled:
            self.alarms.append(
                f"{stalled} job(s) belong to a worker that stopped; they are "
                "requeued automatically."
            )
        # A host cut off or a process killed: where it ran, until its row goes.
        self.lost = [
            {
                "label": worker.name or f"worker {worker.worker_id}",
                "where": f"{worker.host}:{worker.pid}" if worker.host else "",
                "heartbeat": duration(worker.heartbeat_age_s),
            }
            for worker in lost_workers()
        ]
        stalled_after = settings.WORKER_STALLED_AFTER_SECONDS
        self.children = [
            {
                "worker": worker,
                "label": worker.name or f"worker {worker.worker_id}",
                "where": f"{worker.host}:{worker.pid}" if worker.host else "",
                "queues": (
                    "not known yet (no job run)"
                    if worker.queues is None
                    else ", ".join(worker.queues) or "all queues"
                ),
                "heartbeat": duration(worker.heartbeat_age_s),
                "late": worker.heartbeat_age_s > stalled_after / 2,
            }
            for worker in workers
        ]


class QueuesModule(OpsModule):
    """Jobs per queue and the age of the oldest waiting one."""

    title = "Queues"
    template = "admin_ui/dashboard/queues.html"
    permission = "procrastinate.view_procrastinatejob"
    layout = "third"

    def load(self) -> None:
        jobs_url = reverse("admin:procrastinate_procrastinatejob_changelist")
        self.title_url = jobs_url
        self.children = [
            {
                "stats": stats,
                "oldest": duration(stats.oldest_ready_age_s)
                if stats.oldest_ready_age_s is not None
                else "-",
                "slow": (stats.oldest_ready_age_s or 0) > 60,
                "url": jobs_url + "?" + urlencode({"queue_name": stats.queue}),
            }
            for stats in queue_stats()
        ]


class TodayModule(OpsModule):
    """The payments received today and what became of them."""

    title = "Today"
    template = "admin_ui/dashboard/today.html"
    layout = "third"

    def load(self) -> None:
        self.summary = console_selectors.today_summary()
        self.title = f"Today (since {self.summary.since:%H:%M %Z})"
        self.median = duration(self.summary.median_to_allocation_s)
        self.changelist = reverse("admin:fulfillment_purchase_changelist")


class OperationsDashboard(Dashboard):  # type: ignore[misc]
    title = "Operations"
    # One column: wide modules fill it, "third" modules sit three abreast
    # (console.css).
    columns = 1

    class Media:
        css = {"all": ("admin_ui/console.css",)}
        js = ("admin_ui/csrf.js", "admin_ui/live.js")

    def init_with_context(self, context: Any) -> None:
        user = context["request"].user
        for module in (
            AlarmsModule(),
            SearchModule(),
            PendingAllocationsModule(),
            NeedsAttentionModule(),
            FailedJobsModule(),
            WorkersModule(),
            QueuesModule(),
            TodayModule(),
        ):
            if user.has_perm(module.permission):
                self.children.append(module)
        if not self.children:
            self.children.append(
                modules.DashboardModule(
                    "Nothing to show",
                    pre_content="Your account has no access to the fulfilment "
                    "pages; ask an administrator to add you to the Operations "
                    "or Support group.",
                )
            )
