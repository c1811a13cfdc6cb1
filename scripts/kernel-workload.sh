#!/usr/bin/env bash
# The kernel as an oracle: loop-mount IMAGE read-write, delete a third of its regular files, write new ones,
# reflink one, give some files a second name (and remove one of two names of others), set and remove extended
# attributes (user, trusted, security; small and remote-sized values) on files and directories, check that the
# kernel reads back the link counts and attributes it set, unmount; then xfs_repair -n must be clean and the kernel
# log must hold no XFS corruption or shutdown message written during the run. Needs root, loop devices and
# getfattr/setfattr (package attr). Always unmounts.
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
# Hard links: a second name for every fifth surviving file (in the workload's directory), then one of two names of
# every other one of those goes again; the link count must follow.
linked=0
for ((i = 1; i < ${#files[@]}; i += 5)); do
  f=${files[$i]}; [ -f "$f" ] || continue
  before=$(stat -c %h "$f")
  ln "$f" "$mnt/kernel-workload/link$i" || { fail=1; continue; }
  [ "$(stat -c %h "$f")" = $((before + 1)) ] || { echo "kernel-workload: link count of $f did not grow" >&2; fail=1; }
  if (( i % 2 )); then rm -f "$f" || fail=1; fi
  linked=$((linked + 1))
done
# Extended attributes on the engine's files and directories: removed where the engine set user.* ones, set small
# and remote-sized in three namespaces, read back.
big=$(head -c 6000 /dev/zero | tr '\0' v)
xattrs=0
mapfile -t tagged < <(find "$mnt" -maxdepth 3 \( -type f -o -type d \) 2>/dev/null | sort | awk 'NR % 7 == 1 && n++ < 60')
for f in "${tagged[@]}"; do
  while read -r name; do setfattr -h -x "$name" "$f" || fail=1; done < <(getfattr -h -d -m '^user\.' --absolute-names "$f" 2>/dev/null | sed -n '0,/^\(user\.[^=]*\)=.*/s//\1/p')
  # Names differ per namespace (one name in two namespaces is a hash collision, which xfs_repair 6.1 misjudges
  # across a leaf boundary).
  setfattr -h -n user.kw-user -v small "$f" && setfattr -h -n trusted.kw-trusted -v "$big" "$f" && setfattr -h -n security.kw-security -v 0x0102 "$f" || { fail=1; continue; }
  [ "$(getfattr -h --only-values -n trusted.kw-trusted "$f" 2>/dev/null)" = "$big" ] || { echo "kernel-workload: trusted.kw-trusted of $f reads back wrong" >&2; fail=1; }
  xattrs=$((xattrs + 1))
done
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
echo "kernel-workload: deleted $deleted of ${#files[@]} files, wrote 40, reflinked 1, linked $linked, attributes on $xattrs: $([ $fail = 0 ] && echo ok || echo FAILED)"
exit $fail
