"""Admin pages for the fulfilment models (the ops console builds on these)."""

from __future__ import annotations

from django.contrib import admin

from fulfillment import models


@admin.register(models.Course)
class CourseAdmin(admin.ModelAdmin[models.Course]):
    list_display = ["title", "mode", "id"]
    list_filter = ["mode"]
    search_fields = ["title"]


@admin.register(models.Trainer)
class TrainerAdmin(admin.ModelAdmin[models.Trainer]):
    list_display = ["name", "is_active", "max_active_students", "max_travel_km"]
    list_filter = ["is_active", "courses"]
    search_fields = ["name", "email"]
    filter_horizontal = ["courses"]


@admin.register(models.Student)
class StudentAdmin(admin.ModelAdmin[models.Student]):
    list_display = ["name", "email", "created_at"]
    search_fields = ["name", "email", "=id"]
    readonly_fields = ["learnings_version"]


class TutoringSessionInline(
    admin.TabularInline[models.TutoringSession, models.Purchase]
):
    model = models.TutoringSession
    extra = 0
    can_delete = False
    readonly_fields = ["sequence", "starts_at", "ends_at", "status", "trainer"]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(models.Purchase)
class PurchaseAdmin(admin.ModelAdmin[models.Purchase]):
    list_display = ["id", "student", "course", "status", "trainer", "created_at"]
    list_filter = ["status", "course", "trainer"]
    search_fields = [
        "payment__payment_intent",
        "student__name",
        "student__email",
    ]
    list_select_related = ["student", "course", "trainer"]
    readonly_fields = [f.name for f in models.Purchase._meta.concrete_fields]
    inlines = [TutoringSessionInline]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(models.Payment)
class PaymentAdmin(admin.ModelAdmin[models.Payment]):
    list_display = ["payment_intent", "amount", "currency", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["=payment_intent"]
    readonly_fields = [f.name for f in models.Payment._meta.concrete_fields]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(models.TutoringSession)
class TutoringSessionAdmin(admin.ModelAdmin[models.TutoringSession]):
    list_display = ["purchase", "sequence", "starts_at", "ends_at", "status"]
    list_filter = ["status"]


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[models.WebhookDelivery]):
    list_display = [
        "event_id",
        "event_type",
        "payment_intent",
        "outcome",
        "received_at",
    ]
    list_filter = ["event_type", "outcome"]
    search_fields = ["=event_id", "=payment_intent"]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
