import contextlib
import pickle
from datetime import date, time
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fulfillment.domain.metadata import (
    MetadataError,
    PurchaseRequest,
    parse_purchase_metadata,
    require_location,
)
from fulfillment.domain.schedule import DeliveryMode

STUDENT_ID = "7d0c5b6e-2f4a-4c1e-9a5b-3c2d1e0f9a8b"
COURSE_ID = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9"
VALID = {
    "student_id": STUDENT_ID,
    "student_name": "Asha Rao",
    "student_email": "asha@example.com",
    "course_id": COURSE_ID,
    "total_sessions": "20",
    "delivery_mode": "SUNDAY_ONLY",
    "start_date": "2026-03-01",
    "time_slot": "3:00 PM",
    "latitude": "12.9716",
    "longitude": "77.5946",
}
KNOWN_KEYS = sorted(VALID)


def parse(**changes: object) -> PurchaseRequest:
    metadata = {key: value for key, value in (VALID | changes).items() if value != ...}
    return parse_purchase_metadata(metadata)


def problem(**changes: object) -> MetadataError:
    with pytest.raises(MetadataError) as caught:
        parse(**changes)
    return caught.value


def test_valid_metadata_becomes_a_purchase_request():
    assert parse() == PurchaseRequest(
        student_id=UUID(STUDENT_ID),
        student_name="Asha Rao",
        student_email="asha@example.com",
        course_id=UUID(COURSE_ID),
        total_sessions=20,
        delivery_mode=DeliveryMode.SUNDAY_ONLY,
        start_date=date(2026, 3, 1),
        time_slot=time(15, 0),
        latitude=12.9716,
        longitude=77.5946,
    )


def test_email_and_location_are_optional():
    request = parse(student_email=..., latitude=..., longitude=...)
    assert request.student_email == ""
    assert request.latitude is None
    assert request.longitude is None


def test_empty_email_is_allowed():
    assert parse(student_email="").student_email == ""


def test_surrounding_whitespace_is_ignored():
    request = parse(student_name="  Asha Rao ", total_sessions=" 10")
    assert request.student_name == "Asha Rao"
    assert request.total_sessions == 10


def test_unknown_keys_are_ignored():
    assert parse(order_ref="A-17") == parse()


@pytest.mark.parametrize("field", ["student_id", "student_name", "course_id"])
def test_missing_required_field_is_named(field):
    error = problem(**{field: ...})
    assert error.field == field
    assert str(error) == f"{field}: missing"


def test_blank_name_counts_as_missing():
    assert str(problem(student_name="   ")) == "student_name: missing"


def test_name_longer_than_200_characters_is_rejected():
    assert parse(student_name="a" * 200).student_name == "a" * 200
    assert problem(student_name="a" * 201).field == "student_name"


def test_malformed_uuid_is_rejected():
    error = problem(course_id="not-a-uuid")
    assert str(error) == "course_id: 'not-a-uuid' is not a valid UUID"


@pytest.mark.parametrize(
    "email", ["asha", "asha@", "@example.com", "a b@example.com", "asha@localhost"]
)
def test_email_that_does_not_look_like_one_is_rejected(email):
    assert problem(student_email=email).field == "student_email"


def test_email_longer_than_254_characters_is_rejected():
    assert problem(student_email="a" * 250 + "@x.io").field == "student_email"


@pytest.mark.parametrize("total", ["15", "0", "10.0", "ten", "+10", "010"])
def test_total_sessions_other_than_10_20_30_is_rejected(total):
    error = problem(total_sessions=total)
    assert str(error) == f"total_sessions: must be one of 10, 20, 30 (got {total!r})"


@pytest.mark.parametrize("mode", ["weekday_daily", "DAILY", "SUNDAY"])
def test_unknown_delivery_mode_is_rejected(mode):
    error = problem(delivery_mode=mode)
    assert error.field == "delivery_mode"
    assert "WEEKDAY_DAILY or SUNDAY_ONLY" in str(error)


def test_impossible_date_is_rejected():
    error = problem(start_date="2026-02-30")
    assert str(error) == "start_date: '2026-02-30' is not a valid YYYY-MM-DD date"


@pytest.mark.parametrize(
    "text", ["01/03/2026", "2026-3-1", "20260301", "2026-03-01T00:00", "2026-W09-7"]
)
def test_start_date_must_be_strict_yyyy_mm_dd(text):
    assert "YYYY-MM-DD" in str(problem(start_date=text))


@pytest.mark.parametrize("text", ["1999-12-31", "2101-01-01", "0001-01-01"])
def test_start_date_outside_2000_to_2100_is_rejected(text):
    error = problem(start_date=text)
    assert error.field == "start_date"
    assert "2000 to 2100" in str(error)


def test_bad_time_slot_names_the_accepted_formats():
    error = problem(time_slot="3 PM")
    assert error.field == "time_slot"
    assert "'3 PM'" in str(error)
    assert "AM/PM" in str(error)


def test_latitude_without_longitude_is_rejected():
    assert problem(longitude=...).field == "longitude"
    assert problem(latitude=...).field == "latitude"


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "1_2.5", "12,97", "N12"])
def test_coordinates_must_be_plain_decimal_numbers(text):
    assert "not a decimal number" in str(problem(latitude=text))


@pytest.mark.parametrize(
    ("field", "text"),
    [("latitude", "90.5"), ("longitude", "-180.01"), ("latitude", "1" + "0" * 400)],
)
def test_out_of_range_coordinates_are_rejected(field, text):
    error = problem(**{field: text})
    assert error.field == field
    assert "out of range" in str(error)


def test_require_location_refuses_a_request_without_coordinates():
    request = parse(latitude=..., longitude=...)
    with pytest.raises(MetadataError) as caught:
        require_location(request)
    assert caught.value.field == "latitude"


def test_require_location_accepts_a_request_with_coordinates():
    require_location(parse())


@pytest.mark.parametrize("field", KNOWN_KEYS)
def test_nul_character_is_rejected_in_any_field(field):
    error = problem(**{field: VALID[field][:3] + "\x00" + VALID[field][3:]})
    assert error.field == field
    assert "NUL" in str(error)


def test_lone_surrogate_is_rejected_because_postgres_cannot_store_it():
    error = problem(student_name="Asha \ud800")
    assert error.field == "student_name"


@pytest.mark.parametrize("value", [20, 20.0, True, None, ["20"], {"n": "20"}])
def test_non_string_values_are_rejected(value):
    error = problem(total_sessions=value)
    assert error.field == "total_sessions"


@pytest.mark.parametrize("metadata", [None, [], "student_id", 42, True])
def test_metadata_that_is_not_an_object_is_rejected(metadata):
    with pytest.raises(MetadataError) as caught:
        parse_purchase_metadata(metadata)
    assert caught.value.field == "metadata"


def test_huge_value_is_rejected_with_a_short_message():
    error = problem(student_name="x" * 1_000_000)
    assert error.field == "student_name"
    assert len(str(error)) < 200


def test_the_first_bad_field_in_contract_order_is_reported():
    assert problem(course_id="x", start_date="x", latitude="x").field == "course_id"


def test_metadata_error_is_a_value_error_and_survives_pickling():
    error = problem(course_id=...)
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301  our own bytes
    assert (copy.field, str(copy)) == ("course_id", "course_id: missing")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(json_values)
def test_arbitrary_json_yields_a_request_or_a_metadata_error(metadata):
    with contextlib.suppress(MetadataError):
        parse_purchase_metadata(metadata)


@given(st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_KEYS, st.text())))
def test_arbitrary_text_for_known_keys_yields_a_request_or_a_metadata_error(
    metadata,
):
    try:
        parse_purchase_metadata(metadata)
    except MetadataError as error:
        assert str(error).startswith(f"{error.field}: ")


@given(
    replaced=st.dictionaries(st.sampled_from(KNOWN_KEYS), st.text() | json_values),
    removed=st.sets(st.sampled_from(KNOWN_KEYS)),
)
def test_corrupting_valid_metadata_yields_a_storable_request_or_a_metadata_error(
    replaced, removed
):
    metadata = {
        key: value for key, value in (VALID | replaced).items() if key not in removed
    }
    try:
        request = parse_purchase_metadata(metadata)
    except MetadataError as error:
        assert error.field in {*KNOWN_KEYS, "metadata"}
        return
    for text in (request.student_name, request.student_email):
        assert "\x00" not in text
        text.encode("utf-8")  # PostgreSQL needs valid UTF-8
