"""Property tests of ``POST /webhooks/stripe/`` (CONTRACT §3) over arbitrary input,
through the Django test client and real PostgreSQL.

Whatever the body, the delivery gets one of the answers of the contract's table
(never a 500, never a 503 while the database is up), and the rows it leaves are
exactly the ones that answer promises: nothing for a refusal or an ignored event,
payment + purchase + allocation job for ``accepted``, a flagged payment for
``needs_attention``, nothing new for ``duplicate``. Every log line it causes
stays one line.

Bodies are signed with the project's own helpers, so the signature check passes
and the parser is reached; ``test_unsigned_or_badly_signed_bodies_...`` covers the
opposite. Each example runs in a savepoint that is rolled back, so examples do not
see each other's rows and no function-scoped fixture is shared between them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from procrastinate.contrib.django.models import ProcrastinateJob

from fulfillment.domain.json_body import MAX_DEPTH
from fulfillment.domain.storable import storable_text
from fulfillment.models import (
    Course,
    Payment,
    Purchase,
    Student,
    TraceEvent,
    WebhookDelivery,
)
from fulfillment.testing import demo, stripe_events
from kcproject.logging import JsonFormatter, TextFormatter
from tests import helpers
from tests.helpers import load_event

pytestmark = pytest.mark.django_db

FUZZ = hypothesis_settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ANSWERS_200 = {
    "ignored",
    "accepted",
    "duplicate",
    "needs_attention",
    "refunded",
    "partially_refunded",
}
REFUND_UPDATES = ("charge.refund.updated", "refund.updated")
ERRORS_400 = {"invalid_signature", "malformed_payload"}
CONTRACT_FIELDS = (
    "student_id",
    "student_name",
    "student_email",
    "course_id",
    "total_sessions",
    "delivery_mode",
    "start_date",
    "time_slot",
    "latitude",
    "longitude",
)
# A small pool, so that sequences of deliveries hit the same PaymentIntent.
PAYMENT_INTENTS = ("pi_fuzz_first", "pi_fuzz_second")


# --- running one delivery -----------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    payments: int
    flagged: int
    purchases: int
    students: int
    deliveries: int
    trace_events: int
    jobs: Counter[str]

    @classmethod
    def count(cls) -> Rows:
        # One query for the tables, one for the jobs: this runs twice a delivery.
        tables = {
            model: model._meta.db_table
            for model in (Payment, Purchase, Student, WebhookDelivery, TraceEvent)
        }
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT (SELECT count(*) FROM {tables[Payment]}),
                    (SELECT count(*) FROM {tables[Payment]}
                     WHERE attention_reason <> ''),
                    (SELECT count(*) FROM {tables[Purchase]}),
                    (SELECT count(*) FROM {tables[Student]}),
                    (SELECT count(*) FROM {tables[WebhookDelivery]}),
                    (SELECT count(*) FROM {tables[TraceEvent]})"""  # noqa: S608
            )
            row = cursor.fetchone()
        assert row is not None
        jobs = Counter(
            name.rsplit(".", 1)[-1]
            for name in ProcrastinateJob.objects.values_list("task_name", flat=True)
        )
        payments, flagged, purchases, students, deliveries, trace_events = row
        return cls(
            payments=payments,
            flagged=flagged,
            purchases=purchases,
            students=students,
            deliveries=deliveries,
            trace_events=trace_events,
            jobs=jobs,
        )


@dataclass(frozen=True)
class Delivery:
    body: bytes
    header: str | None

    @classmethod
    def signed(cls, body: bytes) -> Delivery:
        header = stripe_events.signature_header(
            body, secret=settings.STRIPE_WEBHOOK_SECRET
        )
        return cls(body, header)


class Lines(logging.Handler):
    """Every record logged meanwhile, formatted as the project formats them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def logged() -> Iterator[Lines]:
    lines = Lines()
    root = logging.getLogger()
    root.addHandler(lines)
    try:
        yield lines
    finally:
        root.removeHandler(lines)


@contextmanager
def rolled_back() -> Iterator[None]:
    """A savepoint undone at the end: each example starts from the same rows."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def ensure_catalogue() -> None:
    # Seeded once per test, outside the per-example savepoints.
    if not Course.objects.filter(pk=demo.PYTHON_FOR_KIDS).exists():
        call_command("seed_demo", verbosity=0)


def post(delivery: Delivery) -> Any:
    headers = {} if delivery.header is None else {"Stripe-Signature": delivery.header}
    client = Client(raise_request_exception=False)
    with logged() as lines:
        response = client.post(
            "/webhooks/stripe/",
            data=delivery.body,
            content_type="application/json",
            headers=headers,
        )
    for record in lines.records:
        text = TextFormatter().format(record)
        assert "\n" not in text and "\r" not in text, text
        text.encode("utf-8")  # a stream can write it
        assert json.loads(JsonFormatter().format(record))["message"]
    return response


def answer_of(response: Any) -> dict[str, Any]:
    """The answer, checked against the contract's table; 500 and 503 never
    belong to it while the database is up."""
    assert response.status_code in (200, 400), (
        response.status_code,
        response.content[:500],
    )
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code == 400:
        assert set(body) == {"error", "detail"}, body
        assert body["error"] in ERRORS_400
        assert isinstance(body["detail"], str) and body["detail"]
    else:
        assert body.get("status") in ANSWERS_200, body
    return body


def unchanged(before: Rows, after: Rows) -> None:
    assert after == before


def check_delivery(delivery: Delivery, event: object = None) -> dict[str, Any]:
    """Deliver, then hold the answer to the rows the contract says it stores."""
    before = Rows.count()
    body = answer_of(post(delivery))
    after = Rows.count()
    status = body.get("status")
    if currently_in_test_context():
        hypothesis.event(f"answer: {status or body['error']}")
    event_type = event.get("type") if isinstance(event, dict) else None
    new_jobs = after.jobs - before.jobs
    if status is None or status == "ignored":
        if status == "ignored":
            assert body == {"status": "ignored"}
        unchanged(before, after)
    elif status == "accepted":
        assert set(body) == {"status", "purchase_id"}
        purchase = Purchase.objects.select_related("payment").get(
            pk=body["purchase_id"]
        )
        assert isinstance(event, dict)
        assert purchase.payment.payment_intent == event["data"]["object"]["id"]
        assert purchase.payment.attention_reason == ""
        assert (after.payments, after.flagged) == (before.payments + 1, before.flagged)
        assert after.purchases == before.purchases + 1
        assert after.deliveries == before.deliveries + 1
        assert after.students - before.students in (0, 1)
        if purchase.status == Purchase.Status.REFUNDED:
            # The refund came first (Stripe does not promise order): nothing to
            # allocate, only the student's learnings to refresh.
            assert set(new_jobs) <= {"refresh_learnings"}
        else:
            assert purchase.status == Purchase.Status.ALLOCATION_PENDING
            # The next stage's job (CONTRACT §3); a cache refresh for the
            # student may come with it, coalesced per student.
            assert new_jobs["allocate_trainer"] == 1
            assert set(new_jobs) <= {"allocate_trainer", "refresh_learnings"}
            assert new_jobs["refresh_learnings"] <= 1
            [job] = ProcrastinateJob.objects.filter(
                task_name="fulfillment.tasks.allocate_trainer",
                args__purchase_id=str(purchase.pk),
            )
            assert job.status == "todo"
    elif status == "duplicate":
        assert (
            set(body) <= {"status", "purchase_id", "reason"} and "purchase_id" in body
        )
        if body["purchase_id"] is not None:
            assert Purchase.objects.filter(pk=body["purchase_id"]).exists()
        # The delivery itself is logged; nothing else is new.
        assert after.deliveries == before.deliveries + 1
        assert after.jobs == before.jobs
        assert (after.payments, after.flagged, after.purchases, after.students) == (
            before.payments,
            before.flagged,
            before.purchases,
            before.students,
        )
    elif status == "needs_attention":
        assert set(body) == {"status", "reason"}
        assert isinstance(body["reason"], str) and body["reason"]
        assert after.deliveries == before.deliveries + 1
        assert after.purchases == before.purchases
        assert isinstance(event, dict)
        payment_intent = usable_payment_intent(event)
        if event_type == "payment_intent.succeeded" and payment_intent:
            # Money taken is never dropped: the payment is kept, flagged.
            assert not new_jobs
            payment = Payment.objects.get(payment_intent=payment_intent)
            assert payment.attention_reason == body["reason"]
            assert (after.payments, after.flagged) == (
                before.payments + 1,
                before.flagged + 1,
            )
        elif event_type in REFUND_UPDATES:
            # A failed refund flags its payment (and a purchase it cancelled,
            # whose student's learnings change).
            assert set(new_jobs) <= {"refresh_learnings"}
            assert after.payments == before.payments
            assert after.flagged - before.flagged in (0, 1)
        else:
            # A refund of a PaymentIntent never seen, or an object without a
            # usable PaymentIntent id: only the delivery is kept.
            assert not new_jobs
            assert event_type in ("payment_intent.succeeded", "charge.refunded")
            assert (after.payments, after.flagged) == (before.payments, before.flagged)
    elif status == "partially_refunded":
        # Recorded on the payment; the purchase and its sessions are unchanged.
        assert event_type == "charge.refunded"
        assert set(body) == {"status", "purchase_id"}
        assert isinstance(event, dict)
        payment = Payment.objects.get(payment_intent=usable_payment_intent(event))
        assert payment.status == Payment.Status.SUCCEEDED
        assert payment.amount_refunded == event["data"]["object"]["amount_refunded"]
        assert 0 < payment.amount_refunded < payment.amount
        assert after.deliveries == before.deliveries + 1
        assert after.trace_events == before.trace_events + 1
        assert (after.payments, after.purchases) == (before.payments, before.purchases)
        assert after.jobs == before.jobs
    else:
        assert status == "refunded" and event_type == "charge.refunded"
        assert set(body) == {"status", "purchase_id"}
        assert isinstance(event, dict)
        payment = Payment.objects.get(payment_intent=usable_payment_intent(event))
        assert payment.status == Payment.Status.REFUNDED
        if body["purchase_id"] is not None:
            assert Purchase.objects.get(pk=body["purchase_id"]).status == "refunded"
        assert after.deliveries == before.deliveries + 1
        assert (after.payments, after.purchases) == (before.payments, before.purchases)
        # The freed capacity retries the waitlist and the student's learnings
        # change; both jobs take queueing locks, so waiting ones absorb them.
        assert set(new_jobs) <= {"reallocate_waitlist", "refresh_learnings"}
    assert_no_partial_rows()
    return body


def usable_payment_intent(event: dict[str, Any]) -> str | None:
    """The PaymentIntent id an event is about, as stored, if it has one."""
    data_object = event["data"]["object"]
    key = "id" if event.get("type") == "payment_intent.succeeded" else "payment_intent"
    value = data_object.get(key) if isinstance(data_object, dict) else None
    if isinstance(value, str) and value.startswith("pi_") and len(value) <= 255:
        return storable_text(value)
    return None


def assert_no_partial_rows() -> None:
    """Whatever happened so far, no payment lacks both a purchase and a flag, and
    every pending purchase has its allocation job."""
    assert not Payment.objects.filter(
        purchase__isnull=True, attention_reason=""
    ).exists()
    pending = {
        str(pk)
        for pk in Purchase.objects.filter(
            status=Purchase.Status.ALLOCATION_PENDING
        ).values_list("pk", flat=True)
    }
    queued = {
        job.args.get("purchase_id")
        for job in ProcrastinateJob.objects.filter(
            task_name="fulfillment.tasks.allocate_trainer"
        )
    }
    assert pending <= queued


def encode(value: object) -> bytes:
    # json.dumps writes NaN and Infinity, and escapes lone surrogates: bodies a
    # careless sender could produce.
    return json.dumps(value, separators=(",", ":")).encode()


# --- strategies ---------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | st.floats()
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
huge_text = st.builds(
    lambda char, length: char * length,
    st.characters(),
    st.integers(min_value=490, max_value=20_000),
)
odd_values = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "\u2028",
        "\n",
        "é" * 501,
        "10",
        "20",
        "30",
        "15",
        "010",
        "WEEKDAY_DAILY",
        "SUNDAY_ONLY",
        "sunday_only",
        "2026-02-30",
        "2026-13-01",
        "2026-2-3",
        "0000-01-01",
        "9999-12-31",
        "24:00",
        "23:60",
        "12:00 AM",
        "0:00 PM",
        "13:00 PM",
        "3:00 PM",
        "15:00",
        "-90.0001",
        "180.5",
        "1e3",
        "nan",
        "12.97",
        "77.59",
        demo.PYTHON_FOR_KIDS,
        demo.SCRATCH_GAMES,
        str(uuid.UUID(int=0)),
        "' OR 1=1--",
        "a@b.co",
    ]
)
metadata_values = (
    odd_values
    | st.text()
    | huge_text
    | json_values
    | st.dates().map(str)
    | st.times().map(lambda moment: moment.strftime("%H:%M"))
    | st.uuids().map(str)
)
metadata_keys = st.sampled_from(CONTRACT_FIELDS) | st.text(max_size=20)


def valid_metadata() -> dict[str, str]:
    # An unsaved Course: strategies draw before the catalogue is seeded.
    return helpers.metadata_for(course=Course(pk=uuid.UUID(demo.PYTHON_FOR_KIDS)))


@st.composite
def metadata(draw: st.DrawFn) -> object:
    """Valid metadata for a demo course, corrupted a little or a lot; or
    something that is not metadata at all."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(json_values)
    fields: dict[str, Any] = valid_metadata()
    if draw(st.booleans()):
        fields["course_id"] = demo.SCRATCH_GAMES  # online: no location needed
    if roll < 4:
        return fields
    for key in draw(st.sets(st.sampled_from(CONTRACT_FIELDS), max_size=2)):
        del fields[key]
    fields.update(draw(st.dictionaries(metadata_keys, metadata_values, max_size=3)))
    return fields


def mostly(usual: st.SearchStrategy[Any], unusual: st.SearchStrategy[Any]) -> Any:
    """``usual`` four times in five, else ``unusual``: with every branch equally
    likely, a whole valid event would almost never be drawn."""
    return st.integers(0, 4).flatmap(lambda roll: usual if roll else unusual)


payment_intent_ids = mostly(
    st.sampled_from(PAYMENT_INTENTS),
    st.from_regex(r"pi_[0-9a-zA-Z]{1,30}", fullmatch=True)
    | st.text().map(lambda text: "pi_" + text)
    | json_values,
)
amounts = mostly(
    st.integers(min_value=0, max_value=10**8),
    st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70) | json_values,
)
currencies = mostly(
    st.sampled_from(["inr", "INR", "usd"]),
    st.sampled_from(["İİİ", "ǅǅǅ", "in", "inrr", "", "1nr"])
    | st.text(max_size=4)
    | json_values,
)
event_ids = mostly(
    st.from_regex(r"evt_[0-9a-f]{12}", fullmatch=True),
    st.text(max_size=300) | json_values,
)


@st.composite
def payment_intent_events(draw: st.DrawFn) -> dict[str, Any]:
    intent: dict[str, Any] = {
        "id": draw(payment_intent_ids),
        "object": "payment_intent",
        "amount": draw(amounts),
        "currency": draw(currencies),
        "status": "succeeded",
        "metadata": draw(metadata()),
    }
    for key in draw(mostly(st.just(set()), st.sets(st.sampled_from(sorted(intent))))):
        del intent[key]
    intent.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return envelope(draw(event_ids), "payment_intent.succeeded", intent)


@st.composite
def refund_events(draw: st.DrawFn) -> dict[str, Any]:
    """charge.refunded, full or partial (Stripe sends both), sometimes for a
    charge without a PaymentIntent."""
    charge = {
        "id": "ch_fuzz",
        "object": "charge",
        "payment_intent": draw(mostly(payment_intent_ids, st.none())),
        "amount": 499900,
        "amount_refunded": draw(
            mostly(st.sampled_from([1000, 250000, 499900]), amounts)
        ),
        "refunded": draw(st.booleans()),
    }
    return envelope(draw(event_ids), "charge.refunded", charge)


@st.composite
def refund_update_events(draw: st.DrawFn) -> dict[str, Any]:
    refund = {
        "id": "re_fuzz",
        "object": "refund",
        "amount": draw(amounts),
        "payment_intent": draw(mostly(payment_intent_ids, st.none())),
        "status": draw(st.sampled_from(["failed", "canceled", "succeeded", "pending"])),
        "failure_reason": draw(st.sampled_from(["lost_or_stolen_card", None])),
    }
    event_type = draw(st.sampled_from(REFUND_UPDATES))
    return envelope(draw(event_ids), event_type, refund)


def envelope(
    event_id: object, event_type: object, data_object: object
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": data_object},
    }


event_types = (
    st.sampled_from(
        ["payment_intent.succeeded", "charge.refunded", "customer.created", ""]
    )
    | st.text(max_size=120)
    | json_values
)


# --- properties ----------------------------------------------------------------------


@FUZZ
@given(body=json_values.map(encode) | st.binary(max_size=300))
def test_any_signed_body_gets_a_contract_answer_and_leaves_no_partial_row(
    body: bytes,
) -> None:
    ensure_catalogue()
    with rolled_back():
        check_delivery(Delivery.signed(body))


@FUZZ
@given(
    event_id=event_ids,
    event_type=event_types,
    data_object=mostly(st.dictionaries(st.text(max_size=12), json_values), json_values),
    envelope_extra=st.dictionaries(st.text(max_size=10), json_values, max_size=2),
)
def test_event_envelopes_with_any_object_get_a_contract_answer(
    event_id: object,
    event_type: object,
    data_object: object,
    envelope_extra: dict[str, Any],
) -> None:
    ensure_catalogue()
    event = {**envelope_extra, **envelope(event_id, event_type, data_object)}
    with rolled_back():
        check_delivery(Delivery.signed(encode(event)), event)


@hypothesis_settings(FUZZ, max_examples=100)
@given(
    events=st.lists(
        payment_intent_events() | refund_events() | refund_update_events(),
        min_size=1,
        max_size=3,
    ),
    repeat=st.booleans(),
)
def test_payment_intents_with_any_metadata_store_exactly_what_the_answer_says(
    events: list[dict[str, Any]], repeat: bool
) -> None:
    ensure_catalogue()
    with rolled_back():
        answers = [
            check_delivery(Delivery.signed(encode(event)), event) for event in events
        ]
        if repeat:
            # The first event again, under a fresh event id as Stripe retries.
            again = {**events[0], "id": stripe_events.new_id("evt")}
            answer = check_delivery(Delivery.signed(encode(again)), again)
            first = answers[0].get("status")
            kept = first == "accepted" or (
                first == "needs_attention"
                and Payment.objects.filter(
                    payment_intent=usable_payment_intent(again) or ""
                ).exists()
            )
            if kept and again["type"] == "payment_intent.succeeded":
                assert answer["status"] == "duplicate"
                assert answer["purchase_id"] == answers[0].get("purchase_id")


def bad_headers(body: bytes) -> st.SearchStrategy[str | None]:
    """Headers that must not authenticate ``body``."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    fresh = stripe_events.signature_header(body, secret=secret)
    stale = stripe_events.signature_header(
        body, secret=secret, timestamp=int(time.time()) - 301
    )
    return st.one_of(
        st.none(),
        st.text(max_size=200),
        st.just(stripe_events.signature_header(body, secret="whsec_someone_else")),
        st.just(stale),
        # A genuine signature, but of another body.
        st.just(stripe_events.signature_header(body + b" ", secret=secret)),
        st.sampled_from([fresh[:-1], fresh + "0", fresh.replace("v1=", "v0=")]),
        # Refreshing a stale signature's timestamp: the first t= counts.
        st.just(stale + f",t={int(time.time())}"),
    )


@FUZZ
@given(data=st.data(), body=json_values.map(encode) | st.binary(max_size=300))
def test_unsigned_or_badly_signed_bodies_are_refused_and_store_nothing(
    data: st.DataObject, body: bytes
) -> None:
    ensure_catalogue()
    header = data.draw(bad_headers(body))
    with rolled_back():
        before = Rows.count()

        answer = answer_of(post(Delivery(body, header)))

        assert answer["error"] == "invalid_signature"
        assert Rows.count() == before


# --- the cases the properties found, pinned ------------------------------------------


def metadata_event(**metadata: object) -> dict[str, Any]:
    event = load_event("payment_intent_succeeded")
    event["data"]["object"]["metadata"].update(metadata)
    return event


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deeply_nested_body(depth: int) -> bytes:
    return (
        b'{"id":"evt_1","type":"x","data":{"object":'
        + (b"[" * depth + b"]" * depth)
        + b"}}"
    )


# Authentic payments holding a value PostgreSQL cannot store: kept, cleaned and
# flagged, with the field named first in the reason.
UNSTORABLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "a metadata value with a NUL": (
        lambda: encode(metadata_event(note="a\x00b")),
        "metadata.note:",
    ),
    "a metadata key with a NUL": (
        lambda: encode(metadata_event(**{"k\x00": "v"})),
        "metadata.k\ufffd:",
    ),
    "an unpaired surrogate in metadata": (
        lambda: encode(metadata_event(note="\ud800")),
        "metadata.note:",
    ),
    "an unpaired surrogate in the PaymentIntent id": (
        lambda: encode(
            {
                **load_event("payment_intent_succeeded"),
                "data": {"object": {"id": "pi_\udc00", "amount": 1, "currency": "inr"}},
            }
        ),
        "id:",
    ),
    "an amount beyond 64 bits": (
        lambda: encode(metadata_event()).replace(
            b'"amount_received":499900', b'"amount_received":' + str(2**64).encode()
        ),
        "amount_received:",
    ),
    "a currency that grows when lower-cased": (
        lambda: encode(metadata_event()).replace(
            b'"currency":"inr"', b'"currency":"\\u0130\\u0130\\u0130"'
        ),
        "currency:",
    ),
}


@pytest.mark.parametrize("case", list(UNSTORABLE))
def test_payments_postgresql_cannot_store_are_kept_cleaned_and_flagged(
    case: str,
) -> None:
    ensure_catalogue()
    build, field = UNSTORABLE[case]
    body = build()
    event = json.loads(body)

    answer = check_delivery(Delivery.signed(body), event)

    assert answer["status"] == "needs_attention", answer
    assert answer["reason"].startswith(field), answer
    payment = Payment.objects.get()
    assert payment.attention_reason == answer["reason"]
    assert not Purchase.objects.exists()
    stored = json.dumps([payment.payment_intent, payment.metadata, payment.raw_event])
    assert "\\u0000" not in stored and "\\ud8" not in stored and "\\udc" not in stored


# Bodies that are not strict JSON at all (CONTRACT §3: malformed_payload).
UNREADABLE: dict[str, Callable[[], bytes]] = {
    "a NaN": lambda: encode(metadata_event(note=float("nan"))),
    "a number too large for a float": lambda: encode(metadata_event(note=1.5)).replace(
        b'"note":1.5', b'"note":1e400'
    ),
    "metadata nested past the limit": lambda: encode(
        metadata_event(note=nested(MAX_DEPTH))
    ),
    "a body nested 100 000 deep": lambda: deeply_nested_body(100_000),
    "a body nested just past the stack": lambda: deeply_nested_body(990),
    "a body larger than Django reads": lambda: encode(
        metadata_event(note="x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_bodies_that_are_not_strict_json_are_malformed_and_store_nothing(
    case: str,
) -> None:
    ensure_catalogue()
    body = UNREADABLE[case]()

    answer = check_delivery(Delivery.signed(body))

    assert answer["error"] == "malformed_payload", answer
    assert not Payment.objects.exists()


def test_nesting_up_to_the_limit_is_still_read() -> None:
    ensure_catalogue()
    event = metadata_event(note=nested(MAX_DEPTH - 4))

    answer = check_delivery(Delivery.signed(encode(event)), event)

    assert answer["status"] == "accepted"


@pytest.mark.parametrize(
    "header", ["t=1,v1=é", "t=1,v1=\u0661\u0662", "t=é,v1=ab", "\u2028"]
)
def test_a_signature_header_that_is_not_ascii_is_refused(header: str) -> None:
    answer = check_delivery(Delivery(b"{}", header))

    assert answer["error"] == "invalid_signature"


def test_a_value_that_would_break_a_text_log_line_is_escaped() -> None:
    # The ignored event type is logged; a newline in it must not forge a line.
    event = envelope("evt_1", "x\nCRITICAL:forged\rline\u2028", {})

    answer = check_delivery(Delivery.signed(encode(event)), event)

    assert answer == {"status": "ignored"}
