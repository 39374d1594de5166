"""Small builders for catalogue rows; defaults make a trainer who fits the
default purchase (Bengaluru, weekday 16:00, home visit)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from django.utils import timezone

from fulfillment.models import Course, Trainer

HOME = (12.9756, 77.6050)
_numbers = itertools.count(1)


def course(**fields: Any) -> Course:
    defaults: dict[str, Any] = {"title": f"Course {next(_numbers)}", "mode": "home"}
    return Course.objects.create(**{**defaults, **fields})


def trainer(*, courses: list[Course], **fields: Any) -> Trainer:
    defaults: dict[str, Any] = {
        "name": f"Trainer {next(_numbers)}",
        "latitude": HOME[0],
        "longitude": HOME[1] + 0.01,  # about 1.1 km east
        "max_travel_km": 10,
        "max_active_students": 5,
        "weekdays": [0, 1, 2, 3, 4, 5, 6],
        "work_start": dt.time(9),
        "work_end": dt.time(20),
        "is_active": True,
    }
    created = Trainer.objects.create(**{**defaults, **fields})
    created.courses.set(courses)
    return created


def metadata(*, course: Course, **overrides: str) -> dict[str, str]:
    """Valid payment metadata for ``course``: weekday sessions at 4 PM from the
    next Monday that is at least a week away."""
    today = timezone.localdate()
    start = today + dt.timedelta(days=7 + (7 - today.weekday()) % 7)
    values = {
        "student_id": str(uuid.uuid4()),
        "student_name": "Anya Test",
        "student_email": "anya.parent@example.com",
        "course_id": str(course.pk),
        "total_sessions": "10",
        "delivery_mode": "WEEKDAY_DAILY",
        "start_date": start.isoformat(),
        "time_slot": "4:00 PM",
        "latitude": str(HOME[0]),
        "longitude": str(HOME[1]),
    }
    values.update(overrides)
    return values
