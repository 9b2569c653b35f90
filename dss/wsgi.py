"""WSGI entry point of the DSS portal (gunicorn dss.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")
application = get_wsgi_application()
