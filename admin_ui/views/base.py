"""What every console page does with its request."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme


def operator_name(request: HttpRequest) -> str:
    return request.user.get_username()


def redirect_back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """To ``next`` when it is a page of this site, else to ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = default
    return HttpResponseRedirect(target or default)
