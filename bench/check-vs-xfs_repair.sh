#!/usr/bin/env bash
# Times `xfbtree rmap check` against `xfs_repair -n` on the same image, in one run: wall time and peak RSS of both
# (median of N runs after one warm-up run each, alternating the two tools) and the ratios xfbtree / xfs_repair.
# Then `xfbtree scrub` of the whole image (every AG header and btree, the superblock counters, every link count:
# comparable work to xfs_repair -n; run in the same loop, interleaved with the other two) against the same
# xfs_repair -n figures, with its time per structure.
# Then, on copies whose rmapbt was damaged (the first leaf of the last AG zeroed: xfs_db finds it, dd zeroes it),
# times `xfbtree rmap repair` against `xfs_repair` (writing), a fresh copy for each run of each tool.
#
# The two tools do not do the same amount of work, and the ratios must be read with that in mind:
#   - `xfbtree rmap check` checks the rmap btrees only (it reads every inode and AG header to know which records
#     must exist, but checks nothing else); `xfs_repair -n` checks the whole filesystem (every btree, inode,
#     directory, link count, ...).
#   - `xfbtree rmap repair` rebuilds the damaged rmap btrees only; `xfs_repair` rebuilds every AG's free-space,
#     inode, rmap and refcount btrees and checks the whole filesystem.
# The closest like-for-like figure is printed too: xfs_repair -n's phases 1-4 (superblock, AG headers and
# free space, inode scan, block claims and the rmap comparison: what an rmap check needs) against its whole run,
# from its -v summary (whole seconds only), and xfbtree's split into scan and compare (XFBTREE_TIMING=1). The rmap
# part alone cannot be isolated inside xfs_repair: it collects rmaps while it walks inodes in phases 3 and 4.
#
# Usage: bench/check-vs-xfs_repair.sh IMAGE|FIXTURE [RUNS]
#   IMAGE    an XFS image file (read only), or
#   FIXTURE  a fixture name (e.g. aged-medium): restored from tests/fixtures (or $XFBTREE_SHARED/fixtures) into a
#            temporary directory.
# Environment:
#   XFBTREE_BUILD=aot (default)  the tool published as a native executable (dotnet publish -p:PublishAot=true),
#                 r2r            framework-dependent with ReadyToRun code (dotnet xfbtree.dll),
#                 jit            the plain Release build (dotnet xfbtree.dll), as the tests run it.
# The published tool is cached in artifacts/bench-<build> and rebuilt when the sources change.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PATH="$PATH:/usr/sbin:/sbin"
target=${1:?usage: bench/check-vs-xfs_repair.sh IMAGE|FIXTURE [RUNS]}
runs=${2:-3}
build=${XFBTREE_BUILD:-aot}
scripts/ensure-tools.sh
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time (GNU time) is needed: apt-get install time" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the image
if [ -f "$target" ]; then
  image=$target
else
  fixtures="$repo/tests/fixtures"
  [ -n "${XFBTREE_SHARED:-}" ] && fixtures="$XFBTREE_SHARED/fixtures"
  [ -f "$fixtures/$target.metadump.zst" ] || { echo "error: '$target' is neither an image file nor a fixture in $fixtures" >&2; exit 2; }
  image="$work/$target.img"
  echo "restoring fixture $target ..." >&2
  zstd -dc "$fixtures/$target.metadump.zst" | xfs_mdrestore - "$image"
fi

# --- the tool
out="$repo/artifacts/bench-$build"
stamp=$( (git ls-files -s src; git diff HEAD -- src) | git hash-object --stdin)
if [ "$(cat "$out/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "building xfbtree ($build) ..." >&2
  rm -rf "$out"
  case $build in
    aot) dotnet publish src/Managed/Xfbtree.Cli -c Release -r linux-x64 -p:PublishAot=true -p:PackAsTool=false -o "$out" --nologo -v q >/dev/null ;;
    r2r) dotnet publish src/Managed/Xfbtree.Cli -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true -o "$out" --nologo -v q >/dev/null ;;
    jit) dotnet build src/Managed/Xfbtree.Cli -c Release -o "$out" --nologo -v q >/dev/null ;;
    *) echo "error: XFBTREE_BUILD must be aot, r2r or jit" >&2; exit 2 ;;
  esac
  echo "$stamp" >"$out/.stamp"
fi
if [ "$build" = aot ]; then xfbtree=("$out/xfbtree"); else xfbtree=(dotnet "$out/xfbtree.dll"); fi

# --- one measured run: prints "wall_seconds max_rss_kib exit_code"
measure() {
  local t="$work/time.txt" rc=0
  /usr/bin/time -f "%e %M" -o "$t" "$@" >/dev/null 2>"$work/stderr.txt" || rc=$?
  echo "$(tail -1 "$t") $rc"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "image: $image ($(xfs_db -r -c 'sb 0' -c 'print agcount dblocks' "$image" | tr '\n' ' '))" >&2
echo "warm-up ..." >&2
measure "${xfbtree[@]}" rmap check "$image" >/dev/null
measure xfs_repair -n "$image" >/dev/null
measure "${xfbtree[@]}" scrub "$image" >/dev/null
# The three tools interleaved, run after run, so that the machine's load (shared cores) weighs on each alike.
: >"$work/x.txt"; : >"$work/r.txt"; : >"$work/s.txt"
for i in $(seq "$runs"); do
  read -r w m rc < <(measure "${xfbtree[@]}" rmap check "$image"); echo "$w $m" >>"$work/x.txt"; xrc=$rc
  read -r w m rc < <(measure xfs_repair -n "$image"); echo "$w $m" >>"$work/r.txt"; rrc=$rc
  read -r w m rc < <(measure "${xfbtree[@]}" scrub "$image"); echo "$w $m" >>"$work/s.txt"; src=$rc
  echo "run $i: xfbtree rmap check $(tail -1 "$work/x.txt") (exit $xrc)   xfs_repair -n $(tail -1 "$work/r.txt") (exit $rrc)   xfbtree scrub $(tail -1 "$work/s.txt") (exit $src)" >&2
done
xw=$(cut -d' ' -f1 "$work/x.txt" | median); xm=$(cut -d' ' -f2 "$work/x.txt" | median)
rw=$(cut -d' ' -f1 "$work/r.txt" | median); rm_=$(cut -d' ' -f2 "$work/r.txt" | median)
printf '%-28s %10s %14s %6s\n' "tool ($runs runs, median)" "wall (s)" "peak RSS (KiB)" "exit"
printf '%-28s %10s %14s %6s\n' "xfbtree rmap check [$build]" "$xw" "$xm" "$xrc"
printf '%-28s %10s %14s %6s\n' "xfs_repair -n" "$rw" "$rm_" "$rrc"
awk -v a="$xw" -v b="$rw" -v c="$xm" -v d="$rm_" 'BEGIN { printf "ratio xfbtree / xfs_repair: wall %.2fx, peak RSS %.2fx  (target <= 0.50x)\n", a / b, c / d }'
echo "note: rmap check checks the rmap btrees only; xfs_repair -n checks the whole filesystem"
# The like-for-like part: xfs_repair -n's phases 1-4 (from its -v summary, whole seconds) and xfbtree's own split.
phases=$(xfs_repair -n -v "$image" 2>&1 | awk '/^Phase [1-7]:/ { s = 0; for (i = 1; i <= NF; i++) { if ($i ~ /^seconds?,?$/) s += $(i - 1); if ($i ~ /^minutes?,?$/) s += 60 * $(i - 1) }; t += s; if ($2 <= "4:") p += s } END { printf "%d %d", p, t }')
read -r p14 ptotal <<<"$phases"
echo "xfs_repair -n phases 1-4 (what an rmap check needs): ${p14} s of ${ptotal} s (whole seconds)"
XFBTREE_TIMING=1 "${xfbtree[@]}" rmap check "$image" 2>&1 >/dev/null | sed -n 's/^xfbtree: timing: \(scan [0-9]* ms\).*, \(check [0-9]* ms\).*/xfbtree rmap check: \1 (reading every inode and AG header), \2 (the rmap comparison)/p'

# --- scrub: every AG structure, the superblock counters and every link count (comparable work to xfs_repair -n)
# (measured in the loop above, interleaved with xfs_repair -n)
rw_check=$rw; rm_check=$rm_
sw=$(cut -d' ' -f1 "$work/s.txt" | median); sm=$(cut -d' ' -f2 "$work/s.txt" | median)
printf '%-28s %10s %14s %6s\n' "xfbtree scrub [$build]" "$sw" "$sm" "$src"
awk -v a="$sw" -v b="$rw_check" -v c="$sm" -v d="$rm_check" 'BEGIN { printf "ratio scrub / xfs_repair -n: wall %.2fx, peak RSS %.2fx  (targets <= 0.50x wall, <= 0.30x memory)\n", a / b, c / d }'
# Where the scrub's time goes: the rmap scan, then each structure summed over the AGs (the JSON report's seconds).
"${xfbtree[@]}" scrub --json "$image" >"$work/scrub.json" || true
python3 - "$work/scrub.json" <<'PY'
import json, sys, collections
r = json.load(open(sys.argv[1]))
per = collections.OrderedDict()
for s in r["structures"]:
    per[s["structure"]] = per.get(s["structure"], 0.0) + s["seconds"]
print("scrub time per structure (one run, %.2f s in all): rmap scan %.2f s; " % (r["seconds"], r["scanSeconds"])
      + ", ".join("%s %.2f s" % (k, v) for k, v in per.items())
      + " (AGF holds the three headers; bnobt holds the cntbt's walk; inobt holds reading the directories)")
PY

# --- repair (writing) on a damaged copy
# The byte offset of the leftmost rmapbt leaf of AG $2 in image $1 (xfs_db walks down the first pointers).
leaf_offset() {
  local cmds=(-c "agf $2" -c "addr rmaproot") level
  level=$(xfs_db -r "${cmds[@]}" -c "print level" "$1" | awk '{print $3}')
  while [ "$level" -gt 0 ]; do cmds+=(-c "addr ptrs[1]"); level=$((level - 1)); done
  xfs_db -r "${cmds[@]}" -c "stack" "$1" | awk '/byte offset/ { gsub(",", "", $3); print $3; exit }'
}
{
  lastag=$(( $(xfs_db -r -c 'sb 0' -c 'print agcount' "$image" | awk '{print $3}') - 1 ))
  blocksize=$(xfs_db -r -c 'sb 0' -c 'print blocksize' "$image" | awk '{print $3}')
  damaged="$work/damaged.img"
  cp --sparse=always "$image" "$damaged"
  offset=$(leaf_offset "$damaged" "$lastag")
  [ -n "$offset" ] || { echo "error: no rmapbt leaf found in AG $lastag" >&2; exit 2; }
  dd if=/dev/zero of="$damaged" bs="$blocksize" seek=$((offset / blocksize)) count=1 conv=notrunc status=none
  echo "damage: AG $lastag rmapbt leaf at byte $offset zeroed" >&2
  : >"$work/xr.txt"; : >"$work/rr.txt"
  for i in $(seq "$runs"); do
    cp --sparse=always "$damaged" "$work/a.img"; cp --sparse=always "$damaged" "$work/b.img"
    read -r w m rc < <(measure "${xfbtree[@]}" rmap repair "$work/a.img"); echo "$w $m" >>"$work/xr.txt"; xrc=$rc
    read -r w m rc < <(measure xfs_repair "$work/b.img"); echo "$w $m" >>"$work/rr.txt"; rrc=$rc
    xfs_repair -n "$work/a.img" >/dev/null 2>&1 && verdict=clean || verdict="NOT CLEAN"
    echo "repair run $i: xfbtree $(tail -1 "$work/xr.txt") (exit $xrc, xfs_repair -n afterwards: $verdict)   xfs_repair $(tail -1 "$work/rr.txt") (exit $rrc)" >&2
  done
  xw=$(cut -d' ' -f1 "$work/xr.txt" | median); xm=$(cut -d' ' -f2 "$work/xr.txt" | median)
  rw=$(cut -d' ' -f1 "$work/rr.txt" | median); rm_=$(cut -d' ' -f2 "$work/rr.txt" | median)
  printf '%-28s %10s %14s %6s\n' "xfbtree rmap repair [$build]" "$xw" "$xm" "$xrc"
  printf '%-28s %10s %14s %6s\n' "xfs_repair" "$rw" "$rm_" "$rrc"
  awk -v a="$xw" -v b="$rw" -v c="$xm" -v d="$rm_" 'BEGIN { printf "ratio repair / xfs_repair: wall %.2fx, peak RSS %.2fx  (target <= 0.50x)\n", a / b, c / d }'
  echo "note: rmap repair rebuilds the damaged rmap btrees only; xfs_repair rebuilds every AG's btrees and checks the whole filesystem"
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" 
