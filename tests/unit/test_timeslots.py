from datetime import time

import pytest

from fulfillment.domain.timeslots import parse_hhmm, parse_time_slot


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15:00", time(15, 0)),
        ("09:30", time(9, 30)),
        ("9:30", time(9, 30)),
        ("00:00", time(0, 0)),
        ("23:59", time(23, 59)),
    ],
)
def test_accepts_24_hour_times(text, expected):
    assert parse_time_slot(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3:00 PM", time(15, 0)),
        ("3:00 pm", time(15, 0)),
        ("3:00PM", time(15, 0)),
        ("03:00 PM", time(15, 0)),
        ("9:30 AM", time(9, 30)),
        ("11:59 PM", time(23, 59)),
    ],
)
def test_accepts_12_hour_times_with_am_pm(text, expected):
    assert parse_time_slot(text) == expected


def test_twelve_am_is_midnight():
    assert parse_time_slot("12:00 AM") == time(0, 0)


def test_twelve_thirty_pm_is_half_past_noon():
    assert parse_time_slot("12:30 PM") == time(12, 30)


def test_surrounding_whitespace_is_ignored():
    assert parse_time_slot("  3:00 PM\t") == time(15, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "25:00",
        "24:00",
        "3 PM",
        "13:00 PM",
        "0:00 AM",
        "3:60 PM",
        "3:00  PM",
        "15:00:00",
        "1500",
        "3:0 PM",
        "15:00x",
        "\u0661\u0665:\u0660\u0660",  # Arabic-Indic digits, which \d would match
        "3:00 P.M.",
    ],
)
def test_rejects_anything_else(text):
    with pytest.raises(ValueError, match="expected"):
        parse_time_slot(text)


def test_error_names_the_bad_value_and_the_accepted_formats():
    with pytest.raises(ValueError) as caught:
        parse_time_slot("13:00 PM")
    message = str(caught.value)
    assert "'13:00 PM'" in message
    assert "HH:MM" in message
    assert "AM/PM" in message


def test_error_for_a_huge_value_stays_short():
    with pytest.raises(ValueError) as caught:
        parse_time_slot("9" * 10_000)
    assert len(str(caught.value)) < 200


def test_parse_hhmm_accepts_two_digit_24_hour_times():
    assert parse_hhmm("09:00") == time(9, 0)
    assert parse_hhmm("20:00") == time(20, 0)


@pytest.mark.parametrize("text", ["9:00", "24:00", "8:00 PM", " 09:00", "09:00:00", ""])
def test_parse_hhmm_rejects_anything_but_strict_hh_mm(text):
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(text)
