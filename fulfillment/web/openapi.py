"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the JSON API and the
webhook, served as kept in ``docs/openapi.json`` (tests/system/test_openapi.py
checks the two are the same and runs schemathesis against the live service).
No auth: the description holds no secret."""

from __future__ import annotations

import functools

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

DOCUMENT = settings.BASE_DIR / "docs" / "openapi.json"


@functools.cache
def _document() -> bytes:
    return DOCUMENT.read_bytes()


@require_GET
def openapi_document(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_document(), content_type="application/json")
