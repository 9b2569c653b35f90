"""The one Celery app of DSS, configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")

app = Celery("dss")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
