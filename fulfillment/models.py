"""The fulfilment domain: catalogue, payments, purchases, allocations, sessions.

Invariants live in the database, not only in code: one payment per PaymentIntent,
one purchase per payment, one active allocation per purchase, one session per
(purchase, sequence), and no two overlapping reservations of one trainer
(an exclusion constraint over half-open time ranges, with ``btree_gist``).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import (
    ArrayField,
    DateTimeRangeField,
    RangeOperators,
)
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Upper
from django.utils import timezone

from fulfillment.domain.schedule import DeliveryMode


def trigram_index(name: str, expression: Any, **options: Any) -> GinIndex:
    """A trigram index on ``UPPER(expression)``: what Django's ``icontains``
    compares (``UPPER(col::text) LIKE UPPER('%term%')``), so the console's
    searches use it. Needs ``pg_trgm`` (migration 0005)."""
    return GinIndex(
        OpClass(Upper(expression), name="gin_trgm_ops"), name=name, **options
    )


class Course(models.Model):
    class Mode(models.TextChoices):
        HOME = "home", "Home visit"
        ONLINE = "online", "Online"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=200)
    mode = models.CharField(max_length=10, choices=Mode.choices)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Trainer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    courses = models.ManyToManyField(Course, related_name="trainers", blank=True)
    latitude = models.FloatField()
    longitude = models.FloatField()
    max_travel_km = models.FloatField()
    max_active_students = models.PositiveIntegerField()
    # 0 is Monday, 6 is Sunday (CONTRACT §5).
    weekdays = ArrayField(models.PositiveSmallIntegerField())
    work_start = models.TimeField()
    work_end = models.TimeField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [trigram_index("trainer_name_trgm", "name")]
        constraints = [
            models.CheckConstraint(
                name="trainer_latitude_range",
                condition=Q(latitude__gte=-90, latitude__lte=90),
            ),
            models.CheckConstraint(
                name="trainer_longitude_range",
                condition=Q(longitude__gte=-180, longitude__lte=180),
            ),
            models.CheckConstraint(
                name="trainer_travel_not_negative", condition=Q(max_travel_km__gte=0)
            ),
            models.CheckConstraint(
                name="trainer_weekdays_valid",
                condition=Q(weekdays__contained_by=[0, 1, 2, 3, 4, 5, 6]),
            ),
            models.CheckConstraint(
                name="trainer_work_hours_ordered",
                condition=Q(work_start__lt=models.F("work_end")),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TrainerLeave(models.Model):
    """Days a trainer does not work, both ends included: allocation treats them
    as days off (``fit.TrainerFacts.leave``), and bookings they cover move."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    trainer = models.ForeignKey(
        Trainer, on_delete=models.CASCADE, related_name="leaves"
    )
    starts_on = models.DateField()
    ends_on = models.DateField()
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["starts_on"]
        indexes = [models.Index(fields=["trainer", "ends_on"])]
        constraints = [
            models.CheckConstraint(
                name="trainer_leave_ordered",
                condition=Q(starts_on__lte=models.F("ends_on")),
                violation_error_message="The leave must end on or after its start.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.starts_on:%d %b %Y} \N{EN DASH} {self.ends_on:%d %b %Y}"


class Student(models.Model):
    """Created on first sight from payment metadata; the id is the app's."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True, max_length=254)
    # An optional "+" and digits only (domain/metadata.py normalises it), so a
    # search by any spelling of the number finds it.
    phone = models.CharField(max_length=16, blank=True)
    # Bumped in the same transaction as every change to the student's purchases,
    # allocations or sessions: cached learnings are keyed by it (services/cache.py).
    learnings_version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        indexes = [
            trigram_index("student_name_trgm", "name"),
            trigram_index("student_email_trgm", "email"),
            trigram_index("student_phone_trgm", "phone"),
        ]

    def __str__(self) -> str:
        return self.name


class CachedLearnings(models.Model):
    """A student's learnings as last computed, for one ``learnings_version``.

    One row per student, replaced in place: no culling and no count per write
    (Django's database cache does both). A row for an older version is simply
    not served; a refresh never overwrites a newer version (services/cache.py).
    The payload is a pickled ``selectors.purchases.StudentLearnings``, like
    Django's database cache values: only this service writes the table.
    """

    student = models.OneToOneField(
        Student,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="cached_learnings",
    )
    version = models.PositiveBigIntegerField()
    payload = models.BinaryField()
    computed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"learnings of {self.student_id} v{self.version}"


# Payments that need attention have no student row yet: the console searches
# their metadata. Partial indexes: only those payments are searched this way.
_NEEDS_ATTENTION = ~Q(attention_reason="")


class Payment(models.Model):
    """A succeeded PaymentIntent. Money taken is never dropped: if its metadata
    (or its amount, status, or text) cannot become a purchase, the payment is
    kept with ``attention_reason``."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        REFUNDED = "refunded", "Refunded"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    payment_intent = models.CharField(max_length=255, unique=True)
    amount = models.BigIntegerField(
        help_text="Received (amount_received), in the currency's minor units."
    )
    # Refunded so far (charge.refunded carries the running total); the purchase
    # is cancelled only once this reaches ``amount`` or Stripe says ``refunded``.
    amount_refunded = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.SUCCEEDED
    )
    metadata = models.JSONField(default=dict, blank=True)
    raw_event = models.JSONField()
    attention_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                name="payment_needs_attention",
                fields=["created_at"],
                condition=_NEEDS_ATTENTION,
            ),
            *(
                trigram_index(
                    f"payment_attention_{key.removeprefix('student_')}_trgm",
                    KeyTextTransform(key, "metadata"),
                    condition=_NEEDS_ATTENTION,
                )
                for key in ("student_name", "student_email")
            ),
        ]

    def __str__(self) -> str:
        return self.payment_intent


class WebhookDelivery(models.Model):
    """Every authentic delivery of a handled event type, with what we answered."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DUPLICATE = "duplicate", "Duplicate"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"
        REFUNDED = "refunded", "Refunded"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=255, db_index=True)
    event_type = models.CharField(max_length=100)
    payment_intent = models.CharField(max_length=255, db_index=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    detail = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class EarlyRefund(models.Model):
    """A refund that arrived before its PaymentIntent's payment (Stripe does not
    promise order). When the payment comes, it takes these amounts: a full
    refund makes its purchase born refunded, with nothing allocated."""

    payment_intent = models.CharField(max_length=255, primary_key=True)
    amount_refunded = models.BigIntegerField(default=0)
    refunded = models.BooleanField(default=False)  # Stripe's "fully refunded"
    event_id = models.CharField(max_length=255)
    received_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"early refund of {self.payment_intent}"


class Purchase(models.Model):
    class Status(models.TextChoices):
        ALLOCATION_PENDING = "allocation_pending", "Trainer allocation pending"
        WAITLISTED = "waitlisted", "Waitlisted"
        ALLOCATED = "allocated", "Allocated"
        REFUNDED = "refunded", "Refunded"
        # Ended by an operator without a refund (services/operations.py).
        CANCELLED = "cancelled", "Cancelled"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    payment = models.OneToOneField(
        Payment, on_delete=models.PROTECT, related_name="purchase"
    )
    student = models.ForeignKey(
        Student, on_delete=models.PROTECT, related_name="purchases"
    )
    course = models.ForeignKey(
        Course, on_delete=models.PROTECT, related_name="purchases"
    )
    total_sessions = models.PositiveSmallIntegerField()
    delivery_mode = models.CharField(max_length=20, choices=DeliveryMode.choices())
    start_date = models.DateField()
    time_slot = models.TimeField(help_text="Wall-clock time in TIME_ZONE.")
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.ALLOCATION_PENDING
    )
    status_reason = models.TextField(blank=True)
    trainer = models.ForeignKey(
        Trainer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="purchases",
    )
    created_at = models.DateTimeField(default=timezone.now)
    allocated_at = models.DateTimeField(null=True, blank=True)
    # When the waitlist sweep last tried this purchase; None: not since it was
    # waitlisted, or since something changed that may let it fit.
    waitlist_checked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The sweep's order: never tried since the last change first, then
            # the longest untried; the soonest start first among equals.
            models.Index(
                fields=["waitlist_checked_at", "start_date"],
                condition=Q(status="waitlisted"),
                name="purchase_waitlist_order",
            ),
            # The console's "urgent first": waiting purchases by first session.
            models.Index(
                name="purchase_waiting_by_start",
                fields=["start_date", "time_slot"],
                condition=Q(status__in=["allocation_pending", "waitlisted"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                name="purchase_total_sessions_allowed",
                condition=Q(total_sessions__in=[10, 20, 30]),
            ),
            models.CheckConstraint(
                name="purchase_allocated_has_trainer",
                condition=~Q(status="allocated") | Q(trainer__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.course_id} for {self.student_id}"


# Purchases that still want a trainer: what allocation, the waitlist sweep and
# the console's pending lists work on.
WAITING_STATUSES: Final = (
    Purchase.Status.ALLOCATION_PENDING,
    Purchase.Status.WAITLISTED,
)


class TrainerAllocation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        RELEASED = "released", "Released"
        COMPLETED = "completed", "Completed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, related_name="allocations"
    )
    trainer = models.ForeignKey(
        Trainer, on_delete=models.PROTECT, related_name="allocations"
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.ACTIVE
    )
    # Empty for automatic allocations; the operator's username otherwise.
    assigned_by = models.CharField(max_length=150, blank=True)
    override_reason = models.TextField(blank=True)
    # The operator who released (or moved the purchase away from) this trainer:
    # automatic allocation does not choose them again for this purchase
    # (``fit.Rule.RELEASED``). Empty for automatic releases.
    released_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["trainer", "status"]),
            # Allocation's capacity count per candidate trainer: an index scan
            # of that trainer's active allocations, whatever the planner
            # believes about the table (#15: it chose the partial unique index
            # below and filtered every active allocation, per trainer).
            models.Index(
                name="allocation_active_by_trainer",
                fields=["trainer"],
                condition=Q(status="active"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                name="one_active_allocation_per_purchase",
                fields=["purchase"],
                condition=Q(status="active"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.trainer_id} for {self.purchase_id}"


class Reservation(models.Model):
    """The trainer's time for one session of an allocation's schedule."""

    id = models.BigAutoField(primary_key=True)
    trainer = models.ForeignKey(
        Trainer, on_delete=models.PROTECT, related_name="reservations"
    )
    allocation = models.ForeignKey(
        TrainerAllocation, on_delete=models.CASCADE, related_name="reservations"
    )
    sequence = models.PositiveSmallIntegerField()
    # Half-open [start, end): 15:00-16:00 and 16:00-17:00 do not clash.
    during = DateTimeRangeField()

    class Meta:
        ordering = ["during"]
        constraints = [
            ExclusionConstraint(
                name="reservation_no_trainer_overlap",
                expressions=[
                    ("trainer", RangeOperators.EQUAL),
                    ("during", RangeOperators.OVERLAPS),
                ],
            ),
            models.UniqueConstraint(
                name="reservation_one_per_sequence",
                fields=["allocation", "sequence"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trainer_id} #{self.sequence} {self.during}"


class TutoringSession(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, related_name="sessions"
    )
    trainer = models.ForeignKey(
        Trainer, on_delete=models.PROTECT, related_name="sessions"
    )
    sequence = models.PositiveSmallIntegerField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.SCHEDULED
    )

    class Meta:
        ordering = ["purchase", "sequence"]
        indexes = [models.Index(fields=["status", "ends_at"])]
        constraints = [
            models.UniqueConstraint(
                name="one_session_per_purchase_sequence",
                fields=["purchase", "sequence"],
            ),
            models.CheckConstraint(
                name="session_ends_after_start",
                condition=Q(ends_at__gt=models.F("starts_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purchase_id} #{self.sequence} at {self.starts_at:%Y-%m-%d %H:%M}"


class TraceEvent(models.Model):
    """The durable story of one payment: state changes, healing, operator actions.

    Job rows are pruned after a while; these rows are not.
    """

    class Kind(models.TextChoices):
        STATE_CHANGE = "state_change", "State change"
        OPERATOR_ACTION = "operator_action", "Operator action"
        HEALING = "healing", "Healing"

    id = models.BigAutoField(primary_key=True)
    payment = models.ForeignKey(
        Payment, on_delete=models.CASCADE, related_name="trace_events"
    )
    purchase = models.ForeignKey(
        Purchase,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="trace_events",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # "system", a task name, or the operator's username.
    actor = models.CharField(max_length=150)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["payment", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class JobFailure(models.Model):
    """One failed attempt of a job, with its error: procrastinate keeps no error
    text, and prunes finished jobs; the trace and the dashboard read these."""

    id = models.BigAutoField(primary_key=True)
    job_id = models.BigIntegerField(db_index=True)
    task_name = models.CharField(max_length=200)
    attempt = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    error_type = models.CharField(max_length=200)
    error_message = models.TextField()
    purchase_id = models.UUIDField(null=True, blank=True, db_index=True)
    failed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-failed_at"]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.job_id}: {self.error_type}"


class WorkerPresence(models.Model):
    """Which queues a live procrastinate worker serves, and where it runs.

    procrastinate's own ``procrastinate_workers`` row has only an id and a
    heartbeat; a task middleware records the rest when the worker runs a job
    (at most every few seconds per process).
    """

    worker_id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=200, blank=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    # Empty: every queue.
    queues = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"worker {self.worker_id} on {self.host}:{self.pid}"


class WebhookOutcomeCount(models.Model):
    """How many deliveries got each answer, including the refused and ignored
    ones that store nothing else (for /metrics, the same in every process)."""

    outcome = models.CharField(max_length=40, primary_key=True)
    count = models.PositiveBigIntegerField(default=0)
    # When the count last grew: set by a database trigger on every insert and
    # update (migration 0005), so the one upsert that counts stays as it is and
    # the dashboard can tell "signatures refused in the last hour".
    last_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.count}"
