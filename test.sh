#!/usr/bin/env bash
# Runs every test of the solution. Installs what the tests need (xfsprogs, zstd) when missing.
# Last line: "N passed, N failed[, N skipped]". Exit code non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")"

PATH="$PATH:/usr/sbin:/sbin"
# Installs xfsprogs and zstd when missing (as root via apt-get); otherwise names the packages. The XFS tests
# then fail loudly rather than skip, so we go on either way.
scripts/ensure-tools.sh || echo "test.sh: continuing without the XFS tools: the tests that need them will fail" >&2

# The xfbtree mount tests need root and /dev/fuse; without them they are reported skipped (say so up front).
if [ ! -e /dev/fuse ]; then
  echo "test.sh: no /dev/fuse: the xfbtree mount tests will be skipped" >&2
elif [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: not root: the xfbtree mount tests will be skipped" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
dotnet test Xfbtree.sln -c Release --nologo "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Sum the per-project summaries ("Passed!  - Failed: 0, Passed: 12, Skipped: 0, Total: 12, ...").
read -r passed failed skipped < <(grep -E '(Passed|Failed)! +- +Failed: ' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\1 \2 \3/' \
  | awk '{f+=$1; p+=$2; s+=$3} END {printf "%d %d %d\n", p, f, s}')
# The afl++ fuzz smoke (every target for 60 s) runs inside dotnet test (FuzzSmokeTests), so it is counted above.
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1   # build failure or a crashed test host counts as a failure
fi
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
