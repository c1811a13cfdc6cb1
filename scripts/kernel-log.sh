#!/usr/bin/env bash
# The kernel log by sequence number, read from /dev/kmsg. A reader that opens /dev/kmsg starts at the oldest record
# still in the ring buffer, whatever another program cleared (`dmesg -C` only moves the point where syslog(2) and
# `dmesg` start), so a position saved here stays valid until the ring buffer itself overwrites it.
#
# Usage: scripts/kernel-log.sh mark TEXT   writes TEXT to the kernel log; prints the sequence number of its record
#        scripts/kernel-log.sh since SEQ   prints every record from SEQ on, one line each: "SEQ<TAB>MESSAGE"
# Exit 0, or 2 when the log cannot be written or read, or when record SEQ was overwritten (ring buffer overrun):
# the caller then cannot know what the kernel said and must not pass.
set -uo pipefail
# Overridable only so that the tests can show that an unwritable or unreadable kernel log fails closed.
kmsg=${XFBTREE_KMSG:-/dev/kmsg}

die() { echo "kernel-log: $*" >&2; exit 2; }

# Every record still in the ring buffer as "SEQ<TAB>MESSAGE" (continuation lines dropped). Each read of /dev/kmsg
# returns one record; a non-blocking read ends with EAGAIN. EPIPE means records were overwritten while we read: read
# again from the (new) oldest record.
read_all() {
  local err out attempt
  err=$(mktemp) || return 1
  for attempt in 1 2 3; do
    out=$(dd if="$kmsg" iflag=nonblock bs=16384 status=none 2>"$err")
    if grep -q "Resource temporarily unavailable" "$err"; then
      rm -f "$err"
      # "PRIO,SEQ,USEC,FLAGS[,...];MESSAGE"; continuation lines start with a space.
      awk '/^[0-9]/ { i = index($0, ";"); split(substr($0, 1, i - 1), h, ","); printf "%s\t%s\n", h[2], substr($0, i + 1) }' <<<"$out"
      return 0
    fi
  done
  echo "kernel-log: cannot read $kmsg: $(head -n 1 "$err")" >&2
  rm -f "$err"
  return 1
}

case "${1:-}" in
  mark)
    text=${2:?usage: kernel-log.sh mark TEXT}
    echo "$text" > "$kmsg" 2>/dev/null || die "cannot write to $kmsg"
    records=$(read_all) || die "$kmsg cannot be read"
    seq=$(awk -F '\t' -v t="$text" '$2 == t { s = $1 } END { if (s != "") print s }' <<<"$records")
    [ -n "$seq" ] || die "$kmsg does not show the record just written"
    echo "$seq"
    ;;
  since)
    from=${2:?usage: kernel-log.sh since SEQ}
    [[ $from =~ ^[0-9]+$ ]] || die "not a sequence number: $from"
    records=$(read_all) || die "$kmsg cannot be read"
    first=$(head -n 1 <<<"$records" | cut -f 1)
    [ -n "$first" ] || die "$kmsg returned no records"
    [ "$first" -le "$from" ] || die "record $from was overwritten (the oldest left is $first): the log since then is incomplete"
    awk -F '\t' -v from="$from" '$1 + 0 >= from + 0' <<<"$records"
    ;;
  *)
    die "usage: kernel-log.sh mark TEXT | since SEQ"
    ;;
esac
