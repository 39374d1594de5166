"""The operations console's admin pages.

Pages read through ``fulfillment.selectors`` and ``fulfillment.console_selectors``;
every action calls a service of ``fulfillment.services.operations`` and needs its
own permission (created with the Operations and Support groups by
``admin_ui/migrations/0001_operations_groups.py``). Rows the pipeline owns
(purchases, payments, sessions, deliveries) are read-only here: they change only
through actions.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from fulfillment import console_selectors, models
from fulfillment.domain import fit
from fulfillment.domain.money import format_amount
from fulfillment.domain.schedule import DeliveryMode, Slot, fits_working_hours
from fulfillment.selectors.purchases import payments_needing_attention
from fulfillment.selectors.trace import payment_trace
from fulfillment.services import operations

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WEEKDAY_PLURALS = (
    "Mondays",
    "Tuesdays",
    "Wednesdays",
    "Thursdays",
    "Fridays",
    "Saturdays",
    "Sundays",
)
_M = TypeVar("_M", bound=Model)


admin.site.site_header = "Fulfilment operations"
admin.site.site_title = "Fulfilment operations"
admin.site.index_title = "Operations"


def operator_name(request: HttpRequest) -> str:
    return request.user.get_username()


def redirect_back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """To ``next`` when it is a page of this site, else to ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = default
    return HttpResponseRedirect(target or default)


def trace_timeline(payment_intent: str) -> SafeString:
    """The payment's whole path, oldest first, as the page's timeline."""
    trace = payment_trace(reference=payment_intent)
    entries = trace.entries if trace else ()
    return SafeString(
        render_to_string("admin_ui/trace_timeline.html", {"entries": entries})
    )


def purchase_label(purchase: models.Purchase) -> str:
    """What people call a purchase (its ``__str__`` is made of ids)."""
    return f"{purchase.course.title} for {purchase.student.name}"


def status_badge(status: str, label: str) -> SafeString:
    return format_html('<span class="ops-badge ops-{}">{}</span>', status, label)


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
        days = ", ".join(WEEKDAY_NAMES[day] for day in sorted(trainer.weekdays))
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
            return payments_needing_attention()
        if self.value() == "no":
            return queryset.exclude(pk__in=payments_needing_attention().values("pk"))
        return queryset


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
    delivery_mode = forms.ChoiceField(
        choices=[
            (DeliveryMode.WEEKDAY_DAILY.value, "Monday to Friday"),
            (DeliveryMode.SUNDAY_ONLY.value, "Sundays"),
        ]
    )
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
        refunded = format_amount(payment.amount_refunded, payment.currency)
        shown = format_amount(payment.amount, payment.currency)
        return f"{shown} ({refunded} refunded)" if payment.amount_refunded else shown

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
        return trace_timeline(payment.payment_intent)

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("fulfillment.reprocess_payment")

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
                self.admin_site.admin_view(self.reprocess_view),
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

    def reprocess_view(
        self, request: HttpRequest, payment_id: uuid.UUID
    ) -> HttpResponse:
        if not self.has_reprocess_permission(request):
            raise PermissionDenied
        payment = get_object_or_404(models.Payment, pk=payment_id)
        stored = payment.metadata if isinstance(payment.metadata, dict) else {}
        initial = {
            key: value for key, value in stored.items() if isinstance(value, str)
        }
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
                self.message_user(
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
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Correct and reprocess {payment.payment_intent}",
            "payment": payment,
            "form": form,
            "unresolved": unresolved,
            "failing_field": failing_field,
            "failing_value": stored.get(failing_field, ""),
            "amount": self.amount_display(payment),
        }
        return TemplateResponse(request, "admin_ui/payment_reprocess.html", context)


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
        return status_badge(
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
        return (
            f"{purchase.total_sessions} sessions, "
            f"{purchase.get_delivery_mode_display()} at "
            f"{purchase.time_slot:%H:%M}, from {purchase.start_date:%a %d %b %Y}"
        )

    @admin.display(description="Student's home")
    def location(self, purchase: models.Purchase) -> str:
        if purchase.latitude is None or purchase.longitude is None:
            return "not given"
        return f"{purchase.latitude:.4f}, {purchase.longitude:.4f}"

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
        return trace_timeline(purchase.payment.payment_intent)

    # Actions.

    def has_retry_allocation_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("fulfillment.retry_allocation")

    def has_assign_trainer_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("fulfillment.assign_trainer")

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
                self.admin_site.admin_view(self.assign_view),
                name="fulfillment_purchase_assign",
            ),
            path(
                "<uuid:purchase_id>/retry-allocation/",
                self.admin_site.admin_view(require_POST(self.retry_view)),
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
            extra_context["subtitle"] = purchase_label(purchase)
        return super().change_view(request, object_id, form_url, extra_context)

    def retry_view(self, request: HttpRequest, purchase_id: uuid.UUID) -> HttpResponse:
        if not self.has_retry_allocation_permission(request):
            raise PermissionDenied
        change_url = reverse("admin:fulfillment_purchase_change", args=[purchase_id])
        try:
            purchase = operations.purchase_retry_allocation(
                purchase_id=purchase_id, operator=operator_name(request)
            )
        except operations.OperationRefused as error:
            self.message_user(request, str(error), messages.WARNING)
        else:
            level = (
                messages.SUCCESS
                if purchase.status == models.Purchase.Status.ALLOCATED
                else messages.WARNING
            )
            self.message_user(
                request,
                f"Allocation retried: {purchase.status_reason}",
                level,
            )
        return redirect_back(request, change_url)

    def assign_view(self, request: HttpRequest, purchase_id: uuid.UUID) -> HttpResponse:
        if not self.has_assign_trainer_permission(request):
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
                self.message_user(request, "Choose a trainer.", messages.ERROR)
            else:
                try:
                    purchase = operations.purchase_assign_trainer(
                        purchase_id=purchase.pk,
                        trainer_id=trainer_id,
                        operator=operator_name(request),
                        reason=reason,
                    )
                except operations.OperationRefused as error:
                    self.message_user(request, str(error), messages.ERROR)
                    error_field = error.field
                else:
                    self.message_user(
                        request,
                        f"{purchase.status_reason} Sessions are being created.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(change_url)
        waiting = purchase.status in console_selectors.WAITING_STATUSES
        slots, candidates = (
            console_selectors.assign_candidates(purchase=purchase)
            if waiting
            else ([], [])
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Assign a trainer to {purchase.student.name}",
            "purchase": purchase,
            "waiting": waiting,
            "why": console_selectors.waiting_reason(purchase=purchase),
            "schedule": self.schedule(purchase),
            "location": self.location(purchase),
            "first_session": slots[0] if slots else None,
            "last_session": slots[-1] if slots else None,
            "rows": [candidate_row(c, slots) for c in candidates if c.teaches_course],
            "others": [
                candidate_row(c, slots) for c in candidates if not c.teaches_course
            ],
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
        ", ".join(WEEKDAY_NAMES[day] for day in sorted(trainer.weekdays))
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
            purchase_label(session.purchase),
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

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("fulfillment.retry_failed_jobs")

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "retry/",
                self.admin_site.admin_view(require_POST(self.retry_view)),
                name="fulfillment_jobfailure_retry",
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_retry_permission(request):
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
        self.message_user(
            request, message, messages.SUCCESS if retried else messages.WARNING
        )
        return redirect_back(request, reverse("admin:index"))
