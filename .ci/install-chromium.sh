#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/browser/), unless it is there already.
# Playwright drives it through executable_path; Playwright's own browser download is not used.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium
/usr/bin/chromium --version
