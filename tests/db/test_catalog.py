"""``manage.py import_catalog`` and ``seed_demo`` (CONTRACT §4, §5)."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from fulfillment.models import Course, Purchase, Trainer
from fulfillment.services.allocation import purchase_allocate, waitlist_reallocate
from fulfillment.testing import stripe_events
from fulfillment.testing.demo import CATALOG
from tests import helpers
from tests.helpers import jobs

pytestmark = pytest.mark.django_db

COURSE_A = "11111111-1111-4111-8111-000000000001"
COURSE_B = "11111111-1111-4111-8111-000000000002"
TRAINER_1 = "22222222-2222-4222-8222-000000000001"
TRAINER_2 = "22222222-2222-4222-8222-000000000002"
TRAINER_3 = "22222222-2222-4222-8222-000000000003"


def trainer_entry(trainer_id: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": trainer_id,
        "name": f"Trainer {trainer_id[-1]}",
        "email": f"t{trainer_id[-1]}@example.com",
        "courses": [COURSE_A],
        "latitude": 12.97,
        "longitude": 77.59,
        "max_travel_km": 10,
        "max_active_students": 5,
        "weekdays": [0, 1, 2, 3, 4, 6],
        "work_start": "09:00",
        "work_end": "20:00",
        "is_active": True,
    }
    entry.update(fields)
    return entry


def catalogue() -> dict[str, Any]:
    return {
        "courses": [
            {"id": COURSE_A, "title": "Python for Kids", "mode": "home"},
            {"id": COURSE_B, "title": "Scratch Games", "mode": "online"},
        ],
        "trainers": [
            trainer_entry(TRAINER_1),
            trainer_entry(TRAINER_2, courses=[COURSE_A, COURSE_B], weekdays=[6]),
        ],
    }


@pytest.fixture
def import_file(tmp_path: Path) -> Callable[..., str]:
    """Write ``data`` to a file, run ``import_catalog`` on it, return its output."""
    counter = iter(range(1000))

    def run(data: Any, *, raw: str | None = None) -> str:
        path = tmp_path / f"catalogue-{next(counter)}.json"
        path.write_text(raw if raw is not None else json.dumps(data), encoding="utf-8")
        out = io.StringIO()
        call_command("import_catalog", str(path), stdout=out)
        return out.getvalue()

    return run


def snapshot() -> tuple[list[Any], list[Any], set[Any]]:
    """Everything an import may change, but for the ``updated_at`` stamps."""
    courses = list(Course.objects.order_by("pk").values("id", "title", "mode"))
    trainers = list(
        Trainer.objects.order_by("pk").values(
            "id",
            "name",
            "email",
            "latitude",
            "longitude",
            "max_travel_km",
            "max_active_students",
            "weekdays",
            "work_start",
            "work_end",
            "is_active",
        )
    )
    teaching = set(
        Trainer.courses.through.objects.values_list("trainer_id", "course_id")
    )
    return courses, trainers, teaching


def test_import_creates_courses_and_trainers(import_file: Callable[..., str]) -> None:
    output = import_file(catalogue())

    assert "courses: 2 created, 0 updated; trainers: 2 created, 0 updated" in output
    course = Course.objects.get(pk=COURSE_B)
    assert (course.title, course.mode) == ("Scratch Games", Course.Mode.ONLINE)
    trainer = Trainer.objects.get(pk=TRAINER_2)
    assert trainer.name == "Trainer 2"
    assert trainer.email == "t2@example.com"
    assert (trainer.latitude, trainer.longitude) == (12.97, 77.59)
    assert trainer.max_travel_km == 10
    assert trainer.max_active_students == 5
    assert trainer.weekdays == [6]
    assert (trainer.work_start, trainer.work_end) == (dt.time(9), dt.time(20))
    assert trainer.is_active is True
    assert {str(c) for c in trainer.courses.values_list("pk", flat=True)} == {
        COURSE_A,
        COURSE_B,
    }


def test_import_upserts_by_id(import_file: Callable[..., str]) -> None:
    import_file(catalogue())
    changed = catalogue()
    changed["courses"][0]["title"] = "Python for Young Coders"
    changed["trainers"][1].update(
        name="Meera Nair", max_travel_km=5, courses=[COURSE_B], is_active=False
    )

    output = import_file(changed)

    assert "courses: 0 created, 2 updated; trainers: 0 created, 2 updated" in output
    assert Course.objects.count() == 2
    assert Trainer.objects.count() == 2
    assert Course.objects.get(pk=COURSE_A).title == "Python for Young Coders"
    trainer = Trainer.objects.get(pk=TRAINER_2)
    assert (trainer.name, trainer.max_travel_km, trainer.is_active) == (
        "Meera Nair",
        5,
        False,
    )
    # The course list is replaced, not merged.
    assert [str(c) for c in trainer.courses.values_list("pk", flat=True)] == [COURSE_B]


def test_importing_the_same_file_twice_changes_nothing(
    import_file: Callable[..., str],
) -> None:
    import_file(catalogue())
    before = snapshot()

    output = import_file(catalogue())

    assert snapshot() == before
    assert "courses: 0 created, 2 updated; trainers: 0 created, 2 updated" in output


def test_bad_entry_in_the_middle_changes_nothing(
    import_file: Callable[..., str],
) -> None:
    import_file(catalogue())
    before = snapshot()
    bad = catalogue()
    bad["courses"].append({"id": str(uuid.uuid4()), "title": "New", "mode": "home"})
    bad["trainers"][0]["name"] = "Renamed"
    bad["trainers"][1]["max_travel_km"] = -1
    bad["trainers"].append(trainer_entry(TRAINER_3))

    with pytest.raises(CommandError) as raised:
        import_file(bad)

    message = str(raised.value)
    assert (
        f"trainers[1] ({TRAINER_2}).max_travel_km: must be between 0 and 20000"
        in message
    )
    assert message.endswith("nothing was changed")
    assert snapshot() == before
    assert len(jobs("reallocate_waitlist")) == 1  # the first import's only


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of the catalogue: ``path`` like ``trainers.0.work_start``."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _set("courses.1.mode", "classroom"),
            f"courses[1] ({COURSE_B}).mode: must be 'home' or 'online'",
            id="course-mode",
        ),
        pytest.param(
            _set("courses.0.title", " "),
            f"courses[0] ({COURSE_A}).title: must be a non-empty string",
            id="course-title",
        ),
        pytest.param(
            _set("courses.0.id", "not-a-uuid"),
            "courses[0].id: 'not-a-uuid' is not a UUID",
            id="course-id",
        ),
        pytest.param(
            _set("trainers.1.id", _DELETE), "trainers[1].id: missing", id="trainer-id"
        ),
        pytest.param(
            _set("trainers.1.name", ""),
            f"trainers[1] ({TRAINER_2}).name: must be a non-empty string",
            id="name",
        ),
        pytest.param(
            _set("trainers.0.weekdays", [0, 7]),
            f"trainers[0] ({TRAINER_1}).weekdays: must be a non-empty list",
            id="weekdays",
        ),
        pytest.param(
            _set("trainers.0.work_start", "9:00"),
            f"trainers[0] ({TRAINER_1}).work_start: must be HH:MM",
            id="work-start",
        ),
        pytest.param(
            _set("trainers.0.work_end", "08:00"),
            f"trainers[0] ({TRAINER_1}).work_end: must be after work_start",
            id="work-end",
        ),
        pytest.param(
            _set("trainers.1.latitude", 91),
            f"trainers[1] ({TRAINER_2}).latitude: must be between -90 and 90",
            id="latitude",
        ),
        pytest.param(
            _set("trainers.1.longitude", "77.59"),
            f"trainers[1] ({TRAINER_2}).longitude: must be a number",
            id="longitude",
        ),
        pytest.param(
            _set("trainers.1.max_active_students", 2.5),
            f"trainers[1] ({TRAINER_2}).max_active_students: must be a whole number",
            id="capacity",
        ),
        pytest.param(
            _set("trainers.0.is_active", "yes"),
            f"trainers[0] ({TRAINER_1}).is_active: must be true or false",
            id="is-active",
        ),
        pytest.param(
            _set("trainers.0.email", "nobody"),
            f"trainers[0] ({TRAINER_1}).email: must be an email address",
            id="email",
        ),
        pytest.param(
            _set("trainers.0.courses", ["python"]),
            f"trainers[0] ({TRAINER_1}).courses: 'python' is not a UUID",
            id="course-reference",
        ),
        pytest.param(
            _set("teachers", []), "unknown top-level keys: teachers", id="top-level"
        ),
        pytest.param(
            _set("trainers", {}), "trainers: must be a list", id="trainers-list"
        ),
    ],
)
def test_bad_file_is_refused_naming_the_entry_and_field(
    import_file: Callable[..., str],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    data = catalogue()
    mutate(data)

    with pytest.raises(CommandError) as raised:
        import_file(data)

    assert expected in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert not Course.objects.exists()
    assert not Trainer.objects.exists()
    assert jobs("reallocate_waitlist") == []


def test_file_that_is_not_an_object_is_refused(
    import_file: Callable[..., str],
) -> None:
    with pytest.raises(CommandError, match="must hold a JSON object"):
        import_file([catalogue()])


def test_unknown_course_reference_is_refused(import_file: Callable[..., str]) -> None:
    data = catalogue()
    missing = str(uuid.uuid4())
    data["trainers"][1]["courses"] = [COURSE_A, missing]

    with pytest.raises(CommandError) as raised:
        import_file(data)

    assert f"trainers[1] ({TRAINER_2}).courses: unknown course {missing}" in str(
        raised.value
    )
    # Not even the valid courses earlier in the same file were stored.
    assert not Course.objects.exists()
    assert not Trainer.objects.exists()


def test_trainer_may_teach_a_course_stored_by_an_earlier_import(
    import_file: Callable[..., str],
) -> None:
    import_file(catalogue())

    import_file({"trainers": [trainer_entry(TRAINER_3, courses=[COURSE_B])]})

    trainer = Trainer.objects.get(pk=TRAINER_3)
    assert [str(c) for c in trainer.courses.values_list("pk", flat=True)] == [COURSE_B]


def test_file_that_is_not_json_is_refused(import_file: Callable[..., str]) -> None:
    with pytest.raises(CommandError, match="not valid JSON"):
        import_file(None, raw='{"courses": [')

    assert not Course.objects.exists()


def test_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    with pytest.raises(CommandError, match="cannot read") as raised:
        call_command("import_catalog", str(missing), stdout=io.StringIO())

    assert str(missing) in str(raised.value)


def test_overlong_email_is_refused_naming_the_field(
    import_file: Callable[..., str],
) -> None:
    data = catalogue()
    data["trainers"][0]["email"] = "a" * 250 + "@example.com"

    with pytest.raises(CommandError) as raised:
        import_file(data)

    assert f"trainers[0] ({TRAINER_1}).email" in str(raised.value)


def test_import_defers_one_waitlist_retry_even_after_two_imports(
    import_file: Callable[..., str],
) -> None:
    import_file(catalogue())
    import_file(catalogue())

    [job] = jobs("reallocate_waitlist")
    assert job.status == "todo"
    assert job.queueing_lock == "reallocate_waitlist"
    assert job.queue_name == "allocation"


def test_imported_trainer_is_found_by_the_waitlist_retry(
    import_file: Callable[..., str], signed_post: Callable[..., Any]
) -> None:
    import_file({"courses": catalogue()["courses"]})
    course = Course.objects.get(pk=COURSE_A)
    fields = helpers.metadata_for(course=course, latitude="12.97", longitude="77.6")
    body = signed_post(stripe_events.payment_intent_succeeded(metadata=fields)).json()
    waiting = purchase_allocate(purchase_id=body["purchase_id"], actor="test")
    assert waiting.status == Purchase.Status.WAITLISTED

    import_file(catalogue())
    assert waitlist_reallocate(actor="reallocate_waitlist") == 1

    waiting.refresh_from_db()
    assert waiting.status == Purchase.Status.ALLOCATED
    assert str(waiting.trainer_id) == TRAINER_1


def test_seed_demo_twice_is_idempotent() -> None:
    first = io.StringIO()
    call_command("seed_demo", stdout=first)
    before = snapshot()
    second = io.StringIO()

    call_command("seed_demo", stdout=second)

    assert snapshot() == before
    assert Course.objects.count() == len(CATALOG["courses"]) == 3
    assert Trainer.objects.count() == len(CATALOG["trainers"]) == 6
    assert "courses: 3 created, 0 updated; trainers: 6 created, 0 updated" in (
        first.getvalue()
    )
    assert "courses: 0 created, 3 updated; trainers: 0 created, 6 updated" in (
        second.getvalue()
    )
    assert len(jobs("reallocate_waitlist")) == 1


def test_import_does_not_mutate_the_demo_catalogue() -> None:
    pristine = copy.deepcopy(CATALOG)

    call_command("seed_demo", stdout=io.StringIO())

    assert pristine == CATALOG
