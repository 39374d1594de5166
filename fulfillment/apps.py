from __future__ import annotations

from django.apps import AppConfig


class FulfillmentConfig(AppConfig):
    name = "fulfillment"
    verbose_name = "Fulfilment"
    default_auto_field = "django.db.models.BigAutoField"
