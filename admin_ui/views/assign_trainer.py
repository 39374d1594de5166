"""The purchase's "Assign trainer" page: every trainer, with the rules each one
breaks for this purchase, and a form to assign one by hand
(``operations.purchase_assign_trainer``). Needs ``fulfillment.assign_trainer``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from admin_ui import display
from admin_ui import selectors as console_selectors
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.domain import fit
from fulfillment.domain.schedule import Slot, fits_working_hours
from fulfillment.models import WAITING_STATUSES
from fulfillment.services import operations

WEEKDAY_PLURALS = (
    "Mondays",
    "Tuesdays",
    "Wednesdays",
    "Thursdays",
    "Fridays",
    "Saturdays",
    "Sundays",
)


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.assign_trainer")


def assign_trainer_view(
    request: HttpRequest,
    purchase_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Purchase],
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    purchase = get_object_or_404(
        models.Purchase.objects.select_related("student", "course", "payment"),
        pk=purchase_id,
    )
    change_url = reverse("admin:fulfillment_purchase_change", args=[purchase.pk])
    chosen, reason, error_field = "", "", None
    if request.method == "POST":
        chosen = request.POST.get("trainer", "")
        reason = request.POST.get("reason", "")
        try:
            trainer_id = uuid.UUID(chosen)
        except ValueError:
            model_admin.message_user(request, "Choose a trainer.", messages.ERROR)
        else:
            try:
                purchase = operations.purchase_assign_trainer(
                    purchase_id=purchase.pk,
                    trainer_id=trainer_id,
                    operator=operator_name(request),
                    reason=reason,
                )
            except operations.OperationRefused as error:
                model_admin.message_user(request, str(error), messages.ERROR)
                error_field = error.field
            else:
                model_admin.message_user(
                    request,
                    f"{purchase.status_reason} {console_selectors.sessions_outlook()}",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url)
    waiting = purchase.status in WAITING_STATUSES
    slots, candidates = (
        console_selectors.assign_candidates(purchase=purchase) if waiting else ([], [])
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Assign a trainer to {purchase.student.name}",
        "purchase": purchase,
        "waiting": waiting,
        "why": console_selectors.waiting_reason(purchase=purchase),
        "schedule": display.purchase_schedule(purchase),
        "location": display.purchase_location(purchase),
        "first_session": slots[0] if slots else None,
        "last_session": slots[-1] if slots else None,
        "rows": [candidate_row(c, slots) for c in candidates if c.teaches_course],
        "others": [candidate_row(c, slots) for c in candidates if not c.teaches_course],
        "assignable": any(c.assignable for c in candidates),
        "chosen": chosen,
        "reason": reason,
        "error_field": error_field,
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin_ui/assign_trainer.html", context)


def candidate_row(
    candidate: console_selectors.Candidate, slots: list[Slot]
) -> dict[str, Any]:
    """One trainer on the Assign trainer page: the verdict, and the facts behind
    each rule the trainer breaks, for people."""
    trainer, verdict = candidate.trainer, candidate.verdict
    works = (
        ", ".join(display.WEEKDAY_NAMES[day] for day in sorted(trainer.weekdays))
        + f" {trainer.work_start:%H:%M}\N{EN DASH}{trainer.work_end:%H:%M}"
    )
    distance = (
        f"{verdict.distance_km:.1f} km (up to {trainer.max_travel_km:g})"
        if verdict.distance_km is not None
        else "-"
    )
    load = f"{verdict.trainer.active_allocations} of {trainer.max_active_students}"
    facts = {
        fit.Rule.INACTIVE: "marked inactive",
        fit.Rule.NOT_TEACHING: "not in their courses",
        fit.Rule.TOO_FAR: (
            f"{verdict.distance_km:.1f} km away, travels up to "
            f"{trainer.max_travel_km:g} km"
            if verdict.distance_km is not None
            else "the student's home is not known"
        ),
        fit.Rule.NOT_WORKING: _off_duty(trainer, slots),
        fit.Rule.AT_CAPACITY: f"{load} students already",
        fit.Rule.ALREADY_RESERVED: "booked with another student then",
        fit.Rule.RELEASED: "an operator took this purchase from them",
    }
    return {
        "candidate": candidate,
        "details": [
            {"label": rule.label, "hard": rule.hard, "facts": facts[rule]}
            for rule in verdict.broken
        ],
        "distance": distance,
        "load": load,
        "works": works,
    }


def _off_duty(trainer: models.Trainer, slots: list[Slot]) -> str:
    """The first session the trainer cannot give, and why."""
    tz = timezone.get_default_timezone()
    for slot in slots:
        starts, ends = slot.starts_at.astimezone(tz), slot.ends_at.astimezone(tz)
        if starts.weekday() not in trainer.weekdays:
            return f"does not work on {WEEKDAY_PLURALS[starts.weekday()]}"
        if not fits_working_hours(
            slot, tz=tz, work_start=trainer.work_start, work_end=trainer.work_end
        ):
            return (
                f"sessions {starts:%H:%M}\N{EN DASH}{ends:%H:%M}, works "
                f"{trainer.work_start:%H:%M}\N{EN DASH}{trainer.work_end:%H:%M}"
            )
    return "outside their working time"
