"""Failed job attempts, with the error procrastinate does not keep; the
dashboard's retry button posts to ``admin_ui.views.failed_jobs``."""

from __future__ import annotations

from functools import partial

from django.contrib import admin
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from admin_ui.admin.base import ReadOnlyAdmin
from admin_ui.views import failed_jobs
from fulfillment import models


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
            *super().get_urls(),
        ]
