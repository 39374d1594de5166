from __future__ import annotations

from django.urls import path

from fulfillment.web import api, openapi, webhooks

app_name = "fulfillment"

urlpatterns = [
    path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe-webhook"),
    path(
        "api/purchases/<uuid:purchase_id>",
        api.purchase_detail,
        name="purchase-detail",
    ),
    path(
        "api/students/<uuid:student_id>/learnings",
        api.student_learnings,
        name="student-learnings",
    ),
    path(
        "api/payments/<str:reference>/trace",
        api.payment_trace,
        name="payment-trace",
    ),
    path("api/openapi.json", openapi.openapi_document, name="openapi"),
    path("healthz", api.healthz, name="healthz"),
    path("metrics", api.metrics, name="metrics"),
]
