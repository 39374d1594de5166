"""Parsing of wall-clock times as they arrive in metadata and catalogue files.

Both parsers accept ASCII digits only and return a naive ``datetime.time``
(seconds and microseconds zero); the zone is applied later, by the schedule.
"""

from __future__ import annotations

import re
from datetime import time

TIME_SLOT_FORMATS = "'HH:MM' 24-hour (as '15:00') or 'h:MM AM/PM' (as '3:00 PM')"

_TWENTY_FOUR_HOUR = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_TWELVE_HOUR = re.compile(
    r"(1[0-2]|0?[1-9]):([0-5][0-9]) ?([ap]m)", re.ASCII | re.IGNORECASE
)
_STRICT_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)


def parse_time_slot(text: str) -> time:
    """Parse a session time: ``HH:MM`` / ``H:MM`` 24-hour, or ``h:MM AM/PM``.

    Surrounding whitespace is ignored and AM/PM is case-insensitive, with an
    optional single space before it. ``12:00 AM`` is midnight, ``12:30 PM`` is
    half past noon. Anything else raises ``ValueError`` naming the bad value
    and the accepted formats.
    """
    candidate = text.strip()
    if match := _TWENTY_FOUR_HOUR.fullmatch(candidate):
        return time(int(match[1]), int(match[2]))
    if match := _TWELVE_HOUR.fullmatch(candidate):
        hour = int(match[1]) % 12
        if match[3].lower() == "pm":
            hour += 12
        return time(hour, int(match[2]))
    raise ValueError(f"{_shown(text)} is not a time; expected {TIME_SLOT_FORMATS}")


def parse_hhmm(text: str) -> time:
    """Parse a strict two-digit 24-hour ``HH:MM``, as catalogue working hours use.

    No whitespace, no AM/PM, no single-digit hour; ``ValueError`` otherwise.
    """
    if match := _STRICT_HHMM.fullmatch(text):
        return time(int(match[1]), int(match[2]))
    raise ValueError(f"{_shown(text)} is not a time; expected 'HH:MM' 24-hour")


def _shown(value: str, limit: int = 40) -> str:
    """The value quoted for an error message, cut short so messages stay readable."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
