"""Purchases, their tutoring sessions and students, read-only: a waiting purchase
changes only through Retry allocation and Assign trainer
(``admin_ui.views.retry_allocation``, ``admin_ui.views.assign_trainer``)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, linebreaks

from admin_ui import display
from admin_ui import selectors as console_selectors
from admin_ui.admin.base import (
    EXPORT_CHANGE_LIST,
    CsvExportMixin,
    DateRangeFilter,
    ReadOnlyAdmin,
    ReadOnlyInline,
)
from admin_ui.views import (
    assign_trainer,
    purchase_changes,
    reassign_trainer,
    retry_allocation,
)
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.models import WAITING_STATUSES
from fulfillment.services import operations


class PurchaseOfStudentInline(ReadOnlyInline[models.Purchase, models.Student]):
    model = models.Purchase
    extra = 0
    can_delete = False
    show_change_link = True
    classes = ["ops-quiet-original"]
    fields = readonly_fields = ("course", "status", "trainer", "created_at")


@admin.register(models.Student)
class StudentAdmin(ReadOnlyAdmin[models.Student]):
    list_display = ["name", "email", "phone", "created_at"]
    search_fields = ["name", "email", "phone", "=id"]
    inlines = [PurchaseOfStudentInline]


class UrgencyFilter(admin.SimpleListFilter):
    """Waiting purchases by how soon they must start, or how long they waited."""

    title = "urgency"
    parameter_name = "urgency"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("passed", "Waiting, start date passed"),
            ("soon", "Waiting, starts within 3 days"),
            ("sla", f"Waitlisted over {settings.WAITLIST_SLA_HOURS} h"),
        ]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        today = timezone.localdate()
        waiting = queryset.filter(status__in=WAITING_STATUSES)
        if self.value() == "passed":
            return waiting.filter(start_date__lt=today)
        if self.value() == "soon":
            return waiting.filter(
                start_date__gte=today, start_date__lte=today + dt.timedelta(days=3)
            )
        if self.value() == "sla":
            late = console_selectors.waitlist_sla()
            return queryset.filter(
                Q(status=models.Purchase.Status.WAITLISTED),
                payment__created_at__lt=timezone.now() - late,
            )
        return queryset


class TutoringSessionInline(ReadOnlyInline[models.TutoringSession, models.Purchase]):
    model = models.TutoringSession
    extra = 0
    can_delete = False
    classes = ["ops-quiet-original"]
    fields = readonly_fields = ("sequence", "starts_at", "ends_at", "status", "trainer")


@admin.register(models.Purchase)
class PurchaseAdmin(CsvExportMixin, ReadOnlyAdmin[models.Purchase]):
    list_display = [
        "student",
        "course",
        "status_display",
        "trainer",
        "start_date",
        "created_at",
    ]
    list_filter = [
        "status",
        UrgencyFilter,
        "course",
        "trainer",
        ("created_at", DateRangeFilter),
    ]
    # Names, email and phone use the trigram indexes of migration 0010.
    search_fields = [
        "=payment__payment_intent",
        "=id",
        "student__name",
        "student__email",
        "student__phone",
        "trainer__name",
    ]
    list_select_related = ["student", "course", "trainer", "payment"]
    change_list_template = EXPORT_CHANGE_LIST
    csv_columns = (
        ("purchase_id", lambda p: p.pk),
        ("payment_intent", lambda p: p.payment.payment_intent),
        ("status", lambda p: p.status),
        ("student", lambda p: p.student.name),
        ("email", lambda p: p.student.email),
        ("phone", lambda p: p.student.phone),
        ("course", lambda p: p.course.title),
        ("trainer", lambda p: p.trainer.name if p.trainer else ""),
        ("total_sessions", lambda p: p.total_sessions),
        ("delivery_mode", lambda p: p.delivery_mode),
        ("start_date", lambda p: p.start_date),
        ("time_slot", lambda p: f"{p.time_slot:%H:%M}"),
        ("paid_at", lambda p: p.payment.created_at),
        ("recorded_at", lambda p: p.created_at),
        ("allocated_at", lambda p: p.allocated_at),
        ("reason", lambda p: p.status_reason.replace("\n", " ")),
    )
    fieldsets = [
        (None, {"fields": ["status_display", "why"]}),
        (
            "Purchase",
            {
                "fields": [
                    "student_link",
                    "contact",
                    "course",
                    "schedule",
                    "location",
                    "trainer",
                    "allocation_note",
                    "payment_link",
                    "created_at",
                    "allocated_at",
                ]
            },
        ),
        ("Trace", {"fields": ["trace"]}),
    ]
    readonly_fields = [
        "status_display",
        "why",
        "student_link",
        "contact",
        "course",
        "schedule",
        "location",
        "trainer",
        "allocation_note",
        "payment_link",
        "created_at",
        "allocated_at",
        "trace",
    ]
    inlines = [TutoringSessionInline]
    actions = [
        "retry_allocation_action",
        "assign_trainer_action",
        "export_csv_action",
    ]
    change_form_template = "admin_ui/purchase_change_form.html"
    object_history_template = "admin_ui/purchase_history.html"

    # Displays.

    @admin.display(description="Status", ordering="status")
    def status_display(self, purchase: models.Purchase) -> str:
        return display.status_badge(
            purchase.status, models.Purchase.Status(purchase.status).label
        )

    @admin.display(description="Why")
    def why(self, purchase: models.Purchase) -> str:
        waiting = console_selectors.waiting_reason(purchase=purchase)
        if waiting is None:
            return linebreaks(purchase.status_reason or "-")
        # The headline in bold, then the full breakdown (fit.waitlist_reason).
        headline, _, breakdown = waiting.reason.partition("\n")
        return format_html(
            '<span class="{}"><strong>{}</strong>{}</span>{}',
            "ops-alarm" if waiting.alarming else "ops-reason",
            headline,
            format_html("<br>{}", breakdown) if breakdown else "",
            format_html(
                ' <span class="ops-badge ops-urgency-{}">{}</span>',
                waiting.urgency.level,
                waiting.urgency.label,
            )
            if waiting.urgency
            else "",
        )

    @admin.display(description="Student")
    def student_link(self, purchase: models.Purchase) -> str:
        student = purchase.student
        return format_html(
            '<a href="{}">{}</a> {}',
            reverse("admin:fulfillment_student_change", args=[student.pk]),
            student.name,
            f"<{student.email}>" if student.email else "",
        )

    @admin.display(description="Contact")
    def contact(self, purchase: models.Purchase) -> str:
        return display.student_contact(purchase.student)

    @admin.display(description="Schedule")
    def schedule(self, purchase: models.Purchase) -> str:
        return display.purchase_schedule(purchase)

    @admin.display(description="Student's home")
    def location(self, purchase: models.Purchase) -> str:
        return display.purchase_location(purchase)

    @admin.display(description="Assigned")
    def allocation_note(self, purchase: models.Purchase) -> str:
        current = purchase.allocations.filter(
            status=models.TrainerAllocation.Status.ACTIVE
        ).first()
        if current is None:
            return "-"
        if not current.assigned_by:
            return "automatically"
        note = f"by {current.assigned_by}"
        if current.override_reason:
            note += f": {current.override_reason}"
        return note

    @admin.display(description="Payment")
    def payment_link(self, purchase: models.Purchase) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:fulfillment_payment_change", args=[purchase.payment_id]),
            purchase.payment.payment_intent,
        )

    @admin.display(description="Trace (oldest first)")
    def trace(self, purchase: models.Purchase) -> str:
        return display.trace_timeline(purchase.payment.payment_intent)

    # Actions.

    def has_retry_allocation_permission(self, request: HttpRequest) -> bool:
        return retry_allocation.has_permission(request)

    def has_assign_trainer_permission(self, request: HttpRequest) -> bool:
        return assign_trainer.has_permission(request)

    @admin.action(description="Retry allocation now", permissions=["retry_allocation"])
    def retry_allocation_action(
        self, request: HttpRequest, queryset: QuerySet[models.Purchase]
    ) -> None:
        outcomes: dict[str, int] = {}
        for purchase_id in queryset.filter(status__in=WAITING_STATUSES).values_list(
            "pk", flat=True
        ):
            try:
                purchase = operations.purchase_retry_allocation(
                    purchase_id=purchase_id, operator=operator_name(request)
                )
            except operations.OperationRefused:
                continue  # it changed meanwhile; the page shows its new state
            label = models.Purchase.Status(purchase.status).label.lower()
            outcomes[label] = outcomes.get(label, 0) + 1
        if not outcomes:
            self.message_user(
                request, "None of those purchases is waiting.", messages.WARNING
            )
            return
        summary = ", ".join(f"{count} {label}" for label, count in outcomes.items())
        self.message_user(request, f"Allocation retried: {summary}.", messages.SUCCESS)

    @admin.action(description="Assign trainer…", permissions=["assign_trainer"])
    def assign_trainer_action(
        self, request: HttpRequest, queryset: QuerySet[models.Purchase]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(
                request, "Choose one purchase to assign a trainer to.", messages.WARNING
            )
            return None
        return HttpResponseRedirect(
            reverse("admin:fulfillment_purchase_assign", args=[queryset.get().pk])
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            self.export_url(),
            path(
                "<uuid:purchase_id>/assign-trainer/",
                self.admin_site.admin_view(
                    partial(assign_trainer.assign_trainer_view, model_admin=self)
                ),
                name="fulfillment_purchase_assign",
            ),
            path(
                "<uuid:purchase_id>/retry-allocation/",
                self.admin_site.admin_view(
                    partial(retry_allocation.retry_allocation_view, model_admin=self)
                ),
                name="fulfillment_purchase_retry",
            ),
            # The fixes a phone call asks for (item 2 of issue #13).
            path(
                "<uuid:purchase_id>/change/fix/",
                self.admin_site.admin_view(
                    partial(purchase_changes.purchase_changes_view, model_admin=self)
                ),
                name="fulfillment_purchase_fix",
            ),
            path(
                "<uuid:purchase_id>/reassign-trainer/",
                self.admin_site.admin_view(
                    partial(reassign_trainer.reassign_trainer_view, model_admin=self)
                ),
                name="fulfillment_purchase_reassign",
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
        purchase = self.get_object(request, object_id)
        waiting = purchase is not None and purchase.status in WAITING_STATUSES
        extra_context = {
            **(extra_context or {}),
            "can_assign": waiting and self.has_assign_trainer_permission(request),
            "can_retry": waiting and self.has_retry_allocation_permission(request),
            "can_fix": purchase is not None
            and purchase_changes.has_permission(request),
        }
        if purchase is not None:
            extra_context["subtitle"] = display.purchase_label(purchase)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(
        self,
        request: HttpRequest,
        object_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Admin's change history (empty: purchases change only through the
        pipeline and actions), and the trace, which is the real history."""
        purchase = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if purchase is not None:
            extra_context["subtitle"] = display.purchase_label(purchase)
            extra_context["trace"] = display.trace_timeline(
                purchase.payment.payment_intent
            )
        return super().history_view(request, object_id, extra_context)


@admin.register(models.TutoringSession)
class TutoringSessionAdmin(ReadOnlyAdmin[models.TutoringSession]):
    list_display = ["starts_at", "purchase_name", "sequence", "trainer", "status"]
    list_filter = ["status", "trainer"]
    list_select_related = ["purchase__student", "purchase__course", "trainer"]
    search_fields = ["purchase__student__name", "trainer__name"]
    date_hierarchy = "starts_at"

    @admin.display(description="Purchase")
    def purchase_name(self, session: models.TutoringSession) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:fulfillment_purchase_change", args=[session.purchase_id]),
            display.purchase_label(session.purchase),
        )
