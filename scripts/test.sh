#!/usr/bin/env bash
# Run the DSS test suite. With no variables set it uses SQLite and the embedded broker;
# DATABASE_URL / CELERY_BROKER_URL / TAGDB_URL point it at real servers (as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
# The run's own state directory and Celery queue: a developer's portal (var/) and another
# test run on the same broker are left alone.
export DSS_VAR_DIR=${DSS_VAR_DIR:-$(mktemp -d -t dss-test-XXXXXX)}
export DSS_CELERY_QUEUE=${DSS_CELERY_QUEUE:-dss-test-$$}
exec .venv/bin/python -m pytest "$@"
