"""Django's session, auth and messages middleware, kept off the webhook's path.

Stripe's deliveries carry no cookie and no user: the webhook reads neither
``request.session`` nor ``request.user``, and answers JSON. Each class here is
Django's own, passed straight through for ``/webhooks/``; every other path
(the console, the API) gets it unchanged. ``settings.MIDDLEWARE`` lists them
by dotted path in place of Django's.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponseBase

WEBHOOK_PATHS = "/webhooks/"


class _OutsideWebhooks:
    """Before a ``MiddlewareMixin`` class: skip it for the webhook's paths."""

    sync_capable = True
    async_capable = False  # WSGI; Django adapts should it ever run under ASGI

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(WEBHOOK_PATHS):
            middleware: Any = self  # a MiddlewareMixin, below this in the MRO
            return middleware.get_response(request)  # type: ignore[no-any-return]
        wrapped: Any = super()
        return wrapped.__call__(request)  # type: ignore[no-any-return]


class SessionOutsideWebhooks(_OutsideWebhooks, SessionMiddleware):
    pass


class AuthenticationOutsideWebhooks(_OutsideWebhooks, AuthenticationMiddleware):
    pass


class MessagesOutsideWebhooks(_OutsideWebhooks, MessageMiddleware):
    pass
