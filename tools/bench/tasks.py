"""A no-op chain: each stage only defers the next, in a transaction on Django's
connection, exactly as the pipeline's stages defer theirs (fulfillment.queue).
Its rate is what procrastinate allows with our worker settings when a stage
does no work at all: the ceiling the pipeline is compared with."""

from __future__ import annotations

from django.db import transaction
from procrastinate.contrib.django import app

from fulfillment import queue

QUEUE = "bench"
CHAIN_STAGE = "tools.bench.tasks.chain_stage"


@app.task(queue=QUEUE)
def chain_stage(*, chain: int, stage: int, stages: int) -> None:
    if stage + 1 < stages:
        with transaction.atomic():
            queue.defer(CHAIN_STAGE, chain=chain, stage=stage + 1, stages=stages)
