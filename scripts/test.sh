#!/usr/bin/env bash
# Run the DSS test suite. With no variables set it uses SQLite and the embedded broker;
# DATABASE_URL / CELERY_BROKER_URL / TAGDB_URL point it at real servers (as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
# The run's own state directory and Celery queue: a developer's portal (var/) and another
# test run on the same broker are left alone.
if [ -z "${DSS_VAR_DIR:-}" ]; then
    DSS_VAR_DIR=$(mktemp -d -t dss-test-XXXXXX)
    # A folder this run made is this run's to remove, whatever the outcome; every temporary
    # the tests and the servers they start make (TMPDIR) goes inside it.
    trap 'rm -rf "$DSS_VAR_DIR"' EXIT
    # Servers the tests start may run as other users (XRootD, pilots as nobody): like
    # /tmp, the folder is open to them.
    chmod 755 "$DSS_VAR_DIR"
    export TMPDIR="$DSS_VAR_DIR/tmp"
    mkdir -p "$TMPDIR"
    chmod 1777 "$TMPDIR"
fi
export DSS_VAR_DIR
export DSS_CELERY_QUEUE=${DSS_CELERY_QUEUE:-dss-test-$$}
# pytest's own temporary folders go under the run's folder, so they leave with it.
.venv/bin/python -m pytest --basetemp="$DSS_VAR_DIR/pytest" "$@"
