"""The schema in migrations matches the models, and migrate alone makes a
working service (the old system's missing Kafka topics were its "schema")."""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection


@pytest.mark.django_db
def test_models_and_migrations_agree() -> None:
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_migrations_create_the_cache_table_and_btree_gist() -> None:
    cache.set("probe", {"ok": True})
    assert cache.get("probe") == {"ok": True}
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'")
        assert cursor.fetchone() == (1,)
