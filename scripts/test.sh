#!/usr/bin/env bash
# Builds kvdb from nothing and runs the whole default test suite: a normal build, an
# AddressSanitizer + UndefinedBehaviorSanitizer build, and the fuzz targets under libFuzzer for a
# bounded time.  Fails on any test failure or sanitizer report.  Long runs: scripts/soak.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/deps.sh
kv_install_deps

jobs=$(nproc)
passed=0
failed=0

# run_suite DIR LABEL [cmake args...]: configure, build, ctest -L LABEL.
run_suite() {
    local dir=$1 label=$2
    shift 2
    echo "=== $dir: configure $*"
    cmake -S "$root" -B "$dir" "$@" >"$dir.configure.log" 2>&1 || {
        cat "$dir.configure.log"; return 1; }
    echo "=== $dir: build"
    cmake --build "$dir" -j"$jobs" ${KV_TARGET:+--target $KV_TARGET} 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    echo "=== $dir: test (label $label)"
    local log="$dir.ctest.log" rc=0
    (cd "$dir" && ctest -L "$label" --output-on-failure -j"$jobs") 2>&1 | tee "$log" || rc=1
    local line
    line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1 || true)
    if [ -n "$line" ]; then
        local total bad
        total=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
        bad=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
        passed=$((passed + total - bad))
        failed=$((failed + bad))
    else
        rc=1
    fi
    return $rc
}

mkdir -p "$root/build" 
status=0
run_suite build unit -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
run_suite build-asan unit -DCMAKE_BUILD_TYPE=Debug -DKV_SANITIZE=ON || status=1

if command -v clang >/dev/null 2>&1; then
    KV_TARGET=fuzz run_suite build-fuzz fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKV_FUZZ=ON \
        -DCMAKE_C_COMPILER=clang || status=1
fi

echo "test.sh: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
