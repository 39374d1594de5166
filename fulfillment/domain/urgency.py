"""How urgent a waiting purchase is: how soon its first session is, and whether
it has waited past the waitlist SLA. Pure: the console and ``doctor`` share it."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Final

# A first session this many days away, or fewer, is "soon".
SOON_DAYS: Final = 3


class Level(enum.StrEnum):
    PASSED = "passed"  # the first session's time has gone by
    SOON = "soon"
    LATER = "later"


@dataclass(frozen=True)
class StartUrgency:
    level: Level
    label: str  # "starts in 2 days", "start date passed"
    days: int  # calendar days from today to the first session (negative: passed)


def start_urgency(
    *, first_session_at: dt.datetime, now: dt.datetime, tz: dt.tzinfo
) -> StartUrgency:
    """The badge of a waiting purchase whose first session is ``first_session_at``
    (aware), counted in calendar days of ``tz``."""
    days = (first_session_at.astimezone(tz).date() - now.astimezone(tz).date()).days
    if first_session_at <= now:
        return StartUrgency(Level.PASSED, "start date passed", days)
    if days == 0:
        label = "starts today"
    elif days == 1:
        label = "starts tomorrow"
    else:
        label = f"starts in {days} days"
    return StartUrgency(Level.SOON if days <= SOON_DAYS else Level.LATER, label, days)


def past_sla(*, paid_at: dt.datetime, now: dt.datetime, sla: dt.timedelta) -> bool:
    """Whether a purchase paid at ``paid_at`` has waited longer than ``sla``.
    Waiting counts from the payment, never from the last retry or reprocess."""
    return now - paid_at > sla
