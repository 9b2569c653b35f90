from django.contrib import admin

from .models import (
    BranchPreset,
    ProvenanceRecord,
    SiteJob,
    SkimInput,
    SkimJob,
    SkimPart,
    SkimPartInput,
)


@admin.register(BranchPreset)
class BranchPresetAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "patterns"]
    search_fields = ["name"]


class SkimInputInline(admin.TabularInline):
    model = SkimInput
    extra = 0
    readonly_fields = ["dataset", "collection", "schema_name", "schema_version"]


class SkimPartInline(admin.TabularInline):
    model = SkimPart
    extra = 0
    fields = [
        "number",
        "input_file",
        "n_entries",
        "n_inputs",
        "state",
        "lease_attempts",
        "output_lfn",
        "events_written",
        "message",
    ]
    readonly_fields = fields


@admin.register(SkimJob)
class SkimJobAdmin(admin.ModelAdmin):
    list_display = ["id", "output_name", "state", "owner", "events_written", "created_at"]
    list_filter = ["state", "output_format"]
    search_fields = ["output_name", "selection"]
    list_select_related = ["owner"]
    inlines = [SkimInputInline, SkimPartInline]
    exclude = ["selection_tree"]


@admin.register(SkimInput)
class SkimInputAdmin(admin.ModelAdmin):
    list_display = ["skim", "dataset", "collection", "schema_name", "schema_version"]
    list_select_related = ["skim", "dataset"]


class SkimPartInputInline(admin.TabularInline):
    model = SkimPartInput
    extra = 0
    fields = ["position", "file", "n_entries"]
    readonly_fields = fields


@admin.register(SkimPart)
class SkimPartAdmin(admin.ModelAdmin):
    list_display = ["skim", "number", "input_file", "state", "lease_attempts", "events_written"]
    list_filter = ["state"]
    list_select_related = ["skim", "input_file"]
    exclude = ["entries"]
    inlines = [SkimPartInputInline]


@admin.register(SkimPartInput)
class SkimPartInputAdmin(admin.ModelAdmin):
    """The further inputs of merged parts, read-only: the skim writes them."""

    list_display = ["part", "position", "file", "n_entries"]
    list_select_related = ["part__skim", "file"]
    exclude = ["entries"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ProvenanceRecord)
class ProvenanceRecordAdmin(admin.ModelAdmin):
    list_display = ["skim", "username", "state", "output_dataset_name", "created_at"]
    list_filter = ["state"]
    search_fields = ["username", "output_dataset_name", "input_dataset_names", "selection"]


@admin.register(SiteJob)
class SiteJobAdmin(admin.ModelAdmin):
    """Skim parts' batch jobs on sites (the token is kept only as its hash)."""

    list_display = ["id", "part", "attempt", "site", "batch_job_id", "node", "state"]
    list_filter = ["state", "site"]
    search_fields = ["batch_job_id", "node"]
    list_select_related = ["part", "site"]
    readonly_fields = ["token_hash", "token_expires_at", "token_used_at", "report"]
