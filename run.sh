#!/usr/bin/env bash
# The main job, end to end: make a real, populated XFS image (mkfs.xfs with a prototype file; nothing mounted),
# check and dump its reverse mappings, damage its rmap btree with xfs_db, find the damage, repair it, check
# again, and let xfs_repair -n witness the result.
set -uo pipefail
cd "$(dirname "$0")"
PATH="$PATH:/usr/sbin:/sbin"
scripts/ensure-tools.sh || exit 2

step() { printf '\n== %s\n' "$*" >&2; }

step "building xfbtree (Release)"
dotnet build src/Managed/Xfbtree.Cli/Xfbtree.Cli.csproj -c Release --nologo -v q -o artifacts/cli >/dev/null || {
  echo "build failed; run: dotnet build src/Managed/Xfbtree.Cli/Xfbtree.Cli.csproj -c Release" >&2; exit 2; }
xfbtree() { dotnet artifacts/cli/xfbtree.dll "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img="$work/demo.img"

step "making a 512 MiB XFS image with rmapbt and reflink from a prototype file"
scripts/make-demo-image.sh "$img" 512M || exit 2
xfs_db -r -c 'sb 0' -c 'print agcount agblocks blocksize' "$img" | sed 's/^/   /' >&2

step "xfbtree rmap check on the pristine image"
xfbtree rmap check "$img"; clean_rc=$?
echo "   exit code $clean_rc (0 = the on-disk rmap btrees match the computed reverse mappings)" >&2

step "xfbtree rmap dump --source ondisk (first 12 of $(xfbtree rmap dump "$img" --source ondisk | tail -n +2 | wc -l) records)"
xfbtree rmap dump "$img" --source ondisk | head -n 13

step "damaging the rmapbt of AG 2 with xfs_db (one leaf record gets a wrong owner)"
xfs_db -x -c 'agf 2' -c 'addr rmaproot' -c 'addr ptrs[3]' -c 'write -d recs[5].owner 4242' "$img" 2>&1 | sed 's/^/   /' >&2

step "xfbtree rmap check on the damaged image (expect exit 1 and a report naming AG 2)"
xfbtree rmap check "$img"; damaged_rc=$?
echo "   exit code $damaged_rc" >&2

step "xfbtree rmap repair"
xfbtree rmap repair "$img"; repair_rc=$?
echo "   exit code $repair_rc" >&2

step "xfbtree rmap check after the repair (expect exit 0)"
xfbtree rmap check "$img"; after_rc=$?
echo "   exit code $after_rc" >&2

step "outside witness: xfs_repair -n"
xfs_repair -n "$img" >"$work/repair.log" 2>&1; witness_rc=$?
echo "   xfs_repair -n exit code $witness_rc" >&2
[ "$witness_rc" = 0 ] || tail -n 20 "$work/repair.log" >&2

verdict() { [ "$1" = "$2" ] && echo "ok (exit $1)" || echo "UNEXPECTED (exit $1, wanted $2)"; }
step "summary"
{
  echo "   check, pristine image:     $(verdict $clean_rc 0)"
  echo "   check, damaged image:      $(verdict $damaged_rc 1)"
  echo "   repair:                    $(verdict $repair_rc 0)"
  echo "   check after repair:        $(verdict $after_rc 0)"
  echo "   xfs_repair -n after:       $(verdict $witness_rc 0)"
} >&2
[ "$clean_rc" = 0 ] && [ "$damaged_rc" = 1 ] && [ "$repair_rc" = 0 ] && [ "$after_rc" = 0 ] && [ "$witness_rc" = 0 ]
