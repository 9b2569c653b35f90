#!/usr/bin/env bash
# Build nopayloadclient (the HSF conditions DB reference client: a C++ library, its CLI and
# its functional test) from ../shared/vendor/nopayloadclient into a folder outside the
# checkout, for tests/conditions/test_nopayloadclient.py to run against a live portal.
# Prints `export NOPAYLOADCLIENT_BUILD=<folder>` for .ci/run to eval. Idempotent: a build of
# the same upstream commit is reused.
#
# The client's own CMake fetches Catch2 from the internet when BUILD_TESTING is on; its
# functional test (tests/test_nopayloadclient.cpp) is a plain program with its own main(),
# so it is compiled here directly against the built library instead.
set -euo pipefail
say() { echo "nopayloadclient.sh: $*" >&2; }

top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
src="$top/../shared/vendor/nopayloadclient"
[ -d "$src" ] || src=/work/shared/vendor/nopayloadclient
[ -f "$src/CMakeLists.txt" ] || { say "no nopayloadclient sources at $src"; exit 1; }
src=$(cd "$src" && pwd)

# Debian packages the build needs: cmake, a C++ compiler, libcurl's headers (the client
# bundles nlohmann/json under contrib/).
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] \
  || missing+=(libcurl4-openssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "need root to apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing ${missing[*]} with apt-get"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

build="${NOPAYLOADCLIENT_BUILD:-${TMPDIR:-/tmp}/dss-nopayloadclient-build}"
commit=$(cat "$src/UPSTREAM_COMMIT" 2>/dev/null || echo unknown)
if [ -x "$build/bin/test_nopayloadclient" ] && [ -x "$build/bin/cli_npc" ] \
   && [ "$(cat "$build/UPSTREAM_COMMIT" 2>/dev/null)" = "$commit" ]; then
  say "reusing the build in $build ($commit)"
else
  say "building $src ($commit) in $build"
  rm -rf "$build"
  mkdir -p "$build/bin"
  cmake -S "$src" -B "$build/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >&2
  cmake --build "$build/cmake" -j "$(nproc)" >&2
  lib_dir="$build/cmake/src"
  cp "$lib_dir/cli_npc" "$build/bin/cli_npc"
  g++ -std=c++14 -O1 -o "$build/bin/test_nopayloadclient" "$src/tests/test_nopayloadclient.cpp" \
    -I"$src/include" -I"$src/contrib" -L"$lib_dir" -Wl,-rpath,"$lib_dir" \
    -lnopayloadclient -lcurl -lstdc++fs >&2
  echo "$commit" >"$build/UPSTREAM_COMMIT"
fi
echo "export NOPAYLOADCLIENT_BUILD=$build"
echo "export NOPAYLOADCLIENT_SRC=$src"
