#!/usr/bin/env bash
# Installs what the benchmarks need beyond the .NET SDK: the system LMDB library (Debian/Ubuntu liblmdb-dev).
# LightningDB's bundled liblmdb.so needs glibc 2.38, so the benchmark loads the system's liblmdb.so.0 instead.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'liblmdb\.so\.0'; then
  echo "bench/setup.sh: liblmdb already installed"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblmdb-dev
else
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblmdb-dev
fi
