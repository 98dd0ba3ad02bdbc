#!/usr/bin/env bash
# The kvdb standard benchmark suite (issue 10): builds, starts a fresh local member and then a
# 3-member loopback cluster, drives them with kvdb-bench and writes a markdown table (date,
# machine, disk fdatasync latency measured in this run, commit) to docs/bench-server.md.
#
# usage: scripts/bench.sh [--long] [--no-cluster] [--no-build] [--out FILE]
#   --long        1M-key load and longer runs, each workload run 3 times (median reported)
#   --no-cluster  skip the 3-member part
#   --no-build    use the binaries already in the build directory
# environment:
#   KV_BENCH_BUILD_DIR   build directory (default: build)
#   KV_BENCH_LOAD_KEYS   keys for the load + get step (default 200000; 1000000 with --long)
#   KV_BENCH_RUNS        runs per workload, median by throughput (default 1; 3 with --long)
#   KV_BENCH_PORT        first client port (default 24379); peers use PORT+10..
#   KV_BENCH_JOBS        build parallelism (default 2)
#   KV_BENCH_KEEP=1      keep the data directories (data/bench-*) afterwards
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

long=0
cluster=1
nobuild=0
out="$root/docs/bench-server.md"
while [ $# -gt 0 ]; do
    case "$1" in
    --long) long=1 ;;
    --no-cluster) cluster=0 ;;
    --no-build) nobuild=1 ;;
    --out) out="$2"; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown flag $1" >&2; exit 2 ;;
    esac
    shift
done

build=${KV_BENCH_BUILD_DIR:-$root/build}
port=${KV_BENCH_PORT:-24379}
if [ "$long" = 1 ]; then
    load_keys=${KV_BENCH_LOAD_KEYS:-1000000}
    runs=${KV_BENCH_RUNS:-3}
    scale=4
else
    load_keys=${KV_BENCH_LOAD_KEYS:-200000}
    runs=${KV_BENCH_RUNS:-1}
    scale=1
fi

if [ "$nobuild" = 0 ]; then
    echo "== build ($build)"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" --target kvdb kvctl kvdb-bench kvdb-snapshot \
        -j"${KV_BENCH_JOBS:-2}" >/dev/null
fi
bin="$build/bin"

data="$root/data/bench-$$"
mkdir -p "$data"
pids=()
cleanup() {
    for p in "${pids[@]+"${pids[@]}"}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]+"${pids[@]}"}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "${KV_BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$data"
    fi
}
trap cleanup EXIT

# ---- measurement helpers ----

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# fdatasync latency (ms): p50 of 4 KiB overwrites of a preallocated file (what the WAL pays),
# measured by kvdb-bench disk in the data directory.
fsync_ms() {
    local line
    line=$("$bin/kvdb-bench" disk "$data" --total 300 --json | tail -1)
    jget "$line" p50_ms
}

# Mean latency (ms) of appending 4 KiB O_DSYNC writes to a new file (dd oflag=dsync): this also
# pays block allocation and journal commits, an upper bound for a WAL segment's first pass.
dd_dsync_ms() {
    local n=200 secs
    secs=$(dd if=/dev/zero of="$data/dsync-probe" bs=4k count=$n oflag=dsync 2>&1 |
        sed -nE 's/.*copied, ([0-9.]+) s.*/\1/p')
    rm -f "$data/dsync-probe"
    awk -v s="$secs" -v n=$n 'BEGIN { printf "%.3f", s * 1000 / n }'
}

# Field @2 of JSON line @1 (numbers and strings without commas).
jget() { sed -nE "s/.*\"$2\":\"?([^,\"}]*).*/\1/p" <<<"$1"; }

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# start_member NAME INDEX INITIAL_CLUSTER: a member on client port PORT+INDEX, peer PORT+10+INDEX.
start_member() {
    local name=$1 i=$2 initial=$3
    "$bin/kvdb" --name "$name" --data-dir "$data/$name" \
        --listen-client-urls "http://127.0.0.1:$((port + i))" \
        --listen-peer-urls "http://127.0.0.1:$((port + 10 + i))" \
        --initial-cluster "$initial" >>"$data/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_$name=$!"
}

# Wait until a linearizable get through @1 succeeds; prints the ms it took from @2.
wait_serving() {
    local eps=$1 t0=$2 deadline=$(($(now_ms) + 60000))
    until "$bin/kvctl" --endpoints "$eps" --command-timeout 1000 get bench-probe >/dev/null 2>&1; do
        if [ "$(now_ms)" -gt "$deadline" ]; then
            echo "bench.sh: no member serving on $eps after 60 s; logs in $data" >&2
            tail -20 "$data"/*.log >&2
            exit 1
        fi
        sleep 0.01
    done
    echo $(($(now_ms) - t0))
}

stop_member() {
    local pid=$1 keep=() p
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [ "$p" != "$pid" ] && keep+=("$p")
    done
    pids=("${keep[@]}")
}

# One kvdb-bench run; prints its JSON line.  A run killed by a signal from outside (seen on a
# shared box where another suite's cleanup signals recycled pids) is retried twice, and said.
run_one() {
    local try rc out
    for try in 1 2 3; do
        rc=0
        out=$("$bin/kvdb-bench" "$@" --json) || rc=$?
        printf '%s\n' "$out" >>"$data/bench.out"
        if [ "$rc" = 0 ]; then
            tail -1 <<<"$out"
            return 0
        fi
        echo "   kvdb-bench exited with status $rc (try $try)" >&2
        [ "$rc" -gt 128 ] || break
    done
    return 1
}

rows=()
failed=0
# bench LABEL TARGET CONDITION RSS_PID ARGS...: runs kvdb-bench $runs times, keeps the median
# run by throughput, and appends a table row.  CONDITION is an awk expression over ops, p50,
# p99 and fsync (ms); it decides the "meets" column.
bench() {
    local label=$1 target=$2 cond=$3 rss_pid=$4
    shift 4
    local lines=() line
    echo "== $label: kvdb-bench $*"
    local n=${BENCH_RUNS_NOW:-$runs}
    for ((r = 0; r < n; r++)); do
        if ! line=$(run_one "$@"); then
            failed=$((failed + 1))
            rows+=("| $label | failed (kvdb-bench output in the log above) | | | | | | | | $target | **no** |")
            return 0
        fi
        echo "   $(jget "$line" ops_per_sec)/s p50 $(jget "$line" p50_ms) ms" \
            "p99 $(jget "$line" p99_ms) ms errors $(jget "$line" errors)" \
            "bench cpu $(jget "$line" cpu_pct)%"
        lines+=("$(jget "$line" ops_per_sec) $line")
    done
    line=$(printf '%s\n' "${lines[@]}" | sort -n | sed -n "$(((n + 1) / 2))p" | cut -d' ' -f2-)
    local ops p50 p99 p999 mx err cpu empty meets rss="-"
    ops=$(jget "$line" ops_per_sec)
    p50=$(jget "$line" p50_ms)
    p99=$(jget "$line" p99_ms)
    p999=$(jget "$line" p999_ms)
    mx=$(jget "$line" max_ms)
    err=$(jget "$line" errors)
    cpu=$(jget "$line" cpu_pct)
    empty=$(jget "$line" empty_reads)
    meets=$(awk -v ops="$ops" -v p50="$p50" -v p99="$p99" -v fsync="$fsync" -v e="$err" \
        -v em="$empty" "BEGIN { print (($cond) && e == 0 && em == 0) ? \"yes\" : \"**no**\" }")
    if [ -n "$rss_pid" ]; then
        rss=$(hwm_mib "$rss_pid")
    fi
    rows+=("| $label | $ops | $p50 | $p99 | $p999 | $mx | $err | $cpu | $rss | $target | $meets |")
}

machine_cpu=$(sed -nE 's/^model name\s*: (.*)/\1/p' /proc/cpuinfo | head -1)
machine_cores=$(nproc)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo "-dirty")
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
fsync=$(fsync_ms)
dd_dsync=$(dd_dsync_ms)
echo "== disk: fdatasync p50 $fsync ms (4 KiB overwrite); dd oflag=dsync append $dd_dsync ms"

kv="--key-size 8 --val-size 256"
n1=$((2000 * scale))
n16=$((20000 * scale))
n256=$((100000 * scale))
nr=$((200000 * scale))
ep1="127.0.0.1:$port"

# ---- single member ----
echo "== single member (client $ep1)"
t0=$(now_ms)
start_member s1 0 "s1=http://127.0.0.1:$((port + 10))"
wait_serving "$ep1" "$t0" >/dev/null
"$bin/kvctl" --endpoints "$ep1" put 00000000 "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null

rk="range 00000000 --clients 64 --total $nr $kv"
bench "range 1 key, 64 clients, linearizable" ">= 40,000/s" "ops >= 40000" "$pid_s1" \
    --endpoints "$ep1" $rk --consistency l
bench "range 1 key, 64 clients, serializable" ">= 60,000/s" "ops >= 60000" "$pid_s1" \
    --endpoints "$ep1" $rk --consistency s
bench "put, 1 client" "p50 <= 1.25 x fdatasync" "p50 <= 1.25 * fsync" "$pid_s1" \
    --endpoints "$ep1" put --clients 1 --total $n1 $kv --key-space-size 100000
bench "put, 16 clients" ">= 20,000/s" "ops >= 20000" "$pid_s1" \
    --endpoints "$ep1" put --clients 16 --total $n16 $kv --key-space-size 100000
bench "put, 256 clients / 16 conns" ">= 50,000/s, p99 <= 20 ms" "ops >= 50000 && p99 <= 20" \
    "$pid_s1" --endpoints "$ep1" put --clients 256 --conns 16 --total $n256 $kv \
    --key-space-size 100000
bench "range 1 key, 64 clients, linearizable, after write burst" ">= 40,000/s" \
    "ops >= 40000" "$pid_s1" --endpoints "$ep1" $rk --consistency l
bench "range 1 key, 64 clients, serializable, after write burst" ">= 60,000/s" \
    "ops >= 60000" "$pid_s1" --endpoints "$ep1" $rk --consistency s
bench "watch: 64 watchers / 4 conns, puts at 1,000/s, latency put to event" \
    "none in the issue (no lost events)" "1" "$pid_s1" --endpoints "$ep1" watch --clients 64 \
    --conns 4 --total $n1 --rate 1000 $kv --key-space-size 100
put_hwm=$(hwm_mib "$pid_s1")

# The load, on a fresh member (the target is the memory of holding the loaded keys, not of the
# put runs above: their peak is reported on its own): every key once, in order (so one run
# only), then gets of random keys among them.
stop_member "$pid_s1"
rm -rf "$data/s1"
start_member s1 0 "s1=http://127.0.0.1:$((port + 10))"
wait_serving "$ep1" "$(now_ms)" >/dev/null
BENCH_RUNS_NOW=1 bench "load $load_keys keys, 256 clients / 16 conns" ">= 50,000/s" "ops >= 50000" "$pid_s1" \
    --endpoints "$ep1" put --clients 256 --conns 16 --total "$load_keys" --sequential-keys \
    --key-space-size "$load_keys" $kv
load_rss=$(rss_mib "$pid_s1")
load_hwm=$(hwm_mib "$pid_s1")
bench "get random of $load_keys keys, 64 clients, linearizable" ">= 40,000/s" "ops >= 40000" \
    "$pid_s1" --endpoints "$ep1" range --clients 64 --total $nr --key-space-size "$load_keys" $kv
du_data=$(du -sm "$data/s1" | cut -f1)

# Restart: time from exec to the first linearizable get that succeeds.
stop_member "$pid_s1"
t0=$(now_ms)
start_member s1 0 "s1=http://127.0.0.1:$((port + 10))"
restart_ms=$(wait_serving "$ep1" "$t0")
restart_rss=$(rss_mib "$pid_s1")
echo "== restart with $load_keys keys: first linearizable get after $restart_ms ms"
stop_member "$pid_s1"

# Snapshot save of the stopped member (kvdb-snapshot save is offline; kvctl has no online save).
save_ms="-"
if [ -x "$bin/kvdb-snapshot" ]; then
    t0=$(now_ms)
    if "$bin/kvdb-snapshot" save --data-dir "$data/s1" "$data/snap-save" >>"$data/s1.log" 2>&1
    then
        save_ms=$(($(now_ms) - t0))
        save_mib=$(du -sm "$data/snap-save" | cut -f1)
    else
        save_ms="failed (see the member log)"
    fi
    rm -rf "$data/snap-save"
    echo "== kvdb-snapshot save with $load_keys keys: $save_ms ms"
fi

# ---- 3-member cluster ----
cluster_rss="-"
if [ "$cluster" = 1 ]; then
    init=""
    for i in 1 2 3; do
        init="$init${init:+,}c$i=http://127.0.0.1:$((port + 10 + i))"
    done
    eps="127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2)),127.0.0.1:$((port + 3))"
    echo "== 3-member cluster (clients $eps)"
    t0=$(now_ms)
    for i in 1 2 3; do
        start_member "c$i" "$i" "$init"
    done
    wait_serving "$eps" "$t0" >/dev/null
    bench "3 members: put, 1 client" ">= 2,000/s" "ops >= 2000" "" \
        --endpoints "$eps" put --clients 1 --total $n1 $kv --key-space-size 100000
    bench "3 members: put, 16 clients" ">= 10,000/s" "ops >= 10000" "" \
        --endpoints "$eps" put --clients 16 --total $n16 $kv --key-space-size 100000
    bench "3 members: put, 256 clients / 16 conns" ">= 30,000/s, p99 <= 20 ms" \
        "ops >= 30000 && p99 <= 20" "" --endpoints "$eps" put --clients 256 --conns 16 \
        --total $n256 $kv --key-space-size 100000
    cluster_rss="$(hwm_mib "$pid_c1") / $(hwm_mib "$pid_c2") / $(hwm_mib "$pid_c3")"
fi
fsync_after=$(fsync_ms)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mode="default"
[ "$long" = 1 ] && mode="--long"
{
    echo "# kvdb server benchmarks (scripts/bench.sh)"
    echo
    echo "Written by \`scripts/bench.sh\` ($mode, $runs run(s) per workload, median by"
    echo "throughput). Client and members share the machine, on loopback."
    echo
    echo "- Date: $started"
    echo "- Commit: $commit"
    echo "- Machine: $machine_cores cores, $machine_cpu; load average (1/5/15 min) $load_before"
    echo "  at the start, $load_after at the end (anything above ~1 is other work on the box)"
    echo "- Disk (in the data directory): fdatasync after a 4 KiB overwrite of a preallocated file"
    echo "  (\`kvdb-bench disk\`, what the WAL pays), p50 $fsync ms before the runs and"
    echo "  $fsync_after ms after; appending 4 KiB O_DSYNC writes to a new file (dd oflag=dsync):"
    echo "  $dd_dsync ms mean. The put-1-client target uses the first figure."
    echo "- Command: \`KV_BENCH_LOAD_KEYS=$load_keys KV_BENCH_RUNS=$runs scripts/bench.sh"\
"$([ "$long" = 1 ] && echo " --long")$([ "$cluster" = 0 ] && echo " --no-cluster")\`"
    echo "- Keys 8 B, values 256 B. \"bench CPU\" is kvdb-bench's own user+sys time as a"
    echo "  percentage of one core; \"RSS\" is the member's peak RSS (VmHWM) after the run;"
    echo "  \"meets\" also requires no errors and, for gets, no reply without the key."
    echo
    echo "| workload | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | bench CPU % |" \
        "RSS MiB | target | meets |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "- Peak RSS of the single member after the put runs: $put_hwm MiB; of a fresh member"
    echo "  after loading $load_keys keys: $load_rss MiB now, $load_hwm MiB peak (target <= 150 MiB);"
    echo "  data directory $du_data MiB."
    echo "- Restart with $load_keys keys to the first linearizable get: $restart_ms ms"
    echo "  (target <= 1000 ms for 1M keys); RSS right after: $restart_rss MiB."
    if [ "$cluster" = 1 ]; then
        echo "- 3-member cluster peak RSS (c1 / c2 / c3): $cluster_rss MiB."
    fi
    echo "- Snapshot save with $load_keys keys (target <= 500 ms for 1M keys): $save_ms ms wall for"
    echo "  \`kvdb-snapshot save\` of the stopped member (${save_mib:-?} MiB; offline: hard links plus a"
    echo "  checksummed manifest; etcd's figure is an online \`etcdctl snapshot save\`)."
    echo "- watch: ops/s counts events received over all watchers; latency is from sending the"
    echo "  put to a watcher receiving its event."
} >"$out.new"
# Hand-written analysis below the marker survives a rerun.
marker='<!-- analysis: kept by scripts/bench.sh -->'
if [ -f "$out" ] && grep -qF "$marker" "$out"; then
    echo >>"$out.new"
    awk -v m="$marker" 'found || index($0, m) { found = 1; print }' "$out" >>"$out.new"
fi
mv "$out.new" "$out"
echo "== wrote $out"
if [ "$failed" -gt 0 ]; then
    echo "bench.sh: $failed workload(s) failed" >&2
    exit 1
fi
cat "$out"
