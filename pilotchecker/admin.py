from django.contrib import admin

from .models import Pilot, Site, SiteStatusChange


class StatusChangeInline(admin.TabularInline):
    model = SiteStatusChange
    extra = 0
    fields = ["at", "old_status", "new_status", "reason", "by", "pilot"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-at"]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    """Saving runs the model's checks: an invalid configuration shows on its field."""

    list_display = ["name", "batch_system", "status", "status_reason", "pilot_interval_minutes"]
    list_filter = ["batch_system", "status"]
    search_fields = ["name", "description"]
    # The status changes only with a reason, through the site page or the API.
    readonly_fields = ["status", "status_reason", "status_changed_at", "last_scheduled_at"]
    inlines = [StatusChangeInline]


@admin.register(Pilot)
class PilotAdmin(admin.ModelAdmin):
    list_display = ["id", "site", "state", "verdict", "periodic", "batch_job_id", "created_at"]
    list_filter = ["state", "verdict", "periodic", "site"]
    list_select_related = ["site"]
    search_fields = ["batch_job_id", "site__name"]
    readonly_fields = ["token_hash", "token_expires_at", "token_used_at"]


@admin.register(SiteStatusChange)
class SiteStatusChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "site", "old_status", "new_status", "by", "reason"]
    list_filter = ["new_status", "site"]
    list_select_related = ["site"]
