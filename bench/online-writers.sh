#!/usr/bin/env bash
# Writers beside back-to-back online repairs: `xfbtree stress` on a fresh copy of a fixture, alone and with
# `--online-repair --structures LIST`, for one or more builds interleaved round after round (docs/scrub.md,
# "Writers beside the check"). Prints one line per run (ops/s, checks or repairs done, load average) and the
# medians per build: alone, with, and their ratio.
#
#   bench/online-writers.sh [--rounds N] [--ops N] [--structures LIST] [--fixture NAME] [--extra "ARGS"] NAME=XFBTREE...
#
# NAME=XFBTREE[|ARGS]: a label, the tool to run (a native executable, or "dotnet path/xfbtree.dll") and, after a
# '|', more arguments for its runs with repairs (e.g. a pace of the checker), e.g.
#   bench/online-writers.sh base=/tmp/base/xfbtree new=artifacts/bench-aot/xfbtree 'unpaced=artifacts/bench-aot/xfbtree|--repair-cpu-share 1'
# --extra: more arguments for every build's runs with repairs.
# The fixture's metadump comes from $XFBTREE_FIXTURES (default tests/fixtures).
set -euo pipefail
rounds=3 ops=1500 structures=nlinks fixture=aged-small extra=""
builds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --structures) structures=$2; shift 2 ;;
    --fixture) fixture=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    *=*) builds+=("$1"); shift ;;
    *) echo "usage: $0 [--rounds N] [--ops N] [--structures LIST] [--fixture NAME] [--extra ARGS] NAME=XFBTREE..." >&2; exit 2 ;;
  esac
done
[ ${#builds[@]} -gt 0 ] || { echo "error: name at least one build as NAME=XFBTREE" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${XFBTREE_FIXTURES:-$here/tests/fixtures}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
zstd -dc "$fixtures/$fixture.metadump.zst" | xfs_mdrestore - "$work/base.img"

# run LABEL TOOL [ARGS...]: one stress run on a fresh copy; prints "OPS/S DONE" (DONE: checks + repairs)
run() {
  local tool=$1; shift
  cp --sparse=always "$work/base.img" "$work/run.img"
  rm -f "$work/run.img.xfbtree-journal"
  # shellcheck disable=SC2086
  $tool stress "$work/run.img" --ops "$ops" --threads 2 --no-progress "$@" >"$work/out.txt" 2>&1 || {
    echo "error: stress failed:" >&2; tail -20 "$work/out.txt" >&2; exit 1; }
  local rate done
  rate=$(sed -n 's/^stress: .* s: \([0-9]*\) ops\/s.*/\1/p' "$work/out.txt")
  done=$(sed -n -e 's/^online-repair: nlinks: \([0-9]*\) checks.*/\1/p' -e 's/^online-repair: AG trees: \([0-9]*\) repairs.*/\1/p' \
    -e 's/^online-repair: \([0-9]*\) repairs (.*/\1/p' "$work/out.txt" | awk '{s += $1} END {print s + 0}')
  echo "$rate $done"
}

echo "# fixture $fixture, stress --ops $ops --threads 2; with: --online-repair --structures $structures $extra"
echo "# $(nproc) cores; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A alone with ratios
for ((r = 1; r <= rounds; r++)); do
  for b in "${builds[@]}"; do
    name=${b%%=*} tool=${b#*=} args=""
    if [[ $tool == *"|"* ]]; then args=${tool#*|} tool=${tool%%|*}; fi
    read -r a _ < <(run "$tool")
    # shellcheck disable=SC2086
    read -r w n < <(run "$tool" --online-repair --structures "$structures" $extra $args)
    alone[$name]+="$a "
    with[$name]+="$w "
    ratio=$(awk -v a="$a" -v w="$w" 'BEGIN {printf "%.2f", w / a}')
    ratios[$name]+="$ratio "
    echo "round $r $name: alone $a with $w (done $n) ratio $ratio load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for b in "${builds[@]}"; do
  name=${b%%=*}
  ma=$(echo "${alone[$name]}" | median) mw=$(echo "${with[$name]}" | median)
  echo "median $name: alone $ma with $mw ratio $(awk -v a="$ma" -v w="$mw" 'BEGIN {printf "%.2f", w / a}') (median of the rounds' ratios $(echo "${ratios[$name]}" | median))"
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
