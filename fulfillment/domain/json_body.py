"""Reading an untrusted JSON request body strictly.

Python's ``json`` module accepts more than JSON (``NaN``, ``Infinity``, numbers
that overflow to infinity) and recurses once per nesting level, so a body of a
few thousand ``[`` exhausts the stack. None of that is JSON PostgreSQL's
``jsonb`` takes or that Stripe sends: ``parse_json_body`` refuses it with
``UnreadableBody`` and raises nothing else.
"""

from __future__ import annotations

import json
import math
from typing import Final

# Stripe objects nest a handful of levels; this is far beyond them and far below
# the depth at which json.dumps, run again when the event is stored, would
# exhaust the stack.
MAX_DEPTH: Final = 64


class UnreadableBody(ValueError):
    """The body is not strict JSON; ``str(error)`` says why, for the sender."""


def parse_json_body(body: bytes) -> object:
    """The JSON value of a UTF-8 ``body`` nested at most ``MAX_DEPTH`` levels,
    without ``NaN`` or infinite numbers."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableBody("the body is not UTF-8") from None
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError:
        raise UnreadableBody(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except UnreadableBody:
        raise
    except ValueError:
        raise UnreadableBody("the body is not JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise UnreadableBody(f"the body nests deeper than {MAX_DEPTH} levels")
    return value


def _refuse_constant(name: str) -> float:
    raise UnreadableBody(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise UnreadableBody(f"the number {text[:40]} is too large")
    return number


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value`` (0 for a scalar),
    counted without recursion."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: list[object] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        pending.extend((child, depth + 1) for child in children)
    return deepest
