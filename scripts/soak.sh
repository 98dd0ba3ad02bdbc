#!/usr/bin/env bash
# Long runs, kept out of the default suite: the nemesis fault suite with a linearizability
# check, over and over with fresh seeds, for a set time; then the slow-labelled tests
# (100,000-seed raft simulation, snapshot stream soak, linearizability checker soak, ...).
#   scripts/soak.sh [MINUTES]        (default 30)
# A failing nemesis run leaves its history in /tmp/kvdb-nemesis-<seed>.hist and its seed in the
# output (replay with KV_TEST_SEED=<seed>).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
minutes=${1:-30}
. scripts/deps.sh
kv_install_deps
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
end=$(( $(date +%s) + minutes * 60 ))
runs=0
fails=0
while [ "$(date +%s)" -lt "$end" ]; do
    runs=$((runs + 1))
    if ! KV_NEMESIS_SECONDS=${KV_NEMESIS_SECONDS:-60} build/bin/fault_nemesis \
            2> >(grep -E '^\[(seed|nemesis)\]' >&2); then
        fails=$((fails + 1))
    fi
done
echo "soak: $runs nemesis runs, $fails failed"
(cd build && ctest -L slow --output-on-failure) || fails=$((fails + 1))
[ "$fails" -eq 0 ]
