#!/usr/bin/env bash
# Export -> import round trip through the real binaries: a running member streams a snapshot
# (kvctl snapshot save), kvdb-snapshot checks it and restores it into a new data dir, and the
# restored member serves the same keyspace (same HashKV at the snapshot's revision).
# Usage: snapshot_roundtrip.sh BIN_DIR
set -euo pipefail
bin=$1
dir=$(mktemp -d /tmp/kvdb-snaprt-XXXXXX)
# Wait for the members to exit before removing their directories: a member stopping writes
# its store's key filter file, and rm -rf fails on a directory that gains a file meanwhile.
cleanup() {
    pkill -f -- "--data-dir $dir/" 2>/dev/null || true
    for _ in $(seq 100); do
        pgrep -f -- "--data-dir $dir/" >/dev/null || break
        sleep 0.1
    done
    rm -rf "$dir"
}
trap cleanup EXIT
# Ports: random in 10000-31999, below the kernel's ephemeral range (a client socket there
# blocks a listener); a fresh member whose port is taken starts over on another pair
# (a restored member keeps the port its ID was derived from).
start() {
    for _try in 1 2 3 4 5; do
        port=${2:-$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))}
        ep=127.0.0.1:$port
        "$bin/kvdb" --data-dir "$1" --listen-client-urls "http://$ep" \
            --listen-peer-urls "http://127.0.0.1:$((port + 1))" >"$1.log" 2>&1 &
        for _ in $(seq 300); do
            if "$bin/kvctl" --endpoints "$ep" --command-timeout 500 endpoint health \
                >/dev/null 2>&1; then
                return 0
            fi
            if grep -q "Address already in use" "$1.log"; then
                [ -n "${2:-}" ] && break 2
                rm -rf "$1" # its member file names the old port's ID
                continue 2
            fi
            sleep 0.1
        done
        break
    done
    echo "member did not start: $(cat "$1.log")" >&2
    return 1
}
kv() { "$bin/kvctl" --endpoints "$ep" "$@"; }

start "$dir/a"
for i in $(seq 1 200); do kv put "key/$i" "value-$i" >/dev/null; done
kv del key/7 >/dev/null
kv put key/1 rewritten >/dev/null
kv snapshot save "$dir/snap.db"
"$bin/kvdb-snapshot" save --endpoints "$ep" "$dir/snap2.db" # the same through the tool
"$bin/kvdb-snapshot" verify "$dir/snap2.db"
kv put not/in/snapshot x >/dev/null
rev=$("$bin/kvdb-snapshot" status "$dir/snap.db" -w json | sed -E 's/.*"revision":([0-9]+).*/\1/')
hash_a=$(kv endpoint hashkv --rev "$rev" | cut -d, -f2)
"$bin/kvdb-snapshot" verify "$dir/snap.db"
pkill -f -- "--data-dir $dir/a"
sleep 0.5

# The member ID comes from the peer URL: restore and start with the same one (and restore
# again for another port if that one is taken).
restored=0
for _try in 1 2 3 4 5; do
    port=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))
    rm -rf "$dir/b"
    "$bin/kvdb-snapshot" restore "$dir/snap.db" --data-dir "$dir/b" --name default \
        --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))"
    if start "$dir/b" "$port"; then
        restored=1
        break
    fi
done
[ "$restored" = 1 ] || exit 1
[ "$(kv get key/ --prefix --count-only)" = 199 ] || { echo "key count differs" >&2; exit 1; }
[ "$(kv get key/1 --print-value-only)" = rewritten ] || { echo "key/1 differs" >&2; exit 1; }
[ -z "$(kv get key/7)" ] || { echo "deleted key came back" >&2; exit 1; }
[ -z "$(kv get not/in/snapshot)" ] || { echo "a later write is in the snapshot" >&2; exit 1; }
hash_b=$(kv endpoint hashkv --rev "$rev" | cut -d, -f2)
[ "$hash_a" = "$hash_b" ] || { echo "HashKV differs: $hash_a vs $hash_b" >&2; exit 1; }
kv put after/restore ok >/dev/null
echo "1 passed, 0 failed: snapshot export/import round trip (HashKV$hash_a at revision $rev)"
