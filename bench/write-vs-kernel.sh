#!/usr/bin/env bash
# Operations per second of the write engine and of the Linux kernel (loop mount) on the same image, in one run:
# creates, allocating 4 KiB writes, 4 KiB reflinks, 4 KiB punches, with the ratios (bench/Xfbtree.WriteBench).
# Needs root (loop mount) and xfsprogs. Usage: bench/write-vs-kernel.sh [--ops N] [--image IMAGE]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || { echo "write-vs-kernel: needs root (the kernel side is a loop mount)" >&2; exit 2; }
"$repo/scripts/ensure-tools.sh"
dotnet build "$repo/bench/Xfbtree.WriteBench" -c Release --nologo -v q >/dev/null
exec dotnet "$repo/bench/Xfbtree.WriteBench/bin/Release/net10.0/Xfbtree.WriteBench.dll" "$@"
