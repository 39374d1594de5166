"""Folding repeats: consecutive equal entries of a timeline become one line with
a count (waitlist retries, cache refreshes), so the trace stays readable."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Folded(Generic[T]):
    first: T
    last: T
    count: int


def fold_repeats(
    items: Iterable[T], key: Callable[[T], Hashable | None]
) -> list[Folded[T]]:
    """Runs of consecutive items with the same ``key`` as one ``Folded`` each,
    in order. Items whose key is ``None`` are never folded."""
    folded: list[Folded[T]] = []
    run_key: Hashable | None = None
    for item in items:
        item_key = key(item)
        if folded and item_key is not None and item_key == run_key:
            run = folded[-1]
            folded[-1] = Folded(first=run.first, last=item, count=run.count + 1)
            continue
        folded.append(Folded(first=item, last=item, count=1))
        run_key = item_key
    return folded
