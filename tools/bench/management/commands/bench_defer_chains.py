from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fulfillment import queue
from tools.bench.tasks import CHAIN_STAGE


class Command(BaseCommand):
    help = "Defer the first stage of N no-op chains, one at a time (the bench burst)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chains", type=int, required=True)
        parser.add_argument("--stages", type=int, required=True)

    def handle(self, *args: Any, chains: int, stages: int, **options: Any) -> None:
        for chain in range(chains):
            queue.defer(CHAIN_STAGE, chain=chain, stage=0, stages=stages)
