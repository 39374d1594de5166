"""The dashboard's "Retry" and "Discard" buttons on a group of failed jobs
(``operations.failed_jobs_retry``, ``jobs.failed_jobs_discard``), then back to
where the operator was; and the page that asks why before discarding jobs
chosen on the job list. Needs ``fulfillment.retry_failed_jobs``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from admin_ui.views.base import operator_name, redirect_back
from fulfillment import models
from fulfillment.services import jobs, operations


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.retry_failed_jobs")


@require_POST
def failed_jobs_retry_view(
    request: HttpRequest, *, model_admin: admin.ModelAdmin[models.JobFailure]
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    try:
        job_ids = [int(value) for value in request.POST.getlist("job")]
    except ValueError:
        job_ids = []
    retried = operations.failed_jobs_retry(
        job_ids=job_ids, operator=operator_name(request)
    )
    skipped = len(job_ids) - retried
    message = f"{retried} failed job(s) queued again."
    if skipped:
        message += f" {skipped} were no longer failed and were left alone."
    model_admin.message_user(
        request, message, messages.SUCCESS if retried else messages.WARNING
    )
    return redirect_back(request, reverse("admin:index"))


@require_POST
def failed_jobs_discard_view(
    request: HttpRequest, *, model_admin: admin.ModelAdmin[Any]
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    job_ids = _job_ids(request)
    try:
        discarded = jobs.failed_jobs_discard(
            job_ids=job_ids,
            operator=operator_name(request),
            reason=request.POST.get("reason", ""),
        )
    except operations.OperationRefused as error:
        model_admin.message_user(request, str(error), messages.ERROR)
        return redirect_back(request, reverse("admin:index"))
    skipped = len(job_ids) - discarded
    message = f"{discarded} failed job(s) discarded; they will not run again."
    if skipped:
        message += f" {skipped} were no longer failed and were left alone."
    model_admin.message_user(
        request, message, messages.SUCCESS if discarded else messages.WARNING
    )
    return redirect_back(request, reverse("admin:index"))


def discard_confirmation(
    request: HttpRequest, *, model_admin: admin.ModelAdmin[Any], job_ids: list[int]
) -> TemplateResponse:
    """The page an admin action shows: which jobs, and a reason to give."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Discard failed jobs",
        "job_ids": job_ids,
        "action_url": reverse("admin:fulfillment_jobfailure_discard"),
        "back_url": reverse("admin:procrastinate_procrastinatejob_changelist")
        + "?status__exact=failed",
    }
    return TemplateResponse(request, "admin_ui/discard_jobs.html", context)


def _job_ids(request: HttpRequest) -> list[int]:
    try:
        return [int(value) for value in request.POST.getlist("job")]
    except ValueError:
        return []
