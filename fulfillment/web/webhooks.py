"""``POST /webhooks/stripe/``: verify, parse, call one service, answer.

The one place that knows HTTP for Stripe: the service says what happened
(``EventResult``), ``_answer_for`` says what Stripe is told (CONTRACT §3).
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import (
    DatabaseError,
    DataError,
    InterfaceError,
    OperationalError,
    connection,
)
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fulfillment.domain.json_body import UnreadableBody, parse_json_body
from fulfillment.domain.stripe import MalformedEvent, StripeEvent, parse_event
from fulfillment.services.purchases import (
    EventResult,
    Outcome,
    stripe_event_process,
    webhook_outcome_count,
)

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        body = request.body
    except RequestDataTooBig:
        detail = f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
        return _answer({"error": "malformed_payload", "detail": detail}, status=400)
    header = request.headers.get("Stripe-Signature", "")
    if not header.isascii():
        # hmac.compare_digest raises TypeError on non-ASCII text; Stripe's header
        # never holds any.
        return _signature_refused("the Stripe-Signature header is not ASCII")
    try:
        stripe.WebhookSignature.verify_header(
            body.decode("utf-8", errors="replace"),
            header,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError as error:
        return _signature_refused(str(error))
    try:
        event = parse_event(parse_json_body(body))
        result = _process(event)
    except (UnreadableBody, MalformedEvent) as error:
        return _answer({"error": "malformed_payload", "detail": str(error)}, status=400)
    except (OperationalError, InterfaceError) as error:
        # Nothing was stored; Stripe retries on any 5xx.
        logger.error("database unavailable for webhook", extra={"error": str(error)})
        return JsonResponse({"error": "database_unavailable"}, status=503)
    except (DataError, UnicodeEncodeError) as error:
        # Not expected: the service cleans text PostgreSQL cannot hold and checks
        # numbers against their columns, keeping such payments flagged. Should a
        # value still slip through, the transaction rolled back and the same body
        # would fail the same way again, so it is not a 503.
        logger.warning("webhook event cannot be stored", extra={"error": str(error)})
        detail = "the event holds a value the database cannot store"
        return _answer({"error": "malformed_payload", "detail": detail}, status=400)
    except DatabaseError:
        logger.exception("webhook could not be stored")
        return JsonResponse({"error": "database_error"}, status=503)
    return _answer(_body_for(result), status=200)


def _process(event: StripeEvent) -> EventResult:
    """The service, without Django's health-check probe of a reused connection
    (one round trip of the delivery's few): a delivery that finds its pooled
    connection dead (PostgreSQL restarted, a failover) runs once more on a new
    one. Safe: the failed attempt's transaction stored nothing, and the service
    is idempotent anyway. A connection opened for this delivery is not retried:
    its error is the database's answer (503, and Stripe delivers again).
    """
    reused = connection.connection  # None: this delivery opens one
    # Django's own flag (not in its stubs): the probe is done for this request.
    connection.health_check_done = True  # type: ignore[attr-defined]
    try:
        return stripe_event_process(event=event)
    except (OperationalError, InterfaceError):
        if reused is None or not reused.broken:
            raise
    logger.info("webhook connection was dead; retrying on a new one")
    connection.close()
    return stripe_event_process(event=event)


# Outcomes that name the purchase they are about (``null`` when there is none).
_NAMES_PURCHASE = {
    Outcome.ACCEPTED,
    Outcome.DUPLICATE,
    Outcome.REFUNDED,
    Outcome.PARTIALLY_REFUNDED,
}


def _body_for(result: EventResult) -> dict[str, Any]:
    body: dict[str, Any] = {"status": result.outcome.value}
    if result.outcome in _NAMES_PURCHASE:
        body["purchase_id"] = str(result.purchase_id) if result.purchase_id else None
    if result.reason:
        body["reason"] = result.reason
    return body


def _signature_refused(detail: str) -> JsonResponse:
    logger.warning("stripe signature refused", extra={"detail": detail})
    return _answer({"error": "invalid_signature", "detail": detail}, status=400)


def _answer(body: dict[str, Any], *, status: int) -> JsonResponse:
    if status != 200 or body.get("status") == "ignored":
        # Stored deliveries are counted from their rows; these leave none.
        webhook_outcome_count(outcome=body.get("error") or body.get("status", "?"))
    return JsonResponse(body, status=status)
