"""Operator actions on jobs themselves (not on the purchases they serve): a
failed job an operator decides never to run again is discarded, with a reason.

Retry lives in ``operations.failed_jobs_retry``; both need
``fulfillment.retry_failed_jobs`` in the console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import connection, transaction

from fulfillment.models import Purchase, TraceEvent
from fulfillment.services.operations import OperationRefused
from fulfillment.services.trace import trace_record

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 500


def failed_jobs_discard(*, job_ids: Iterable[int], operator: str, reason: str) -> int:
    """Mark failed jobs ``cancelled`` so they leave the failed list for good;
    jobs in any other state are left alone (a retried job may be running).
    Each discarded job's purchase gets the action and the reason in its trace.
    One transaction; returns how many jobs were discarded. Raises
    ``OperationRefused`` (having changed nothing) without a reason.
    """
    reason = reason.strip()
    if not reason:
        raise OperationRefused(
            "Say why these jobs should never run again.", field="reason"
        )
    if len(reason) > MAX_REASON_CHARS:
        raise OperationRefused(
            f"Keep the reason under {MAX_REASON_CHARS} characters.", field="reason"
        )
    ids = sorted({int(job_id) for job_id in job_ids})
    if not ids:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        # failed -> cancelled records no procrastinate event and frees no lock
        # (only todo jobs hold a queueing lock): the row simply stops counting
        # as failed. Lock-and-check in one statement, so a concurrent retry wins
        # or loses cleanly.
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'cancelled' "
            "WHERE id = ANY(%s) AND status = 'failed' "
            "RETURNING id, task_name, args->>'purchase_id'",
            [ids],
        )
        discarded = cursor.fetchall()
        by_purchase = {row[2]: row for row in discarded if row[2]}
        for purchase in Purchase.objects.select_related("payment").filter(
            pk__in=list(by_purchase)
        ):
            job_id, task_name, _ = by_purchase[str(purchase.pk)]
            trace_record(
                payment=purchase.payment,
                purchase=purchase,
                kind=TraceEvent.Kind.OPERATOR_ACTION,
                actor=operator,
                message=(
                    f"{operator} discarded the failed job #{job_id} "
                    f"({task_name.rsplit('.', 1)[-1]}): {reason}"
                ),
            )
    logger.info(
        "failed jobs discarded by operator",
        extra={
            "job_ids": [row[0] for row in discarded],
            "operator": operator,
            "reason": reason,
        },
    )
    return len(discarded)
