"""Validation of the PaymentIntent metadata that describes a purchase.

``parse_purchase_metadata`` accepts any value (the webhook body is untrusted
JSON) and either returns a ``PurchaseRequest`` or raises ``MetadataError``;
no other exception escapes it. Every string it returns is valid UTF-8 without
NUL characters, so PostgreSQL can store it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from typing import Final
from uuid import UUID

from fulfillment.domain.geo import check_latitude, check_longitude
from fulfillment.domain.schedule import ALLOWED_TOTALS, DeliveryMode
from fulfillment.domain.timeslots import parse_time_slot

# Stripe caps metadata values at 500 characters; anything longer did not come
# from Stripe and is refused before any further parsing.
MAX_VALUE_CHARS: Final = 500
MAX_NAME_CHARS: Final = 200
MAX_EMAIL_CHARS: Final = 254
# E.164 allows at most 15 digits; fewer than 7 is no reachable number anywhere.
MIN_PHONE_DIGITS: Final = 7
MAX_PHONE_DIGITS: Final = 15
MIN_START_YEAR: Final = 2000
MAX_START_YEAR: Final = 2100

_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.ASCII | re.IGNORECASE,
)
# Deliberately loose: one @, no whitespace, a dot in the domain. Deliverability
# is the mail server's business, not ours.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# What people type into a phone field: an optional leading +, digits, and the
# usual separators. Stored as "+" (when given) and the digits only, so a search
# by any spelling of the number finds it.
_PHONE = re.compile(r"\+?[0-9 ().\-]+", re.ASCII)
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


class MetadataError(ValueError):
    """Metadata that cannot become a purchase; ``field`` names the culprit.

    ``str(error)`` is ``"<field>: <problem>"``, fit to show an operator.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type[MetadataError], tuple[str, str]]:
        # Keeps the error picklable despite the two-argument constructor.
        return (MetadataError, (self.field, self.problem))


@dataclass(frozen=True)
class PurchaseRequest:
    """A purchase as the PaymentIntent metadata describes it, fully validated.

    ``student_email`` and ``student_phone`` are ``""`` when not given; the phone
    is normalised to an optional ``+`` and digits. ``latitude`` and ``longitude``
    are both set or both ``None``.
    """

    student_id: UUID
    student_name: str
    student_email: str
    course_id: UUID
    total_sessions: int
    delivery_mode: DeliveryMode
    start_date: date
    time_slot: time
    latitude: float | None
    longitude: float | None
    student_phone: str = ""


def parse_purchase_metadata(metadata: object) -> PurchaseRequest:
    """Validate Stripe metadata (a mapping of strings) into a ``PurchaseRequest``.

    Fields are checked in declaration order and the first problem is raised as
    ``MetadataError``. Surrounding whitespace is ignored in every value; unknown
    keys are ignored. Whether a location is required depends on the course:
    see ``require_location``.
    """
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            "metadata", f"must be an object of strings (got {_kind(metadata)})"
        )
    student_id = _uuid(metadata, "student_id")
    student_name = _name(metadata)
    student_email = _email(metadata)
    student_phone = _phone(metadata)
    course_id = _uuid(metadata, "course_id")
    total_sessions = _total_sessions(metadata)
    delivery_mode = _delivery_mode(metadata)
    start_date = _start_date(metadata)
    time_slot = _time_slot(metadata)
    latitude, longitude = _location(metadata)
    return PurchaseRequest(
        student_id=student_id,
        student_name=student_name,
        student_email=student_email,
        student_phone=student_phone,
        course_id=course_id,
        total_sessions=total_sessions,
        delivery_mode=delivery_mode,
        start_date=start_date,
        time_slot=time_slot,
        latitude=latitude,
        longitude=longitude,
    )


def require_location(request: PurchaseRequest) -> None:
    """Raise ``MetadataError`` unless the request carries the student's home."""
    if request.latitude is None or request.longitude is None:
        raise MetadataError("latitude", "missing (required for home-visit courses)")


def _text(metadata: Mapping[object, object], field: str) -> str | None:
    """The stripped string under ``field``, or None when absent or blank."""
    value = metadata.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MetadataError(field, f"must be a string (got {_kind(value)})")
    if len(value) > MAX_VALUE_CHARS:
        raise MetadataError(
            field, f"too long ({len(value)} characters, at most {MAX_VALUE_CHARS})"
        )
    if "\x00" in value:
        raise MetadataError(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates survive json.loads but not the trip to PostgreSQL.
        raise MetadataError(field, "is not valid Unicode text") from None
    return value.strip() or None


def _required(metadata: Mapping[object, object], field: str) -> str:
    value = _text(metadata, field)
    if value is None:
        raise MetadataError(field, "missing")
    return value


def _uuid(metadata: Mapping[object, object], field: str) -> UUID:
    value = _required(metadata, field)
    if not _UUID.fullmatch(value):
        raise MetadataError(field, f"{_shown(value)} is not a valid UUID")
    return UUID(value)


def _name(metadata: Mapping[object, object]) -> str:
    value = _required(metadata, "student_name")
    if len(value) > MAX_NAME_CHARS:
        raise MetadataError(
            "student_name",
            f"too long ({len(value)} characters, at most {MAX_NAME_CHARS})",
        )
    return value


def _email(metadata: Mapping[object, object]) -> str:
    value = _text(metadata, "student_email")
    if value is None:
        return ""
    if len(value) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(value):
        raise MetadataError(
            "student_email", f"{_shown(value)} is not a valid email address"
        )
    return value


def _phone(metadata: Mapping[object, object]) -> str:
    value = _text(metadata, "student_phone")
    if value is None:
        return ""
    digits = re.sub(r"[^0-9]", "", value)
    if (
        not _PHONE.fullmatch(value)
        or not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS
    ):
        raise MetadataError(
            "student_phone",
            f"{_shown(value)} is not a phone number (an optional +, then "
            f"{MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits; spaces, dashes, dots "
            "and brackets allowed)",
        )
    return ("+" if value.startswith("+") else "") + digits


def _total_sessions(metadata: Mapping[object, object]) -> int:
    value = _required(metadata, "total_sessions")
    allowed = {str(total): total for total in ALLOWED_TOTALS}
    if value not in allowed:
        raise MetadataError(
            "total_sessions",
            f"must be one of {', '.join(allowed)} (got {_shown(value)})",
        )
    return allowed[value]


def _delivery_mode(metadata: Mapping[object, object]) -> DeliveryMode:
    value = _required(metadata, "delivery_mode")
    try:
        return DeliveryMode(value)
    except ValueError:
        choices = " or ".join(mode.value for mode in DeliveryMode)
        raise MetadataError(
            "delivery_mode", f"must be {choices} (got {_shown(value)})"
        ) from None


def _start_date(metadata: Mapping[object, object]) -> date:
    value = _required(metadata, "start_date")
    match = _ISO_DATE.fullmatch(value)
    parsed: date | None = None
    if match is not None:
        with contextlib.suppress(ValueError):  # 2026-02-30 and the like
            parsed = date(int(match[1]), int(match[2]), int(match[3]))
    if parsed is None:
        raise MetadataError(
            "start_date", f"{_shown(value)} is not a valid YYYY-MM-DD date"
        )
    if not MIN_START_YEAR <= parsed.year <= MAX_START_YEAR:
        raise MetadataError(
            "start_date",
            f"{_shown(value)} is outside the years "
            f"{MIN_START_YEAR} to {MAX_START_YEAR}",
        )
    return parsed


def _time_slot(metadata: Mapping[object, object]) -> time:
    value = _required(metadata, "time_slot")
    try:
        return parse_time_slot(value)
    except ValueError as error:
        raise MetadataError("time_slot", str(error)) from None


def _location(metadata: Mapping[object, object]) -> tuple[float | None, float | None]:
    latitude = _coordinate(metadata, "latitude")
    longitude = _coordinate(metadata, "longitude")
    if latitude is None and longitude is not None:
        raise MetadataError("latitude", "missing while longitude is given")
    if longitude is None and latitude is not None:
        raise MetadataError("longitude", "missing while latitude is given")
    return latitude, longitude


def _coordinate(metadata: Mapping[object, object], field: str) -> float | None:
    value = _text(metadata, field)
    if value is None:
        return None
    # float() alone would also take "nan", "inf", "1_0" and non-ASCII digits.
    if not _DECIMAL.fullmatch(value):
        raise MetadataError(field, f"{_shown(value)} is not a decimal number")
    number = float(value)
    check = check_latitude if field == "latitude" else check_longitude
    try:
        check(number)
    except ValueError:
        limit = 90 if field == "latitude" else 180
        raise MetadataError(
            field, f"{_shown(value)} is out of range (-{limit} to {limit})"
        ) from None
    return number


def _kind(value: object) -> str:
    """A JSON-flavoured name for the type of ``value``, for error messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string"}
    names.update({list: "array", dict: "object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _shown(value: str, limit: int = 40) -> str:
    """The value quoted for an error message, cut short so messages stay readable."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
