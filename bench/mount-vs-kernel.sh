#!/usr/bin/env bash
# Runs the same workloads, in one run and one process tree, on three mounts of equal size:
#   xfbtree  `xfbtree mount` of a fresh XFS image (mkfs.xfs, rmapbt and reflink on),
#   kernel   the kernel's XFS on a loop mount of a copy of that image,
#   fuse2fs  e2fsprogs' FUSE driver on a fresh ext4 image (Debian package fuse2fs).
# Workloads: untar of a source tree (then sync -f), a stat walk of it, cp -a of it inside the mount, rm -rf of the
# copy (then sync -f), sequential write of SEQ MiB with dd bs=1M and a final fsync, its read (the file's cached
# pages dropped first with dd iflag=nocache), and 4 KiB random overwrites with an fdatasync every 32 writes (fio).
# Prints a table (seconds; IOPS for fio) and one line per workload:
#   WORKLOAD vs_kernel=X vs_fuse2fs=Y     (X, Y: the other file system's time / xfbtree's time; IOPS ratio for fio)
# A workload that fails on a file system shows "failed" (and the ratios "n/a").
#
# Usage: bench/mount-vs-kernel.sh [--quick] [TREE...]
#   --quick  smaller versions of the same workloads, to iterate: untar source /usr/lib/python3.11 only (about
#            5,000 entries, 100 MB), 256 MiB sequential, 5 s of fio (each still settable below)
#   TREE     directories archived as the untar source (default: /usr/lib/python3.11 /usr/share/doc, about 8,000
#            entries and 190 MB on Debian 12)
# Environment: MOUNT_BENCH_SIZE_MIB (default 4096), MOUNT_BENCH_SEQ_MIB (default 1024), MOUNT_BENCH_FIO_SECONDS
# (default 20), MOUNT_BENCH_THREADS (xfbtree mount --threads, default its own), MOUNT_BENCH_FS (the file systems
# to run, default "xfbtree kernel fuse2fs"), MOUNT_BENCH_XFBTREE_OPTIONS (more `xfbtree mount` options, for
# example --writeback-cache; without any the mount's default, write-through, is measured), MOUNT_BENCH_PERF_DIR (a directory: each xfbtree workload is also
# recorded there with `perf record -g` on the server, WORKLOAD.perf.data, with managed symbols through
# DOTNET_PerfMapEnabled=1 and DOTNET_EnableWriteXorExecute=0; read with `perf report -i DIR/WORKLOAD.perf.data`),
# MOUNT_BENCH_XFBTREE_DLL (an xfbtree.dll to run instead of building this tree's: a copy of another build's
# bin/Release/net10.0, to alternate two builds in the same minutes), MOUNT_BENCH_WORKLOADS (the workloads to run, default
# all: "untar statwalk copy remove seqwrite seqread randwrite"; seqread reads seqwrite's file).
# The server's CPU time (user + system, from /proc/PID/stat) during each xfbtree workload is printed after the table.
# Needs root, /dev/fuse, xfsprogs, e2fsprogs, fuse2fs, fio (apt-get install fuse2fs fio).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PATH="$PATH:/usr/sbin:/sbin"
quick=0
if [ "${1:-}" = --quick ]; then quick=1; shift; fi
size=${MOUNT_BENCH_SIZE_MIB:-4096}
if [ $quick = 1 ]; then
  seq=${MOUNT_BENCH_SEQ_MIB:-256}
  fio_seconds=${MOUNT_BENCH_FIO_SECONDS:-5}
else
  seq=${MOUNT_BENCH_SEQ_MIB:-1024}
  fio_seconds=${MOUNT_BENCH_FIO_SECONDS:-20}
fi
read -r -a filesystems <<< "${MOUNT_BENCH_FS:-xfbtree kernel fuse2fs}"
perf_dir=${MOUNT_BENCH_PERF_DIR:-}
trees=("$@")
if [ ${#trees[@]} -eq 0 ]; then
  if [ $quick = 1 ]; then trees=(/usr/lib/python3.11); else trees=(/usr/lib/python3.11 /usr/share/doc); fi
fi

[ "$(id -u)" -eq 0 ] || { echo "error: needs root (loop and FUSE mounts)" >&2; exit 2; }
[ -e /dev/fuse ] || { echo "error: no /dev/fuse" >&2; exit 2; }
for tool in mkfs.xfs mkfs.ext4 fuse2fs fio dd tar; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install xfsprogs e2fsprogs fuse2fs fio)" >&2; exit 2; }
done

if [ -n "${MOUNT_BENCH_XFBTREE_DLL:-}" ]; then
  xfbtree=(dotnet "$MOUNT_BENCH_XFBTREE_DLL")
else
  dotnet build src/Managed/Xfbtree.Cli -c Release --nologo -v q >/dev/null || { echo "error: build failed" >&2; exit 2; }
  xfbtree=(dotnet "$repo/src/Managed/Xfbtree.Cli/bin/Release/net10.0/xfbtree.dll")
fi

work=$(mktemp -d /var/tmp/mount-bench.XXXXXX)
xfb_pid=""
cleanup() {
  for m in "$work"/mnt-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  [ -n "$xfb_pid" ] && wait "$xfb_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "load: $(uptime)"
echo "source: ${trees[*]}"
archive="$work/source.tar"
tar cf "$archive" --absolute-names "${trees[@]}" 2>/dev/null
echo "archive: $(tar tf "$archive" | wc -l) entries, $(( $(stat -c %s "$archive") >> 20 )) MiB; images of $size MiB"

truncate -s "${size}M" "$work/xfs.img"
mkfs.xfs -q -m rmapbt=1,reflink=1 "$work/xfs.img"
cp --sparse=always "$work/xfs.img" "$work/kernel.img"
truncate -s "${size}M" "$work/ext4.img"
mkfs.ext4 -q -F "$work/ext4.img"
mkdir -p "$work/mnt-xfbtree" "$work/mnt-kernel" "$work/mnt-fuse2fs"

[ -n "$perf_dir" ] && { mkdir -p "$perf_dir"; export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0; }
# shellcheck disable=SC2086 # options split on purpose
"${xfbtree[@]}" mount "$work/xfs.img" "$work/mnt-xfbtree" ${MOUNT_BENCH_THREADS:+--threads "$MOUNT_BENCH_THREADS"} ${MOUNT_BENCH_XFBTREE_OPTIONS:-} \
  > "$work/xfbtree.out" 2> "$work/xfbtree.err" &
xfb_pid=$!
for _ in $(seq 240); do grep -q "^mounted " "$work/xfbtree.out" 2>/dev/null && break; kill -0 "$xfb_pid" 2>/dev/null || break; sleep 0.25; done
grep -q "^mounted " "$work/xfbtree.out" || { echo "error: xfbtree mount failed: $(cat "$work/xfbtree.err")" >&2; exit 2; }
mount -o loop,nouuid "$work/kernel.img" "$work/mnt-kernel"
fuse2fs -o rw "$work/ext4.img" "$work/mnt-fuse2fs"
declare -A result
for fs in xfbtree kernel fuse2fs; do for w in untar statwalk copy remove seqwrite seqread randwrite; do result[$fs,$w]=skipped; done; done

now() { date +%s.%N; }
# time_it FS WORKLOAD COMMAND...: seconds into result[FS,WORKLOAD], or "failed".
time_it() {
  local fs=$1 workload=$2; shift 2
  local start end
  local perf_pid="" cpu_before=""
  if [ -n "$perf_dir" ] && [ "$fs" = xfbtree ]; then
    perf record -q -g -p "$xfb_pid" -o "$perf_dir/$workload.perf.data" > "$perf_dir/$workload.perf.log" 2>&1 &
    perf_pid=$!
    sleep 1 # perf attaches to every thread before the workload starts
  fi
  [ "$fs" = xfbtree ] && cpu_before=$(server_cpu_ticks)
  start=$(now)
  if "$@" > "$work/$fs-$workload.log" 2>&1; then
    end=$(now)
    result[$fs,$workload]=$(echo "$end - $start" | bc -l | awk '{printf "%.2f", $1}')
  else
    result[$fs,$workload]=failed
  fi
  if [ -n "$cpu_before" ]; then
    server_cpu[$workload]=$(echo "$(server_cpu_ticks) $cpu_before $(getconf CLK_TCK)" | awk '{printf "%.2f", ($1 - $2) / $3}')
  fi
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid"; fi
}
# utime + stime of the xfbtree server, in clock ticks (fields 14 and 15 of /proc/PID/stat, after the command name).
server_cpu_ticks() { sed 's/.*) //' "/proc/$xfb_pid/stat" | awk '{print $12 + $13}'; }
declare -A server_cpu
untar() { tar xf "$archive" -C "$1/tree" && sync -f "$1"; }
statwalk() { find "$1/tree" -printf '%s %m %T@\n' > /dev/null; }
copy() { cp -a "$1/tree" "$1/copy" && sync -f "$1"; }
remove() { rm -rf "$1/copy" && sync -f "$1"; }
seqwrite() { dd if=/dev/zero of="$1/seq" bs=1M count="$seq" conv=fsync status=none; }
seqread() { dd if="$1/seq" iflag=nocache count=0 status=none; dd if="$1/seq" of=/dev/null bs=1M status=none; }
randwrite() {
  fio --name=rand --directory="$1" --filename=fio.dat --size=256M --rw=randwrite --bs=4k --ioengine=psync \
      --fdatasync=32 --runtime="$fio_seconds" --time_based --output-format=terse --terse-version=3 > "$1.fio" \
    && awk -F';' '{print $49}' "$1.fio" > "$1.iops"
}

read -r -a workloads <<< "${MOUNT_BENCH_WORKLOADS:-untar statwalk copy remove seqwrite seqread randwrite}"
for fs in "${filesystems[@]}"; do
  m="$work/mnt-$fs"
  mkdir -p "$m/tree"
  for w in "${workloads[@]}"; do
    echo "  $fs: $w" >&2
    time_it "$fs" "$w" "$w" "$m"
    if [ "$w" = randwrite ] && [ "${result[$fs,$w]}" != failed ]; then result[$fs,$w]=$(cat "$m.iops"); fi
  done
done

printf '%-10s %10s %10s %10s\n' workload xfbtree kernel fuse2fs
for w in "${workloads[@]}"; do
  printf '%-10s %10s %10s %10s\n' "$w" "${result[xfbtree,$w]}" "${result[kernel,$w]}" "${result[fuse2fs,$w]}"
done
echo "(seconds; randwrite in IOPS; untar source ${trees[*]}, seq $seq MiB, fio $fio_seconds s; xfbtree mount options: ${MOUNT_BENCH_XFBTREE_OPTIONS:-none (the default: write-through)}; xfbtree: ${xfbtree[1]})"
echo "load: $(uptime)"
line="xfbtree server CPU (s):"
for w in "${workloads[@]}"; do line="$line $w=${server_cpu[$w]:-n/a}"; done
echo "$line"
ratio() { # other, ours, higher_is_better
  local other=$1 ours=$2
  case "$other $ours" in *failed*|*skipped*) echo n/a; return;; esac
  if [ "$3" = 1 ]; then echo "$ours $other" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "n/a" }'
  else echo "$other $ours" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "n/a" }'; fi
}
for w in "${workloads[@]}"; do
  higher=0; [ "$w" = randwrite ] && higher=1
  echo "$w vs_kernel=$(ratio "${result[kernel,$w]}" "${result[xfbtree,$w]}" $higher) vs_fuse2fs=$(ratio "${result[fuse2fs,$w]}" "${result[xfbtree,$w]}" $higher)"
done
for fs in xfbtree kernel fuse2fs; do
  for w in "${workloads[@]}"; do
    [ "${result[$fs,$w]}" = failed ] && echo "$fs $w failed: $(tail -n 2 "$work/$fs-$w.log" | tr '\n' ' ')"
  done
done

umount "$work/mnt-fuse2fs"; umount "$work/mnt-kernel"; umount "$work/mnt-xfbtree"
wait "$xfb_pid"; rc=$?; xfb_pid=""
echo "xfbtree mount exit $rc"
xfs_repair -n "$work/xfs.img" > /dev/null 2>&1 && echo "xfs_repair -n: clean" || echo "xfs_repair -n: problems found"
