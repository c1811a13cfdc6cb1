#!/usr/bin/env bash
# Counts the FUSE requests the kernel sends to `xfbtree mount` per workload and per opcode, with the kernel's
# fuse:fuse_request_send tracepoint (perf), for the namespace workloads of bench/mount-vs-kernel.sh: untar of a
# source tree (then sync -f), a stat walk of it, cp -a of it inside the mount (then sync -f), rm -rf of the copy.
# Prints, per workload, its seconds and one line per opcode: count and count per archive entry.
#
# Usage: bench/mount-requests.sh [TREE...]   (default TREE: /usr/lib/python3.11 /usr/share/doc)
# Environment: MOUNT_BENCH_XFBTREE_OPTIONS (more `xfbtree mount` options, for example --writeback-cache;
# without any the mount's default, write-through, is counted),
# MOUNT_BENCH_XFBTREE_DLL (an xfbtree.dll to run instead of building this tree's), MOUNT_BENCH_SIZE_MIB (4096).
# Needs root, /dev/fuse, xfsprogs, perf.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PATH="$PATH:/usr/sbin:/sbin"
trees=("$@")
[ ${#trees[@]} -eq 0 ] && trees=(/usr/lib/python3.11 /usr/share/doc)
size=${MOUNT_BENCH_SIZE_MIB:-4096}
[ "$(id -u)" -eq 0 ] || { echo "error: needs root" >&2; exit 2; }
for tool in mkfs.xfs perf tar; do command -v "$tool" >/dev/null || { echo "error: $tool is missing" >&2; exit 2; }; done
if [ -n "${MOUNT_BENCH_XFBTREE_DLL:-}" ]; then
  xfbtree=(dotnet "$MOUNT_BENCH_XFBTREE_DLL")
else
  dotnet build src/Managed/Xfbtree.Cli -c Release --nologo -v q >/dev/null || { echo "error: build failed" >&2; exit 2; }
  xfbtree=(dotnet "$repo/src/Managed/Xfbtree.Cli/bin/Release/net10.0/xfbtree.dll")
fi
work=$(mktemp -d /var/tmp/mount-requests.XXXXXX)
xfb_pid=""
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
  [ -n "$xfb_pid" ] && wait "$xfb_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
archive="$work/source.tar"
tar cf "$archive" --absolute-names "${trees[@]}" 2>/dev/null
entries=$(tar tf "$archive" | wc -l)
echo "source: ${trees[*]} ($entries entries); xfbtree mount options: ${MOUNT_BENCH_XFBTREE_OPTIONS:-none (the default: write-through)}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
truncate -s "${size}M" "$work/xfs.img"
mkfs.xfs -q -m rmapbt=1,reflink=1 "$work/xfs.img"
mkdir -p "$work/mnt"
# shellcheck disable=SC2086 # options split on purpose
"${xfbtree[@]}" mount "$work/xfs.img" "$work/mnt" ${MOUNT_BENCH_XFBTREE_OPTIONS:-} > "$work/out" 2> "$work/err" &
xfb_pid=$!
for _ in $(seq 240); do grep -q "^mounted " "$work/out" 2>/dev/null && break; kill -0 "$xfb_pid" 2>/dev/null || break; sleep 0.25; done
grep -q "^mounted " "$work/out" || { echo "error: xfbtree mount failed: $(cat "$work/err")" >&2; exit 2; }
# The connection's device number as the tracepoint prints it: MKDEV(major, minor) = major << 20 | minor.
dev=$(awk -v m="$work/mnt" '$5 == m { print $3 }' /proc/self/mountinfo | tail -n 1)
connection=$(( (${dev%%:*} << 20) | ${dev##*:} ))
mkdir -p "$work/mnt/tree"
untar() { tar xf "$archive" -C "$work/mnt/tree" && sync -f "$work/mnt"; }
statwalk() { find "$work/mnt/tree" -printf '%s %m %T@\n' > /dev/null; }
copy() { cp -a "$work/mnt/tree" "$work/mnt/copy" && sync -f "$work/mnt"; }
remove() { rm -rf "$work/mnt/copy" && sync -f "$work/mnt"; }
for w in untar statwalk copy remove; do
  perf record -q -a -e fuse:fuse_request_send -o "$work/$w.data" > "$work/$w.perf.log" 2>&1 &
  perf_pid=$!
  sleep 1 # perf is attached before the workload starts
  start=$(date +%s.%N)
  "$w"
  end=$(date +%s.%N)
  kill -INT "$perf_pid"; wait "$perf_pid"
  echo "== $w: $(echo "$end - $start" | bc -l | awk '{printf "%.2f", $1}') s"
  perf script -i "$work/$w.data" -F trace 2>/dev/null \
    | awk -v c="$connection" -v n="$entries" '$2 == c { count[$7]++; total++ }
        END { for (op in count) printf "  %-22s %8d %6.2f per entry\n", op, count[op], count[op] / n;
              printf "  %-22s %8d %6.2f per entry\n", "(all)", total, total / n }' | sort -k2 -n -r
done
umount "$work/mnt"
wait "$xfb_pid"; echo "xfbtree mount exit $?"; xfb_pid=""
