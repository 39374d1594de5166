"""Session schedules: which days, at what instants, for how long.

Datetimes returned here are aware and expressed in the zone they were built
for. Durations are elapsed (absolute) time, so compare or subtract them in UTC:
Python subtracts two datetimes that share a tzinfo by wall clock, which differs
from elapsed time across a DST change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from types import MappingProxyType
from typing import Final

SUNDAY: Final = 6

# CONTRACT §6: sessions last 60 minutes on weekdays, 80 minutes on Sundays.
# Keyed by date.weekday() (0 is Monday); Saturday is never a delivery day today,
# but is listed so every date has a length.
SESSION_MINUTES: Final = MappingProxyType(
    {weekday: 80 if weekday == SUNDAY else 60 for weekday in range(7)}
)

ALLOWED_TOTALS: Final = (10, 20, 30)


class DeliveryMode(enum.StrEnum):
    """On which days of the week a purchase's sessions take place.

    A ``str`` subclass: members compare equal to, and format as, their values.
    """

    WEEKDAY_DAILY = "WEEKDAY_DAILY"
    SUNDAY_ONLY = "SUNDAY_ONLY"

    @property
    def label(self) -> str:
        """How people name it (the console, the purchase's choices)."""
        return _DELIVERY_LABELS[self]

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        """``(value, label)`` pairs, for a model field's or form's choices."""
        return [(mode.value, mode.label) for mode in cls]


_DELIVERY_LABELS: Final = MappingProxyType(
    {
        DeliveryMode.WEEKDAY_DAILY: "Monday to Friday",
        DeliveryMode.SUNDAY_ONLY: "Sundays",
    }
)


_DELIVERY_WEEKDAYS: Final = MappingProxyType(
    {
        DeliveryMode.WEEKDAY_DAILY: frozenset({0, 1, 2, 3, 4}),
        DeliveryMode.SUNDAY_ONLY: frozenset({SUNDAY}),
    }
)


@dataclass(frozen=True)
class Slot:
    """One session of a schedule: ``sequence`` counts from 1, times are aware."""

    sequence: int
    starts_at: datetime
    ends_at: datetime


def delivery_weekdays(mode: DeliveryMode) -> frozenset[int]:
    """The weekdays (0 is Monday, 6 is Sunday) on which ``mode`` delivers sessions."""
    return _DELIVERY_WEEKDAYS[DeliveryMode(mode)]


def session_length(day: date) -> timedelta:
    """How long a session held on ``day`` lasts (elapsed time)."""
    return timedelta(minutes=SESSION_MINUTES[day.weekday()])


def session_start(day: date, time_slot: time, tz: tzinfo) -> datetime:
    """The aware instant at which the session on ``day`` starts in ``tz``.

    A wall time skipped by a DST jump (02:30 on a spring-forward night) is
    resolved with the offset in force before the jump and normalised through
    UTC, so it lands just after the gap (03:30). An ambiguous wall time (the
    repeated hour in autumn) means its first occurrence. Either way the result
    is a real instant whose ``utcoffset()`` is correct.
    """
    wall = datetime.combine(day, time_slot.replace(tzinfo=None, fold=0), tzinfo=tz)
    return wall.astimezone(UTC).astimezone(tz)


def build_schedule(
    *,
    start_date: date,
    time_slot: time,
    delivery_mode: DeliveryMode,
    total_sessions: int,
    tz: tzinfo,
    not_before: datetime | None = None,
) -> list[Slot]:
    """Exactly ``total_sessions`` slots on consecutive delivery days, sequences 1..N.

    The first session is on the first delivery day on or after ``start_date``,
    skipping any day whose session would start before ``not_before`` (aware),
    so a purchase allocated late starts on the next future delivery day. Each
    session starts at ``time_slot`` wall clock in ``tz`` (see ``session_start``)
    and lasts ``session_length`` of its own day. Raises ``ValueError`` for a
    total outside ``ALLOWED_TOTALS`` or a naive ``not_before``.
    """
    if isinstance(total_sessions, bool) or total_sessions not in ALLOWED_TOTALS:
        allowed = ", ".join(str(total) for total in ALLOWED_TOTALS)
        raise ValueError(
            f"total_sessions must be one of {allowed} (got {total_sessions!r})"
        )
    weekdays = delivery_weekdays(delivery_mode)
    day = start_date
    earliest: datetime | None = None
    if not_before is not None:
        if not_before.utcoffset() is None:
            raise ValueError("not_before must be an aware datetime")
        earliest = not_before.astimezone(UTC)
        # Days before the eve of not_before's local date all start too early;
        # the eve itself stays in play because a DST fold can reorder an hour.
        day = max(day, earliest.astimezone(tz).date() - timedelta(days=1))

    slots: list[Slot] = []
    while len(slots) < total_sessions:
        if day.weekday() in weekdays:
            starts_at = session_start(day, time_slot, tz)
            # Arithmetic and comparison in UTC: with a shared tzinfo, Python
            # works on the wall clock and ignores the DST fold.
            starts_utc = starts_at.astimezone(UTC)
            if earliest is None or starts_utc >= earliest:
                ends_at = (starts_utc + session_length(day)).astimezone(tz)
                slots.append(Slot(len(slots) + 1, starts_at, ends_at))
        day += timedelta(days=1)
    return slots


def remaining_slots(slots: list[Slot], *, given: int) -> list[Slot]:
    """What is left of a full schedule once ``given`` sessions took place: the
    first ``len(slots) - given`` slots, numbered on from ``given + 1`` (a
    reallocated purchase continues where its sessions stopped)."""
    if given <= 0:
        return slots
    return [
        Slot(slot.sequence + given, slot.starts_at, slot.ends_at)
        for slot in slots[: max(len(slots) - given, 0)]
    ]


def fits_working_hours(
    slot: Slot, *, tz: tzinfo, work_start: time, work_end: time
) -> bool:
    """Whether the whole session lies within [work_start, work_end], local to ``tz``.

    A session may end exactly at ``work_end``. A session that crosses local
    midnight never fits, and neither does anything when ``work_start`` is not
    before ``work_end`` (overnight shifts are not modelled).
    """
    local_start = slot.starts_at.astimezone(tz)
    local_end = slot.ends_at.astimezone(tz)
    if local_start.date() != local_end.date():
        return False
    return (
        work_start.replace(tzinfo=None) <= local_start.time()
        and local_end.time() <= work_end.replace(tzinfo=None)
        and work_start < work_end
    )
