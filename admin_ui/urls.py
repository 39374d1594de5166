"""Console pages that belong to no one model: the search and the dashboard's
live fragment. Mounted under /admin/ before the admin site (kcproject/urls.py),
behind the admin's own login and staff check."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from admin_ui.views import dashboard_live, search

urlpatterns = [
    path("search/", admin.site.admin_view(search.search_view), name="console-search"),
    path(
        "dashboard/live/",
        admin.site.admin_view(dashboard_live.dashboard_modules_view),
        name="console-dashboard-live",
    ),
]
