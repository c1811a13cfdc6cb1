#!/usr/bin/env bash
# The kernel as an oracle: loop-mount IMAGE read-write, delete a third of its regular files, write new ones,
# reflink one, unmount; then xfs_repair -n must be clean and the kernel log must hold no XFS corruption or
# shutdown message written during the run. Needs root and loop devices. Always unmounts.
# Usage: scripts/kernel-workload.sh IMAGE        exit 0 = kernel and xfs_repair happy, 1 = not, 2 = could not run
# The kernel log is read from /dev/kmsg from the sequence number of a marker written before the mount
# (scripts/kernel-log.sh), so another program clearing the log meanwhile (dmesg -C) changes nothing. It fails
# closed: if the marker cannot be written or read back, the log since the marker was overwritten, or the loop
# device's name is unknown, the run is exit 2, never a silent pass.
set -uo pipefail
img=${1:?usage: kernel-workload.sh IMAGE}
kernel_log="$(dirname "$0")/kernel-log.sh"
PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || { echo "kernel-workload: needs root (loop mount)" >&2; exit 2; }
mnt=$(mktemp -d)
marker="xfbtree-kernel-workload-$$-$RANDOM"
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt" 2>/dev/null; }
trap cleanup EXIT
if ! since=$("$kernel_log" mark "$marker"); then
  echo "kernel-workload: the kernel log cannot be written or read back; it cannot be checked" >&2; exit 2
fi

if ! mount -o loop,nouuid "$img" "$mnt" 2>"$mnt.err"; then
  echo "kernel-workload: mount failed: $(cat "$mnt.err")" >&2; rm -f "$mnt.err"; exit 1
fi
rm -f "$mnt.err"
dev=$(findmnt -n -o SOURCE "$mnt" 2>/dev/null); dev=${dev##*/}
if [ -z "$dev" ]; then
  echo "kernel-workload: cannot tell which loop device holds $img; its kernel messages cannot be picked out" >&2; exit 2
fi
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
if ! log=$("$kernel_log" since "$since"); then
  echo "kernel-workload: the kernel log since our marker cannot be read; it cannot be checked" >&2; exit 2
fi
# Only this run's device: other tests may mount (and shut down) their own images meanwhile.
mine=$(grep -E "XFS \(${dev}\)" <<<"$log" || true)
if ! grep -q "Mounting" <<<"$mine"; then
  echo "kernel-workload: the kernel log shows no mount of $dev; these are not this run's messages" >&2; exit 2
fi
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
