from django.contrib import admin

from .models import ApiToken, Generation, JobEvent


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ["at", "content_type", "object_id", "kind", "message"]
    list_filter = ["kind", "content_type"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens can be revoked here; their keys were never stored."""

    list_display = [
        "user",
        "name",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = ["user", "prefix", "key_hash", "created_at", "last_used_at", "replaced_by"]


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    """Read only: a token changes by itself when its data does. Deleting one empties what is
    cached under it (a new token is made at the next request)."""

    list_display = ["name", "token"]
    readonly_fields = ["name", "token"]

    def has_add_permission(self, request) -> bool:
        return False
