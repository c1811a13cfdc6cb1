#!/usr/bin/env bash
# Makes a populated XFS v5 image with an rmap btree, without mounting anything and without any file from
# outside this repository: mkfs.xfs -p with a prototype file listing the repo's own sources plus files this
# script generates (large files, a wide directory, symlinks).
# Usage: scripts/make-demo-image.sh IMAGE [SIZE]      (SIZE default 512M)
set -euo pipefail
img=${1:?usage: make-demo-image.sh IMAGE [SIZE]}
size=${2:-512M}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PATH="$PATH:/usr/sbin:/sbin"

# Generated content: deterministic pseudo-random data (seeded), so every run makes the same image layout.
gen() { # gen FILE BYTES SEED
  # openssl dies of SIGPIPE when head has enough: that is expected, hence no pipefail here.
  (set +o pipefail; openssl enc -aes-128-ctr -pass "pass:$3" -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c "$2") >"$1"
}
mkdir -p "$work/data"
for i in 1 2 3 4 5 6 7 8; do gen "$work/data/blob$i.bin" $(( i * 1048576 + i * 4096 )) "xfbtree$i"; done
printf 'small file\n' >"$work/data/small.txt"

proto="$work/proto"
{
  echo "/dev/null"
  echo "0 0"
  echo "d--755 0 0"
  echo "blobs d--755 0 0"
  for i in 1 2 3 4 5 6 7 8; do echo "blob$i.bin ---644 0 0 $work/data/blob$i.bin"; done
  echo "wide d--755 0 0"
  for i in $(seq 1 1500); do echo "entry$i ---644 0 0 $work/data/small.txt"; done
  echo "\$"
  echo "src d--755 0 0"
  n=0
  while IFS= read -r f; do
    n=$((n + 1))
    echo "f$n ---644 0 0 $repo/$f"
  done < <(cd "$repo" && git ls-files 2>/dev/null | grep -E '\.(cs|md|sh|csproj|props|json)$' | head -n 400)
  echo "\$"
  echo "links d--755 0 0"
  for i in $(seq 1 20); do echo "l$i l--777 0 0 ../blobs/blob$(( (i % 8) + 1 )).bin"; done
  echo "\$"
  echo "\$"
} >"$proto"

rm -f "$img"
truncate -s "$size" "$img"
mkfs.xfs -q -f -m crc=1,rmapbt=1,reflink=1,finobt=1 -d agcount=4 -p "$proto" "$img"
