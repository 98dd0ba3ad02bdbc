#!/usr/bin/env bash
# Run a command inside a memory cgroup capped at MIB MiB, then print what the cgroup saw: peak
# usage (anonymous memory plus page cache, which is what the limit counts) and whether anything
# was OOM-killed.
#
# Why: LevelDB 1.23 maps its table files for reads, so after reads over a big store the RSS of
# a kvdb process counts clean page-cache pages that the kernel takes back under pressure.  The
# honest test of "memory bounded by the options" is to cap the memory and see that the process
# runs (no OOM kill) and how fast.
#
#   scripts/memcap.sh 512 -- build/bin/kvdb-lsmbench --dir /tmp/d --keys 10000000 --skip-compaction
#
# Needs root and a writable cgroup v1 memory controller or cgroup v2 with memory enabled.
set -euo pipefail

if [[ $# -lt 3 || $2 != "--" ]]; then
    echo "usage: $0 MIB -- COMMAND [ARGS...]" >&2
    exit 2
fi
mib=$1
shift 2
limit=$((mib * 1024 * 1024))
name="kvdb-memcap-$$"

if [[ -d /sys/fs/cgroup/memory && -w /sys/fs/cgroup/memory ]]; then
    cg=/sys/fs/cgroup/memory/$name
    mkdir "$cg"
    echo "$limit" >"$cg/memory.limit_in_bytes"
    # Without this the kernel would swap anonymous memory instead of failing over the cap.
    echo "$limit" >"$cg/memory.memsw.limit_in_bytes" 2>/dev/null || true
    v=1
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    cg=/sys/fs/cgroup/$name
    mkdir "$cg"
    echo "$limit" >"$cg/memory.max"
    echo 0 >"$cg/memory.swap.max" 2>/dev/null || true
    v=2
else
    echo "$0: no writable memory cgroup here" >&2
    exit 1
fi

cleanup() {
    rmdir "$cg" 2>/dev/null || true
}
trap cleanup EXIT

echo "memcap: cgroup v$v $cg, limit $mib MiB (anonymous memory + page cache)"
set +e
bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' memcap "$cg" "$@"
rc=$?
set -e

if [[ $v == 1 ]]; then
    peak=$(cat "$cg/memory.max_usage_in_bytes")
    ooms=$(awk '/^oom_kill /{print $2}' "$cg/memory.oom_control")
else
    peak=$(cat "$cg/memory.peak" 2>/dev/null || echo 0)
    ooms=$(awk '/^oom_kill /{print $2}' "$cg/memory.events")
fi
echo "memcap: exit $rc, peak $((peak / 1024 / 1024)) MiB of $mib, oom kills ${ooms:-0}"
exit $rc
