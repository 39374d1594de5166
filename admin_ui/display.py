"""How the console shows a purchase, a payment or a status, the same on the
ModelAdmins' pages (``admin_ui.admin``) and the custom pages (``admin_ui.views``).
"""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

from fulfillment import models
from fulfillment.domain.money import format_amount
from fulfillment.selectors.trace import payment_trace

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


def payment_amount(payment: models.Payment) -> str:
    """What was received, in the currency's own minor units (5,000 JPY,
    4,999.00 INR), with what has been refunded so far."""
    shown = format_amount(payment.amount, payment.currency)
    if not payment.amount_refunded:
        return shown
    return (
        f"{shown} ({format_amount(payment.amount_refunded, payment.currency)} refunded)"
    )


def trace_timeline(payment_intent: str) -> SafeString:
    """The payment's whole path, oldest first, as the page's timeline."""
    trace = payment_trace(reference=payment_intent)
    entries = trace.entries if trace else ()
    return SafeString(
        render_to_string("admin_ui/trace_timeline.html", {"entries": entries})
    )
