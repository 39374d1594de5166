"""The catalogue: courses and trainers, upserted by id from a JSON file (CONTRACT §5).

An import is all-or-nothing: every entry is validated first, and the first bad
one stops the import with a message naming the entry and the field.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from fulfillment.domain.timeslots import parse_hhmm
from fulfillment.exceptions import CatalogError
from fulfillment.models import Course, Trainer
from fulfillment.services import allocation
from fulfillment.services import trainers as trainer_services

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportSummary:
    courses_created: int
    courses_updated: int
    trainers_created: int
    trainers_updated: int
    # Bookings of updated trainers who no longer fit them, sent back to allocation.
    moved: tuple[trainer_services.MovedBooking, ...] = ()

    def __str__(self) -> str:
        text = (
            f"courses: {self.courses_created} created, {self.courses_updated} "
            f"updated; trainers: {self.trainers_created} created, "
            f"{self.trainers_updated} updated"
        )
        if self.moved:
            text += f"; {len(self.moved)} booking(s) moved: " + "; ".join(
                str(booking) for booking in self.moved
            )
        return text


def catalog_import(*, data: object, actor: str = "import_catalog") -> ImportSummary:
    """Upsert courses and trainers by id, in one transaction; then retry the
    waitlist, since new trainers or capacity may fit waiting purchases, and send
    the bookings an updated trainer no longer fits (deactivated, a course
    removed, fewer days or hours, a shorter radius) back to allocation.

    Idempotent: importing the same file twice changes nothing the second time
    (it reports the entries as updated). Raises ``CatalogError`` naming the
    entry and field, having changed nothing.
    """
    if not isinstance(data, dict):
        raise CatalogError("the file must hold a JSON object with courses, trainers")
    unknown = set(data) - {"courses", "trainers"}
    if unknown:
        raise CatalogError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    courses = [
        _course(entry, index) for index, entry in enumerate(_list(data, "courses"))
    ]
    trainers = [
        _trainer(entry, index) for index, entry in enumerate(_list(data, "trainers"))
    ]
    with transaction.atomic():
        known_courses = {c["id"] for c in courses} | set(
            Course.objects.filter(
                pk__in={cid for t in trainers for cid in t["courses"]}
            ).values_list("pk", flat=True)
        )
        for index, trainer in enumerate(trainers):
            for course_id in trainer["courses"]:
                if course_id not in known_courses:
                    raise CatalogError(
                        f"trainers[{index}] ({trainer['id']}).courses: unknown "
                        f"course {course_id}"
                    )
        course_counts = [0, 0]
        for course in courses:
            _, created = Course.objects.update_or_create(
                pk=course["id"],
                defaults={"title": course["title"], "mode": course["mode"]},
            )
            course_counts[0 if created else 1] += 1
        trainer_counts = [0, 0]
        moved: list[trainer_services.MovedBooking] = []
        for trainer in trainers:
            course_ids = trainer.pop("courses")
            obj, created = Trainer.objects.update_or_create(
                pk=trainer.pop("id"), defaults=trainer
            )
            obj.courses.set(course_ids)
            trainer_counts[0 if created else 1] += 1
            if not created:
                moved += trainer_services.trainer_bookings_recheck(
                    trainer_id=obj.pk, actor=actor
                )
        allocation.waitlist_retry_soon()
    summary = ImportSummary(
        courses_created=course_counts[0],
        courses_updated=course_counts[1],
        trainers_created=trainer_counts[0],
        trainers_updated=trainer_counts[1],
        moved=tuple(moved),
    )
    logger.info("catalogue imported", extra={"summary": str(summary)})
    return summary


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise CatalogError(f"{key}: must be a list")
    return value


def _course(entry: object, index: int) -> dict[str, Any]:
    where = f"courses[{index}]"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be an object")
    course_id = _uuid(entry, "id", where)
    where = f"{where} ({course_id})"
    title = _string(entry, "title", where, max_length=200)
    mode = entry.get("mode")
    if mode not in Course.Mode.values:
        raise CatalogError(f"{where}.mode: must be 'home' or 'online' (got {mode!r})")
    return {"id": course_id, "title": title, "mode": mode}


def _trainer(entry: object, index: int) -> dict[str, Any]:
    where = f"trainers[{index}]"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be an object")
    trainer_id = _uuid(entry, "id", where)
    where = f"{where} ({trainer_id})"
    courses = entry.get("courses")
    if not isinstance(courses, list):
        raise CatalogError(f"{where}.courses: must be a list of course ids")
    course_ids = []
    for course in courses:
        try:
            course_ids.append(uuid.UUID(str(course)))
        except ValueError:
            raise CatalogError(f"{where}.courses: {course!r} is not a UUID") from None
    weekdays = entry.get("weekdays")
    if (
        not isinstance(weekdays, list)
        or not weekdays
        or not all(type(d) is int and 0 <= d <= 6 for d in weekdays)
    ):
        raise CatalogError(
            f"{where}.weekdays: must be a non-empty list of 0 (Monday) to 6 (Sunday)"
        )
    work_start = _time(entry, "work_start", where)
    work_end = _time(entry, "work_end", where)
    if work_start >= work_end:
        raise CatalogError(f"{where}.work_end: must be after work_start")
    is_active = entry.get("is_active", True)
    if not isinstance(is_active, bool):
        raise CatalogError(f"{where}.is_active: must be true or false")
    email = entry.get("email", "")
    if not isinstance(email, str) or (email and "@" not in email):
        raise CatalogError(f"{where}.email: must be an email address")
    if len(email) > 254:
        raise CatalogError(f"{where}.email: longer than 254 characters")
    return {
        "id": trainer_id,
        "name": _string(entry, "name", where, max_length=200),
        "email": email,
        "courses": course_ids,
        "latitude": _number(entry, "latitude", where, low=-90, high=90),
        "longitude": _number(entry, "longitude", where, low=-180, high=180),
        "max_travel_km": _number(entry, "max_travel_km", where, low=0, high=20000),
        "max_active_students": int(
            _number(entry, "max_active_students", where, low=0, high=10000, whole=True)
        ),
        "weekdays": sorted(set(weekdays)),
        "work_start": work_start,
        "work_end": work_end,
        "is_active": is_active,
    }


def _uuid(entry: dict[str, Any], key: str, where: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(entry[key]))
    except KeyError:
        raise CatalogError(f"{where}.{key}: missing") from None
    except ValueError:
        raise CatalogError(f"{where}.{key}: {entry[key]!r} is not a UUID") from None


def _string(entry: dict[str, Any], key: str, where: str, *, max_length: int) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise CatalogError(f"{where}.{key}: must be a non-empty string")
    if len(value) > max_length:
        raise CatalogError(f"{where}.{key}: longer than {max_length} characters")
    return value.strip()


def _number(
    entry: dict[str, Any],
    key: str,
    where: str,
    *,
    low: float,
    high: float,
    whole: bool = False,
) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{where}.{key}: must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise CatalogError(f"{where}.{key}: must be between {low} and {high}")
    if whole and value != int(value):
        raise CatalogError(f"{where}.{key}: must be a whole number")
    return float(value)


def _time(entry: dict[str, Any], key: str, where: str) -> dt.time:
    value = entry.get(key)
    try:
        return parse_hhmm(value if isinstance(value, str) else "")
    except ValueError:
        raise CatalogError(f"{where}.{key}: must be HH:MM (got {value!r})") from None
