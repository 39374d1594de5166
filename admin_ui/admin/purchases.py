"""The operations console's admin pages.

Pages read through ``fulfillment.selectors`` and ``admin_ui.selectors``;
every action calls a service of ``fulfillment.services.operations`` and needs its
own permission (created with the Operations and Support groups by
``admin_ui/migrations/0001_operations_groups.py``). Rows the pipeline owns
(purchases, payments, sessions, deliveries) are read-only here: they change only
through actions.
"""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from admin_ui import display
from admin_ui import selectors as console_selectors
from admin_ui.views import (
    assign_trainer,
    failed_jobs,
    payment_reprocess,
    retry_allocation,
)
from admin_ui.views.base import operator_name
from fulfillment import models, selectors
from fulfillment.services import operations

_M = TypeVar("_M", bound=Model)


admin.site.site_header = "Fulfilment operations"
admin.site.site_title = "Fulfilment operations"
admin.site.index_title = "Operations"


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """Rows the pipeline owns: looked at here, changed only through actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_Parent = TypeVar("_Parent", bound=Model)


class ReadOnlyInline(admin.TabularInline[_M, _Parent]):
    """Rows shown inside their parent's page, never added or changed there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- catalogue --------------------------------------------------------------------


class CatalogueAdmin(admin.ModelAdmin[_M]):
    """Courses and trainers: a change may let waitlisted purchases fit, so the
    waitlist is tried again, in the same transaction as the change."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Purchases and allocations point at them; retire a trainer instead.
        return False

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        operations.waitlist_recheck()


@admin.register(models.Course)
class CourseAdmin(CatalogueAdmin[models.Course]):
    list_display = ["title", "mode", "trainer_count", "waiting_count"]
    list_filter = ["mode"]
    search_fields = ["title", "=id"]
    readonly_fields = ["id", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.Course]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                trainer_count=Count("trainers", distinct=True),
                waiting_count=Count(
                    "purchases",
                    filter=Q(purchases__status__in=console_selectors.WAITING_STATUSES),
                    distinct=True,
                ),
            )
        )

    @admin.display(description="Trainers", ordering="trainer_count")
    def trainer_count(self, course: Any) -> int:
        return int(course.trainer_count)

    @admin.display(description="Purchases waiting", ordering="waiting_count")
    def waiting_count(self, course: Any) -> int:
        return int(course.waiting_count)


@admin.register(models.Trainer)
class TrainerAdmin(CatalogueAdmin[models.Trainer]):
    list_display = [
        "name",
        "is_active",
        "utilisation",
        "max_travel_km",
        "working_hours",
        "course_list",
    ]
    list_filter = ["is_active", "courses"]
    search_fields = ["name", "email"]
    filter_horizontal = ["courses"]
    readonly_fields = [
        "utilisation",
        "active_allocations_list",
        "upcoming_reservations",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "email", "is_active", "courses"]}),
        ("Travel", {"fields": ["latitude", "longitude", "max_travel_km"]}),
        (
            "Working time",
            {
                "fields": ["weekdays", "work_start", "work_end"],
                "description": "Weekdays: 0 is Monday … 6 is Sunday, comma separated.",
            },
        ),
        (
            "Load",
            {
                "fields": [
                    "max_active_students",
                    "utilisation",
                    "active_allocations_list",
                    "upcoming_reservations",
                ]
            },
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.Trainer]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_count=Count(
                    "allocations",
                    filter=Q(
                        allocations__status=models.TrainerAllocation.Status.ACTIVE
                    ),
                    distinct=True,
                )
            )
            .prefetch_related("courses")
        )

    @admin.display(description="Active students", ordering="active_count")
    def utilisation(self, trainer: Any) -> str:
        if trainer._state.adding:
            return "-"
        active = int(getattr(trainer, "active_count", 0))
        share = (
            active / trainer.max_active_students if trainer.max_active_students else 1
        )
        return format_html(
            '<span class="ops-meter{}">{} of {} ({}%)</span>',
            " ops-full" if active >= trainer.max_active_students else "",
            active,
            trainer.max_active_students,
            round(share * 100),
        )

    @admin.display(description="Works")
    def working_hours(self, trainer: models.Trainer) -> str:
        days = ", ".join(display.WEEKDAY_NAMES[day] for day in sorted(trainer.weekdays))
        return f"{days} · {trainer.work_start:%H:%M}\N{EN DASH}{trainer.work_end:%H:%M}"

    @admin.display(description="Teaches")
    def course_list(self, trainer: models.Trainer) -> str:
        return ", ".join(course.title for course in trainer.courses.all())

    @admin.display(description="Active allocations")
    def active_allocations_list(self, trainer: models.Trainer) -> str:
        if trainer._state.adding:
            return "-"
        rows = console_selectors.trainer_active_allocations(trainer=trainer)
        if not rows:
            return "None."
        return format_html(
            "<ul class='ops-plain'>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{} · {}</a>{}</li>',
                (
                    (
                        reverse(
                            "admin:fulfillment_purchase_change",
                            args=[a.purchase_id],
                        ),
                        a.purchase.student.name,
                        a.purchase.course.title,
                        format_html(
                            " <em>assigned by {}: {}</em>",
                            a.assigned_by,
                            a.override_reason or "fits",
                        )
                        if a.assigned_by
                        else "",
                    )
                    for a in rows
                ),
            ),
        )

    @admin.display(description="Upcoming sessions")
    def upcoming_reservations(self, trainer: models.Trainer) -> str:
        if trainer._state.adding:
            return "-"
        rows = console_selectors.trainer_upcoming_reservations(trainer=trainer)
        if not rows:
            return "Nothing booked."
        return format_html(
            "<ul class='ops-plain'>{}</ul>",
            format_html_join(
                "",
                "<li>{} \N{EN DASH} {} · {} · {} (session {})</li>",
                (
                    (
                        f"{timezone.localtime(r.during.lower):%a %d %b %H:%M}",
                        f"{timezone.localtime(r.during.upper):%H:%M}",
                        r.allocation.purchase.student.name,
                        r.allocation.purchase.course.title,
                        r.sequence,
                    )
                    for r in rows
                ),
            ),
        )


# --- people and payments ----------------------------------------------------------


class PurchaseOfStudentInline(ReadOnlyInline[models.Purchase, models.Student]):
    model = models.Purchase
    extra = 0
    can_delete = False
    show_change_link = True
    classes = ["ops-quiet-original"]
    fields = readonly_fields = ("course", "status", "trainer", "created_at")


@admin.register(models.Student)
class StudentAdmin(ReadOnlyAdmin[models.Student]):
    list_display = ["name", "email", "created_at"]
    search_fields = ["name", "email", "=id"]
    inlines = [PurchaseOfStudentInline]


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Needs attention"), ("no", "Fine")]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return selectors.payments_needing_attention()
        if self.value() == "no":
            return queryset.exclude(
                pk__in=selectors.payments_needing_attention().values("pk")
            )
        return queryset


@admin.register(models.Payment)
class PaymentAdmin(ReadOnlyAdmin[models.Payment]):
    list_display = [
        "payment_intent",
        "amount_display",
        "status",
        "attention",
        "purchase_link",
        "created_at",
    ]
    list_filter = [NeedsAttentionFilter, "status"]
    search_fields = ["=payment_intent"]
    fields = readonly_fields = (
        "payment_intent",
        "amount_display",
        "status",
        "attention_reason",
        "purchase_link",
        "metadata",
        "created_at",
        "updated_at",
        "trace",
    )
    actions = ["reprocess_action"]
    change_form_template = "admin_ui/payment_change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.Payment]:
        return super().get_queryset(request).select_related("purchase")

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
            and selectors.payments_needing_attention().filter(pk=payment.pk).exists(),
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


# --- purchases --------------------------------------------------------------------


class TutoringSessionInline(ReadOnlyInline[models.TutoringSession, models.Purchase]):
    model = models.TutoringSession
    extra = 0
    can_delete = False
    classes = ["ops-quiet-original"]
    fields = readonly_fields = ("sequence", "starts_at", "ends_at", "status", "trainer")


@admin.register(models.Purchase)
class PurchaseAdmin(ReadOnlyAdmin[models.Purchase]):
    list_display = [
        "student",
        "course",
        "status_display",
        "trainer",
        "start_date",
        "created_at",
    ]
    list_filter = ["status", "course", "trainer"]
    search_fields = [
        "payment__payment_intent",
        "student__name",
        "student__email",
    ]
    list_select_related = ["student", "course", "trainer"]
    fieldsets = [
        (None, {"fields": ["status_display", "why"]}),
        (
            "Purchase",
            {
                "fields": [
                    "student_link",
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
    actions = ["retry_allocation_action", "assign_trainer_action"]
    change_form_template = "admin_ui/purchase_change_form.html"

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
            return purchase.status_reason or "-"
        return format_html(
            '<span class="{}">{}</span>',
            "ops-alarm" if waiting.alarming else "ops-reason",
            waiting.reason,
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
        for purchase_id in queryset.filter(
            status__in=console_selectors.WAITING_STATUSES
        ).values_list("pk", flat=True):
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
        waiting = (
            purchase is not None
            and purchase.status in console_selectors.WAITING_STATUSES
        )
        extra_context = {
            **(extra_context or {}),
            "can_assign": waiting and self.has_assign_trainer_permission(request),
            "can_retry": waiting and self.has_retry_allocation_permission(request),
        }
        if purchase is not None:
            extra_context["subtitle"] = display.purchase_label(purchase)
        return super().change_view(request, object_id, form_url, extra_context)


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


# --- jobs -------------------------------------------------------------------------


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
