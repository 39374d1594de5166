"""The allocation rules of CONTRACT §6 as pure functions: no database, no Django."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fulfillment.domain.fit import (
    PurchaseFacts,
    Rule,
    TrainerFacts,
    Verdict,
    evaluate,
    rank,
    waitlist_reason,
)
from fulfillment.domain.geo import great_circle_km
from fulfillment.domain.schedule import (
    DeliveryMode,
    Slot,
    build_schedule,
    remaining_slots,
)

KOLKATA = ZoneInfo("Asia/Kolkata")
MONDAY = dt.date(2030, 1, 7)
SUNDAY = dt.date(2030, 1, 6)
STUDENT_HOME = (12.9756, 77.6050)
# About 1.1 km east of the student: well inside a 10 km travel radius.
NEARBY = (12.9756, 77.6150)


def slots(
    *,
    time_slot: dt.time = dt.time(16, 0),
    mode: DeliveryMode = DeliveryMode.WEEKDAY_DAILY,
    start: dt.date = MONDAY,
    total: int = 10,
) -> tuple[Slot, ...]:
    return tuple(
        build_schedule(
            start_date=start,
            time_slot=time_slot,
            delivery_mode=mode,
            total_sessions=total,
            tz=KOLKATA,
        )
    )


def trainer(**fields: Any) -> TrainerFacts:
    """A trainer who fits the default purchase (weekdays at 16:00, 1 km away)."""
    defaults: dict[str, Any] = {
        "id": "00000000-0000-0000-0000-000000000001",
        "name": "Asha Rao",
        "is_active": True,
        "teaches_course": True,
        "latitude": NEARBY[0],
        "longitude": NEARBY[1],
        "max_travel_km": 10.0,
        "max_active_students": 5,
        "weekdays": frozenset(range(7)),
        "work_start": dt.time(9),
        "work_end": dt.time(20),
        "active_allocations": 0,
        "reserved": (),
    }
    return TrainerFacts(**{**defaults, **fields})


def purchase(**fields: Any) -> PurchaseFacts:
    """A home-visit purchase: ten weekday sessions at 16:00 from Monday 7 Jan 2030."""
    defaults: dict[str, Any] = {
        "home_visit": True,
        "latitude": STUDENT_HOME[0],
        "longitude": STUDENT_HOME[1],
        "slots": slots(),
        "tz": KOLKATA,
    }
    return PurchaseFacts(**{**defaults, **fields})


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=KOLKATA)


def test_default_trainer_fits_the_default_purchase() -> None:
    verdict = evaluate(trainer(), purchase())

    assert verdict.fits
    assert verdict.broken == ()
    assert verdict.distance_km == pytest.approx(1.08, abs=0.05)


# --- rule 1: active and teaching -------------------------------------------------


def test_inactive_trainer_does_not_fit() -> None:
    verdict = evaluate(trainer(is_active=False), purchase())

    assert not verdict.fits
    assert verdict.broken == (Rule.INACTIVE,)


def test_trainer_who_does_not_teach_the_course_does_not_fit() -> None:
    verdict = evaluate(trainer(teaches_course=False), purchase())

    assert verdict.broken == (Rule.NOT_TEACHING,)


# --- rule 2: distance (home courses only) ----------------------------------------


def test_home_course_trainer_beyond_travel_distance_does_not_fit() -> None:
    # 0.3 degrees of latitude north: about 33 km.
    far = trainer(latitude=STUDENT_HOME[0] + 0.3, longitude=STUDENT_HOME[1])

    verdict = evaluate(far, purchase())

    assert verdict.broken == (Rule.TOO_FAR,)
    assert verdict.distance_km == pytest.approx(33.4, abs=0.1)


def test_home_course_trainer_exactly_at_travel_distance_fits() -> None:
    distance = great_circle_km(*NEARBY, *STUDENT_HOME)

    verdict = evaluate(trainer(max_travel_km=distance), purchase())

    assert verdict.fits


def test_home_course_trainer_just_short_of_the_distance_does_not_fit() -> None:
    distance = great_circle_km(*NEARBY, *STUDENT_HOME)

    verdict = evaluate(trainer(max_travel_km=distance - 0.001), purchase())

    assert verdict.broken == (Rule.TOO_FAR,)


def test_home_course_without_student_location_is_too_far_for_everyone() -> None:
    verdict = evaluate(trainer(), purchase(latitude=None, longitude=None))

    assert verdict.broken == (Rule.TOO_FAR,)
    assert verdict.distance_km is None


def test_online_course_ignores_distance() -> None:
    # Delhi is about 1,740 km from Bengaluru.
    delhi = trainer(latitude=28.61, longitude=77.21, max_travel_km=0)

    verdict = evaluate(delhi, purchase(home_visit=False))

    assert verdict.fits
    assert verdict.distance_km == pytest.approx(1740, rel=0.01)


def test_online_course_without_student_location_fits() -> None:
    verdict = evaluate(
        trainer(), purchase(home_visit=False, latitude=None, longitude=None)
    )

    assert verdict.fits
    assert verdict.distance_km is None


# --- rule 3: working days and hours ----------------------------------------------


def test_trainer_not_working_one_delivery_weekday_does_not_fit() -> None:
    no_wednesdays = trainer(weekdays=frozenset({0, 1, 3, 4, 5, 6}))

    verdict = evaluate(no_wednesdays, purchase())

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_trainer_working_monday_to_friday_fits_weekday_sessions() -> None:
    verdict = evaluate(trainer(weekdays=frozenset({0, 1, 2, 3, 4})), purchase())

    assert verdict.fits


def test_trainer_not_working_sundays_does_not_fit_sunday_sessions() -> None:
    sundays = slots(mode=DeliveryMode.SUNDAY_ONLY, start=SUNDAY)

    verdict = evaluate(
        trainer(weekdays=frozenset({0, 1, 2, 3, 4, 5})), purchase(slots=sundays)
    )

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_trainer_working_only_sundays_fits_sunday_sessions() -> None:
    sundays = slots(mode=DeliveryMode.SUNDAY_ONLY, start=SUNDAY)

    verdict = evaluate(trainer(weekdays=frozenset({6})), purchase(slots=sundays))

    assert verdict.fits


def test_session_starting_before_work_start_does_not_fit() -> None:
    early = slots(time_slot=dt.time(8, 30))

    verdict = evaluate(trainer(), purchase(slots=early))

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_session_starting_exactly_at_work_start_fits() -> None:
    verdict = evaluate(trainer(), purchase(slots=slots(time_slot=dt.time(9, 0))))

    assert verdict.fits


def test_weekday_session_ending_after_work_end_does_not_fit() -> None:
    late = slots(time_slot=dt.time(19, 30))  # ends 20:30

    verdict = evaluate(trainer(), purchase(slots=late))

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_weekday_session_ending_exactly_at_work_end_fits() -> None:
    verdict = evaluate(trainer(), purchase(slots=slots(time_slot=dt.time(19, 0))))

    assert verdict.fits


def test_sunday_eighty_minute_session_ending_after_work_end_does_not_fit() -> None:
    # 19:00 would fit on a weekday (ends 20:00) but a Sunday session ends 20:20.
    sundays = slots(
        time_slot=dt.time(19, 0), mode=DeliveryMode.SUNDAY_ONLY, start=SUNDAY
    )
    assert sundays[0].ends_at - sundays[0].starts_at == dt.timedelta(minutes=80)

    verdict = evaluate(trainer(), purchase(slots=sundays))

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_sunday_eighty_minute_session_ending_exactly_at_work_end_fits() -> None:
    sundays = slots(
        time_slot=dt.time(18, 40), mode=DeliveryMode.SUNDAY_ONLY, start=SUNDAY
    )

    verdict = evaluate(trainer(), purchase(slots=sundays))

    assert verdict.fits


# --- rule 4: capacity ------------------------------------------------------------


def test_trainer_at_capacity_does_not_fit() -> None:
    full = trainer(max_active_students=3, active_allocations=3)

    verdict = evaluate(full, purchase())

    assert verdict.broken == (Rule.AT_CAPACITY,)


def test_trainer_with_one_place_left_fits() -> None:
    verdict = evaluate(trainer(max_active_students=3, active_allocations=2), purchase())

    assert verdict.fits


def test_trainer_with_zero_capacity_never_fits() -> None:
    verdict = evaluate(trainer(max_active_students=0), purchase())

    assert verdict.broken == (Rule.AT_CAPACITY,)


# --- rule 5: reserved time ---------------------------------------------------------


def test_reservation_overlapping_one_session_excludes_the_trainer() -> None:
    # The fourth session is Thursday 10 Jan 16:00-17:00.
    thursday = MONDAY + dt.timedelta(days=3)
    busy = ((local(thursday, 16, 30), local(thursday, 17, 30)),)

    verdict = evaluate(trainer(reserved=busy), purchase())

    assert verdict.broken == (Rule.ALREADY_RESERVED,)


def test_reservation_ending_when_the_session_starts_does_not_clash() -> None:
    # Half-open ranges: 15:00-16:00 and 16:00-17:00 share no instant.
    before = ((local(MONDAY, 15), local(MONDAY, 16)),)

    verdict = evaluate(trainer(reserved=before), purchase())

    assert verdict.fits


def test_reservation_starting_when_the_session_ends_does_not_clash() -> None:
    after = ((local(MONDAY, 17), local(MONDAY, 18)),)

    verdict = evaluate(trainer(reserved=after), purchase())

    assert verdict.fits


def test_reservation_overlapping_by_one_minute_clashes() -> None:
    one_minute = ((local(MONDAY, 15), local(MONDAY, 16, 1)),)

    verdict = evaluate(trainer(reserved=one_minute), purchase())

    assert verdict.broken == (Rule.ALREADY_RESERVED,)


def test_reservation_inside_a_sunday_sessions_extra_twenty_minutes_clashes() -> None:
    sundays = slots(mode=DeliveryMode.SUNDAY_ONLY, start=SUNDAY)
    # 17:10-18:00 overlaps only the last ten minutes of the 16:00-17:20 session.
    busy = ((local(SUNDAY, 17, 10), local(SUNDAY, 18)),)

    verdict = evaluate(trainer(reserved=busy), purchase(slots=sundays))

    assert verdict.broken == (Rule.ALREADY_RESERVED,)


def test_reservation_on_a_day_without_sessions_does_not_clash() -> None:
    saturday = MONDAY + dt.timedelta(days=5)
    busy = ((local(saturday, 16), local(saturday, 17)),)

    verdict = evaluate(trainer(reserved=busy), purchase())

    assert verdict.fits


def test_reservation_in_another_zone_is_compared_as_an_instant() -> None:
    # 10:30 UTC is 16:00 in Kolkata: the first session exactly.
    utc_busy = (
        (
            dt.datetime(2030, 1, 7, 10, 30, tzinfo=dt.UTC),
            dt.datetime(2030, 1, 7, 11, 30, tzinfo=dt.UTC),
        ),
    )

    verdict = evaluate(trainer(reserved=utc_busy), purchase())

    assert verdict.broken == (Rule.ALREADY_RESERVED,)


# --- several rules ---------------------------------------------------------------


def test_every_broken_rule_is_listed_in_contract_order() -> None:
    hopeless = trainer(
        is_active=False,
        teaches_course=False,
        latitude=STUDENT_HOME[0] + 1,
        weekdays=frozenset({6}),
        max_active_students=1,
        active_allocations=1,
        reserved=((local(MONDAY, 16), local(MONDAY, 17)),),
        released_from_purchase=True,
    )

    verdict = evaluate(hopeless, purchase())

    assert verdict.broken == tuple(Rule)


def test_only_soft_rules_broken_when_trainer_is_far_or_full() -> None:
    far_and_full = trainer(
        latitude=STUDENT_HOME[0] + 0.3, max_active_students=1, active_allocations=1
    )

    verdict = evaluate(far_and_full, purchase())

    assert verdict.broken == (Rule.TOO_FAR, Rule.AT_CAPACITY)
    assert verdict.only_soft_rules_broken


def test_a_hard_rule_cannot_be_waived() -> None:
    verdict = evaluate(
        trainer(latitude=STUDENT_HOME[0] + 0.3, weekdays=frozenset({6})), purchase()
    )

    assert verdict.broken == (Rule.TOO_FAR, Rule.NOT_WORKING)
    assert not verdict.only_soft_rules_broken


# --- ranking ---------------------------------------------------------------------


def ids(verdicts: list[Verdict]) -> list[str]:
    return [v.trainer.id for v in verdicts]


def test_rank_prefers_the_nearest_trainer_for_a_home_course() -> None:
    facts = purchase()
    far = trainer(id="a", latitude=STUDENT_HOME[0] + 0.05, active_allocations=0)
    near = trainer(id="b", latitude=STUDENT_HOME[0] + 0.01, active_allocations=4)

    ranked = rank([evaluate(far, facts), evaluate(near, facts)], home_visit=True)

    assert ids(ranked) == ["b", "a"]


def test_rank_breaks_a_distance_tie_by_fewest_active_allocations() -> None:
    facts = purchase()
    busier = trainer(id="a", active_allocations=2)
    quieter = trainer(id="b", active_allocations=1)

    ranked = rank([evaluate(busier, facts), evaluate(quieter, facts)], home_visit=True)

    assert ids(ranked) == ["b", "a"]


def test_rank_breaks_a_full_tie_by_lowest_id() -> None:
    facts = purchase()
    candidates = [
        trainer(id="00000000-0000-0000-0000-00000000000c"),
        trainer(id="00000000-0000-0000-0000-00000000000a"),
        trainer(id="00000000-0000-0000-0000-00000000000b"),
    ]

    ranked = rank([evaluate(t, facts) for t in candidates], home_visit=True)

    assert ids(ranked) == [
        "00000000-0000-0000-0000-00000000000a",
        "00000000-0000-0000-0000-00000000000b",
        "00000000-0000-0000-0000-00000000000c",
    ]


def test_rank_ignores_distance_for_an_online_course() -> None:
    facts = purchase(home_visit=False)
    near_but_busy = trainer(id="a", active_allocations=3)
    far_but_free = trainer(
        id="b", latitude=28.61, longitude=77.21, active_allocations=0
    )
    far_and_busy = trainer(
        id="c", latitude=28.61, longitude=77.21, active_allocations=3
    )

    ranked = rank(
        [evaluate(t, facts) for t in (far_and_busy, near_but_busy, far_but_free)],
        home_visit=False,
    )

    assert ids(ranked) == ["b", "a", "c"]


def test_rank_leaves_out_trainers_who_do_not_fit() -> None:
    facts = purchase()
    verdicts = [
        evaluate(trainer(id="a", is_active=False), facts),
        evaluate(trainer(id="b"), facts),
        evaluate(trainer(id="c", max_active_students=0), facts),
    ]

    assert ids(rank(verdicts, home_visit=True)) == ["b"]


def test_rank_of_no_fitting_trainer_is_empty() -> None:
    verdicts = [evaluate(trainer(is_active=False), purchase())]

    assert rank(verdicts, home_visit=True) == []


# --- waitlist reason ---------------------------------------------------------------


def test_waitlist_reason_without_any_teaching_trainer_says_so() -> None:
    reason = waitlist_reason([], course_title="Python for Kids")

    assert reason == "No trainer teaches Python for Kids: add one to the catalogue."


def test_waitlist_reason_names_the_rule_that_excluded_most_trainers() -> None:
    facts = purchase()
    verdicts = [
        evaluate(trainer(id="a", max_active_students=1, active_allocations=1), facts),
        evaluate(trainer(id="b", max_active_students=2, active_allocations=2), facts),
        evaluate(trainer(id="c", weekdays=frozenset({6})), facts),
    ]

    reason = waitlist_reason(verdicts, course_title="Python for Kids")

    assert reason.startswith(
        "No trainer fits: 2 of 3 trainers for Python for Kids are at capacity"
    )
    assert "also 1 not working on those days and hours" in reason
    assert reason.endswith(".")


def test_waitlist_reason_counts_a_trainer_once_per_rule_broken() -> None:
    facts = purchase()
    verdicts = [
        evaluate(trainer(id="a", is_active=False, weekdays=frozenset({6})), facts),
        evaluate(trainer(id="b", weekdays=frozenset({6})), facts),
    ]

    reason = waitlist_reason(verdicts, course_title="Scratch")

    assert "2 of 2 trainers for Scratch are not working" in reason
    assert "also 1 inactive" in reason


def test_waitlist_reason_for_distance_gives_the_nearest_trainer() -> None:
    facts = purchase()
    verdicts = [
        evaluate(trainer(id="a", latitude=STUDENT_HOME[0] + 0.3), facts),
        evaluate(trainer(id="b", latitude=STUDENT_HOME[0] + 0.2), facts),
    ]
    nearest = great_circle_km(STUDENT_HOME[0] + 0.2, NEARBY[1], *STUDENT_HOME)

    reason = waitlist_reason(verdicts, course_title="Web Basics")

    # Both are excluded by distance alone: a headline names the nearer first.
    assert reason.split("\n")[-1] == (
        "No trainer fits: 2 of 2 trainers for Web Basics are beyond their travel "
        f"distance (nearest is {nearest:.1f} km away)."
    )


def test_waitlist_reason_tie_goes_to_the_earlier_rule() -> None:
    facts = purchase()
    verdicts = [
        evaluate(
            trainer(id="a", reserved=((local(MONDAY, 16), local(MONDAY, 17)),)), facts
        ),
        evaluate(trainer(id="b", is_active=False), facts),
    ]

    reason = waitlist_reason(verdicts, course_title="Python for Kids")

    assert "1 of 2 trainers for Python for Kids are inactive" in reason
    assert "also 1 already reserved at an overlapping time" in reason


def test_waitlist_reason_when_every_trainer_fits_blames_a_concurrent_allocation() -> (
    None
):
    verdicts = [evaluate(trainer(), purchase())]

    reason = waitlist_reason(verdicts, course_title="Python for Kids")

    assert "concurrent allocation" in reason


# --- leave, operator releases, the rest of a schedule -------------------------


def test_a_leave_covering_one_session_day_is_not_working() -> None:
    # Ten weekday sessions from Monday 7 Jan 2030: Wed 9 Jan is the third.
    on_leave = trainer(leave=((dt.date(2030, 1, 9), dt.date(2030, 1, 9)),))

    verdict = evaluate(on_leave, purchase())

    assert verdict.broken == (Rule.NOT_WORKING,)
    assert Rule.NOT_WORKING.hard


def test_a_leave_outside_the_schedule_changes_nothing() -> None:
    before = ((dt.date(2030, 1, 1), dt.date(2030, 1, 6)),)
    after = ((dt.date(2030, 1, 19), dt.date(2030, 2, 1)),)

    assert evaluate(trainer(leave=before + after), purchase()).fits


def test_leave_days_are_the_local_days_of_the_sessions() -> None:
    # 16:00 in Kolkata is 10:30 UTC the same day; an 05:00 session is still the
    # local day even though it is the previous day in UTC.
    early = purchase(slots=slots(time_slot=dt.time(5, 0)))
    first_local_day = early.slots[0].starts_at.astimezone(KOLKATA).date()
    assert early.slots[0].starts_at.astimezone(dt.UTC).date() < first_local_day

    verdict = evaluate(
        trainer(work_start=dt.time(4), leave=((first_local_day, first_local_day),)),
        early,
    )

    assert verdict.broken == (Rule.NOT_WORKING,)


def test_a_trainer_released_by_an_operator_is_not_chosen_again_automatically() -> None:
    released = trainer(id="released", released_from_purchase=True)
    other = trainer(id="other", latitude=13.0)

    verdicts = [evaluate(released, purchase()), evaluate(other, purchase())]

    assert verdicts[0].broken == (Rule.RELEASED,)
    assert verdicts[0].only_soft_rules_broken  # an operator may still choose them
    assert [v.trainer.id for v in rank(verdicts, home_visit=True)] == ["other"]


def test_remaining_slots_continue_from_the_sessions_given() -> None:
    full = list(slots(total=10))

    rest = remaining_slots(full, given=3)

    assert [slot.sequence for slot in rest] == [4, 5, 6, 7, 8, 9, 10]
    assert rest[0].starts_at == full[0].starts_at
    assert remaining_slots(full, given=0) == full
    assert remaining_slots(full, given=10) == []
    assert full[0].starts_at.date() == MONDAY
