#!/usr/bin/env bash
# The kernel as an oracle: loop-mount IMAGE read-write, delete a third of its regular files, write new ones,
# reflink one, unmount; then xfs_repair -n must be clean and the kernel log must hold no XFS corruption or
# shutdown message written during the run. Needs root and loop devices. Always unmounts.
# Usage: scripts/kernel-workload.sh IMAGE        exit 0 = kernel and xfs_repair happy, 1 = not, 2 = could not run
set -uo pipefail
img=${1:?usage: kernel-workload.sh IMAGE}
PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || { echo "kernel-workload: needs root (loop mount)" >&2; exit 2; }
mnt=$(mktemp -d)
marker="xfbtree-kernel-workload-$$-$RANDOM"
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt" 2>/dev/null; }
trap cleanup EXIT
echo "$marker" > /dev/kmsg 2>/dev/null || true

if ! mount -o loop "$img" "$mnt" 2>"$mnt.err"; then
  echo "kernel-workload: mount failed: $(cat "$mnt.err")" >&2; rm -f "$mnt.err"; exit 1
fi
rm -f "$mnt.err"
dev=$(findmnt -n -o SOURCE "$mnt" 2>/dev/null); dev=${dev##*/}
fail=0
mapfile -t files < <(find "$mnt" -type f -size +0 2>/dev/null | sort)
deleted=0
for ((i = 0; i < ${#files[@]}; i += 3)); do rm -f "${files[$i]}" || fail=1; deleted=$((deleted + 1)); done
mkdir -p "$mnt/kernel-workload" || fail=1
for i in $(seq 1 40); do
  head -c $(( (i % 7 + 1) * 65536 )) /dev/urandom > "$mnt/kernel-workload/new$i" || fail=1
done
cp --reflink=always "$mnt/kernel-workload/new7" "$mnt/kernel-workload/new7.reflink" || fail=1
sync
umount "$mnt" || fail=1
log=$(dmesg 2>/dev/null | sed -n "/$marker/,\$p")
# Only this run's device: other tests may mount (and shut down) their own images meanwhile.
mine=$(grep -E "XFS \(${dev:-loop}\)" <<<"$log" || true)
if grep -Eiq '(corrupt|shut ?down|Internal error|metadata I/O error)' <<<"$mine"; then
  echo "kernel-workload: kernel reported XFS problems on $dev:" >&2
  head -n 20 <<<"$mine" >&2
  fail=1
fi
if ! xfs_repair -n "$img" >"$mnt.repair" 2>&1; then
  echo "kernel-workload: xfs_repair -n after the workload is not clean:" >&2; head -n 20 "$mnt.repair" >&2; fail=1
fi
rm -f "$mnt.repair"
echo "kernel-workload: deleted $deleted of ${#files[@]} files, wrote 40, reflinked 1: $([ $fail = 0 ] && echo ok || echo FAILED)"
exit $fail
