"""WSGI entry point of the DSS portal (gunicorn dss.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")
application = get_wsgi_application()

# The settings are read: nothing this process starts inherits the portal's secrets.
from dss.settings import forget_secret_environment  # noqa: E402

forget_secret_environment()
