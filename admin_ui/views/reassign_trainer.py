"""The allocated purchase's "Re-assign trainer" page: every trainer with the
verdict of the Assign page (``console_selectors.assign_candidates``) for the
sessions still to give, and a form to move the purchase to one of them
(``operations.purchase_reassign_trainer``): hard rules refuse, soft rules need an
override reason. Needs ``fulfillment.reassign_trainer``.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from admin_ui import display
from admin_ui import selectors as console_selectors
from admin_ui.views.assign_trainer import candidate_row
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.services import operations


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.reassign_trainer")


def reassign_trainer_view(
    request: HttpRequest,
    purchase_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Purchase],
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    purchase = get_object_or_404(
        models.Purchase.objects.select_related(
            "student", "course", "payment", "trainer"
        ),
        pk=purchase_id,
    )
    change_url = reverse("admin:fulfillment_purchase_change", args=[purchase.pk])
    chosen, reason, override_reason, error_field = "", "", "", None
    if request.method == "POST":
        chosen = request.POST.get("trainer", "")
        reason = request.POST.get("reason", "")
        override_reason = request.POST.get("override_reason", "")
        try:
            trainer_id = uuid.UUID(chosen)
        except ValueError:
            model_admin.message_user(request, "Choose a trainer.", messages.ERROR)
        else:
            try:
                purchase = operations.purchase_reassign_trainer(
                    purchase_id=purchase.pk,
                    trainer_id=trainer_id,
                    operator=operator_name(request),
                    reason=reason,
                    override_reason=override_reason,
                )
            except operations.OperationRefused as error:
                model_admin.message_user(request, str(error), messages.ERROR)
                error_field = error.field
            else:
                model_admin.message_user(
                    request, f"Re-assigned. {purchase.status_reason}", messages.SUCCESS
                )
                return HttpResponseRedirect(change_url)
    allocated = purchase.status == models.Purchase.Status.ALLOCATED
    slots, candidates = (
        console_selectors.assign_candidates(purchase=purchase)
        if allocated
        else ([], [])
    )
    current = str(purchase.trainer_id)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Re-assign {purchase.student.name} to another trainer",
        "purchase": purchase,
        "allocated": allocated,
        "schedule": display.purchase_schedule(purchase),
        "location": display.purchase_location(purchase),
        "first_session": slots[0] if slots else None,
        "rows": [
            candidate_row(c, slots)
            for c in candidates
            if c.teaches_course and str(c.trainer.pk) != current
        ],
        "chosen": chosen,
        "reason": reason,
        "override_reason": override_reason,
        "error_field": error_field,
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin_ui/reassign_trainer.html", context)
