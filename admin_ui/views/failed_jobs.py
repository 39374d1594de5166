"""The dashboard's "Retry" button on a group of failed jobs:
``operations.failed_jobs_retry``, then back to where the operator was.
Needs ``fulfillment.retry_failed_jobs``.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from admin_ui.views.base import operator_name, redirect_back
from fulfillment import models
from fulfillment.services import operations


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
