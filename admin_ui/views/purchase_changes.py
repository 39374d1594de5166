"""The purchase's "Change…" page: the fixes a phone call asks for, each a form
with the operator's reason, each calling one service of
``fulfillment.services.operations`` and needing its own permission:

- change the schedule (``fulfillment.change_purchase_schedule``),
- release the trainer (``fulfillment.release_trainer``),
- cancel without a refund (``fulfillment.cancel_purchase``),
- add a note (``fulfillment.add_purchase_note``).

Re-assigning to another trainer has its own page (``reassign_trainer``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from admin_ui import display
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.domain.schedule import DeliveryMode
from fulfillment.services import operations

PERMISSIONS = {
    "schedule": "fulfillment.change_purchase_schedule",
    "reassign": "fulfillment.reassign_trainer",
    "release": "fulfillment.release_trainer",
    "cancel": "fulfillment.cancel_purchase",
    "note": "fulfillment.add_purchase_note",
}


def allowed(request: HttpRequest) -> dict[str, bool]:
    """Which of the fixes this operator may make."""
    return {action: request.user.has_perm(name) for action, name in PERMISSIONS.items()}


def has_permission(request: HttpRequest) -> bool:
    return any(allowed(request).values())


def _reason_field() -> forms.CharField:
    return forms.CharField(
        max_length=500,
        help_text="Why (it goes in the purchase's trace).",
        widget=forms.TextInput(attrs={"class": "vTextField"}),
    )


class ScheduleForm(forms.Form):
    time_slot = forms.TimeField(
        label="Time", widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )
    # A date input shows and sends only ISO dates; any other format it drops.
    start_date = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    delivery_mode = forms.ChoiceField(choices=DeliveryMode.choices())
    reason = _reason_field()


class ReasonForm(forms.Form):
    reason = _reason_field()


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


def purchase_changes_view(
    request: HttpRequest,
    purchase_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Purchase],
) -> HttpResponse:
    may = allowed(request)
    if not any(may.values()):
        raise PermissionDenied
    purchase = get_object_or_404(
        models.Purchase.objects.select_related(
            "student", "course", "payment", "trainer"
        ),
        pk=purchase_id,
    )
    change_url = reverse("admin:fulfillment_purchase_change", args=[purchase.pk])
    initial = {
        "time_slot": purchase.time_slot,
        "start_date": purchase.start_date,
        "delivery_mode": purchase.delivery_mode,
    }
    posted = request.POST.get("action", "") if request.method == "POST" else ""
    forms_by_action: dict[str, forms.Form] = {
        "schedule": ScheduleForm(
            request.POST if posted == "schedule" else None,
            initial=initial,
            prefix="schedule",
        ),
        "release": ReasonForm(
            request.POST if posted == "release" else None, prefix="release"
        ),
        "cancel": ReasonForm(
            request.POST if posted == "cancel" else None, prefix="cancel"
        ),
        "note": NoteForm(request.POST if posted == "note" else None, prefix="note"),
    }
    if posted:
        if posted not in forms_by_action:
            model_admin.message_user(request, "Choose what to change.", messages.ERROR)
        elif not may[posted]:
            raise PermissionDenied
        else:
            form = forms_by_action[posted]
            if form.is_valid():
                try:
                    done = ACTIONS[posted](
                        purchase.pk, operator_name(request), form.cleaned_data
                    )
                except operations.OperationRefused as error:
                    form.add_error(
                        error.field if error.field in form.fields else None, str(error)
                    )
                else:
                    model_admin.message_user(request, done, messages.SUCCESS)
                    return HttpResponseRedirect(change_url)
    status = models.Purchase.Status
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Change {display.purchase_label(purchase)}",
        "purchase": purchase,
        "schedule": display.purchase_schedule(purchase),
        "change_url": change_url,
        "forms": forms_by_action,
        "may": may,
        "changeable": purchase.status in operations.CHANGEABLE_STATUSES,
        "allocated": purchase.status == status.ALLOCATED,
        "posted": posted,
    }
    return TemplateResponse(request, "admin_ui/purchase_changes.html", context)


def _schedule(purchase_id: uuid.UUID, operator: str, data: dict[str, Any]) -> str:
    purchase = operations.purchase_schedule_change(
        purchase_id=purchase_id,
        operator=operator,
        reason=data["reason"],
        time_slot=data["time_slot"],
        start_date=data["start_date"],
        delivery_mode=data["delivery_mode"],
    )
    return f"Schedule changed. {purchase.status_reason}"


def _release(purchase_id: uuid.UUID, operator: str, data: dict[str, Any]) -> str:
    purchase = operations.purchase_release_trainer(
        purchase_id=purchase_id, operator=operator, reason=data["reason"]
    )
    return f"Trainer released. {purchase.status_reason}"


def _cancel(purchase_id: uuid.UUID, operator: str, data: dict[str, Any]) -> str:
    purchase = operations.purchase_cancel(
        purchase_id=purchase_id, operator=operator, reason=data["reason"]
    )
    return purchase.status_reason


def _note(purchase_id: uuid.UUID, operator: str, data: dict[str, Any]) -> str:
    operations.purchase_note_add(
        purchase_id=purchase_id, operator=operator, note=data["note"]
    )
    return "Note added to the trace."


ACTIONS: dict[str, Callable[[uuid.UUID, str, dict[str, Any]], str]] = {
    "schedule": _schedule,
    "release": _release,
    "cancel": _cancel,
    "note": _note,
}
