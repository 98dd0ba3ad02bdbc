#!/usr/bin/env bash
# Snapshot save against etcd 3.4 on this machine (issue 6: "export of 1M keys faster than
# `etcdctl snapshot save` of the same data").  Loads the same N keys (12-byte keys, 256-byte
# values) into one etcd member and one kvdb member on loopback, then times
#   etcdctl snapshot save          (online, etcd's only way)
#   kvdb-snapshot save --endpoints (online: the member takes a snapshot and streams an archive)
#   kvdb-snapshot save --data-dir  (offline, the member stopped)
# Usage: scripts/etcd-compare.sh [KEYS]   (default 1000000; needs Debian's etcd-server and
# etcd-client packages, installed here with apt-get when missing).  Not part of the test suite.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
keys=${1:-1000000}
build=$root/build
bin=$build/bin

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        etcd-server etcd-client >/dev/null
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target kvdb kvctl kvdb-bench kvdb-snapshot >/dev/null

data=$(mktemp -d /tmp/kvdb-etcd-compare-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$data"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Ports below the ephemeral range, away from the defaults (2379/2380) a local member may hold.
eport=$((21000 + RANDOM % 1000))
kport=$((eport + 2000))

echo "== $(date -u '+%F %T') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $keys keys"
echo "== etcd $(etcd --version | sed -n 's/^etcd Version: //p')"
etcd --name e1 --data-dir "$data/etcd" --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
    --listen-client-urls "http://127.0.0.1:$eport" --advertise-client-urls "http://127.0.0.1:$eport" \
    --listen-peer-urls "http://127.0.0.1:$((eport + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((eport + 1))" \
    --initial-cluster "e1=http://127.0.0.1:$((eport + 1))" >"$data/etcd.log" 2>&1 &
pids+=($!)
export ETCDCTL_API=3
for _ in $(seq 100); do
    etcdctl --endpoints "127.0.0.1:$eport" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

# etcd's JSON gateway (/v3/kv/txn), 128 puts per transaction (etcd's --max-txn-ops), 4 threads.
t0=$(now_ms)
python3 - "$eport" "$keys" <<'EOF'
import base64, http.client, json, sys, threading
port, keys = int(sys.argv[1]), int(sys.argv[2])
val = base64.b64encode(b"v" * 256).decode()
def load(lo, hi):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(lo, hi, 128):
        ops = [{"requestPut": {"key": base64.b64encode(b"key%09d" % k).decode(), "value": val}}
               for k in range(i, min(i + 128, hi))]
        c.request("POST", "/v3/kv/txn", json.dumps({"success": ops}))
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit("etcd txn: %d %s" % (r.status, body[:200]))
n = 4
step = (keys + n - 1) // n
ts = [threading.Thread(target=load, args=(t * step, min(keys, (t + 1) * step))) for t in range(n)]
for t in ts: t.start()
for t in ts: t.join()
EOF
echo "   etcd load: $(($(now_ms) - t0)) ms"
count=$(etcdctl --endpoints "127.0.0.1:$eport" get --prefix key --limit 1 -w json |
    sed -nE 's/.*"count":([0-9]+).*/\1/p')
[ "$count" = "$keys" ] || { echo "etcd holds $count keys, not $keys" >&2; exit 1; }
t0=$(now_ms)
etcdctl --endpoints "127.0.0.1:$eport" snapshot save "$data/etcd.db" >/dev/null 2>&1
echo "   etcdctl snapshot save: $(($(now_ms) - t0)) ms, $(du -m "$data/etcd.db" | cut -f1) MiB"
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()

echo "== kvdb $(git -C "$root" rev-parse --short HEAD)"
"$bin/kvdb" --name k1 --data-dir "$data/kvdb" \
    --listen-client-urls "http://127.0.0.1:$kport" \
    --listen-peer-urls "http://127.0.0.1:$((kport + 1))" \
    --initial-cluster "k1=http://127.0.0.1:$((kport + 1))" >"$data/kvdb.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    "$bin/kvctl" --endpoints "127.0.0.1:$kport" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
t0=$(now_ms)
"$bin/kvdb-bench" --endpoints "127.0.0.1:$kport" --conns 8 --clients 64 --total "$keys" \
    --key-size 12 --val-size 256 --key-space-size "$keys" --sequential-keys put >/dev/null
echo "   kvdb load: $(($(now_ms) - t0)) ms"
count=$("$bin/kvctl" --endpoints "127.0.0.1:$kport" get 0 --prefix --count-only -w json |
    sed -nE 's/.*"count":"?([0-9]+).*/\1/p')
[ "$count" = "$keys" ] || { echo "kvdb holds $count keys, not $keys" >&2; exit 1; }
t0=$(now_ms)
"$bin/kvdb-snapshot" save --endpoints "127.0.0.1:$kport" "$data/kvdb.snap" >/dev/null
echo "   kvdb-snapshot save --endpoints (online): $(($(now_ms) - t0)) ms," \
    "$(du -m "$data/kvdb.snap" | cut -f1) MiB"
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()
t0=$(now_ms)
"$bin/kvdb-snapshot" save --data-dir "$data/kvdb" "$data/kvdb-offline" >/dev/null
echo "   kvdb-snapshot save --data-dir (offline): $(($(now_ms) - t0)) ms"
"$bin/kvdb-snapshot" status "$data/kvdb-offline" | grep -iE "keys|revision" || true
