"""What every console ModelAdmin is built on, and the admin site's titles."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse_lazy
from django.utils import timezone

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


# The admin's "View site" link: the console is the site operators use.
admin.site.site_url = reverse_lazy("admin:index")  # type: ignore[assignment]


class DateRangeFilter(admin.FieldListFilter):
    """From / to dates, both inclusive, on a datetime field, in TIME_ZONE
    (parameters ``<field>__from`` and ``<field>__to``, ``YYYY-MM-DD``)."""

    template = "admin_ui/date_range_filter.html"

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: dict[str, Any],
        model: Any,
        model_admin: Any,
        field_path: str,
    ) -> None:
        self.gte = f"{field_path}__from"
        self.lt = f"{field_path}__to"
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = f"{self.title} (from, to)"
        # FieldListFilter has taken our parameters out of ``params`` already.
        self.values: dict[str, str] = {}
        for name in (self.gte, self.lt):
            # A list of values (Django 5), or one in older versions' stubs.
            value: Any = self.used_parameters.get(name)
            if isinstance(value, list | tuple):
                value = value[-1] if value else None
            if value:
                self.values[name] = str(value)
        self.request_params = {
            key: value
            for key, value in request.GET.items()
            if key not in {self.gte, self.lt, "p"}
        }

    def expected_parameters(self) -> list[str | None]:
        return [self.gte, self.lt]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        tz = timezone.get_current_timezone()
        filters: dict[str, dt.datetime] = {}
        lookups = {
            self.gte: f"{self.field_path}__gte",
            self.lt: f"{self.field_path}__lt",
        }
        for name, shift in ((self.gte, 0), (self.lt, 1)):
            text = self.values.get(name)
            if not text:
                continue
            try:
                day = dt.date.fromisoformat(str(text)[:10])
            except ValueError:
                raise IncorrectLookupParameters(f"{text!r} is not a date") from None
            # "to" is inclusive for people: the end of that day.
            start = dt.datetime.combine(day + dt.timedelta(days=shift), dt.time(), tz)
            filters[lookups[name]] = start
        return queryset.filter(**filters)

    def choices(self, changelist: Any) -> Iterator[Any]:
        lt = self.values.get(self.lt, "")
        shown_to = ""
        if lt:
            with contextlib.suppress(ValueError):
                shown_to = dt.date.fromisoformat(str(lt)[:10]).isoformat()
        yield {
            "gte_name": self.gte,
            "lt_name": self.lt,
            "gte": self.values.get(self.gte, ""),
            "lt": shown_to,
            "keep": self.request_params,
            "clear_url": changelist.get_query_string(remove=[self.gte, self.lt]),
        }


EXPORT_CHANGE_LIST = "admin_ui/change_list_export.html"


class CsvExportMixin:
    """CSV of the list exactly as filtered and searched (a link that keeps the
    current query string, ``<changelist>/export.csv?…``), or of the rows chosen
    (an admin action). Reading only: it needs the view permission."""

    csv_columns: tuple[tuple[str, Callable[[Any], object]], ...] = ()

    def export_csv_rows(self, rows: Iterable[Any], filename: str) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        writer = csv.writer(response)
        writer.writerow([header for header, _ in self.csv_columns])
        for row in rows:
            writer.writerow([_csv_cell(value(row)) for _, value in self.csv_columns])
        return response

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        model_admin = cast(admin.ModelAdmin[Any], self)
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        changelist = model_admin.get_changelist_instance(request)
        rows = changelist.get_queryset(request)
        return self.export_csv_rows(rows.iterator(chunk_size=2000), self._filename())

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv_action(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse:
        return self.export_csv_rows(queryset, self._filename())

    def export_url(self) -> URLPattern:
        model_admin = cast(admin.ModelAdmin[Any], self)
        opts = model_admin.opts
        return path(
            "export.csv",
            model_admin.admin_site.admin_view(self.export_csv_view),
            name=f"{opts.app_label}_{opts.model_name}_export",
        )

    def _filename(self) -> str:
        opts = cast(admin.ModelAdmin[Any], self).opts
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
        return f"{opts.model_name}s-{stamp}.csv"


def _csv_cell(value: object) -> object:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).isoformat(timespec="seconds")
    text = "" if value is None else str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet: neutralise it.
    if text[:1] in {"=", "+", "-", "@"} and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
