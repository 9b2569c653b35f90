from django import forms
from django.contrib import admin

from dss.errors import InvalidInput

from .actions import check_storage_url
from .models import (
    Dataset,
    File,
    RegistrationJob,
    Replica,
    RucioRegistration,
    StorageElement,
    Transfer,
    TransferFile,
)


class StorageElementForm(forms.ModelForm):
    """The admin's storage element form: the URL passes the site's URL policy, as it must
    for ``add_storage_element``."""

    class Meta:
        model = StorageElement
        fields = ["name", "url", "description", "created_at"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].rstrip("/")
        try:
            check_storage_url(url)
        except InvalidInput as e:
            raise forms.ValidationError(e.message) from None
        return url


@admin.register(StorageElement)
class StorageElementAdmin(admin.ModelAdmin):
    form = StorageElementForm
    list_display = ["name", "url", "user_writable", "description"]
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


class TransferFileInline(admin.TabularInline):
    model = TransferFile
    extra = 0
    fields = ["file", "state", "source", "path", "bytes_done", "rate_mb_s", "attempts", "error"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset", "source", "destination", "state", "owner", "created_at"]
    list_filter = ["state", "destination"]
    list_select_related = ["dataset", "source", "destination", "owner"]
    search_fields = ["dataset__name"]
    raw_id_fields = ["dataset", "owner"]
    inlines = [TransferFileInline]


@admin.register(TransferFile)
class TransferFileAdmin(admin.ModelAdmin):
    list_display = ["file", "transfer", "state", "source", "bytes_done", "rate_mb_s", "attempts"]
    list_filter = ["state"]
    list_select_related = ["file", "transfer", "source"]
    search_fields = ["file__lfn", "path"]
    raw_id_fields = ["transfer", "file"]


@admin.register(RucioRegistration)
class RucioRegistrationAdmin(admin.ModelAdmin):
    list_display = ["dataset", "state", "rse", "attempts", "updated_at"]
    list_filter = ["state"]
    search_fields = ["dataset__name", "last_error"]
    raw_id_fields = ["dataset"]
