"""Payments and webhook deliveries, read-only: a payment that could not become a
purchase is fixed through the Correct and reprocess page
(``admin_ui.views.payment_reprocess``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from admin_ui import display
from admin_ui.admin.base import (
    EXPORT_CHANGE_LIST,
    CsvExportMixin,
    DateRangeFilter,
    ReadOnlyAdmin,
)
from admin_ui.views import payment_reprocess
from fulfillment import models
from fulfillment.selectors.purchases import payments_needing_attention


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Needs attention"), ("no", "Fine")]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return payments_needing_attention()
        if self.value() == "no":
            return queryset.exclude(pk__in=payments_needing_attention().values("pk"))
        return queryset


@admin.register(models.Payment)
class PaymentAdmin(CsvExportMixin, ReadOnlyAdmin[models.Payment]):
    list_display = [
        "payment_intent",
        "who",
        "amount_display",
        "status",
        "attention",
        "purchase_link",
        "created_at",
    ]
    list_filter = [
        NeedsAttentionFilter,
        "status",
        "purchase__course",
        "purchase__trainer",
        ("created_at", DateRangeFilter),
    ]
    # The student of a payment that needs attention exists only in its
    # metadata; both are searched (trigram indexes, migration 0010).
    search_fields = [
        "=payment_intent",
        "=purchase__id",
        "purchase__student__name",
        "purchase__student__email",
        "purchase__student__phone",
        "metadata__student_name",
        "metadata__student_email",
        "metadata__student_phone",
    ]
    change_list_template = EXPORT_CHANGE_LIST
    csv_columns = (
        ("payment_intent", lambda p: p.payment_intent),
        ("amount_minor_units", lambda p: p.amount),
        ("currency", lambda p: p.currency),
        ("status", lambda p: p.status),
        ("student", lambda p: p.metadata.get("student_name", "")),
        ("email", lambda p: p.metadata.get("student_email", "")),
        ("phone", lambda p: p.metadata.get("student_phone", "")),
        ("needs_attention", lambda p: p.attention_reason),
        ("purchase_id", lambda p: getattr(getattr(p, "purchase", None), "pk", "")),
        ("paid_at", lambda p: p.created_at),
    )
    fields = readonly_fields = (
        "payment_intent",
        "who",
        "amount_display",
        "status",
        "attention_reason",
        "purchase_link",
        "metadata",
        "created_at",
        "updated_at",
        "trace",
    )
    actions = ["reprocess_action", "export_csv_action"]
    change_form_template = "admin_ui/payment_change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.Payment]:
        return super().get_queryset(request).select_related("purchase__student")

    @admin.display(description="Who paid")
    def who(self, payment: models.Payment) -> str:
        purchase = getattr(payment, "purchase", None)
        if purchase is not None:
            student = purchase.student
            return " · ".join(
                filter(None, [student.name, student.email, student.phone])
            )
        return display.metadata_contact(payment) or "-"

    @admin.display(description="Amount")
    def amount_display(self, payment: models.Payment) -> str:
        return display.payment_amount(payment)

    @admin.display(description="Needs attention")
    def attention(self, payment: models.Payment) -> str:
        if not payment.attention_reason or hasattr(payment, "purchase"):
            return ""
        return format_html(
            '<span class="ops-alarm">{}</span>', payment.attention_reason
        )

    @admin.display(description="Purchase")
    def purchase_link(self, payment: models.Payment) -> str:
        purchase = getattr(payment, "purchase", None)
        if purchase is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:fulfillment_purchase_change", args=[purchase.pk]),
            models.Purchase.Status(purchase.status).label,
        )

    @admin.display(description="Trace")
    def trace(self, payment: models.Payment) -> str:
        return display.trace_timeline(payment.payment_intent)

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return payment_reprocess.has_permission(request)

    @admin.action(description="Correct and reprocess…", permissions=["reprocess"])
    def reprocess_action(
        self, request: HttpRequest, queryset: QuerySet[models.Payment]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(
                request, "Choose one payment to correct.", messages.WARNING
            )
            return None
        payment = queryset.get()
        return HttpResponseRedirect(
            reverse("admin:fulfillment_payment_reprocess", args=[payment.pk])
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            self.export_url(),
            path(
                "<uuid:payment_id>/reprocess/",
                self.admin_site.admin_view(
                    partial(payment_reprocess.payment_reprocess_view, model_admin=self)
                ),
                name="fulfillment_payment_reprocess",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        payment = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "can_reprocess": payment is not None
            and self.has_reprocess_permission(request)
            and payments_needing_attention().filter(pk=payment.pk).exists(),
        }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin[models.WebhookDelivery]):
    list_display = [
        "received_at",
        "event_type",
        "payment_intent",
        "outcome",
        "detail",
        "event_id",
    ]
    list_filter = ["event_type", "outcome"]
    search_fields = ["=event_id", "=payment_intent"]
