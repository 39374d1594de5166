from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fulfillment.selectors.trace import payment_trace
from fulfillment.web.serializers import trace_json


class Command(BaseCommand):
    help = "Show the whole path of one payment, oldest first (as the trace API)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "reference", help="a PaymentIntent id (pi_...) or purchase id"
        )
        parser.add_argument("--json", action="store_true", help="print the API's JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        found = payment_trace(reference=options["reference"])
        if found is None:
            raise CommandError(f"no payment or purchase {options['reference']!r}")
        trace = trace_json(found)
        if options["json"]:
            self.stdout.write(json.dumps(trace, indent=2))
            return
        self.stdout.write(
            f"{trace['payment_intent']}  purchase {trace['purchase_id'] or '-'}  "
            f"status {trace['status']}"
        )
        if trace["status_reason"]:
            self.stdout.write(f"  {trace['status_reason']}")
        for entry in trace["entries"]:
            self.stdout.write(f"{entry['at']}  {_describe(entry)}")


def _describe(entry: dict[str, Any]) -> str:
    kind = entry["kind"]
    if kind == "webhook":
        return (
            f"webhook   {entry['event_type']} {entry['event_id']} -> {entry['outcome']}"
            + (f" ({entry['detail']})" if entry["detail"] else "")
        )
    if kind == "job":
        line = (
            f"job       {entry['task'].rsplit('.', 1)[-1]} #{entry['job_id']} "
            f"{entry['status']} attempts={entry['attempts']} "
            f"started={entry['started_at'] or '-'} "
            f"finished={entry['finished_at'] or '-'}"
        )
        if entry["last_error"]:
            line += f" last_error={entry['last_error']!r}"
        return line
    arrow = (
        f"{entry['from_status'] or '-'} -> {entry['to_status']} "
        if entry["to_status"]
        else ""
    )
    return f"{kind:<9} {arrow}{entry['message']} [{entry['actor']}]"
