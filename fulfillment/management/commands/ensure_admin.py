from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create a superuser if no user of that name exists (never changes one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="admin@example.com")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(username=options["username"]).exists():
            self.stdout.write(f"User {options['username']!r} exists; left unchanged.")
            return
        users.objects.create_superuser(
            username=options["username"],
            email=options["email"],
            password=options["password"],
        )
        self.stdout.write(
            self.style.SUCCESS(f"Created superuser {options['username']!r}.")
        )
