from django.contrib import admin

from .models import SavedQuery, TagBuild, TagBuildFile, TagCollection, TagSchema


@admin.register(TagSchema)
class TagSchemaAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "tree", "automatic", "created_at"]
    list_filter = ["automatic"]
    search_fields = ["name", "description"]


@admin.register(TagCollection)
class TagCollectionAdmin(admin.ModelAdmin):
    list_display = ["dataset", "schema", "state", "n_events", "n_files", "built_at"]
    list_filter = ["state"]
    list_select_related = ["dataset", "schema"]
    search_fields = ["dataset__name"]
    readonly_fields = ["state", "n_events", "n_files", "built_at"]


@admin.register(TagBuild)
class TagBuildAdmin(admin.ModelAdmin):
    list_display = ["id", "collection", "state", "progress_done", "progress_total", "created_at"]
    list_filter = ["state"]
    list_select_related = ["collection__dataset", "collection__schema"]


@admin.register(TagBuildFile)
class TagBuildFileAdmin(admin.ModelAdmin):
    list_display = ["build", "file", "state", "n_events", "lease_attempts", "lease_worker"]
    list_filter = ["state"]
    list_select_related = ["build", "file"]


@admin.register(SavedQuery)
class SavedQueryAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "collection", "created_at"]
    search_fields = ["name", "selection", "owner__username"]
    list_select_related = ["owner", "collection__dataset", "collection__schema"]
