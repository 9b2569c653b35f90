from django.contrib import admin

from .models import Dataset, File, RegistrationJob, Replica, StorageElement


@admin.register(StorageElement)
class StorageElementAdmin(admin.ModelAdmin):
    list_display = ["name", "url", "description"]
    search_fields = ["name", "url"]


class FileInline(admin.TabularInline):
    model = File
    extra = 0
    fields = ["lfn", "guid", "events", "bytes", "adler32", "tree"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "created_by", "created_at"]
    search_fields = ["name", "description"]
    inlines = [FileInline]


class ReplicaInline(admin.TabularInline):
    model = Replica
    extra = 0


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["lfn", "dataset", "guid", "events", "bytes", "adler32"]
    search_fields = ["lfn", "guid", "dataset__name"]
    list_select_related = ["dataset"]
    inlines = [ReplicaInline]


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):
    list_display = ["file", "storage_element", "path", "state"]
    list_filter = ["storage_element", "state"]
    list_select_related = ["file", "storage_element"]


@admin.register(RegistrationJob)
class RegistrationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset_name", "storage_element", "state", "created_at"]
    list_filter = ["state"]
