"""One search for anything: ``/admin/search/?q=…`` lists what the query names,
by kind (students, purchases, payments needing attention, payments, trainers),
each row linking to its page. Kinds the user may not view are not searched.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from admin_ui import display
from admin_ui import selectors as console_selectors

# Every kind needs its view permission; a user with none may not search.
KIND_PERMISSIONS = {
    "students": "fulfillment.view_student",
    "purchases": "fulfillment.view_purchase",
    "attention_payments": "fulfillment.view_payment",
    "payments": "fulfillment.view_payment",
    "trainers": "fulfillment.view_trainer",
}


def has_permission(request: HttpRequest) -> bool:
    return any(request.user.has_perm(name) for name in KIND_PERMISSIONS.values())


def search_view(request: HttpRequest) -> HttpResponse:
    if not has_permission(request):
        raise PermissionDenied
    query = request.GET.get("q", "").strip()[:200]
    results = console_selectors.console_search(query=query)
    allowed = {
        kind for kind, name in KIND_PERMISSIONS.items() if request.user.has_perm(name)
    }
    sections = [
        {
            "kind": "students",
            "title": "Students and parents",
            "rows": [
                {
                    "url": reverse("admin:fulfillment_student_change", args=[s.pk]),
                    "label": s.name,
                    "details": " · ".join(filter(None, [s.email, s.phone])),
                }
                for s in results.students
            ],
        },
        {
            "kind": "purchases",
            "title": "Purchases",
            "rows": [
                {
                    "url": reverse("admin:fulfillment_purchase_change", args=[p.pk]),
                    "label": display.purchase_label(p),
                    "badge": display.status_badge(p.status, p.get_status_display()),
                    "details": " · ".join(
                        filter(
                            None,
                            [
                                p.payment.payment_intent,
                                p.trainer.name if p.trainer else "",
                                display.purchase_schedule(p),
                            ],
                        )
                    ),
                }
                for p in results.purchases
            ],
        },
        {
            "kind": "attention_payments",
            "title": "Payments that need attention (no student yet)",
            "rows": [
                {
                    "url": reverse("admin:fulfillment_payment_change", args=[p.pk]),
                    "label": display.metadata_contact(p) or p.payment_intent,
                    "badge": display.status_badge("needs_attention", "Needs attention"),
                    "details": f"{p.payment_intent} · {p.attention_reason}",
                }
                for p in results.attention_payments
            ],
        },
        {
            "kind": "payments",
            "title": "Payments",
            "rows": [
                {
                    "url": reverse("admin:fulfillment_payment_change", args=[p.pk]),
                    "label": p.payment_intent,
                    "details": f"{display.payment_amount(p)} · "
                    f"{p.get_status_display()}",
                }
                for p in results.payments
            ],
        },
        {
            "kind": "trainers",
            "title": "Trainers",
            "rows": [
                {
                    "url": reverse("admin:fulfillment_trainer_change", args=[t.pk]),
                    "label": t.name,
                    "details": " · ".join(
                        filter(None, [t.email, "" if t.is_active else "inactive"])
                    ),
                }
                for t in results.trainers
            ],
        },
    ]
    shown = [section for section in sections if section["kind"] in allowed]
    context = {
        **admin.site.each_context(request),
        "title": f"Search: {query}" if query else "Search",
        "query": query,
        "sections": shown,
        "found": sum(len(section["rows"]) for section in shown),
        "limit": console_selectors.SEARCH_LIMIT,
    }
    return TemplateResponse(request, "admin_ui/search.html", context)
