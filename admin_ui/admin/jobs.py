"""Failed job attempts, with the error procrastinate does not keep; the
dashboard's retry button posts to ``admin_ui.views.failed_jobs``."""

from __future__ import annotations

from functools import partial

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from procrastinate.contrib.django.admin import ProcrastinateJobAdmin
from procrastinate.contrib.django.models import ProcrastinateJob

from admin_ui.admin.base import ReadOnlyAdmin
from admin_ui.views import failed_jobs
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.services import operations


@admin.register(models.JobFailure)
class JobFailureAdmin(ReadOnlyAdmin[models.JobFailure]):
    """Every failed attempt, with its error (procrastinate keeps no error text)."""

    list_display = [
        "failed_at",
        "task_name",
        "job_link",
        "attempt",
        "error_type",
        "error_message",
        "worker",
    ]
    list_filter = ["task_name", "error_type"]
    search_fields = ["=job_id", "=purchase_id", "error_message"]

    @admin.display(description="Job", ordering="job_id")
    def job_link(self, failure: models.JobFailure) -> str:
        return format_html(
            '<a href="{}">#{}</a>',
            reverse(
                "admin:procrastinate_procrastinatejob_change", args=[failure.job_id]
            ),
            failure.job_id,
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "retry/",
                self.admin_site.admin_view(
                    partial(failed_jobs.failed_jobs_retry_view, model_admin=self)
                ),
                name="fulfillment_jobfailure_retry",
            ),
            path(
                "discard/",
                self.admin_site.admin_view(
                    partial(failed_jobs.failed_jobs_discard_view, model_admin=self)
                ),
                name="fulfillment_jobfailure_discard",
            ),
            *super().get_urls(),
        ]


# procrastinate's own job pages, with actions that check permissions: its
# actions declare none (so the view-only Support group could cancel, abort and
# retry), and its retry accepts a job that is still running (it then runs twice).
admin.site.unregister(ProcrastinateJob)


@admin.register(ProcrastinateJob)
class JobAdmin(ProcrastinateJobAdmin):
    actions = ["retry_failed", "discard_failed", "cancel_waiting", "abort_jobs"]

    def has_retry_failed_jobs_permission(self, request: HttpRequest) -> bool:
        return failed_jobs.has_permission(request)

    def has_manage_jobs_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("fulfillment.manage_jobs")

    @admin.action(description="Retry failed jobs", permissions=["retry_failed_jobs"])
    def retry_failed(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]
    ) -> None:
        selected = list(queryset.values_list("id", flat=True))
        retried = operations.failed_jobs_retry(
            job_ids=selected, operator=operator_name(request)
        )
        self._report(request, done=retried, selected=len(selected), what="retried")

    @admin.action(
        description="Discard failed jobs (with a reason)…",
        permissions=["retry_failed_jobs"],
    )
    def discard_failed(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]
    ) -> TemplateResponse | None:
        failed = list(
            queryset.filter(status="failed").values_list("id", flat=True).order_by("id")
        )
        if not failed:
            self.message_user(
                request, "None of those jobs has failed.", messages.WARNING
            )
            return None
        return failed_jobs.discard_confirmation(
            request, model_admin=self, job_ids=failed
        )

    @admin.action(
        description="Cancel waiting jobs (only 'todo')", permissions=["manage_jobs"]
    )
    def cancel_waiting(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]
    ) -> None:
        selected = list(queryset.values_list("id", flat=True))
        cancelled = operations.jobs_cancel(
            job_ids=selected, operator=operator_name(request), abort=False
        )
        self._report(request, done=cancelled, selected=len(selected), what="cancelled")

    @admin.action(
        description="Abort jobs ('todo' and 'doing')", permissions=["manage_jobs"]
    )
    def abort_jobs(
        self, request: HttpRequest, queryset: QuerySet[ProcrastinateJob]
    ) -> None:
        selected = list(queryset.values_list("id", flat=True))
        aborted = operations.jobs_cancel(
            job_ids=selected, operator=operator_name(request), abort=True
        )
        self._report(request, done=aborted, selected=len(selected), what="aborted")

    def _report(
        self, request: HttpRequest, *, done: int, selected: int, what: str
    ) -> None:
        skipped = selected - done
        text = f"{done} job(s) {what}."
        if skipped:
            text += f" {skipped} left alone: not in a state that allows it."
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)
