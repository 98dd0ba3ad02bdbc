#!/usr/bin/env bash
# Builds kvdb and runs its main job: one local member on 127.0.0.1 (clients on :2379, peers on
# :2380) with its data under the repository (data/default), in the foreground.  Ctrl-C stops it;
# running it again restarts the same member with its data.  Extra arguments go to kvdb
# (see build/bin/kvdb --help).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/deps.sh
kv_install_deps
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
[ -x build/bin/kvdb ] || { echo "build failed: build/bin/kvdb is missing" >&2; exit 1; }
mkdir -p data
exec build/bin/kvdb --name default --data-dir "$root/data/default" \
    --listen-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 "$@"
