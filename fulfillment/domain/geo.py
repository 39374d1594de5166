"""Distances between homes on the Earth's surface, and coordinate validation."""

from __future__ import annotations

import math

# IUGG mean Earth radius: the usual choice for a spherical (haversine) model,
# whose error against the ellipsoid is at most about 0.5 %.
EARTH_RADIUS_KM = 6371.0088


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres between two points in decimal degrees.

    Haversine formula on a sphere of radius ``EARTH_RADIUS_KM``; symmetric,
    zero for identical points, and never NaN for valid coordinates (rounding
    is clamped for antipodal points). Does not validate its inputs.
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = (
        math.sin(d_phi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def check_latitude(value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite latitude in [-90, 90]."""
    if not (math.isfinite(value) and -90.0 <= value <= 90.0):
        raise ValueError(f"latitude {value!r} is out of range (-90 to 90)")


def check_longitude(value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite longitude in [-180, 180]."""
    if not (math.isfinite(value) and -180.0 <= value <= 180.0):
        raise ValueError(f"longitude {value!r} is out of range (-180 to 180)")


def validate_coordinates(lat: float, lon: float) -> None:
    """Raise ``ValueError`` for a coordinate that is NaN, infinite or out of range."""
    check_latitude(lat)
    check_longitude(lon)
