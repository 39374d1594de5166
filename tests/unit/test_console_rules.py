"""The pure rules behind the console's glance-able lines: the phone a payment
brings, the waitlist headline, how urgent a waiting purchase is, and folded
repeats in a trace."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from fulfillment.domain.fit import (
    HEADLINE_SEPARATOR,
    Rule,
    evaluate,
    nearest_too_far_only,
    reason_headline,
    waitlist_reason,
)
from fulfillment.domain.folding import fold_repeats
from fulfillment.domain.geo import great_circle_km
from fulfillment.domain.metadata import MetadataError, parse_purchase_metadata
from fulfillment.domain.urgency import Level, past_sla, start_urgency
from tests.unit.test_fit import NEARBY, STUDENT_HOME, purchase, trainer
from tests.unit.test_metadata import VALID

KOLKATA = ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2030, 1, 7, 10, 0, tzinfo=KOLKATA)  # a Monday morning


# --- student_phone -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("+91 98450 12345", "+919845012345"),
        ("(080) 2345-6789", "08023456789"),
        ("98450.12345", "9845012345"),
        ("  +44 20 7946 0958 ", "+442079460958"),
    ],
)
def test_a_phone_is_stored_as_plus_and_digits(given: str, stored: str) -> None:
    request = parse_purchase_metadata({**VALID, "student_phone": given})

    assert request.student_phone == stored


@pytest.mark.parametrize("absent", [None, "", "   "])
def test_a_missing_phone_is_empty(absent: str | None) -> None:
    metadata = dict(VALID)
    if absent is not None:
        metadata["student_phone"] = absent

    assert parse_purchase_metadata(metadata).student_phone == ""


@pytest.mark.parametrize(
    "bad", ["call me", "12345", "+91 98450 12345 ext 2", "1" * 16, "98-45+012345"]
)
def test_a_bad_phone_is_refused_in_words(bad: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_purchase_metadata({**VALID, "student_phone": bad})

    assert caught.value.field == "student_phone"
    assert str(caught.value).startswith("student_phone: ")
    assert "is not a phone number" in str(caught.value)
    assert "7 to 15 digits" in str(caught.value)


def test_a_phone_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(MetadataError, match="student_phone: must be a string"):
        parse_purchase_metadata({**VALID, "student_phone": 9845012345})


# --- the waitlist headline ------------------------------------------------------------


def test_the_headline_names_the_nearest_trainer_excluded_by_distance_alone() -> None:
    facts = purchase()
    far = (STUDENT_HOME[0] + 0.07, NEARBY[1])  # about 7.9 km away
    distance = great_circle_km(*far, *STUDENT_HOME)
    verdicts = [
        evaluate(
            trainer(id="a", name="Asha Rao", latitude=far[0], max_travel_km=5), facts
        ),
        # Nearer, but also off duty: not the one to call.
        evaluate(
            trainer(
                id="b",
                name="Vikram Iyer",
                latitude=STUDENT_HOME[0] + 0.05,
                max_travel_km=5,
                weekdays=frozenset({6}),
            ),
            facts,
        ),
    ]

    reason = waitlist_reason(verdicts, course_title="Python for Kids")

    headline, breakdown = reason.split(HEADLINE_SEPARATOR)
    assert headline == f"No trainer within 5 km; nearest Asha Rao at {distance:.1f} km."
    assert reason_headline(reason) == headline
    assert breakdown.startswith(
        "No trainer fits: 2 of 2 trainers for Python for Kids are beyond their "
        "travel distance"
    )
    assert "also 1 not working on those days and hours" in breakdown


def test_no_headline_when_no_trainer_is_excluded_by_distance_alone() -> None:
    facts = purchase()
    verdicts = [
        evaluate(
            trainer(id="a", latitude=STUDENT_HOME[0] + 0.3, is_active=False), facts
        )
    ]

    reason = waitlist_reason(verdicts, course_title="Scratch")

    assert HEADLINE_SEPARATOR not in reason
    assert reason_headline(reason) == reason
    assert nearest_too_far_only(verdicts) is None


def test_the_nearest_trainer_by_distance_alone_is_the_closest_one() -> None:
    facts = purchase()
    verdicts = [
        evaluate(trainer(id="a", latitude=STUDENT_HOME[0] + 0.3), facts),
        evaluate(trainer(id="b", latitude=STUDENT_HOME[0] + 0.2), facts),
    ]

    nearest = nearest_too_far_only(verdicts)

    assert nearest is not None
    assert nearest.trainer.id == "b"
    assert nearest.broken == (Rule.TOO_FAR,)


# --- urgency -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "level", "label"),
    [
        (
            dt.datetime(2030, 1, 7, 9, 0, tzinfo=KOLKATA),
            Level.PASSED,
            "start date passed",
        ),
        (dt.datetime(2030, 1, 7, 16, 0, tzinfo=KOLKATA), Level.SOON, "starts today"),
        (dt.datetime(2030, 1, 8, 16, 0, tzinfo=KOLKATA), Level.SOON, "starts tomorrow"),
        (
            dt.datetime(2030, 1, 9, 16, 0, tzinfo=KOLKATA),
            Level.SOON,
            "starts in 2 days",
        ),
        (
            dt.datetime(2030, 1, 14, 16, 0, tzinfo=KOLKATA),
            Level.LATER,
            "starts in 7 days",
        ),
    ],
)
def test_start_urgency_badges(first: dt.datetime, level: Level, label: str) -> None:
    urgency = start_urgency(first_session_at=first, now=NOW, tz=KOLKATA)

    assert (urgency.level, urgency.label) == (level, label)


def test_days_are_counted_in_the_service_zone_not_utc() -> None:
    # 01:00 on Tuesday in Kolkata is still Monday in UTC.
    first = dt.datetime(2030, 1, 8, 1, 0, tzinfo=KOLKATA)

    urgency = start_urgency(
        first_session_at=first, now=NOW.astimezone(dt.UTC), tz=KOLKATA
    )

    assert urgency.label == "starts tomorrow"


def test_the_sla_counts_from_the_payment() -> None:
    sla = dt.timedelta(hours=24)

    assert past_sla(paid_at=NOW - dt.timedelta(hours=25), now=NOW, sla=sla)
    assert not past_sla(paid_at=NOW - dt.timedelta(hours=23), now=NOW, sla=sla)


# --- folding -------------------------------------------------------------------------


def test_consecutive_repeats_fold_into_one_line_with_a_count() -> None:
    entries = ["paid", "retry", "retry", "retry", "allocated", "refresh", "refresh"]

    folded = fold_repeats(entries, key=lambda entry: entry)

    assert [(f.first, f.count) for f in folded] == [
        ("paid", 1),
        ("retry", 3),
        ("allocated", 1),
        ("refresh", 2),
    ]


def test_repeats_apart_and_unkeyed_entries_do_not_fold() -> None:
    entries = [("a", 1), ("b", 2), ("a", 3), (None, 4), (None, 5)]

    folded = fold_repeats(entries, key=lambda entry: entry[0])

    assert [f.count for f in folded] == [1, 1, 1, 1, 1]
    assert folded[0].last == ("a", 1)


def test_a_folded_run_keeps_its_first_and_last_entry() -> None:
    folded = fold_repeats([("x", 1), ("x", 2), ("x", 3)], key=lambda entry: entry[0])

    assert folded[0].first == ("x", 1)
    assert folded[0].last == ("x", 3)
