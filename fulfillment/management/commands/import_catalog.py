from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fulfillment.exceptions import CatalogError
from fulfillment.services.catalog import catalog_import


class Command(BaseCommand):
    help = (
        "Upsert courses and trainers by id from a JSON catalogue file (all or nothing)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="catalogue JSON (CONTRACT §5)")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise CommandError(f"{path}: cannot read: {error.strerror}") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise CommandError(f"{path}: not valid JSON: {error}") from None
        try:
            summary = catalog_import(data=data)
        except CatalogError as error:
            raise CommandError(f"{path}: {error}; nothing was changed") from None
        self.stdout.write(self.style.SUCCESS(f"Imported {path}: {summary}"))
