#!/usr/bin/env bash
# Start the DSS portal on one machine: migrate, load the demo data, then a Celery worker and
# the web server together. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p var/log
$PY manage.py migrate --noinput
$PY manage.py load_demo
.venv/bin/celery -A dss worker --beat --schedule=var/celerybeat-schedule --loglevel=INFO --concurrency=2 >var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT INT TERM
echo
echo "DSS portal: http://$HOST:$PORT/   (Celery worker log: var/log/worker.log)"
$PY manage.py runserver "$HOST:$PORT"
