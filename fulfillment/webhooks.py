"""``POST /webhooks/stripe/``: verify, parse, call one service, answer."""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fulfillment.services.purchases import (
    stripe_event_process,
    webhook_outcome_count,
)

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        stripe.WebhookSignature.verify_header(
            request.body.decode("utf-8", errors="replace"),
            request.headers.get("Stripe-Signature", ""),
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError as error:
        logger.warning("stripe signature refused", extra={"detail": str(error)})
        return _answer({"error": "invalid_signature", "detail": str(error)}, status=400)
    try:
        event = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _answer(
            {"error": "malformed_payload", "detail": "the body is not JSON"},
            status=400,
        )
    try:
        outcome = stripe_event_process(event=event)
    except (OperationalError, InterfaceError) as error:
        # Nothing was stored; Stripe retries on any 5xx.
        logger.error("database unavailable for webhook", extra={"error": str(error)})
        return JsonResponse({"error": "database_unavailable"}, status=503)
    except DatabaseError:
        logger.exception("webhook could not be stored")
        return JsonResponse({"error": "database_error"}, status=503)
    return _answer(outcome.body, status=outcome.http_status)


def _answer(body: dict[str, Any], *, status: int) -> JsonResponse:
    if status != 200 or body.get("status") == "ignored":
        # Stored deliveries are counted from their rows; these leave none.
        webhook_outcome_count(outcome=body.get("error") or body.get("status", "?"))
    return JsonResponse(body, status=status)
