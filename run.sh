#!/usr/bin/env bash
# The main job: make a real, populated XFS image (mkfs.xfs with a prototype file; nothing mounted), then let
# Xfbtree compute every reverse mapping, check the on-disk rmap btree against it and dump it, with
# xfs_repair -n as the outside witness.
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

step "xfbtree rmap check (expected rmap set vs the on-disk rmap btrees)"
xfbtree rmap check "$img"; check_rc=$?
echo "   exit code $check_rc" >&2

step "xfbtree rmap dump --source ondisk (first 12 records of $(xfbtree rmap dump "$img" --source ondisk | tail -n +2 | wc -l))"
xfbtree rmap dump "$img" --source ondisk | head -n 13

step "outside witness: xfs_repair -n"
xfs_repair -n "$img" >"$work/repair.log" 2>&1; repair_rc=$?
echo "   xfs_repair -n exit code $repair_rc" >&2

step "summary"
printf '   xfbtree rmap check: %s\n   xfs_repair -n:      %s\n' \
  "$([ $check_rc = 0 ] && echo clean || echo "exit $check_rc")" "$([ $repair_rc = 0 ] && echo clean || echo "exit $repair_rc")" >&2
[ "$check_rc" = 0 ] && [ "$repair_rc" = 0 ]
