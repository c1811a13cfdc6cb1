#!/usr/bin/env bash
# Hostile test of `xfbtree scrub` with damage made by xfs_db's own `fuzz` command (the way xfstests' common/fuzzy
# damages metadata), on images made by mkfs.xfs and populated by the kernel through a loop mount.
#
#   scripts/xfs-db-fuzz.sh base DIR [MKFS_OPTIONS...]   make DIR/base.img (mkfs.xfs with the options, loop-mounted and
#                                                        populated by the kernel) and DIR/manifest (ino, md5, path)
#   scripts/xfs-db-fuzz.sh sweep DIR [TARGET_REGEX]      fuzz every (target, field, verb) of DIR/base.img; one TSV line
#                                                        per case in DIR/results.tsv, a count per class at the end
#   scripts/xfs-db-fuzz.sh recheck DIR FILE              the (target, field, verb) cases of FILE (lines of a results.tsv)
#   scripts/xfs-db-fuzz.sh online DIR < CASES            "NAV|FIELD|VERB" lines: each fuzzed copy served by `xfbtree
#                                                        mount`, scrubbed and repaired through DIR while a writer writes
#   scripts/xfs-db-fuzz.sh v4                            a crc=0 image must be refused with exit 2 and one line
#
# Per case: copy base.img, `xfs_db -x ... -c 'fuzz -d FIELD VERB'`, then the oracle `xfs_repair -n`, then
# `xfbtree scrub IMG --json`, `xfbtree scrub IMG --repair`, `xfs_repair -n` again and, when the repair said done,
# the kernel (loop mount, every file of the manifest read and compared by md5, one file written, unmounted, then
# `xfs_repair -n` a last time). Classes:
#   a     xfs_repair -n and the scrub both clean
#   b     both find damage, `--repair` exits 0 and xfs_repair -n and the kernel are clean afterwards
#   b+    the scrub finds damage xfs_repair -n does not, and repairs it (clean afterwards)
#   c     damage found, the repair refuses cleanly (exit 1 or 2, no crash) or the image cannot be checked (exit 2)
#   BAD-crash    exit code other than 0/1/2, an unhandled exception, or a timeout
#   BAD-missed   xfs_repair -n finds damage, the scrub says clean (triage: is it a structure the scrub checks?)
#   BAD-repair   `--repair` exits 0 but xfs_repair -n or the kernel still finds damage
#   BAD-data     `--repair` exits 0 but a file the fuzz did not touch reads back different (or is gone)
#   BAD-falsepos the scrub says damaged where xfs_repair -n is clean and `--repair` cannot clean it
# Environment: XFBTREE (command, default: dotnet artifacts/cli/xfbtree.dll), FUZZ_VERBS (default: random zeroes ones
# firstbit lastbit middlebit add sub), FUZZ_MAX_FIELDS (per target, default 0 = all), FUZZ_TIMEOUT (s, default 300),
# FUZZ_KERNEL (1: mount check after a repair, default 1), FUZZ_PICK (all: every verb on every field; rotate: random
# and one other verb per field, in turn), FUZZ_IMAGE_SIZE (default 320M: mkfs.xfs refuses less).
# Needs root (loop mounts). Always unmounts. The suite runs a short bounded version (XfsDbFuzzTests).
set -uo pipefail
PATH="$PATH:/usr/sbin:/sbin"
here=$(cd "$(dirname "$0")/.." && pwd)
read -r -a xfbtree <<< "${XFBTREE:-dotnet $here/artifacts/cli/xfbtree.dll}"
verbs=(${FUZZ_VERBS:-random zeroes ones firstbit lastbit middlebit add sub})
max_fields=${FUZZ_MAX_FIELDS:-0}
case_timeout=${FUZZ_TIMEOUT:-300}
kernel_check=${FUZZ_KERNEL:-1}

mnt=""
cleanup() { if [ -n "$mnt" ]; then mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt" 2>/dev/null; fi; }
trap cleanup EXIT

die() { echo "xfs-db-fuzz: $*" >&2; exit 2; }

# ---- base image -----------------------------------------------------------------------------------------------
populate() {
  local m=$1 i
  mkdir -p "$m/files" "$m/dirs" "$m/attrs" "$m/links"
  for s in 0 1 100 4095 4096 4097 65537 1048576 5000000; do head -c "$s" /dev/urandom > "$m/files/size$s"; done
  # Fragmented files: two files written alternately, synced each time, and one with every other block punched out
  # (many extents: the data fork goes to btree form).
  for i in $(seq 1 64); do
    head -c 8192 /dev/urandom >> "$m/files/frag-a"; head -c 8192 /dev/urandom >> "$m/files/frag-b"; sync "$m/files/frag-a"
  done
  head -c 4194304 /dev/urandom > "$m/files/holes"
  for ((i = 0; i < 4194304; i += 16384)); do fallocate -p -o $i -l 8192 "$m/files/holes"; done
  # Reflinked files (with reflink=1): a whole copy, and a copy partly rewritten.
  if cp --reflink=always "$m/files/size1048576" "$m/files/reflink-whole" 2>/dev/null; then
    cp --reflink=always "$m/files/size5000000" "$m/files/reflink-part"
    dd if=/dev/urandom of="$m/files/reflink-part" bs=4096 seek=10 count=20 conv=notrunc status=none
  fi
  # Directories of every format: shortform, block, leaf, node, and a big one whose blocks interleave with another's.
  mkdir "$m/dirs/sf" "$m/dirs/block" "$m/dirs/leaf" "$m/dirs/node" "$m/dirs/big" "$m/dirs/big2"
  touch "$m/dirs/sf/a" "$m/dirs/sf/b"; mkdir "$m/dirs/sf/sub"
  (cd "$m/dirs/block" && touch $(seq -f 'entry%03g' 1 40))
  (cd "$m/dirs/leaf" && touch $(seq -f 'a-somewhat-longer-entry-name-%05g' 1 400))
  (cd "$m/dirs/node" && touch $(seq -f 'an-even-longer-entry-name-to-fill-directory-blocks-quickly-%06g' 1 3000))
  for i in $(seq 1 20); do
    (cd "$m/dirs/big" && touch $(seq -f "b$i-entry-with-a-long-name-to-make-many-directory-blocks-%05g" 1 300))
    (cd "$m/dirs/big2" && touch $(seq -f "c$i-entry-%05g" 1 100))
  done
  rm -f "$m"/dirs/big/b1[0-9]-*
  # Extended attributes: shortform, leaf, node, remote values.
  touch "$m/attrs/sf" "$m/attrs/leaf" "$m/attrs/node" "$m/attrs/remote"
  setfattr -n user.small -v tiny "$m/attrs/sf"
  for i in $(seq 1 12); do setfattr -n "user.leaf$i" -v "$(head -c 120 /dev/zero | tr '\0' l)" "$m/attrs/leaf"; done
  for i in $(seq 1 400); do setfattr -n "user.node-attribute-$i" -v "value-$i-$(head -c 60 /dev/zero | tr '\0' n)" "$m/attrs/node"; done
  setfattr -n user.remote -v "$(head -c 9000 /dev/zero | tr '\0' r)" "$m/attrs/remote"
  setfattr -n user.dir -v dirvalue "$m/dirs/leaf"
  # Symlinks (inline and remote), hard links.
  ln -s ../files/size1 "$m/links/short"
  ln -s "$(head -c 900 /dev/zero | tr '\0' x)" "$m/links/long"
  ln "$m/files/size4096" "$m/links/hard1"; ln "$m/files/size4096" "$m/links/hard2"
  mkfifo "$m/links/fifo"
  sync
}

make_base() {
  local dir=$1; shift
  mkdir -p "$dir"
  local img="$dir/base.img"
  rm -f "$img"; truncate -s "${FUZZ_IMAGE_SIZE:-320M}" "$img"
  mkfs.xfs -q -f "$@" "$img" || die "mkfs.xfs $* failed"
  mnt=$(mktemp -d)
  mount -o loop "$img" "$mnt" || die "mount failed"
  populate "$mnt"
  (cd "$mnt" && find . -type f -printf '%i\t%p\n' | sort -k2 > "$dir/inodes" && cut -f2 "$dir/inodes" | xargs -d '\n' md5sum \
     | awk 'NR == FNR { ino[$2] = $1; next } { p = substr($0, 35); print ino[p] "\t" $1 "\t" p }' FS='\t' "$dir/inodes" FS=' ' -) > "$dir/manifest"
  rm -f "$dir/inodes"
  umount "$mnt"; rmdir "$mnt"; mnt=""
  echo "$*" > "$dir/mkfs-options"
  xfs_repair -n "$img" >/dev/null 2>&1 || die "the base image is not clean per xfs_repair -n"
  echo "base: $img ($(wc -l < "$dir/manifest") files; mkfs.xfs $*)"
}

# ---- targets --------------------------------------------------------------------------------------------------
# One line per target: NAME|xfs_db commands separated by ';'. Inodes are found by path in the populated tree.
ino_of() { xfs_db -r -c "path $2" -c inode "$1" 2>/dev/null | awk '/current inode number is/ {print $5}'; }
targets() {
  local img=$1 ag=1 agcount
  agcount=$(xfs_db -r -c 'sb 0' -c 'print agcount' "$img" | awk '{print $3}')
  [ "$agcount" -gt 1 ] || ag=0
  echo "sb0|sb 0"
  [ "$agcount" -gt 1 ] && echo "sb1|sb 1"
  echo "agf|agf $ag"
  echo "agi|agi $ag"
  echo "agfl|agfl $ag"
  echo "bnobt|agf $ag;addr bnoroot"
  echo "cntbt|agf $ag;addr cntroot"
  xfs_db -r -c "agf $ag" -c 'print rmaproot' "$img" 2>/dev/null | grep -q 'rmaproot = [0-9]' && echo "rmapbt|agf $ag;addr rmaproot"
  xfs_db -r -c "agf $ag" -c 'print refcntroot' "$img" 2>/dev/null | grep -q 'refcntroot = [0-9]' && echo "refcountbt|agf $ag;addr refcntroot"
  echo "inobt|agi $ag;addr root"
  xfs_db -r -c "agi $ag" -c 'print free_root' "$img" 2>/dev/null | grep -q 'free_root = [0-9]' && echo "finobt|agi $ag;addr free_root"
  local p ino
  for p in /files/size65537:inode-file /files/holes:inode-btreefile /dirs/sf:inode-sfdir /dirs/block:inode-blockdir \
           /attrs/sf:inode-sfattr /links/long:inode-symlink /files/size4096:inode-hardlinked; do
    ino=$(ino_of "$img" "${p%%:*}"); [ -n "$ino" ] && echo "${p##*:}|inode $ino"
  done
  ino=$(ino_of "$img" /files/holes); [ -n "$ino" ] && echo "bmbt|inode $ino;addr u3.bmbt.ptrs[1]"
  ino=$(ino_of "$img" /dirs/block); [ -n "$ino" ] && echo "dir-block|inode $ino;dblock 0"
  ino=$(ino_of "$img" /dirs/leaf); [ -n "$ino" ] && echo "dir-leaf-data|inode $ino;dblock 0"
  ino=$(ino_of "$img" /dirs/node); [ -n "$ino" ] && echo "dir-node-data|inode $ino;dblock 1"
  ino=$(ino_of "$img" /attrs/leaf); [ -n "$ino" ] && echo "attr-leaf|inode $ino;ablock 0"
  ino=$(ino_of "$img" /attrs/node); [ -n "$ino" ] && echo "attr-node|inode $ino;ablock 0"
  ino=$(ino_of "$img" /attrs/remote); [ -n "$ino" ] && echo "inode-remoteattr|inode $ino"
  # More inode cores and attr blocks: a fifo and a node-form attr fork's inode, a leaf under that fork's root node,
  # the remote value block of /attrs/remote.
  ino=$(ino_of "$img" /links/fifo); [ -n "$ino" ] && echo "inode-fifo|inode $ino"
  ino=$(ino_of "$img" /attrs/node); [ -n "$ino" ] && echo "inode-nodeattr|inode $ino" && echo "attr-node-leaf|inode $ino;ablock 1"
  ino=$(ino_of "$img" /attrs/remote); [ -n "$ino" ] && echo "attr-remote|inode $ino;ablock 1"
  return 0
}

# The fields of a target as xfstests lists them: `print`, user-controlled fields (times, lsn, flags nobody checks)
# left out; an array is tried at its first, middle and last index, not at each.
fields() {
  local img=$1 nav=$2 args=() c
  IFS=';' read -r -a cmds <<< "$nav"; for c in "${cmds[@]}"; do args+=(-c "$c"); done
  xfs_db -r "${args[@]}" -c print "$img" 2>/dev/null | grep ' = ' | sed 's/^ *//' | while read -r key equals value; do
    [ -n "$key" ] || continue
    local subs=("")
    # "recs[1-5] = [startblock,blockcount]": one field per subfield, as xfstests explodes them.
    if [[ $value =~ ^\[([a-z_.,0-9]+)\] ]]; then IFS=, read -r -a subs <<< "${BASH_REMATCH[1]}"; subs=("${subs[@]/#/.}"); fi
    local sub
    for sub in "${subs[@]}"; do
      if [[ $key =~ ^(.*)\[([0-9]+)-([0-9]+)\](.*)$ ]]; then
        local a=${BASH_REMATCH[2]} b=${BASH_REMATCH[3]} name=${BASH_REMATCH[1]} rest=${BASH_REMATCH[4]}
        printf '%s[%s]%s%s\n' "$name" "$a" "$rest" "$sub"
        (( b > a + 1 )) && printf '%s[%s]%s%s\n' "$name" $(( (a + b) / 2 )) "$rest" "$sub"
        (( b > a )) && printf '%s[%s]%s%s\n' "$name" "$b" "$rest" "$sub"
      else
        echo "$key$sub"
      fi
    done
  done | grep -vE '\.sec$|\.nsec$|^lsn$|\.lsn$|^core\.(flushiter|dmevmask|dmstate|gen|prealloc|immutable|append|sync|noatime|nodump|nodefrag|filestream|atime|mtime|ctime|crtime)|^v3\.(dax|bigtime|crtime)|value|\.rtbwarns|\.[ib]warns|^(dirblklog)$' \
    | awk -v max="$max_fields" 'max == 0 || NR <= max'
  # Inode cores: the DAX and bigtime flags are judged (docs/scrub.md "Inode cores"), so they are fuzzed too.
  if [[ $nav =~ ^inode\ [0-9]+$ ]]; then
    xfs_db -r "${args[@]}" -c print "$img" 2>/dev/null | sed 's/^ *//' | grep -oE '^v3\.(dax|bigtime) ' | tr -d ' '
  fi
}

# ---- one case -------------------------------------------------------------------------------------------------
json_field() { sed -n "s/.*\"$1\": *\([^,}]*\).*/\1/p" "$2" | head -1; }

kernel_verify() { # IMG DIR FUZZED_INO -> prints "ok" or why not
  local img=$1 dir=$2 skip_ino=$3 bad=0 missing=0 ino sum p
  mnt=$(mktemp -d)
  if ! mount -o loop,nouuid "$img" "$mnt" 2>/dev/null; then rmdir "$mnt"; mnt=""; echo "mount-refused"; return; fi
  # One md5sum over every file of the manifest (but the fuzzed inode's): missing files are its complaints.
  local counts
  counts=$(cd "$mnt" && awk -F'\t' -v skip="$skip_ino" '$1 != skip {print $3}' "$dir/manifest" | xargs -d '\n' md5sum 2>/dev/null \
    | awk -v skip="$skip_ino" 'NR == FNR { if ($1 != skip) { want[$3] = $2; n++ } next }
        { p = substr($0, 35); if (!(p in want)) next; seen++; if (want[p] != $1) bad++ }
        END { print bad + 0, n - seen }' FS='\t' "$dir/manifest" FS=' ' -)
  read -r bad missing <<< "$counts"
  head -c 100000 /dev/urandom > "$mnt/written-after-repair" 2>/dev/null || bad=$((bad + 1000))
  umount "$mnt" || umount -l "$mnt"; rmdir "$mnt"; mnt=""
  if xfs_repair -n "$img" >/dev/null 2>&1; then :; else echo "xfs_repair-after-kernel-write"; return; fi
  if (( bad || missing )); then echo "data:$bad-differ:$missing-missing"; else echo ok; fi
}

run_case() { # DIR TARGET NAV FIELD VERB
  local dir=$1 target=$2 nav=$3 field=$4 verb=$5 work=$dir/work
  local img=$work/case.img args=() c fuzz_flag=-d
  mkdir -p "$work"; rm -f "$work"/*
  cp --sparse=always "$dir/base.img" "$img"
  IFS=';' read -r -a cmds <<< "$nav"; for c in "${cmds[@]}"; do args+=(-c "$c"); done
  [[ $field == *crc ]] && fuzz_flag=-c
  local before after
  before=$(xfs_db -r "${args[@]}" -c "print $field" "$img" 2>/dev/null)
  xfs_db -x "${args[@]}" -c "fuzz $fuzz_flag $field $verb" "$img" >"$work/fuzz.out" 2>&1
  after=$(xfs_db -r "${args[@]}" -c "print $field" "$img" 2>/dev/null)
  if [ "$before" = "$after" ] && [[ $field != *crc ]]; then
    printf '%s\t%s\t%s\tskip\tunchanged\n' "$target" "$field" "$verb"; return
  fi
  local fuzzed_ino=""
  [[ $nav =~ ^inode\ ([0-9]+) ]] && fuzzed_ino=${BASH_REMATCH[1]}
  xfs_repair -n "$img" >"$work/repair0.out" 2>&1; local oracle=$?
  timeout "$case_timeout" "${xfbtree[@]}" scrub "$img" --json --no-progress >"$work/scrub.json" 2>"$work/scrub.err"
  local rc=$?
  local cls detail=""
  if (( rc > 2 )) || grep -qE 'Unhandled exception|   at Xfbtree' "$work/scrub.err" "$work/scrub.json"; then
    cls=BAD-crash; detail="scrub exit $rc: $(head -c 300 "$work/scrub.err" | tr '\n\t' '  ')"
  elif (( oracle != 0 && rc == 0 )); then
    cls=BAD-missed; detail="xfs_repair -n: $(grep -vE '^(Phase|        - |No modify flag|bad CRC|would|\s*$)' "$work/repair0.out" | head -3 | tr '\n\t' '  ')"
  elif (( oracle == 0 && rc == 0 )); then
    cls=a
  else
    timeout "$case_timeout" "${xfbtree[@]}" scrub "$img" --repair --no-progress >"$work/repair.out" 2>"$work/repair.err"
    local rrc=$?
    if (( rrc > 2 )) || grep -qE 'Unhandled exception|   at Xfbtree' "$work/repair.err" "$work/repair.out"; then
      cls=BAD-crash; detail="repair exit $rrc: $(head -c 300 "$work/repair.err" | tr '\n\t' '  ')"
    elif (( rrc != 0 )); then
      cls=c; detail="$(grep -E 'not repaired|cannot|refus|error' "$work/repair.out" "$work/repair.err" | head -2 | cut -d: -f2- | tr '\n\t' '  ' | head -c 300)"
      [ -z "$detail" ] && detail="$(grep -vE 'clean' "$work/repair.out" | head -3 | tr '\n\t' '  ' | head -c 300)"
      (( rc == 2 )) && detail="could not check: $(head -c 200 "$work/scrub.err" "$work/scrub.json" | tr '\n\t' '  ')"
    elif ! xfs_repair -n "$img" >"$work/repair1.out" 2>&1; then
      cls=BAD-repair; detail="after repair xfs_repair -n: $(grep -vE '^(Phase|        - |No modify flag|\s*$)' "$work/repair1.out" | head -3 | tr '\n\t' '  ')"
    else
      local k=ok
      (( kernel_check )) && k=$(kernel_verify "$img" "$dir" "$fuzzed_ino")
      if [[ $k == data:* ]]; then cls=BAD-data; detail=$k
      elif [ "$k" != ok ]; then cls=BAD-repair; detail="kernel: $k"
      elif (( oracle == 0 )); then cls=b+
      else cls=b; fi
    fi
    if (( oracle == 0 && rrc != 0 )) && [ "$cls" = c ]; then cls=BAD-falsepos; fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$field" "$verb" "$cls" "$detail"
  if [[ $cls == BAD-* ]]; then
    mkdir -p "$dir/bad"; local tag="${target}_${field//[^A-Za-z0-9_.]/_}_$verb"
    cp "$work/scrub.json" "$dir/bad/$tag.scrub.json" 2>/dev/null; cp "$work/scrub.err" "$dir/bad/$tag.scrub.err" 2>/dev/null
    cp "$work/repair.out" "$dir/bad/$tag.repair.out" 2>/dev/null; cp "$work/repair0.out" "$dir/bad/$tag.xfs_repair.out" 2>/dev/null
  fi
}

sweep() {
  local dir=$1 filter=${2:-.} t name nav f v
  [ -f "$dir/base.img" ] || die "no $dir/base.img (run: $0 base $dir MKFS_OPTIONS)"
  local out=$dir/results.tsv
  : > "$out"
  while IFS='|' read -r name nav; do
    [[ $name =~ $filter ]] || continue
    local i=0 cap=$max_fields
    [[ $name == dir-* ]] && (( cap == 0 || cap > 40 )) && cap=40 # a directory block lists every entry
    while read -r f; do
      i=$((i + 1)); (( cap == 0 || i <= cap )) || break
      local picked=("${verbs[@]}")
      # FUZZ_PICK=rotate: random plus one other verb per field, in turn (a sweep of a few hours becomes one of minutes).
      [ "${FUZZ_PICK:-all}" = rotate ] && picked=(random "${verbs[$(( 1 + i % (${#verbs[@]} - 1) ))]}")
      for v in "${picked[@]}"; do
        run_case "$dir" "$name" "$nav" "$f" "$v" | tee -a "$out"
      done
    done < <(fields "$dir/base.img" "$nav")
  done < <(targets "$dir/base.img")
  rm -rf "$dir/work"
  echo "== per class"; cut -f4 "$out" | sort | uniq -c
  echo "== per structure and class"; cut -f1,4 "$out" | sort | uniq -c
}

# The online path: the fuzzed copy served by `xfbtree mount`, a writer writing files into it, `xfbtree scrub DIR` and
# `xfbtree scrub DIR --repair` while it writes, then the unmount and xfs_repair -n. Cases: "NAV|FIELD|VERB" lines on
# stdin (NAV's commands separated by ';'). One TSV line per case: the exit codes and the verdict.
online() {
  local dir=$1 nav field verb
  [ -f "$dir/base.img" ] || die "no $dir/base.img"
  local work=$dir/online; mkdir -p "$work"
  while IFS='|' read -r nav field verb; do
    [ -n "$nav" ] || continue
    local img=$work/case.img args=() c
    cp --sparse=always "$dir/base.img" "$img"
    IFS=';' read -r -a cmds <<< "$nav"; for c in "${cmds[@]}"; do args+=(-c "$c"); done
    xfs_db -x "${args[@]}" -c "fuzz -d $field $verb" "$img" >/dev/null 2>&1
    xfs_repair -n "$img" >/dev/null 2>&1; local oracle=$?
    mnt=$(mktemp -d)
    "${xfbtree[@]}" mount "$img" "$mnt" >"$work/mount.out" 2>&1 &
    local server=$! i
    for i in $(seq 1 100); do grep -q mounted "$work/mount.out" 2>/dev/null && break; kill -0 $server 2>/dev/null || break; sleep 0.2; done
    if ! grep -q mounted "$work/mount.out"; then
      printf '%s\t%s\t%s\tmount-refused\t%s\n' "$nav" "$field" "$verb" "$(head -c 200 "$work/mount.out" | tr '\n\t' '  ')"
      wait $server 2>/dev/null; rmdir "$mnt"; mnt=""; continue
    fi
    # The writer: files of 64 KiB written and removed in turn until told to stop.
    ( mkdir -p "$mnt/online-writer"; n=0; while [ ! -e "$work/stop" ]; do
        head -c 65536 /dev/urandom > "$mnt/online-writer/f$((n % 50))" 2>/dev/null; n=$((n + 1)); done; echo "$n" > "$work/written" ) &
    local writer=$!
    rm -f "$work/stop"
    timeout "$case_timeout" "${xfbtree[@]}" scrub "$mnt" --no-progress >"$work/check.out" 2>&1; local rc=$?
    timeout "$case_timeout" "${xfbtree[@]}" scrub "$mnt" --repair --no-progress >"$work/repair.out" 2>&1; local rrc=$?
    touch "$work/stop"; wait $writer
    umount "$mnt" || umount -l "$mnt"; wait $server; local mrc=$?; rmdir "$mnt"; mnt=""; rm -f "$work/stop"
    xfs_repair -n "$img" >/dev/null 2>&1; local after=$?
    local cls=c
    if (( rc > 2 || rrc > 2 )) || grep -qE 'Unhandled exception|   at Xfbtree' "$work"/*.out; then cls=BAD-crash
    elif (( oracle != 0 && rc == 0 )); then cls=BAD-missed
    elif (( rrc == 0 && after != 0 )); then cls=BAD-repair
    elif (( oracle == 0 && rc == 0 )); then cls=a
    elif (( rrc == 0 && after == 0 )); then cls=b; fi
    printf '%s\t%s\t%s\t%s\toracle %s, scrub DIR %s, --repair %s, unmount %s, xfs_repair -n after %s, %s files written meanwhile; %s\n' \
      "$nav" "$field" "$verb" "$cls" "$oracle" "$rc" "$rrc" "$mrc" "$after" "$(cat "$work/written" 2>/dev/null)" \
      "$(grep -E '^repair:|not repaired' "$work/repair.out" | head -3 | cut -c1-160 | tr '\n\t' '  ')"
  done
  rm -rf "$work"
}

# Again the (target, field, verb) cases of FILE (lines of an earlier results.tsv, e.g. its BAD ones) on DIR/base.img.
recheck() {
  local dir=$1 file=$2 t f v rest name nav
  declare -A navs
  while IFS='|' read -r name nav; do navs[$name]=$nav; done < <(targets "$dir/base.img")
  while IFS=$'\t' read -r t f v rest; do
    [ -n "${navs[$t]:-}" ] || continue
    run_case "$dir" "$t" "${navs[$t]}" "$f" "$v"
  done < "$file"
  rm -rf "$dir/work"
}

v4() {
  local dir; dir=$(mktemp -d)
  truncate -s 320M "$dir/v4.img"
  mkfs.xfs -q -f -m crc=0,reflink=0,rmapbt=0 -i sparse=0 -n ftype=0 "$dir/v4.img" 2>/dev/null || { rm -rf "$dir"; echo "v4: this mkfs.xfs cannot make a v4 image (skipped)"; return 0; }
  "${xfbtree[@]}" scrub "$dir/v4.img" --no-progress >"$dir/out" 2>&1; local rc=$?
  "${xfbtree[@]}" scrub "$dir/v4.img" --repair --no-progress >>"$dir/out" 2>&1; local rrc=$?
  cat "$dir/out"; rm -rf "$dir"
  (( rc == 2 && rrc == 2 )) || { echo "v4: exit $rc/$rrc, expected 2" >&2; return 1; }
}

case ${1:-} in
  base) shift; [ $# -ge 1 ] || die "usage: $0 base DIR [MKFS_OPTIONS...]"; make_base "$@" ;;
  sweep) shift; [ $# -ge 1 ] || die "usage: $0 sweep DIR [TARGET_REGEX]"; sweep "$@" ;;
  recheck) shift; [ $# -ge 2 ] || die "usage: $0 recheck DIR FILE"; recheck "$@" ;;
  online) shift; [ $# -ge 1 ] || die "usage: $0 online DIR < cases"; online "$@" ;;
  v4) v4 ;;
  *) die "usage: $0 base DIR [MKFS_OPTIONS...] | sweep DIR [TARGET_REGEX] | online DIR < cases | v4" ;;
esac
