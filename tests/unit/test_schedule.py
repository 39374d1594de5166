from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fulfillment.domain.schedule import (
    ALLOWED_TOTALS,
    DeliveryMode,
    Slot,
    build_schedule,
    delivery_weekdays,
    fits_working_hours,
)

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
SUNDAY_2026_03_01 = date(2026, 3, 1)
MONDAY_2026_03_02 = date(2026, 3, 2)
SATURDAY_2026_03_07 = date(2026, 3, 7)


def schedule(**overrides: Any) -> list[Slot]:
    arguments: dict[str, Any] = {
        "start_date": MONDAY_2026_03_02,
        "time_slot": time(15, 0),
        "delivery_mode": DeliveryMode.WEEKDAY_DAILY,
        "total_sessions": 10,
        "tz": KOLKATA,
    }
    return build_schedule(**(arguments | overrides))


def elapsed(slot: Slot) -> timedelta:
    return slot.ends_at.astimezone(UTC) - slot.starts_at.astimezone(UTC)


def test_delivery_weekdays_are_monday_to_friday_or_sunday():
    assert delivery_weekdays(DeliveryMode.WEEKDAY_DAILY) == {0, 1, 2, 3, 4}
    assert delivery_weekdays(DeliveryMode.SUNDAY_ONLY) == {6}


def test_delivery_mode_is_its_string_value():
    assert DeliveryMode.SUNDAY_ONLY == "SUNDAY_ONLY"
    assert f"{DeliveryMode.WEEKDAY_DAILY}" == "WEEKDAY_DAILY"


def test_returns_exactly_the_purchased_number_of_sessions_numbered_from_one():
    slots = schedule(total_sessions=20)
    assert [slot.sequence for slot in slots] == list(range(1, 21))


def test_first_session_is_on_first_delivery_day_on_or_after_start_date():
    assert schedule(start_date=SATURDAY_2026_03_07)[0].starts_at.date() == date(
        2026, 3, 9
    )
    assert schedule(start_date=MONDAY_2026_03_02)[0].starts_at.date() == (
        MONDAY_2026_03_02
    )


def test_weekday_daily_schedule_skips_weekends():
    slots = schedule(start_date=MONDAY_2026_03_02, total_sessions=10)
    days = [slot.starts_at.date() for slot in slots]
    assert days[4] == date(2026, 3, 6)  # Friday
    assert days[5] == date(2026, 3, 9)  # the next Monday
    assert all(day.weekday() < 5 for day in days)


def test_sunday_only_schedule_skips_weekdays():
    slots = schedule(delivery_mode=DeliveryMode.SUNDAY_ONLY, total_sessions=10)
    days = [slot.starts_at.date() for slot in slots]
    assert days[0] == date(2026, 3, 8)
    assert all(
        later - earlier == timedelta(days=7) for earlier, later in pairwise(days)
    )


def test_three_pm_in_kolkata_is_0930_utc():
    first = schedule()[0]
    assert first.starts_at.astimezone(UTC) == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert first.starts_at.tzinfo is KOLKATA


def test_weekday_sessions_last_60_minutes():
    assert all(elapsed(slot) == timedelta(minutes=60) for slot in schedule())


def test_sunday_sessions_last_80_minutes():
    slots = schedule(delivery_mode=DeliveryMode.SUNDAY_ONLY)
    assert all(elapsed(slot) == timedelta(minutes=80) for slot in slots)


def test_not_before_moves_the_schedule_to_the_next_future_delivery_day():
    # Allocated on Wednesday 4 March at 16:00, after that day's 15:00 session.
    allocated_at = datetime(2026, 3, 4, 16, 0, tzinfo=KOLKATA)
    slots = schedule(start_date=MONDAY_2026_03_02, not_before=allocated_at)
    assert slots[0].starts_at == datetime(2026, 3, 5, 15, 0, tzinfo=KOLKATA)
    assert len(slots) == 10


def test_not_before_keeps_a_session_starting_exactly_then():
    allocated_at = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)  # 15:00 in Kolkata
    slots = schedule(not_before=allocated_at)
    assert slots[0].starts_at == allocated_at


def test_not_before_earlier_than_start_date_changes_nothing():
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    assert schedule(not_before=long_ago) == schedule()


def test_not_before_years_later_starts_then():
    later = datetime(2030, 6, 1, tzinfo=UTC)
    slots = schedule(delivery_mode=DeliveryMode.SUNDAY_ONLY, not_before=later)
    assert slots[0].starts_at.date() == date(2030, 6, 2)


def test_naive_not_before_is_rejected():
    with pytest.raises(ValueError, match="aware"):
        schedule(not_before=datetime(2026, 3, 4, 16, 0))  # noqa: DTZ001


@pytest.mark.parametrize("total", [0, 5, 15, 31, -10, True])
def test_totals_other_than_10_20_30_are_rejected(total):
    with pytest.raises(ValueError, match="10, 20, 30"):
        schedule(total_sessions=total)


def test_a_wall_time_skipped_by_dst_lands_just_after_the_gap():
    # New York springs forward on Sunday 8 March 2026: 02:30 never happens.
    slots = schedule(
        start_date=date(2026, 3, 8),
        time_slot=time(2, 30),
        delivery_mode=DeliveryMode.SUNDAY_ONLY,
        tz=NEW_YORK,
    )
    first = slots[0]
    assert first.starts_at.astimezone(UTC) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert (first.starts_at.hour, first.starts_at.minute) == (3, 30)
    assert first.starts_at.utcoffset() == timedelta(hours=-4)
    assert elapsed(first) == timedelta(minutes=80)
    assert slots[1].starts_at.time() == time(2, 30)


def test_an_ambiguous_wall_time_means_its_first_occurrence_and_lasts_80_minutes():
    # New York falls back on Sunday 1 November 2026: 01:30 happens twice.
    first = schedule(
        start_date=date(2026, 11, 1),
        time_slot=time(1, 30),
        delivery_mode=DeliveryMode.SUNDAY_ONLY,
        tz=NEW_YORK,
    )[0]
    assert first.starts_at.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert first.ends_at.astimezone(UTC) == datetime(2026, 11, 1, 6, 50, tzinfo=UTC)
    assert first.ends_at.time() == time(1, 50)  # wall clock, an hour repeated


def slot_at(starts_at: datetime, minutes: int) -> Slot:
    return Slot(1, starts_at, starts_at + timedelta(minutes=minutes))


def test_session_within_working_hours_fits():
    slot = slot_at(datetime(2026, 3, 2, 15, 0, tzinfo=KOLKATA), 60)
    assert fits_working_hours(slot, tz=KOLKATA, work_start=time(9), work_end=time(20))


def test_session_ending_exactly_at_work_end_fits():
    slot = slot_at(datetime(2026, 3, 2, 19, 0, tzinfo=KOLKATA), 60)
    assert fits_working_hours(slot, tz=KOLKATA, work_start=time(9), work_end=time(20))


def test_session_starting_exactly_at_work_start_fits():
    slot = slot_at(datetime(2026, 3, 2, 9, 0, tzinfo=KOLKATA), 60)
    assert fits_working_hours(slot, tz=KOLKATA, work_start=time(9), work_end=time(20))


def test_session_running_past_work_end_does_not_fit():
    slot = slot_at(datetime(2026, 3, 1, 19, 0, tzinfo=KOLKATA), 80)  # a Sunday
    assert not fits_working_hours(
        slot, tz=KOLKATA, work_start=time(9), work_end=time(20)
    )


def test_session_starting_before_work_start_does_not_fit():
    slot = slot_at(datetime(2026, 3, 2, 8, 30, tzinfo=KOLKATA), 60)
    assert not fits_working_hours(
        slot, tz=KOLKATA, work_start=time(9), work_end=time(20)
    )


def test_session_crossing_midnight_never_fits():
    slot = slot_at(datetime(2026, 3, 2, 23, 30, tzinfo=KOLKATA), 60)
    assert not fits_working_hours(
        slot, tz=KOLKATA, work_start=time(0), work_end=time(23, 59)
    )


def test_working_hours_are_judged_in_the_given_zone():
    slot = slot_at(datetime(2026, 3, 2, 9, 30, tzinfo=UTC), 60)  # 15:00 in Kolkata
    assert fits_working_hours(slot, tz=KOLKATA, work_start=time(15), work_end=time(16))
    assert not fits_working_hours(slot, tz=UTC, work_start=time(15), work_end=time(16))


zones = st.sampled_from(
    [KOLKATA, NEW_YORK, ZoneInfo("Europe/London"), ZoneInfo("Australia/Lord_Howe"), UTC]
)


@given(
    start_date=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    time_slot=st.times(),
    delivery_mode=st.sampled_from(DeliveryMode),
    total_sessions=st.sampled_from(ALLOWED_TOTALS),
    tz=zones,
    not_before=st.none()
    | st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001  hypothesis wants naive bounds
        max_value=datetime(2100, 12, 31),  # noqa: DTZ001
        timezones=zones,
    ),
)
def test_schedule_has_n_increasing_slots_on_delivery_days_with_the_right_length(
    start_date, time_slot, delivery_mode, total_sessions, tz, not_before
):
    slots = build_schedule(
        start_date=start_date,
        time_slot=time_slot,
        delivery_mode=delivery_mode,
        total_sessions=total_sessions,
        tz=tz,
        not_before=not_before,
    )
    assert [slot.sequence for slot in slots] == list(range(1, total_sessions + 1))
    starts = [slot.starts_at.astimezone(UTC) for slot in slots]
    assert starts == sorted(set(starts))
    if not_before is not None:
        assert starts[0] >= not_before
    weekdays = delivery_weekdays(delivery_mode)
    for slot in slots:
        local_day = slot.starts_at.astimezone(tz).date()
        assert local_day >= start_date
        assert local_day.weekday() in weekdays
        minutes = 80 if local_day.weekday() == 6 else 60
        assert elapsed(slot) == timedelta(minutes=minutes)
