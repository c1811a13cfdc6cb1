#!/usr/bin/env bash
# The field's outside exercisers (xfstests' fsx and fsstress, pjdfstest) against `xfbtree mount --online-repair-every
# 1` on mkfs geometries the fixtures do not have (docs/mount.md, "Outside exercisers"). Each case: mkfs.xfs (with
# the test-only override that allows filesystems below 300 MB and a single AG), optionally filled by the kernel
# first, mounted, exercised, unmounted; then xfs_repair -n, xfbtree scrub, and the kernel reading every file back
# (loop mount, where it can mount the geometry: not 64 KiB blocks on a 4 KiB-page machine, not a log mkfs made
# smaller than this kernel accepts). Prints one line per step and `RESULT NAME fail=0|1`; exits 1 when a case failed.
#
#   bench/hostile-geometries.sh [--only NAME[,NAME...]] [--list]
#
# The exercisers are built outside the repository (their code is never committed):
#   FSX=/path/fsx FSSTRESS=/path/fsstress (xfstests ltp/, built against xfslibs-dev), PJDFSTEST=/path/pjdfstest
#   (the source tree with the built `pjdfstest` binary and tests/), XFBTREE=/path/xfbtree (default: the build in
#   artifacts, else `dotnet src/Managed/Xfbtree.Cli/bin/Release/net10.0/xfbtree.dll`). WORK=/tmp/hostile by default.
# A case whose exerciser is not given is reported skipped, never passed. Needs root, /dev/fuse and loop devices.
# About 40 minutes for every case on 2 busy cores.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/hostile}
only="" list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=",$2,"; shift 2 ;;
    --list) list=1; shift ;;
    *) echo "usage: $0 [--only NAME[,NAME...]] [--list]" >&2; exit 2 ;;
  esac
done
if [ -n "${XFBTREE:-}" ]; then xfbtree=($XFBTREE)
elif [ -x "$here/artifacts/cli/xfbtree" ]; then xfbtree=("$here/artifacts/cli/xfbtree")
else xfbtree=(dotnet "$here/src/Managed/Xfbtree.Cli/bin/Release/net10.0/xfbtree.dll"); fi
export TEST_DIR=$work TEST_DEV=$work/none QA_CHECK_FS=1   # mkfs.xfs: allow < 300 MB and agcount=1 (as xfstests does)
pjd_tests="chmod chown link mkdir open rename rmdir symlink truncate unlink"

# Not here: -d su=64k,sw=4 (mkfs.xfs 6.1 itself leaves the log's AG with agf_freeblks 9 and no free extent, which
# xfs_repair -n and scrub report on the fresh image) and -n version=ci (the engine refuses namespace changes there,
# EOPNOTSUPP; this kernel no longer mounts it).
# NAME|SIZE|MKFS OPTIONS|MOUNT OPTIONS|WORKLOADS (fsx fsxmore fss enospc prefill pjd)
cases=(
  "bs1k|512M|-b size=1024 -m rmapbt=1,reflink=1||fsx fss"
  "bs2k|512M|-b size=2048 -m rmapbt=1,reflink=1||fsx fss"
  "bs64k|1G|-b size=65536 -m rmapbt=1,reflink=1||fsx fsxmore fss"
  "dir8k|512M|-n size=8192 -m rmapbt=1||fsx fss"
  "dir64k|512M|-n size=65536 -m rmapbt=1||fsx fss"
  "inode512|512M|-i size=512 -m rmapbt=1||fsx fss"
  "inode1k|512M|-i size=1024 -m rmapbt=1||fsx fss"
  "inode2k|512M|-i size=2048 -m rmapbt=1||fsx fss"
  "ag1|512M|-d agcount=1 -m rmapbt=1||fsx fss"
  "ag32|4G|-d agcount=32 -m rmapbt=1||fsx fss"
  "logmin|512M|-l size=3075b -m rmapbt=1||fsx fss"
  "unsparse|512M|-m rmapbt=1,reflink=0,finobt=0 -i sparse=0||fsx fsxmore fss"
  "nrext64|512M|-m rmapbt=1 -i nrext64=1||fsx fss"
  "oldfeatures|512M|-m rmapbt=1,bigtime=0,inobtcount=0||fsx fss"
  "maxpct1|64M|-i maxpct=1 -m rmapbt=1||enospc"
  "wbc-bs1k|512M|-b size=1024 -m rmapbt=1|--writeback-cache|fsx fss"
  "wbc-dir64k|512M|-n size=65536 -i size=2048 -m rmapbt=1|--writeback-cache|fsx fss"
  "wbc-ag32|4G|-d agcount=32 -m rmapbt=1|--writeback-cache|fsx fsxmore fss"
  "tiny20m|20M|-m rmapbt=1||enospc"
  "tiny32m-bs1k|32M|-b size=1024 -m rmapbt=1||enospc"
  "tiny48m-ag1-inode2k|48M|-d agcount=1 -i size=2048 -m rmapbt=1||enospc"
  "tiny64m-unsparse|64M|-m rmapbt=1,reflink=0,finobt=0 -i sparse=0||enospc"
  "bs64k-enospc|512M|-b size=65536 -m rmapbt=1||enospc"
  "prefill-bs2k|300M|-b size=2048 -m rmapbt=1||prefill fss fsx"
  "prefill-ag1|64M|-d agcount=1 -m rmapbt=1||prefill fss fsx"
  "pjd-bs1k|512M|-b size=1024 -m rmapbt=1||pjd"
  "pjd-dir64k|512M|-n size=65536 -i size=2048 -m rmapbt=1||pjd"
)
if [ $list = 1 ]; then printf '%s\n' "${cases[@]}"; exit 0; fi

mnt="" kmnt="" server=""
cleanup() {
  [ -n "$mnt" ] && mountpoint -q "$mnt" && umount -l "$mnt"
  [ -n "$kmnt" ] && mountpoint -q "$kmnt" && umount "$kmnt"
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  mnt="" kmnt="" server=""
}
trap cleanup EXIT INT TERM

has() { case " $workloads " in *" $1 "*) return 0 ;; esac; return 1; }
step() { echo "$name: $*"; }
failed=0
for c in "${cases[@]}"; do
  IFS='|' read -r name size mkfs mopts workloads <<< "$c"
  [ -n "$only" ] && [[ $only != *",$name,"* ]] && continue
  fail=0 d=$work/$name img=$work/$name/img
  rm -rf "$d"; mkdir -p "$d/mnt" "$d/k"
  truncate -s "$size" "$img"
  if ! mkfs.xfs -f -q $mkfs "$img" > "$d/mkfs.out" 2>&1; then step "SKIPPED: mkfs.xfs refuses $mkfs: $(head -1 "$d/mkfs.out")"; continue; fi
  if has prefill; then
    kmnt=$d/k
    if mount -o loop "$img" "$kmnt" 2>/dev/null; then
      mkdir "$kmnt/old"; for i in $(seq 1 1500); do head -c $((i * 37 % 9000)) /dev/urandom > "$kmnt/old/s$i"; done
      dd if=/dev/urandom of="$kmnt/old/big" bs=1M 2>/dev/null; rm -f "$kmnt"/old/s1*; sync
      step "prefilled by the kernel: $(df -k "$kmnt" | tail -1 | awk '{print $5}') used"; umount "$kmnt"
    else step "prefill: the kernel cannot mount this geometry"; fi
    kmnt=""
  fi
  extra=(); has pjd && extra=(--allow-other)
  mnt=$d/mnt
  "${xfbtree[@]}" mount "$img" "$mnt" --online-repair-every 1 $mopts "${extra[@]}" > "$d/mount.out" 2> "$d/mount.err" &
  server=$!
  for _ in $(seq 1 600); do grep -q '^mounted ' "$d/mount.out" && break; kill -0 $server 2>/dev/null || break; sleep 0.1; done
  if ! grep -q '^mounted ' "$d/mount.out"; then step "mount failed: $(tail -2 "$d/mount.err")"; cleanup; failed=1; continue; fi
  fsx() { # TAG ARGS...
    local tag=$1; shift
    if [ -z "${FSX:-}" ]; then step "fsx $tag SKIPPED (FSX not set)"; return; fi
    (cd "$mnt" && timeout 900 "$FSX" "$@" > "$d/fsx.$tag.log" 2>&1); local rc=$?
    step "fsx $tag $* rc=$rc $(tail -1 "$d/fsx.$tag.log")"; [ $rc = 0 ] || fail=1
  }
  fsstress() { # DIR LOG ARGS...
    local dir=$1 log=$2; shift 2
    if [ -z "${FSSTRESS:-}" ]; then step "fsstress SKIPPED (FSSTRESS not set)"; return 0; fi
    mkdir -p "$mnt/$dir" || return 1; timeout 1200 "$FSSTRESS" -d "$mnt/$dir" "$@" > "$d/$log" 2>&1
  }
  if has fsx; then
    fsx s1 -q -N 4000 -S 11 -l 1048576 f1
    fsx s2 -q -N 4000 -S 22 f2
    fsx z -q -N 2000 -S 33 -Z -r 4096 -w 4096 -t 4096 -l 1048576 f3
  fi
  if has fsxmore; then
    fsx m1 -q -N 6000 -S 101 -l 4194304 g1
    fsx m2 -q -N 6000 -S 202 -o 131072 g2
    fsx mz1 -q -N 3000 -S 303 -Z -r 4096 -w 4096 -t 4096 -l 2097152 g3
    fsx mz2 -q -N 3000 -S 404 -Z -r 512 -w 512 -t 512 g4
  fi
  if has fss; then
    fsstress fss fss.log -p 6 -n 3000 -s 7; rc=$?; step "fsstress -p 6 -n 3000 rc=$rc"; [ $rc = 0 ] || fail=1
  fi
  if has enospc; then
    # Fill until ENOSPC: fsstress with its errnos counted (28 ENOSPC expected; 5 EIO or 117 EUCLEAN is a failure),
    # then dd and small files until they fail, then fsstress on the full filesystem and again after freeing space.
    fsstress fill fill.log -p 6 -n 20000 -s 9 -v; rc=$?
    census=$(grep -oE ' [0-9]+$' "$d/fill.log" | sort | uniq -c | sort -rn | awk '{printf "%s:%s ", $2, $1}')
    step "fsstress fill rc=$rc errno:count $census"; [ $rc = 0 ] || fail=1
    grep -qE ' (5|117)$' "$d/fill.log" && { step "EIO or EUCLEAN during the fill"; fail=1; }
    dd if=/dev/urandom of="$mnt/dd" bs=1M > "$d/dd.log" 2>&1
    grep -q 'No space left on device' "$d/dd.log" || { step "dd did not end with ENOSPC: $(tail -1 "$d/dd.log")"; fail=1; }
    for i in $(seq 1 5000); do { echo x > "$mnt/small$i"; } 2> "$d/small.err" || break; done
    step "dd $(tail -1 "$d/dd.log" | cut -d, -f1); small files until $i: $(cut -d: -f3- "$d/small.err")"
    [ -s "$d/small.err" ] && ! grep -q 'No space left on device' "$d/small.err" && fail=1
    step "df when full: $(df -k "$mnt" | tail -1 | awk '{print $2, $3, $4, $5}')"
    fsstress fill fill2.log -p 4 -n 3000 -s 10; rc=$?; step "fsstress on the full filesystem rc=$rc"; [ $rc = 0 ] || fail=1
    rm -rf "$mnt/dd" "$mnt/fill/p0" "$mnt/fill/p1"   # fsstress's first two processes' trees
    fsstress fill3 fill3.log -p 4 -n 3000 -s 12; rc=$?; step "fsstress after freeing rc=$rc"; [ $rc = 0 ] || fail=1
  fi
  if has pjd; then
    if [ -z "${PJDFSTEST:-}" ]; then step "pjdfstest SKIPPED (PJDFSTEST not set)"
    else
      mkdir "$mnt/pjd"
      (cd "$mnt/pjd" && timeout 2400 prove -r $(for t in $pjd_tests; do echo "$PJDFSTEST/tests/$t"; done) > "$d/pjd.log" 2>&1); rc=$?
      step "pjdfstest ($pjd_tests) rc=$rc $(grep -E '^Files=|^Result' "$d/pjd.log" | tr '\n' ' ')"
      grep -E '^/.*Failed|Failed tests' "$d/pjd.log" | sed "s/^/$name:   /"
    fi
  fi
  "${xfbtree[@]}" health "$mnt" > "$d/health.out" 2>&1; rc=$?; step "health rc=$rc $(tail -1 "$d/health.out")"; [ $rc = 0 ] || fail=1
  umount "$mnt"; wait $server; rc=$?; server="" mnt=""
  step "mount exit $rc, log lines with error/corrupt/sick: $(grep -ciE 'error|corrupt|sick' "$d/mount.err")"; [ $rc = 0 ] || fail=1
  force=(); [ "$(xfs_db -r -c 'sb 0' -c 'p agcount' "$img" | awk '{print $3}')" = 1 ] && force=(-o force_geometry)
  xfs_repair -n "${force[@]}" "$img" > "$d/repair.out" 2>&1; rc=$?; step "xfs_repair -n rc=$rc"; [ $rc = 0 ] || fail=1
  "${xfbtree[@]}" scrub "$img" --no-progress > "$d/scrub.out" 2>&1; rc=$?; step "scrub rc=$rc $(tail -1 "$d/scrub.out")"; [ $rc = 0 ] || fail=1
  kmnt=$d/k
  if mount -o loop,ro,nouuid "$img" "$kmnt" 2> "$d/kmount.err"; then
    bytes=$(tar cf - -C "$kmnt" . 2> "$d/ktar.err" | wc -c); step "kernel read $bytes bytes, tar errors $(grep -c . "$d/ktar.err")"
    [ -s "$d/ktar.err" ] && fail=1
    umount "$kmnt"
  else step "kernel read-back not possible: $(dmesg | grep -E 'XFS \(loop' | tail -1 | cut -d' ' -f3-)"; fi
  kmnt=""
  echo "RESULT $name fail=$fail"
  [ $fail = 0 ] || failed=1
done
exit $failed
