#!/usr/bin/env bash
# Refresh the README's screenshots (docs/screenshots/*.png): run the browser tests, whose
# journeys save their main pages at 1280x800 when DSS_SCREENSHOTS is set. Needs Chromium at
# /usr/bin/chromium (sudo .ci/install-chromium.sh) and the playwright Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
export DSS_SCREENSHOTS=${DSS_SCREENSHOTS:-docs/screenshots}
mkdir -p "$DSS_SCREENSHOTS"
# Start from an empty set, so that a page no journey shows any more leaves no picture behind.
rm -f "$DSS_SCREENSHOTS"/*.png
# Fail rather than skip: a skipped journey would silently leave its pictures out.
CI=true exec bash scripts/test.sh tests/browser -q "$@"
