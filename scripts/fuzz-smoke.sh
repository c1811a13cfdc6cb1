#!/usr/bin/env bash
# CI smoke: every fuzz target under afl++ for a bounded time (default 60 s each, Release build), failing on any
# crash or hang. Usage: scripts/fuzz-smoke.sh [SECONDS]
# Needs afl++ (installed by scripts/fuzz.sh when running as root) and xfsprogs (the reader target's base image).
set -uo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/.."
rc=0
for target in btree orderedmap reader; do
  scripts/fuzz.sh "$target" "$seconds" Release || { r=$?; [ $r -gt $rc ] && rc=$r; }
done
[ $rc = 0 ] && echo "fuzz smoke: clean" || echo "fuzz smoke: FAILED (exit $rc)"
exit $rc
