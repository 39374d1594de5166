"""The purchase's "Retry allocation now" button (change page and dashboard):
``operations.purchase_retry_allocation``, then back to where the operator was.
Needs ``fulfillment.retry_allocation``.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from admin_ui.views.base import operator_name, redirect_back
from fulfillment import models
from fulfillment.services import operations


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.retry_allocation")


@require_POST
def retry_allocation_view(
    request: HttpRequest,
    purchase_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Purchase],
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    change_url = reverse("admin:fulfillment_purchase_change", args=[purchase_id])
    try:
        purchase = operations.purchase_retry_allocation(
            purchase_id=purchase_id, operator=operator_name(request)
        )
    except operations.OperationRefused as error:
        model_admin.message_user(request, str(error), messages.WARNING)
    else:
        level = (
            messages.SUCCESS
            if purchase.status == models.Purchase.Status.ALLOCATED
            else messages.WARNING
        )
        model_admin.message_user(
            request, f"Allocation retried: {purchase.status_reason}", level
        )
    return redirect_back(request, change_url)
