from __future__ import annotations

from admin_tools.dashboard import views as dashboard_views
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def dashboard_preferences(request: HttpRequest, dashboard_id: str) -> HttpResponse:
    """django-admin-tools' dashboard layout view, without its ``csrf_exempt``.

    Only this one of its views is routed: the others (menu bookmarks) are unused
    here, CSRF-exempt too, and let any staff user edit another's bookmark. This
    wrapper is not exempt, so CsrfViewMiddleware checks it (the dashboard's
    jQuery posts send the token: admin_ui/static/admin_ui/csrf.js).
    """
    response: HttpResponse = dashboard_views.set_preferences(request, dashboard_id)
    return response


urlpatterns = [
    path(
        "admin_tools/dashboard/set_preferences/<slug:dashboard_id>/",
        dashboard_preferences,
        name="admin-tools-dashboard-set-preferences",
    ),
    path("admin/", include("admin_ui.urls")),
    path("admin/", admin.site.urls),
    path("", include("fulfillment.web.urls")),
]
