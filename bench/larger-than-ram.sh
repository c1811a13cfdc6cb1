#!/usr/bin/env bash
# The larger-than-RAM run: the typed map (ShmemBTree) on an xfile that spills to an O_TMPFILE on disk, in a
# process held to 1 GiB by a memory cgroup. As root. cgroup v1 (/sys/fs/cgroup/memory, memory.limit_in_bytes) or,
# when that is absent, cgroup v2 (memory.max). The Release build happens before entering the cgroup.
# Usage: sudo bench/larger-than-ram.sh [--limit 1G] [benchmark args, default: --records 100000000 --dir /tmp]
# Exit 2: not root or no memory controller. Prints the cgroup's memory figures at the end; removes the cgroup always.
set -euo pipefail

LIMIT=1G
if [[ "${1:-}" == "--limit" ]]; then LIMIT=$2; shift 2; fi
ARGS=("$@")
if [[ ${#ARGS[@]} -eq 0 ]]; then ARGS=(--records 100000000 --dir /tmp); fi

if [[ $(id -u) -ne 0 ]]; then
    echo "larger-than-ram.sh: must run as root (it creates a memory cgroup)" >&2
    exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
# The group is made under the memory cgroup this script already runs in (/sys/fs/cgroup/memory/xfbtree-ltr from the
# root cgroup), so a caller's own limits and accounting still cover the run; cleanup moves the shell back there.
NAME=xfbtree-ltr
if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
    VERSION=1
    PARENT=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup | sed 's#/$##')
    CG=$PARENT/$NAME
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    VERSION=2
    PARENT=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup | sed 's#/$##')
    CG=$PARENT/$NAME
    # v2: the parent must delegate the memory controller to its children.
    grep -qw memory "$PARENT/cgroup.subtree_control" || echo +memory > "$PARENT/cgroup.subtree_control" || true
else
    echo "larger-than-ram.sh: no memory cgroup controller (neither /sys/fs/cgroup/memory nor cgroup v2 with memory)" >&2
    exit 2
fi

echo "# $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(hostname), $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg); memory: $(free -g | awk '/Mem:/ {print $2 " GiB total, " $7 " GiB available"}'); swap: $(free -g | awk '/Swap:/ {print $2 " GiB"}')"
echo "# THP enabled: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo -); dirty_ratio $(cat /proc/sys/vm/dirty_ratio), dirty_background_ratio $(cat /proc/sys/vm/dirty_background_ratio)"
echo "# spill directory for ${ARGS[*]}: $(df -hT /tmp | tail -1)"

echo "# building (Release) outside the cgroup ..."
dotnet build -c Release "$REPO/bench/Xfbtree.Benchmarks" -v quiet -nologo | grep -E "error|Warn|Elapsed" || true
DLL=$(ls "$REPO"/bench/Xfbtree.Benchmarks/bin/Release/net*/Xfbtree.Benchmarks.dll | head -1)

cleanup() {
    # Move this shell back to where it came from first, so the group can be removed.
    if [[ -d "$CG" ]]; then
        echo $$ > "$PARENT/cgroup.procs" 2>/dev/null || true
    fi
    [[ -d "$CG" ]] || return 0
    rmdir "$CG" 2>/dev/null || { sleep 1; rmdir "$CG" 2>/dev/null; } || echo "warning: could not remove $CG" >&2
}
trap cleanup EXIT

if [[ -d "$CG" ]]; then
    rmdir "$CG" 2>/dev/null || { echo "larger-than-ram.sh: $CG exists and is in use" >&2; trap - EXIT; exit 2; }
fi
mkdir "$CG"
if [[ $VERSION == 1 ]]; then
    echo "$LIMIT" > "$CG/memory.limit_in_bytes"
    # No swap on these machines; where there is, hold memory+swap to the same limit (needs swap accounting).
    if [[ -f "$CG/memory.memsw.limit_in_bytes" ]]; then echo "$LIMIT" > "$CG/memory.memsw.limit_in_bytes" || true; fi
    echo "# cgroup v1 $CG: memory.limit_in_bytes = $(cat "$CG/memory.limit_in_bytes")"
else
    echo "$LIMIT" > "$CG/memory.max"
    if [[ -f "$CG/memory.swap.max" ]]; then echo 0 > "$CG/memory.swap.max"; fi
    echo "# cgroup v2 $CG: memory.max = $(cat "$CG/memory.max")"
fi

echo $$ > "$CG/cgroup.procs"
echo "# this shell is now in: $(grep -E 'memory|^0::' /proc/self/cgroup | head -2 | tr '\n' ' ')"
set +e
DOTNET_gcServer=0 dotnet "$DLL" --larger-than-ram "${ARGS[@]}"
STATUS=$?
set -e
echo "# benchmark exit status: $STATUS"

echo "# cgroup memory figures after the run:"
if [[ $VERSION == 1 ]]; then
    echo "memory.limit_in_bytes     $(cat "$CG/memory.limit_in_bytes")"
    echo "memory.max_usage_in_bytes $(cat "$CG/memory.max_usage_in_bytes")"
    echo "memory.usage_in_bytes     $(cat "$CG/memory.usage_in_bytes")"
    echo "memory.failcnt            $(cat "$CG/memory.failcnt")"
    grep -E "oom_kill|under_oom" "$CG/memory.oom_control" || true
    grep -E '^(total_)?(rss|rss_huge|cache|mapped_file|dirty|writeback|shmem|pgmajfault|pgpgin|pgpgout) ' "$CG/memory.stat"
else
    echo "memory.max     $(cat "$CG/memory.max")"
    echo "memory.peak    $(cat "$CG/memory.peak" 2>/dev/null || echo -)"
    echo "memory.current $(cat "$CG/memory.current")"
    grep -E '^(max|oom|oom_kill) ' "$CG/memory.events" || true
    grep -E '^(anon|file|file_mapped|file_dirty|file_writeback|shmem|anon_thp|pgmajfault) ' "$CG/memory.stat"
fi
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%H:%M:%S') UTC"
exit $STATUS
