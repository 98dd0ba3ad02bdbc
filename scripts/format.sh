#!/usr/bin/env bash
# Checks C formatting against .clang-format (exit 1 and a list of files if any differ).
# With --fix, rewrites the files in place.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
if [ "${1:-}" = "--fix" ]; then
    echo "$files" | xargs -r clang-format -i
    exit 0
fi
bad=0
for f in $files; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "needs formatting: $f"
        bad=1
    fi
done
[ "$bad" -eq 0 ] && echo "format: all files clean"
exit $bad
