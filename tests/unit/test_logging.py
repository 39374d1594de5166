"""One line per event, ids from ``extra``; JSON lines with LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging

from kcproject.logging import JsonFormatter, QuietMaintenanceJobs, TextFormatter


def record(
    name: str = "fulfillment", level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, "purchase recorded", None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_text_lines_carry_the_ids_from_extra() -> None:
    line = TextFormatter().format(record(purchase_id="p-1", payment_intent="pi_1"))

    assert "\n" not in line
    assert line.endswith("purchase recorded | purchase_id=p-1 payment_intent=pi_1")


def test_json_lines_are_one_object_with_the_extras() -> None:
    payload = json.loads(JsonFormatter().format(record(purchase_id="p-1")))

    assert payload["message"] == "purchase recorded"
    assert payload["purchase_id"] == "p-1"
    assert payload["level"] == "INFO"


def test_routine_maintenance_job_lines_are_dropped_but_not_their_errors() -> None:
    quiet = QuietMaintenanceJobs()
    maintenance = {"queue": "maintenance"}

    assert not quiet.filter(record("procrastinate.worker", job=maintenance))
    assert quiet.filter(record("procrastinate.worker", logging.ERROR, job=maintenance))
    assert quiet.filter(record("procrastinate.worker", job={"queue": "allocation"}))


def test_values_that_could_forge_a_text_line_are_escaped() -> None:
    # Webhook bodies put untrusted text into extras (an unknown event type, say).
    line = TextFormatter().format(
        record(event_type="x\nCRITICAL:forged", pi="pi_\ud800", other="a\x00b")
    )

    assert "\n" not in line
    assert line.endswith(
        '| event_type="x\\nCRITICAL:forged" pi="pi_\\ud800" other="a\\u0000b"'
    )
    line.encode("utf-8")
