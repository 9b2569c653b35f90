# The DSS portal image: the web server (gunicorn) and the Celery worker run from it.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DSS_VAR_DIR=/var/lib/dss
RUN apt-get update && apt-get install -y --no-install-recommends xrootd-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --system --home /var/lib/dss dss && mkdir -p /var/lib/dss && chown dss /var/lib/dss
USER dss
EXPOSE 8000
CMD ["gunicorn", "dss.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
