#!/usr/bin/env bash
# Start the DSS portal on one machine: migrate, load the demo data, then a Celery worker and
# the web server together. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
# Pilots post their reports to DSS_PORTAL_URL: by default the address served here (for a
# wildcard bind, loopback; worker nodes elsewhere need DSS_PORTAL_URL set to a name they reach).
case "$HOST" in
  0.0.0.0) url_host=127.0.0.1 ;;
  ::|"[::]") url_host="[::1]" ;;
  \[*) url_host=$HOST ;;
  *:*) url_host="[$HOST]" ;;
  *) url_host=$HOST ;;
esac
export DSS_PORTAL_URL=${DSS_PORTAL_URL:-http://$url_host:$PORT}
mkdir -p var/log
$PY manage.py migrate --noinput
$PY manage.py load_demo
.venv/bin/celery -A dss worker --beat --schedule=var/celerybeat-schedule --loglevel=INFO --concurrency=2 >var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT INT TERM
echo
echo "DSS portal: http://$url_host:$PORT/   (Celery worker log: var/log/worker.log; pilots report to $DSS_PORTAL_URL)"
$PY manage.py runserver "$HOST:$PORT"
