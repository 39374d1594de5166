"""The dashboard's modules alone, as HTML: what ``static/admin_ui/live.js``
fetches every few seconds to swap the modules in place (no page reload, so the
operator keeps their scroll position and focus). The same modules, permissions
and queries as the dashboard itself.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from admin_ui.dashboard import OperationsDashboard


@never_cache
def dashboard_modules_view(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "request": request}
    dashboard = OperationsDashboard()
    dashboard.init_with_context(context)
    dashboard._prepare_children()
    return TemplateResponse(
        request, "admin_ui/dashboard/live.html", {"dashboard": dashboard}
    )
