from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from fulfillment.services.catalog import catalog_import
from fulfillment.testing.demo import CATALOG


class Command(BaseCommand):
    help = "Load the small demo catalogue (idempotent: upserts by id)."

    def handle(self, *args: Any, **options: Any) -> None:
        summary = catalog_import(data=CATALOG)
        self.stdout.write(self.style.SUCCESS(f"Demo catalogue: {summary}"))
