"""The JSON API (CONTRACT §3): bearer-token reads for the app and support tools."""

from __future__ import annotations

import functools
import hmac
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from fulfillment.ops.health import health_checks
from fulfillment.ops.metrics import render as render_metrics
from fulfillment.selectors.purchases import purchase_detail as read_purchase
from fulfillment.selectors.trace import payment_trace as read_trace
from fulfillment.services import cache
from fulfillment.web import serializers

View = Callable[..., JsonResponse]


def token_required(view: View) -> View:
    """401 unless ``Authorization: Bearer <FULFILMENT_API_TOKEN>``; the token is
    compared in constant time."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not _bearer_token_valid(request):
            response = JsonResponse(
                {
                    "error": "unauthorized",
                    "detail": "send Authorization: Bearer <token>",
                },
                status=401,
            )
            response["WWW-Authenticate"] = 'Bearer realm="fulfilment"'
            return response
        return view(request, *args, **kwargs)

    return wrapper


def _bearer_token_valid(request: HttpRequest) -> bool:
    # A function of its own so that neither token is a local of a frame still
    # running when the view fails: Django's debug page shows those locals.
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.FULFILMENT_API_TOKEN.encode()
    )


def _not_found(what: str) -> JsonResponse:
    return JsonResponse({"error": "not_found", "detail": f"no {what}"}, status=404)


@require_GET
@token_required
def purchase_detail(request: HttpRequest, purchase_id: uuid.UUID) -> JsonResponse:
    detail = read_purchase(purchase_id=purchase_id)
    if detail is None:
        return _not_found(f"purchase {purchase_id}")
    return JsonResponse(serializers.purchase_json(detail))


@require_GET
@token_required
def student_learnings(request: HttpRequest, student_id: uuid.UUID) -> JsonResponse:
    learnings = cache.learnings_get(student_id=student_id)
    if learnings is None:
        return _not_found(f"student {student_id}")
    return JsonResponse(serializers.learnings_json(learnings))


@require_GET
@token_required
def payment_trace(request: HttpRequest, reference: str) -> JsonResponse:
    # PostgreSQL text cannot hold NUL, so no payment is named with one; asking
    # would only make the query fail.
    trace = None if "\x00" in reference else read_trace(reference=reference)
    if trace is None:
        return _not_found(f"payment or purchase {reference[:100]!r}")
    return JsonResponse(serializers.trace_json(trace))


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 or 503 for anyone, with each check's ok flag; messages, workers (host,
    pid, queues) and database errors only for staff or the API token."""
    checks = health_checks()
    healthy = all(check["ok"] for check in checks.values())
    if not _may_read_health_details(request):
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    response = JsonResponse(
        {"status": "ok" if healthy else "failing", "checks": checks},
        status=200 if healthy else 503,
    )
    # The body depends on who asks: no shared cache may hand details to others.
    patch_vary_headers(response, ("Authorization", "Cookie"))
    response["Cache-Control"] = "no-store"
    return response


def _may_read_health_details(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    return _bearer_token_valid(request)
