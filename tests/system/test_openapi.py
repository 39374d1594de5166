"""The OpenAPI description (docs/openapi.json) is what the service serves, and a
client no one here wrote (schemathesis) finds no answer outside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from django.conf import settings
from django.test import Client

from fulfillment.models import Purchase
from fulfillment.testing import stripe_events
from tests.helpers import (
    ROOT,
    SignedPost,
    WorkerProcess,
    buy,
    course,
    load_event,
    metadata_for,
    trainer,
    wait_until,
)

DOCUMENT = ROOT / "docs" / "openapi.json"
CHECKS = (
    "not_a_server_error,status_code_conformance,"
    "content_type_conformance,response_schema_conformance"
)


def described() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return document


def answer_schema(status: int) -> dict[str, Any]:
    """The webhook's described body for ``status``, resolvable on its own."""
    document = described()
    response = document["paths"]["/webhooks/stripe/"]["post"]["responses"][str(status)]
    return {
        **response["content"]["application/json"]["schema"],
        "components": document["components"],
    }


def test_served_description_is_the_docs_file(client: Client) -> None:
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == described()
    assert described()["openapi"] == "3.1.0"


def test_every_api_path_is_described() -> None:
    paths = set(described()["paths"])

    for route in (
        "/api/purchases/{purchase_id}",
        "/api/students/{student_id}/learnings",
        "/api/payments/{reference}/trace",
        "/healthz",
        "/metrics",
        "/webhooks/stripe/",
        "/api/openapi.json",
    ):
        assert route in paths


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fixture", "status", "outcome"),
    [
        ("payment_intent_succeeded", 200, "needs_attention"),  # no such course
        ("customer_created", 200, "ignored"),
        ("charge_refunded_without_payment_intent", 200, "ignored"),
        ("charge_refunded", 200, "needs_attention"),  # its payment never came
    ],
)
def test_webhook_answers_are_described(
    signed_post: SignedPost, fixture: str, status: int, outcome: str
) -> None:
    response = signed_post(load_event(fixture))

    assert response.status_code == status
    assert response.json()["status"] == outcome
    jsonschema.validate(response.json(), answer_schema(status))


@pytest.mark.django_db
def test_webhook_refunds_and_refusals_are_described(
    signed_post: SignedPost,
) -> None:
    paid = course()
    trainer(courses=[paid])
    paying = stripe_events.payment_intent_succeeded(metadata=metadata_for(course=paid))
    accepted = signed_post(paying)
    intent = paying["data"]["object"]["id"]
    partial = load_event("charge_refunded_partial")
    partial["data"]["object"]["payment_intent"] = intent
    full = load_event("charge_refunded")
    full["data"]["object"]["payment_intent"] = intent
    answers = [accepted, signed_post(partial), signed_post(full), signed_post(full)]
    refused = [
        signed_post(load_event("payment_intent_succeeded"), secret="whsec_wrong"),
        signed_post(b"not json at all"),
    ]

    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (200, "accepted"),
        (200, "partially_refunded"),
        (200, "refunded"),
        (200, "duplicate"),
    ]
    for answer in answers:
        jsonschema.validate(answer.json(), answer_schema(200))
    assert [(r.status_code, r.json()["error"]) for r in refused] == [
        (400, "invalid_signature"),
        (400, "malformed_payload"),
    ]
    for refusal in refused:
        jsonschema.validate(refusal.json(), answer_schema(400))


@pytest.mark.slow
def test_schemathesis_finds_no_answer_outside_the_description(
    live_server: Any,
    signed_post: SignedPost,
    run_worker: Callable[..., None],
    worker_process: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # schemathesis cannot guess ids: the description's examples name data that
    # exists, an allocated purchase with its sessions and trace.
    paid = course()
    trainer(courses=[paid])
    purchase = buy(signed_post, paid)
    run_worker()
    purchase = Purchase.objects.select_related("payment").get(pk=purchase.pk)
    assert purchase.status == Purchase.Status.ALLOCATED
    document = described()
    examples = {
        "purchase_id": str(purchase.pk),
        "student_id": str(purchase.student_id),
        "reference": purchase.payment.payment_intent,
    }
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in examples:
                    parameter["example"] = examples[parameter["name"]]
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(document))
    # A live worker, so /healthz is healthy: its 503 is for a service that is not.
    worker_process()
    wait_until(
        lambda: Client().get("/healthz").status_code == 200,
        timeout=30,
        what="a healthy service",
    )

    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", str(schema),
            "--url", live_server.url,
            "--header", f"Authorization: Bearer {settings.FULFILMENT_API_TOKEN}",
            "--checks", CHECKS,
            # Signatures make a fuzzed webhook body meaningless: its answers
            # are checked with signed payloads above.
            "--exclude-path", "/webhooks/stripe/",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "25",
            "--seed", "14",
            "--workers", "1",
        ],
        cwd=tmp_path,  # its own state (.schemathesis/) stays out of the checkout
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip

    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary + result.stderr[-2000:]
    cases = re.search(r"(\d+) generated", result.stdout)
    assert cases is not None and int(cases.group(1)) >= 50, summary
