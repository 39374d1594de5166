"""What every console ModelAdmin is built on, and the admin site's titles."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from fulfillment.services import operations

_M = TypeVar("_M", bound=Model)


admin.site.site_header = "Fulfilment operations"
admin.site.site_title = "Fulfilment operations"
admin.site.index_title = "Operations"


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """Rows the pipeline owns: looked at here, changed only through actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_Parent = TypeVar("_Parent", bound=Model)


class ReadOnlyInline(admin.TabularInline[_M, _Parent]):
    """Rows shown inside their parent's page, never added or changed there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CatalogueAdmin(admin.ModelAdmin[_M]):
    """Courses and trainers: a change may let waitlisted purchases fit, so the
    waitlist is tried again, in the same transaction as the change."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Purchases and allocations point at them; retire a trainer instead.
        return False

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        operations.waitlist_recheck()
