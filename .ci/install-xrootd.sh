#!/usr/bin/env bash
# Install the XRootD server and client that the storage tests start on loopback (tests/xrootd.py),
# plus gcc to build the bind shim (.ci/bindlo.c). Idempotent: does nothing when all are present.
# The PyPI `xrootd` wheel in the venv has the client and Python bindings but no server binary.
set -euo pipefail

if [ -x /usr/bin/xrootd ] && command -v xrdcp >/dev/null && command -v gcc >/dev/null \
   && [ -f /usr/include/dlfcn.h ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-xrootd.sh: need root to apt-get install xrootd-server xrootd-client gcc" >&2
  exit 1
fi
echo "install-xrootd.sh: installing xrootd-server xrootd-client gcc libc6-dev with apt-get" >&2
apt-get update -q
# libc6-dev: gcc without recommends has no headers to build the bind shim.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  xrootd-server xrootd-client gcc libc6-dev
