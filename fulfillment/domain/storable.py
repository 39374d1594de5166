"""Text PostgreSQL cannot store, made storable.

PostgreSQL's ``text`` and ``jsonb`` refuse NUL (U+0000) and UTF-8 cannot encode
an unpaired surrogate (U+D800-U+DFFF), yet both are valid in a JSON string that
Stripe has signed. Money taken is never dropped, so such values are kept with
U+FFFD in their place, and the caller is told which fields were changed.
"""

from __future__ import annotations

import re
from typing import Final

REPLACEMENT: Final = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_copy(value: object, path: str = "") -> tuple[object, list[str]]:
    """A copy of the JSON ``value`` whose strings (keys too) PostgreSQL can
    store, and the dotted paths of the fields that had to change (a changed key
    is named by its cleaned form). Recursive: bodies reaching it are
    depth-limited already (json_body.MAX_DEPTH)."""
    changed: list[str] = []
    if isinstance(value, str):
        cleaned = storable_text(value)
        if cleaned != value:
            changed.append(path or "(value)")
        return cleaned, changed
    if isinstance(value, dict):
        result: dict[str, object] = {}
        for key, child in value.items():
            clean_key = storable_text(key) if isinstance(key, str) else key
            child_path = f"{path}.{clean_key}" if path else str(clean_key)
            if clean_key != key:
                changed.append(child_path)
            result[clean_key], below = storable_copy(child, child_path)
            changed.extend(below)
        return result, changed
    if isinstance(value, list):
        items: list[object] = []
        for index, child in enumerate(value):
            item, below = storable_copy(child, f"{path}[{index}]")
            items.append(item)
            changed.extend(below)
        return items, changed
    return value, changed
