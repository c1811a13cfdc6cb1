#!/usr/bin/env bash
# The main job, end to end: make a real, populated XFS image (mkfs.xfs with a prototype file; nothing mounted),
# check and dump its reverse mappings, damage its rmap btree with xfs_db, find the damage, repair it, check
# again, and let xfs_repair -n witness the result. Then the online half: damage the rmap btree again, serve the
# image with `xfbtree mount` while tar extracts a few thousand files onto it, the mount finds the damage and
# repairs it online, and after the unmount the same witnesses (rmap check, xfs_repair -n) plus the kernel reading
# the extracted files back. Without FUSE or root, the online repair runs under `xfbtree stress` instead.
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
server=""
cleanup() {
  # Never leave a mount or a server behind.
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null; wait "$server" 2>/dev/null; fi
  mountpoint -q "$work/mnt" 2>/dev/null && umount -l "$work/mnt"
  mountpoint -q "$work/kernel" 2>/dev/null && umount "$work/kernel"
  rm -rf "$work"
}
trap cleanup EXIT
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
offline_ok=0
[ "$clean_rc" = 0 ] && [ "$damaged_rc" = 1 ] && [ "$repair_rc" = 0 ] && [ "$after_rc" = 0 ] && [ "$witness_rc" = 0 ] && offline_ok=1

# ------------------------------------------------------------------------------------------------ online half
online_ok=0
online_lines=()
if [ "$(id -u)" = 0 ] && [ -e /dev/fuse ]; then
  step "online: damaging the rmapbt root of AG 0 again with xfs_db (its CRC no longer matches: a verifier failure at the first read)"
  xfs_db -x -c 'agf 0' -c 'addr rmaproot' -c 'write -c lsn 0x100000001' "$img" 2>&1 | sed 's/^/   /' >&2
  xfbtree rmap check "$img" --ag 0 >/dev/null; online_damaged_rc=$?
  echo "   xfbtree rmap check --ag 0: exit $online_damaged_rc (1 = damaged)" >&2

  src=/usr/share/doc
  [ "$(find "$src" 2>/dev/null | head -n 2000 | wc -l)" -ge 2000 ] || src="$PWD/docs"   # a machine without /usr/share/doc: a smaller tree
  tar cf "$work/source.tar" -C "$(dirname "$src")" "$(basename "$src")" 2>/dev/null
  mkdir -p "$work/mnt" "$work/kernel"
  step "online: xfbtree mount $img DIR --online-repair-every 3, then tar extracts $(tar tf "$work/source.tar" | wc -l) entries ($(du -sh "$src" | cut -f1)) of $src onto it"
  xfbtree mount "$img" "$work/mnt" --online-repair-every 3 >"$work/mount.out" 2>"$work/mount.err" &
  server=$!
  for _ in $(seq 1 120); do grep -q '^mounted ' "$work/mount.out" 2>/dev/null && break; kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
  sed 's/^/   /' "$work/mount.out" >&2
  if grep -q '^mounted ' "$work/mount.out"; then
    start=$(date +%s.%N)
    tar xf "$work/source.tar" -C "$work/mnt"; untar_rc=$?
    echo "   tar exit code $untar_rc in $(printf "%.1f" "$(echo "$(date +%s.%N) - $start" | bc)") s" >&2
    step "online: what the mount logged (the damage found, the AG marked sick, repaired online, the request run again)"
    grep -E 'is sick|healthy again|runs again' "$work/mount.err" | head -n 6 | sed 's/^/   /' >&2
    grep -q 'AG 0 is sick' "$work/mount.err" && found=0 || found=1
    step "online: xfbtree health DIR (asked through the mount's repair channel, root or the mount's owner only)"
    xfbtree health "$work/mnt" | sed 's/^/   /'; health_rc=${PIPESTATUS[0]}
    step "online: xfbtree rmap repair --online DIR --verify (every AG rebuilt while the mount serves; each compared with a scan made with commits paused)"
    xfbtree rmap repair --online "$work/mnt" --verify | sed 's/^/   /'; online_repair_rc=${PIPESTATUS[0]}
    diff -r --no-dereference "$src" "$work/mnt/$(basename "$src")" >"$work/diff.log" 2>&1; mounted_diff_rc=$?
    echo "   diff -r of the source and the mount: exit $mounted_diff_rc" >&2
    [ "$mounted_diff_rc" = 0 ] || head -n 5 "$work/diff.log" >&2
    step "online: umount DIR (the server checkpoints its journal and closes the image cleanly)"
    umount "$work/mnt"; wait "$server"; server_rc=$?; server=""
    sed 's/^/   /' "$work/mount.out" | tail -n 1 >&2
    echo "   xfbtree mount exit code $server_rc" >&2

    step "online: outside witnesses: xfbtree rmap check, xfs_repair -n, the kernel mounting the image and reading the files back"
    xfbtree rmap check "$img" >/dev/null; online_check_rc=$?
    echo "   xfbtree rmap check exit code $online_check_rc" >&2
    xfs_repair -n "$img" >"$work/repair2.log" 2>&1; online_witness_rc=$?
    echo "   xfs_repair -n exit code $online_witness_rc" >&2
    [ "$online_witness_rc" = 0 ] || tail -n 20 "$work/repair2.log" >&2
    kernel_rc=1
    if mount -o loop,ro,nouuid "$img" "$work/kernel"; then
      diff -r --no-dereference "$src" "$work/kernel/$(basename "$src")" >"$work/diff2.log" 2>&1; kernel_rc=$?
      umount "$work/kernel"
    fi
    echo "   the kernel's XFS reads back the same tree (diff -r): exit $kernel_rc" >&2
    [ "$kernel_rc" = 0 ] || head -n 5 "$work/diff2.log" >&2
    online_lines=(
      "online: damage found while mounted: $(verdict $found 0)"
      "online: untar onto the mount:       $(verdict $untar_rc 0)"
      "online: the mount has the files:    $(verdict $mounted_diff_rc 0)"
      "online: health after the repair:    $(verdict $health_rc 0)"
      "online: rmap repair --online:       $(verdict $online_repair_rc 0)"
      "online: mount closed cleanly:       $(verdict $server_rc 0)"
      "online: rmap check after:           $(verdict $online_check_rc 0)"
      "online: xfs_repair -n after:        $(verdict $online_witness_rc 0)"
      "online: kernel reads the files:     $(verdict $kernel_rc 0)"
    )
    [ "$online_damaged_rc" = 1 ] && [ "$found" = 0 ] && [ "$untar_rc" = 0 ] && [ "$health_rc" = 0 ] && [ "$online_repair_rc" = 0 ] \
      && [ "$mounted_diff_rc" = 0 ] && [ "$server_rc" = 0 ] && [ "$online_check_rc" = 0 ] && [ "$online_witness_rc" = 0 ] && [ "$kernel_rc" = 0 ] && online_ok=1
  else
    wait "$server"; echo "   xfbtree mount did not mount (exit $?):" >&2; sed 's/^/   /' "$work/mount.err" >&2; server=""
    online_lines=("online: xfbtree mount:            UNEXPECTED (it did not mount)")
  fi
else
  why="not root"; [ -e /dev/fuse ] || why="no /dev/fuse"
  step "online: $why, so no xfbtree mount here: the online repair runs under xfbtree stress instead"
  xfbtree stress "$img" --ops 400 --threads 2 --online-repair --verify-repairs | tail -n 3 | sed 's/^/   /'; stress_rc=${PIPESTATUS[0]}
  xfbtree rmap check "$img" >/dev/null; online_check_rc=$?
  xfs_repair -n "$img" >/dev/null 2>&1; online_witness_rc=$?
  online_lines=(
    "online: (no mount: $why)"
    "online: stress --online-repair:     $(verdict $stress_rc 0)"
    "online: rmap check after:           $(verdict $online_check_rc 0)"
    "online: xfs_repair -n after:        $(verdict $online_witness_rc 0)"
  )
  [ "$stress_rc" = 0 ] && [ "$online_check_rc" = 0 ] && [ "$online_witness_rc" = 0 ] && online_ok=1
fi

step "summary"
{
  echo "   check, pristine image:     $(verdict $clean_rc 0)"
  echo "   check, damaged image:      $(verdict $damaged_rc 1)"
  echo "   repair:                    $(verdict $repair_rc 0)"
  echo "   check after repair:        $(verdict $after_rc 0)"
  echo "   xfs_repair -n after:       $(verdict $witness_rc 0)"
  for line in "${online_lines[@]}"; do echo "   $line"; done
  echo "   ($SECONDS s in all, the build included)"
} >&2
[ "$offline_ok" = 1 ] && [ "$online_ok" = 1 ]
