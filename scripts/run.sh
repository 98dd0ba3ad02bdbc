#!/usr/bin/env bash
# Builds kvdb and runs its main job on an embedded default.  Until the member process exists
# this builds everything and runs what the project can already do for a user (see README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/deps.sh
kv_install_deps
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
echo "built: $(ls "$root/build/bin" | tr '\n' ' ')"
