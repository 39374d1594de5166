from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fulfillment.ops.health import DOCTOR_CHECKS, CheckVerdict, run_checks

MARKS = {CheckVerdict.OK: " OK ", CheckVerdict.WARN: "WARN", CheckVerdict.FAIL: "FAIL"}


class Command(BaseCommand):
    help = (
        "Check what the old system's failures were about: database, schema, workers "
        "per queue, queue depth, stalled and failed jobs, stuck purchases, payments "
        "needing attention. Exits non-zero when any check fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable")
        parser.add_argument(
            "--details", action="store_true", help="print what is behind each number"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        results = run_checks(DOCTOR_CHECKS)
        failed = [check for check in results if check.verdict is CheckVerdict.FAIL]
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "healthy": not failed,
                        "checks": [
                            {"name": check.name, **check.as_dict()} for check in results
                        ],
                    },
                    indent=2,
                )
            )
        else:
            for check in results:
                line = f"[{MARKS[check.verdict]}] {check.name:<28} {check.summary}"
                style = {
                    CheckVerdict.OK: self.style.SUCCESS,
                    CheckVerdict.WARN: self.style.WARNING,
                    CheckVerdict.FAIL: self.style.ERROR,
                }[check.verdict]
                self.stdout.write(style(line))
                if options["details"] or check.verdict is not CheckVerdict.OK:
                    for detail in check.details:
                        self.stdout.write(f"       {detail}")
        if failed:
            raise CommandError(
                f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}",
                returncode=1,
            )
