"""Which trainers fit a purchase (CONTRACT §6), as pure functions over plain facts.

The service gathers the facts in a few queries; everything here runs without a
database, so each rule is tested in microseconds and the admin's "Assign trainer"
page shows exactly the verdicts the automatic allocation acts on.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fulfillment.domain.geo import great_circle_km
from fulfillment.domain.schedule import Slot, fits_working_hours


class Rule(enum.Enum):
    """A reason a trainer does not fit, in the order of CONTRACT §6.

    Soft rules may be waived by an operator who has the trainer's agreement;
    hard rules never.
    """

    INACTIVE = ("inactive", True)
    NOT_TEACHING = ("not teaching the course", True)
    TOO_FAR = ("beyond their travel distance", False)
    NOT_WORKING = ("not working on those days and hours", True)
    AT_CAPACITY = ("at capacity (max active students)", False)
    ALREADY_RESERVED = ("already reserved at an overlapping time", True)
    # An operator took this purchase away from them: chosen again only by hand.
    RELEASED = ("released from this purchase by an operator", False)

    def __init__(self, label: str, hard: bool) -> None:
        self.label = label
        self.hard = hard


@dataclass(frozen=True)
class TrainerFacts:
    id: str
    name: str
    is_active: bool
    teaches_course: bool
    latitude: float
    longitude: float
    max_travel_km: float
    max_active_students: int
    weekdays: frozenset[int]
    work_start: dt.time
    work_end: dt.time
    active_allocations: int
    # Reserved [start, end) ranges that may overlap the schedule.
    reserved: tuple[tuple[dt.datetime, dt.datetime], ...] = ()
    # Leave as (first day, last day), both included: days off like any other.
    leave: tuple[tuple[dt.date, dt.date], ...] = ()
    # An operator released them from this very purchase.
    released_from_purchase: bool = False


@dataclass(frozen=True)
class PurchaseFacts:
    home_visit: bool
    latitude: float | None
    longitude: float | None
    slots: tuple[Slot, ...]
    tz: zoneinfo.ZoneInfo


@dataclass(frozen=True)
class Verdict:
    trainer: TrainerFacts
    broken: tuple[Rule, ...]
    distance_km: float | None

    @property
    def fits(self) -> bool:
        return not self.broken

    @property
    def only_soft_rules_broken(self) -> bool:
        return all(not rule.hard for rule in self.broken)


def evaluate(trainer: TrainerFacts, purchase: PurchaseFacts) -> Verdict:
    """Every rule the trainer breaks for this purchase (empty: the trainer fits)."""
    broken: list[Rule] = []
    if not trainer.is_active:
        broken.append(Rule.INACTIVE)
    if not trainer.teaches_course:
        broken.append(Rule.NOT_TEACHING)
    distance = None
    if purchase.latitude is not None and purchase.longitude is not None:
        distance = great_circle_km(
            trainer.latitude, trainer.longitude, purchase.latitude, purchase.longitude
        )
    if purchase.home_visit and (distance is None or distance > trainer.max_travel_km):
        broken.append(Rule.TOO_FAR)
    if not all(_works_during(trainer, slot, purchase.tz) for slot in purchase.slots):
        broken.append(Rule.NOT_WORKING)
    if trainer.active_allocations >= trainer.max_active_students:
        broken.append(Rule.AT_CAPACITY)
    if _overlaps(trainer.reserved, purchase.slots):
        broken.append(Rule.ALREADY_RESERVED)
    if trainer.released_from_purchase:
        broken.append(Rule.RELEASED)
    return Verdict(trainer=trainer, broken=tuple(broken), distance_km=distance)


def rank(verdicts: Iterable[Verdict], *, home_visit: bool) -> list[Verdict]:
    """Fitting trainers, best first: nearest (home courses), then fewest active
    allocations, then lowest id."""
    fitting = [v for v in verdicts if v.fits]
    return sorted(
        fitting,
        key=lambda v: (
            (v.distance_km or 0.0) if home_visit else 0.0,
            v.trainer.active_allocations,
            v.trainer.id,
        ),
    )


# A waitlist reason is a headline an operator reads at a glance, then (on its
# own lines) the full breakdown; ``reason_headline`` gives the first.
HEADLINE_SEPARATOR = "\n"


def waitlist_reason(verdicts: Sequence[Verdict], *, course_title: str) -> str:
    """Words an operator can act on: which rule excluded the most trainers.

    When a trainer is excluded by distance alone, a headline naming the nearest
    such trainer comes first ("No trainer within 5 km; nearest Asha Rao at 7.8
    km."), then the breakdown on the next line: that trainer could take the
    purchase if they agree to travel (a soft rule an operator may waive).
    """
    if not verdicts:
        return f"No trainer teaches {course_title}: add one to the catalogue."
    counts = Counter(rule for v in verdicts for rule in v.broken)
    if not counts:
        return "Every fitting trainer was taken by a concurrent allocation; retrying."
    # Ties go to the earlier rule of CONTRACT §6, which is the more fundamental one.
    order = list(Rule)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], order.index(item[0])))
    top_rule, top_count = ranked[0]
    total = len(verdicts)
    reason = (
        f"No trainer fits: {top_count} of {total} trainers for {course_title} "
        f"are {top_rule.label}"
    )
    if top_rule is Rule.TOO_FAR:
        distances = [v.distance_km for v in verdicts if v.distance_km is not None]
        if distances:
            reason += f" (nearest is {min(distances):.1f} km away)"
    others = [f"{count} {rule.label}" for rule, count in ranked[1:]]
    if others:
        reason += "; also " + ", ".join(others)
    reason += "."
    nearest = nearest_too_far_only(verdicts)
    if nearest is None or nearest.distance_km is None:
        return reason
    headline = (
        f"No trainer within {nearest.trainer.max_travel_km:g} km; nearest "
        f"{nearest.trainer.name} at {nearest.distance_km:.1f} km."
    )
    return headline + HEADLINE_SEPARATOR + reason


def nearest_too_far_only(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The nearest trainer whose only broken rule is the travel distance."""
    candidates = [
        v for v in verdicts if v.broken == (Rule.TOO_FAR,) and v.distance_km is not None
    ]
    return min(
        candidates, key=lambda v: (v.distance_km or 0.0, v.trainer.id), default=None
    )


def reason_headline(reason: str) -> str:
    """The line of a status reason an operator reads at a glance."""
    return reason.split(HEADLINE_SEPARATOR, 1)[0]


def _works_during(trainer: TrainerFacts, slot: Slot, tz: zoneinfo.ZoneInfo) -> bool:
    local_date = slot.starts_at.astimezone(tz).date()
    if any(first <= local_date <= last for first, last in trainer.leave):
        return False
    return local_date.weekday() in trainer.weekdays and fits_working_hours(
        slot, tz=tz, work_start=trainer.work_start, work_end=trainer.work_end
    )


def _overlaps(
    reserved: Iterable[tuple[dt.datetime, dt.datetime]], slots: Iterable[Slot]
) -> bool:
    # Half-open ranges: [a, b) and [c, d) overlap iff a < d and c < b.
    ranges = list(reserved)
    return any(
        start < slot.ends_at and slot.starts_at < end
        for slot in slots
        for start, end in ranges
    )
