"""The payment's "Correct and reprocess" page: an operator corrects the
PaymentIntent metadata of a payment that could not become a purchase, and
``operations.payment_reprocess`` tries again. Needs
``fulfillment.reprocess_payment``.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

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
from fulfillment.selectors.purchases import payments_needing_attention
from fulfillment.services import operations


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.reprocess_payment")


class MetadataForm(forms.Form):
    """The PaymentIntent metadata (CONTRACT §3), as an operator corrects it.

    Values stay strings: the pipeline's own parser judges them, so a corrected
    payment is held to exactly the rules a webhook delivery is.
    """

    student_id = forms.CharField(label="Student id (UUID)")
    student_name = forms.CharField()
    student_email = forms.CharField(required=False)
    course_id = forms.ChoiceField(label="Course")
    total_sessions = forms.ChoiceField(
        choices=[("10", "10"), ("20", "20"), ("30", "30")]
    )
    delivery_mode = forms.ChoiceField(choices=DeliveryMode.choices())
    start_date = forms.CharField(
        help_text="YYYY-MM-DD", widget=forms.TextInput(attrs={"type": "date"})
    )
    time_slot = forms.CharField(help_text="HH:MM (24-hour) or 3:00 PM")
    latitude = forms.CharField(required=False, help_text="needed for home visits")
    longitude = forms.CharField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field.widget, forms.TextInput):
                field.widget.attrs.setdefault("class", "vTextField")
        cast(forms.ChoiceField, self.fields["course_id"]).choices = [
            ("", "— choose a course —")
        ] + [
            (str(course.pk), f"{course.title} ({course.get_mode_display()})")
            for course in models.Course.objects.order_by("title")
        ]


def payment_reprocess_view(
    request: HttpRequest,
    payment_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Payment],
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    payment = get_object_or_404(models.Payment, pk=payment_id)
    stored = payment.metadata if isinstance(payment.metadata, dict) else {}
    initial = {key: value for key, value in stored.items() if isinstance(value, str)}
    form = MetadataForm(request.POST or None, initial=initial)
    unresolved = payments_needing_attention().filter(pk=payment.pk).exists()
    if request.method == "POST" and unresolved and form.is_valid():
        try:
            purchase = operations.payment_reprocess(
                payment_id=payment.pk,
                metadata=form.cleaned_data,
                operator=operator_name(request),
            )
        except operations.OperationRefused as error:
            form.add_error(
                error.field if error.field in form.fields else None, str(error)
            )
        else:
            model_admin.message_user(
                request,
                "The payment is now a purchase; allocating its trainer has begun.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                reverse("admin:fulfillment_purchase_change", args=[purchase.pk])
            )
    # MetadataError reads "<field>: <problem>".
    failing_field = payment.attention_reason.split(":", 1)[0]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Correct and reprocess {payment.payment_intent}",
        "payment": payment,
        "form": form,
        "unresolved": unresolved,
        "failing_field": failing_field,
        "failing_value": stored.get(failing_field, ""),
        "amount": display.payment_amount(payment),
    }
    return TemplateResponse(request, "admin_ui/payment_reprocess.html", context)
