from django.contrib import admin

from .models import JobEvent


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ["at", "content_type", "object_id", "kind", "message"]
    list_filter = ["kind", "content_type"]
