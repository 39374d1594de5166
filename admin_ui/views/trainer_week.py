"""A trainer's week: each day's working hours, hour by hour, with the sessions
booked (and whose), the hours still free, and days off or on leave. Navigation
by ``?week=YYYY-MM-DD`` (any day of the week wanted). Needs
``fulfillment.view_trainer``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from admin_ui import display
from fulfillment import models
from fulfillment.selectors.trainers import (
    trainer_leave_between,
    trainer_reservations_between,
)


def has_permission(request: HttpRequest) -> bool:
    return request.user.has_perm("fulfillment.view_trainer")


@dataclass(frozen=True)
class Cell:
    """One hour of one day: ``kind`` is booked, free, off or leave."""

    kind: str
    bookings: tuple[models.Reservation, ...] = ()


@dataclass(frozen=True)
class Row:
    hour: str
    cells: tuple[Cell, ...]


def trainer_week_view(
    request: HttpRequest,
    trainer_id: uuid.UUID,
    *,
    model_admin: admin.ModelAdmin[models.Trainer],
) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    trainer = get_object_or_404(models.Trainer, pk=trainer_id)
    monday = _week_start(request.GET.get("week", ""))
    days = [monday + dt.timedelta(days=offset) for offset in range(7)]
    tz = timezone.get_current_timezone()
    week_starts = dt.datetime.combine(monday, dt.time(), tzinfo=tz)
    week_ends = dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(), tzinfo=tz)
    reservations = trainer_reservations_between(
        trainer_id=trainer.pk, starts=week_starts, ends=week_ends
    )
    leave = trainer_leave_between(trainer_id=trainer.pk, first=days[0], last=days[-1])
    on_leave = {
        day: item
        for day in days
        for item in leave
        if item.starts_on <= day <= item.ends_on
    }
    local = [
        (
            r,
            timezone.localtime(r.during.lower, tz),
            timezone.localtime(r.during.upper, tz),
        )
        for r in reservations
    ]
    first_hour = min([trainer.work_start.hour, *(start.hour for _, start, _ in local)])
    last_hour = max(
        [
            trainer.work_end.hour - (0 if trainer.work_end.minute else 1),
            *(end.hour - (0 if end.minute else 1) for _, _, end in local),
        ]
    )
    rows: list[Row] = []
    for hour in range(first_hour, last_hour + 1):
        cells: list[Cell] = []
        for day in days:
            starts = dt.datetime.combine(day, dt.time(hour), tzinfo=tz)
            ends = starts + dt.timedelta(hours=1)
            booked = tuple(r for r, s, e in local if s < ends and starts < e)
            if booked:
                cells.append(Cell("booked", booked))
            elif day in on_leave:
                cells.append(Cell("leave"))
            elif day.weekday() in trainer.weekdays and _works_hour(trainer, hour):
                cells.append(Cell("free"))
            else:
                cells.append(Cell("off"))
        rows.append(Row(hour=f"{hour:02d}:00", cells=tuple(cells)))
    free_hours = sum(1 for row in rows for cell in row.cells if cell.kind == "free")
    week_url = reverse("admin:fulfillment_trainer_week", args=[trainer.pk])
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"{trainer.name}: week of {monday:%d %b %Y}",
        "trainer": trainer,
        "days": [
            {
                "date": day,
                "name": display.WEEKDAY_NAMES[day.weekday()],
                "leave": on_leave.get(day),
            }
            for day in days
        ],
        "rows": rows,
        "sessions": len(reservations),
        "free_hours": free_hours,
        "previous_url": f"{week_url}?week={monday - dt.timedelta(days=7):%Y-%m-%d}",
        "next_url": f"{week_url}?week={monday + dt.timedelta(days=7):%Y-%m-%d}",
        "this_week_url": week_url,
        "change_url": reverse("admin:fulfillment_trainer_change", args=[trainer.pk]),
        "zone": str(tz),
    }
    return TemplateResponse(request, "admin_ui/trainer_week.html", context)


def _works_hour(trainer: models.Trainer, hour: int) -> bool:
    """Whether the whole hour [hour:00, hour+1:00) is within working hours."""
    end = trainer.work_end.hour * 60 + trainer.work_end.minute
    return trainer.work_start <= dt.time(hour) and (hour + 1) * 60 <= end


def _week_start(text: str) -> dt.date:
    """The Monday of the week holding ``text`` (YYYY-MM-DD), or of this week."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = timezone.localdate()
    return day - dt.timedelta(days=day.weekday())
