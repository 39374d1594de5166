"""Courses and trainers: the only rows operators edit directly. Saving one tries
the waitlist again (``CatalogueAdmin``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from admin_ui import display
from admin_ui import selectors as console_selectors
from admin_ui.admin.base import CatalogueAdmin
from admin_ui.views import trainer_week
from admin_ui.views.base import operator_name
from fulfillment import models
from fulfillment.models import WAITING_STATUSES
from fulfillment.services import trainers as trainer_services


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
                    filter=Q(purchases__status__in=WAITING_STATUSES),
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


WEEKDAY_CHOICES = [
    (day, name)
    for day, name in enumerate(
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    )
]


class TrainerForm(forms.ModelForm[models.Trainer]):
    """Weekdays as checkboxes, and every rule the database enforces checked here
    first, so a mistake reads in words rather than as a constraint's name."""

    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAY_CHOICES,
        coerce=int,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "ops-weekdays"}),
        error_messages={"required": "Tick at least one day the trainer works."},
    )

    class Meta:
        model = models.Trainer
        fields = [
            "name",
            "email",
            "is_active",
            "courses",
            "latitude",
            "longitude",
            "max_travel_km",
            "weekdays",
            "work_start",
            "work_end",
            "max_active_students",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("work_start"), data.get("work_end")
        if start is not None and end is not None and start >= end:
            self.add_error(
                "work_end",
                f"The working day must end after it starts ({start:%H:%M}).",
            )
        latitude, longitude = data.get("latitude"), data.get("longitude")
        if latitude is not None and not -90 <= latitude <= 90:
            self.add_error("latitude", "Latitude goes from -90 to 90 degrees.")
        if longitude is not None and not -180 <= longitude <= 180:
            self.add_error("longitude", "Longitude goes from -180 to 180 degrees.")
        travel = data.get("max_travel_km")
        if travel is not None and travel < 0:
            self.add_error("max_travel_km", "Travel distance cannot be negative.")
        # A field with an error here is left out of the model's constraint
        # checks, so their messages (which name constraints) never show.
        return data


@admin.register(models.Trainer)
class TrainerAdmin(CatalogueAdmin[models.Trainer]):
    change_form_template = "admin_ui/trainer_change_form.html"
    form = TrainerForm
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
                "description": "Sessions are booked only on the ticked days, "
                "between the start and end times.",
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
                        display.when(r.during.lower),
                        f"{timezone.localtime(r.during.upper):%H:%M}",
                        r.allocation.purchase.student.name,
                        r.allocation.purchase.course.title,
                        r.sequence,
                    )
                    for r in rows
                ),
            ),
        )

    # Bookings follow the trainer: a save that leaves them unable to come
    # (inactive, a course removed, fewer days or hours, shorter radius, leave)
    # sends those purchases back to allocation, in the save's transaction.

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            return
        _move_bookings(self, request, form.instance)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<uuid:trainer_id>/week/",
                self.admin_site.admin_view(
                    partial(trainer_week.trainer_week_view, model_admin=self)
                ),
                name="fulfillment_trainer_week",
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
        extra_context = {
            **(extra_context or {}),
            "can_see_week": trainer_week.has_permission(request),
            "can_add_leave": request.user.has_perm("fulfillment.add_trainerleave"),
        }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(models.TrainerLeave)
class TrainerLeaveAdmin(CatalogueAdmin[models.TrainerLeave]):
    """A trainer's days off; saving one moves the bookings it covers."""

    list_display = ["trainer", "starts_on", "ends_on", "reason"]
    list_filter = ["trainer"]
    list_select_related = ["trainer"]
    date_hierarchy = "starts_on"
    fields = ["trainer", "starts_on", "ends_on", "reason"]
    autocomplete_fields = ["trainer"]

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        _move_bookings(self, request, form.instance.trainer)


def _move_bookings(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, trainer: models.Trainer
) -> None:
    """Send the bookings the trainer no longer fits back to allocation, in the
    save's transaction, and say which moved."""
    moved = trainer_services.trainer_bookings_recheck(
        trainer_id=trainer.pk, actor=operator_name(request)
    )
    if moved:
        model_admin.message_user(
            request,
            f"{len(moved)} booking(s) of {trainer.name} go to allocation again "
            "(sessions given are kept): "
            + "; ".join(str(booking) for booking in moved)
            + ".",
            messages.WARNING,
        )
