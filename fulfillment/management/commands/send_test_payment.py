from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from fulfillment.testing import demo, stripe_events


class Command(BaseCommand):
    help = (
        "Send a correctly signed payment_intent.succeeded (or, with --refund, a "
        "charge.refunded) to a running service, as Stripe would."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/webhooks/stripe/")
        parser.add_argument("--course", default=demo.PYTHON_FOR_KIDS)
        parser.add_argument(
            "--student", default=None, help="student UUID (new if omitted)"
        )
        parser.add_argument("--sessions", default="10", choices=["10", "20", "30"])
        parser.add_argument(
            "--mode", default="WEEKDAY_DAILY", choices=["WEEKDAY_DAILY", "SUNDAY_ONLY"]
        )
        parser.add_argument(
            "--start", default=None, help="YYYY-MM-DD (default tomorrow)"
        )
        parser.add_argument("--slot", default="4:00 PM")
        parser.add_argument("--refund", metavar="PI", help="refund this PaymentIntent")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["refund"]:
            event = stripe_events.charge_refunded(payment_intent=options["refund"])
        else:
            start = (
                options["start"]
                or (timezone.localdate() + dt.timedelta(days=1)).isoformat()
            )
            latitude, longitude = demo.DEMO_HOME
            event = stripe_events.payment_intent_succeeded(
                metadata={
                    "student_id": options["student"] or str(uuid.uuid4()),
                    "student_name": "Demo Student",
                    "student_email": "parent@example.com",
                    "course_id": options["course"],
                    "total_sessions": options["sessions"],
                    "delivery_mode": options["mode"],
                    "start_date": start,
                    "time_slot": options["slot"],
                    "latitude": str(latitude),
                    "longitude": str(longitude),
                }
            )
        body = stripe_events.encode(event)
        if not options["url"].startswith(("http://", "https://")):
            raise CommandError("--url must be an http:// or https:// URL")
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            options["url"],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": stripe_events.signature_header(
                    body, secret=settings.STRIPE_WEBHOOK_SECRET
                ),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, answer = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read().decode()
        except urllib.error.URLError as error:
            raise CommandError(
                f"cannot reach {options['url']}: {error.reason}"
            ) from None
        pi = (
            event["data"]["object"].get("id")
            or event["data"]["object"]["payment_intent"]
        )
        self.stdout.write(f"POST {options['url']} -> {status} {answer}")
        if status == 200 and not options["refund"]:
            purchase_id = json.loads(answer).get("purchase_id")
            self.stdout.write(
                "Look next:\n"
                f"  python manage.py trace {pi}\n"
                f"  curl -H 'Authorization: Bearer {settings.FULFILMENT_API_TOKEN}' "
                f"http://127.0.0.1:8000/api/purchases/{purchase_id}\n"
                f"  http://127.0.0.1:8000/admin/fulfillment/purchase/{purchase_id}/change/"
            )
