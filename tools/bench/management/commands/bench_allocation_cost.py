"""Time automatic allocation of every waiting purchase, each rolled back, so
every size of the bench's curve judges the same purchases on the same data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from fulfillment.models import Purchase
from fulfillment.services import allocation

# The candidate query and verdicts, whichever the checkout under test calls.
SELECTORS = ("trainer_candidates", "trainer_verdicts")


class Command(BaseCommand):
    help = "Allocate each waiting purchase in a rolled-back transaction; JSON times."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)

    def handle(self, *args: Any, rounds: int, **options: Any) -> None:
        selector_ms: list[float] = []
        for name in SELECTORS:
            if hasattr(allocation, name):
                setattr(
                    allocation, name, _timed(getattr(allocation, name), selector_ms)
                )
        pending = list(
            Purchase.objects.filter(status=Purchase.Status.ALLOCATION_PENDING)
            .order_by("created_at")
            .values_list("pk", flat=True)
        )
        wall_ms: list[float] = []
        outcomes: dict[str, int] = {}
        for _ in range(rounds):
            for purchase_id in pending:
                began = time.perf_counter()
                with transaction.atomic():
                    purchase = allocation.purchase_allocate(
                        purchase_id=purchase_id, actor="bench"
                    )
                    transaction.set_rollback(True)
                wall_ms.append((time.perf_counter() - began) * 1000)
                outcomes[purchase.status] = outcomes.get(purchase.status, 0) + 1
        self.stdout.write(
            json.dumps(
                {
                    "allocate_ms": wall_ms,
                    "selector_ms": selector_ms,
                    "outcomes": outcomes,
                }
            )
        )


def _timed(function: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            into.append((time.perf_counter() - began) * 1000)

    return timed
