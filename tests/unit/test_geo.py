import math

import pytest

from fulfillment.domain.geo import great_circle_km, validate_coordinates

BANGALORE = (12.9716, 77.5946)
MYSORE = (12.2958, 76.6394)


def test_known_distance_bangalore_to_mysore():
    assert great_circle_km(*BANGALORE, *MYSORE) == pytest.approx(128, abs=1)


def test_distance_is_symmetric():
    assert great_circle_km(*BANGALORE, *MYSORE) == great_circle_km(*MYSORE, *BANGALORE)


def test_distance_to_the_same_point_is_zero():
    assert great_circle_km(*BANGALORE, *BANGALORE) == 0.0


def test_one_degree_of_longitude_on_the_equator_is_about_111_km():
    assert great_circle_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.01)


def test_antipodal_points_are_half_the_circumference_apart():
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)
    assert great_circle_km(90, 0, -90, 0) == pytest.approx(math.pi * 6371.0088)


def test_distance_across_the_antimeridian_is_short():
    assert great_circle_km(0, 179.5, 0, -179.5) == pytest.approx(111.195, abs=0.01)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90, 180), (-90, -180), (0, 0), (12.97, 77.59)]
)
def test_coordinates_in_range_are_valid(lat, lon):
    validate_coordinates(lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon", "named"),
    [
        (90.0001, 0, "latitude"),
        (-91, 0, "latitude"),
        (0, 180.5, "longitude"),
        (0, -181, "longitude"),
        (math.nan, 0, "latitude"),
        (0, math.nan, "longitude"),
        (math.inf, 0, "latitude"),
        (0, -math.inf, "longitude"),
    ],
)
def test_out_of_range_nan_or_infinite_coordinates_are_rejected(lat, lon, named):
    with pytest.raises(ValueError, match=named):
        validate_coordinates(lat, lon)
