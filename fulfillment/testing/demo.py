"""The demo catalogue ``make run`` loads: three courses, six trainers in Bengaluru.

Ids are fixed so that README examples and ``send_test_payment`` can name them.
"""

from __future__ import annotations

from typing import Any

PYTHON_FOR_KIDS = "6f1c1d7e-3c1a-4c55-9a53-1d0a6d1b0001"
SCRATCH_GAMES = "6f1c1d7e-3c1a-4c55-9a53-1d0a6d1b0002"
WEB_BASICS = "6f1c1d7e-3c1a-4c55-9a53-1d0a6d1b0003"

# A student's home in central Bengaluru (MG Road).
DEMO_HOME = (12.9756, 77.6050)


def _trainer(
    number: int,
    name: str,
    courses: list[str],
    latitude: float,
    longitude: float,
    **overrides: Any,
) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "id": f"7a2e4f10-8b1d-4e2a-b7c3-5e9f0c2a{number:04d}",
        "name": name,
        "email": f"{name.split()[-1].lower()}@trainers.example.com",
        "courses": courses,
        "latitude": latitude,
        "longitude": longitude,
        "max_travel_km": 10,
        "max_active_students": 5,
        "weekdays": [0, 1, 2, 3, 4, 6],
        "work_start": "09:00",
        "work_end": "20:00",
        "is_active": True,
    }
    trainer.update(overrides)
    return trainer


CATALOG: dict[str, Any] = {
    "courses": [
        {"id": PYTHON_FOR_KIDS, "title": "Python for Kids", "mode": "home"},
        {"id": SCRATCH_GAMES, "title": "Scratch Games", "mode": "online"},
        {"id": WEB_BASICS, "title": "Web Basics", "mode": "home"},
    ],
    "trainers": [
        _trainer(1, "Asha Rao", [PYTHON_FOR_KIDS, WEB_BASICS], 12.9716, 77.5946),
        _trainer(2, "Vikram Iyer", [PYTHON_FOR_KIDS], 12.9352, 77.6245),
        _trainer(
            3,
            "Meera Nair",
            [SCRATCH_GAMES, PYTHON_FOR_KIDS],
            13.0358,
            77.5970,
            max_active_students=3,
        ),
        _trainer(
            4,
            "Rahul Menon",
            [SCRATCH_GAMES],
            12.9081,
            77.6476,
            weekdays=[6],
            work_start="10:00",
            work_end="18:00",
        ),
        _trainer(5, "Divya Shetty", [WEB_BASICS], 12.9279, 77.6271, max_travel_km=5),
        _trainer(
            6, "Kiran Kumar", [PYTHON_FOR_KIDS], 12.9698, 77.7500, is_active=False
        ),
    ],
}
