"""Time automatic allocation of every waiting purchase, each rolled back, so
every size of the bench's curve judges the same purchases on the same data."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, transaction
from procrastinate.contrib.django import app

from fulfillment.queue import names

# The candidate query and verdicts, whichever the checkout under test calls.
SELECTORS = ("trainer_candidates", "trainer_verdicts")


class Command(BaseCommand):
    help = "Allocate each waiting purchase in a rolled-back transaction; JSON times."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)

    def handle(self, *args: Any, rounds: int, **options: Any) -> None:
        # The allocation task by its name, as services defer it (tools reach the
        # pipeline only through the queue); its service module, loaded with it,
        # gets its candidate selector timed.
        allocate = app.tasks[names.ALLOCATE_TRAINER]
        service = sys.modules["fulfillment.services.allocation"]
        selector_ms: list[float] = []
        for name in SELECTORS:
            if hasattr(service, name):
                setattr(service, name, _timed(getattr(service, name), selector_ms))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM fulfillment_purchase "
                "WHERE status = 'allocation_pending' ORDER BY created_at"
            )
            pending = [str(row[0]) for row in cursor.fetchall()]
        wall_ms: list[float] = []
        outcomes: dict[str, int] = {}
        plan = ""
        for number in range(rounds * len(pending)):
            purchase_id = pending[number % len(pending)]
            statements: list[tuple[float, str, Any]] = []
            with transaction.atomic():
                with connection.execute_wrapper(_Recorder(statements)):
                    began = time.perf_counter()
                    allocate(purchase_id=purchase_id)
                    wall_ms.append((time.perf_counter() - began) * 1000)
                if number == len(pending):  # warm: the second round's first
                    plan = _explain(max(statements, key=lambda s: s[0]))
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT status FROM fulfillment_purchase WHERE id = %s",
                        [purchase_id],
                    )
                    row = cursor.fetchone()
                transaction.set_rollback(True)
            status = str(row[0]) if row else "?"
            outcomes[status] = outcomes.get(status, 0) + 1
        self.stdout.write(
            json.dumps(
                {
                    "allocate_ms": wall_ms,
                    "selector_ms": selector_ms,
                    "outcomes": outcomes,
                    "slowest_statement_plan": plan,
                }
            )
        )


class _Recorder:
    """Each statement's time, SQL and parameters."""

    def __init__(self, into: list[tuple[float, str, Any]]) -> None:
        self.into = into

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: Any,
    ) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.into.append(((time.perf_counter() - began) * 1000, sql, params))


def _explain(statement: tuple[float, str, Any]) -> str:
    """EXPLAIN ANALYZE of the statement, again, in the same transaction."""
    milliseconds, sql, params = statement
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        lines = [row[0] for row in cursor.fetchall()]
    return f"-- {milliseconds:.2f} ms in the timed run\n" + "\n".join(lines)


def _timed(function: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            into.append((time.perf_counter() - began) * 1000)

    return timed
