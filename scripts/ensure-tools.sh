#!/usr/bin/env bash
# Makes sure the XFS userspace tools and zstd are present; installs them with apt-get when running as root.
# Usage: scripts/ensure-tools.sh   (sourced or executed; exit status 0 when everything is there)
need=()
for tool in mkfs.xfs xfs_db xfs_repair xfs_mdrestore; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || need+=(xfsprogs)
done
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v getfattr >/dev/null 2>&1 || need+=(attr)   # the kernel oracle of the xattr tests
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} ..." >&2
  if apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
    exit 0
  fi
  echo "error: apt-get install ${need[*]} failed" >&2
  exit 1
fi
echo "error: missing packages: ${need[*]} (install them with: sudo apt-get install ${need[*]})" >&2
exit 1
