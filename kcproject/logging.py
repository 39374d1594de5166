"""One line per log event; ids passed in ``extra`` travel with it.

``LOG_FORMAT=text`` (default) appends ``key=value`` pairs to the message,
``LOG_FORMAT=json`` writes one JSON object per line for log shippers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
        timespec="milliseconds"
    )


# procrastinate attaches whole job and worker dicts; its message already names the
# job, so the one-line text format leaves them out (JSON lines keep them).
_TEXT_OMITS = frozenset({"job", "jobs", "worker", "start_timestamp", "end_timestamp"})


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={_compact(value)}"
            for key, value in record_extras(record).items()
            if key not in _TEXT_OMITS
        )
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        if extras:
            line = f"{line} | {extras}"
        if record.exc_info:
            # Keep one event on one line: tracebacks are joined with " \\n ".
            line = f"{line} | {self.formatException(record.exc_info)!r}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_extras(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def _compact(value: Any) -> str:
    # Bare only when it can neither split the line nor read as two values: a
    # newline, NUL, control character or lone surrogate arriving in a webhook
    # body is written JSON-escaped, so no one can forge a log line.
    if isinstance(value, str) and value.isprintable() and " " not in value:
        return value
    return json.dumps(value, default=str)


class QuietMaintenanceJobs(logging.Filter):
    """Drop procrastinate's routine start/success lines for the maintenance
    queue (a rescue runs every 5 s); their warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not record.name.startswith(
            "procrastinate.worker"
        ):
            return True
        job = getattr(record, "job", None)
        return not (isinstance(job, dict) and job.get("queue") == "maintenance")
