"""How the console shows a purchase, a payment or a status, the same on the
ModelAdmins' pages (``admin_ui.admin``) and the custom pages (``admin_ui.views``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from fulfillment import models
from fulfillment.domain.folding import fold_repeats
from fulfillment.domain.money import format_amount
from fulfillment.queue import names
from fulfillment.selectors.trace import (
    EventEntry,
    JobEntry,
    TraceEntry,
    payment_trace,
)

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def status_badge(status: str, label: str) -> SafeString:
    return format_html('<span class="ops-badge ops-{}">{}</span>', status, label)


def purchase_label(purchase: models.Purchase) -> str:
    """What people call a purchase (its ``__str__`` is made of ids)."""
    return f"{purchase.course.title} for {purchase.student.name}"


def purchase_schedule(purchase: models.Purchase) -> str:
    return (
        f"{purchase.total_sessions} sessions, "
        f"{purchase.get_delivery_mode_display()} at "
        f"{purchase.time_slot:%H:%M}, from {purchase.start_date:%a %d %b %Y}"
    )


def purchase_location(purchase: models.Purchase) -> str:
    if purchase.latitude is None or purchase.longitude is None:
        return "not given"
    return f"{purchase.latitude:.4f}, {purchase.longitude:.4f}"


def when(moment: dt.datetime | None) -> str:
    """A time as the whole console shows it: in TIME_ZONE, with its label
    ("Mon 7 Jan 2030, 16:00 IST"; kcproject/formats)."""
    if moment is None:
        return "-"
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def student_contact(student: models.Student) -> str:
    return " · ".join(filter(None, [student.email, student.phone])) or "no contact"


def metadata_contact(payment: models.Payment) -> str:
    """Who paid, from the metadata of a payment whose student does not exist."""
    metadata = payment.metadata if isinstance(payment.metadata, dict) else {}
    fields = ("student_name", "student_email", "student_phone")
    return " · ".join(
        str(metadata[key]) for key in fields if isinstance(metadata.get(key), str)
    )


def payment_amount(payment: models.Payment) -> str:
    """What was received, in the currency's own minor units (5,000 JPY,
    4,999.00 INR), with what has been refunded so far."""
    shown = format_amount(payment.amount, payment.currency)
    if not payment.amount_refunded:
        return shown
    return (
        f"{shown} ({format_amount(payment.amount_refunded, payment.currency)} refunded)"
    )


# Jobs that repeat by design: a waitlist retry or a cache refresh each time
# something changes. A run of them reads as one line with a count.
_FOLDED_TASKS = frozenset({names.ALLOCATE_TRAINER, names.REFRESH_LEARNINGS})


@dataclass(frozen=True)
class TimelineLine:
    entry: TraceEntry
    count: int
    # The first of a folded run (``entry`` is its last, most recent one).
    first_at: dt.datetime


def _repeat_key(entry: TraceEntry) -> object:
    """Equal keys fold when consecutive; ``None`` never folds."""
    if isinstance(entry, JobEntry):
        if entry.task in _FOLDED_TASKS and entry.status == "succeeded":
            return ("job", entry.task, entry.status)
        return None
    if isinstance(entry, EventEntry) and entry.from_status == entry.to_status != "":
        # Retries that leave the purchase where it was (waitlisted again).
        return ("event", entry.kind, entry.to_status)
    return None


def timeline_lines(entries: tuple[TraceEntry, ...]) -> list[TimelineLine]:
    return [
        TimelineLine(entry=run.last, count=run.count, first_at=run.first.at)
        for run in fold_repeats(entries, key=_repeat_key)
    ]


def trace_timeline(payment_intent: str) -> SafeString:
    """The payment's whole path, oldest first, as the page's timeline; runs of
    waitlist retries and cache refreshes fold into one line with a count."""
    trace = payment_trace(reference=payment_intent)
    entries = timeline_lines(trace.entries) if trace else []
    return SafeString(
        render_to_string("admin_ui/trace_timeline.html", {"entries": entries})
    )
