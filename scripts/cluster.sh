#!/usr/bin/env bash
# Starts a local 3-member kvdb cluster on 127.0.0.1 in the background, data under data/cluster/.
#   scripts/cluster.sh [start]   build if needed, start m1 m2 m3 (clients on :12379 :22379 :32379)
#   scripts/cluster.sh stop      stop them (SIGTERM)
#   scripts/cluster.sh status    kvctl endpoint status for the three
# Logs: data/cluster/<name>.log.  Extra arguments after "start" go to every member.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir="$root/data/cluster"
eps=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
cmd=${1:-start}
[ $# -gt 0 ] && shift
case "$cmd" in
start)
    if [ ! -x build/bin/kvdb ] || [ ! -x build/bin/kvctl ]; then
        . scripts/deps.sh
        kv_install_deps
        cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$root/build" -j"$(nproc)" --target kvdb kvctl >/dev/null
    fi
    mkdir -p "$dir"
    cluster="m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
    for i in 1 2 3; do
        nohup build/bin/kvdb --name "m$i" --data-dir "$dir/m$i" \
            --listen-peer-urls "http://127.0.0.1:${i}2380" \
            --listen-client-urls "http://127.0.0.1:${i}2379" \
            --initial-cluster "$cluster" --initial-cluster-token kvdb-local "$@" \
            >>"$dir/m$i.log" 2>&1 &
        echo $! >"$dir/m$i.pid"
    done
    for _ in $(seq 50); do
        build/bin/kvctl --endpoints "$eps" --command-timeout 1000 endpoint health \
            >/dev/null 2>&1 && break
        sleep 0.2
    done
    build/bin/kvctl --endpoints "$eps" -w table endpoint status
    echo "cluster up: build/bin/kvctl --endpoints $eps put k v; stop: scripts/cluster.sh stop"
    ;;
stop)
    for i in 1 2 3; do
        if [ -f "$dir/m$i.pid" ]; then
            kill "$(cat "$dir/m$i.pid")" 2>/dev/null || true
            rm -f "$dir/m$i.pid"
        fi
    done
    ;;
status)
    build/bin/kvctl --endpoints "$eps" -w table endpoint status
    ;;
*)
    echo "usage: scripts/cluster.sh [start|stop|status]" >&2
    exit 2
    ;;
esac
