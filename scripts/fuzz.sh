#!/usr/bin/env bash
# Runs one SharpFuzz target under afl++ for a bounded time and fails when afl++ recorded a crash or a hang.
#   scripts/fuzz.sh TARGET SECONDS [Release|Debug]
# TARGET is one of: btree, reader, orderedmap (see tests/Xfbtree.Fuzz/README.md). The build is published and
# instrumented once per configuration and source state, then reused. Seeds: tests/Xfbtree.Fuzz/corpus/TARGET.
set -euo pipefail
target=${1:?usage: fuzz.sh TARGET SECONDS [Release|Debug]}
seconds=${2:?usage: fuzz.sh TARGET SECONDS [Release|Debug]}
config=${3:-Release}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

command -v afl-fuzz >/dev/null 2>&1 || {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++ >/dev/null
  else
    echo "fuzz.sh: afl-fuzz is missing (sudo apt-get install afl++)" >&2; exit 2
  fi
}
scripts/ensure-tools.sh

out="$repo/fuzz-out/build-$config"
stamp=$(git ls-files -s src tests/Xfbtree.Fuzz | git hash-object --stdin)-$(git diff HEAD -- src tests/Xfbtree.Fuzz | git hash-object --stdin)
if [ "$(cat "$out/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "fuzz.sh: publishing and instrumenting ($config)" >&2
  rm -rf "$out"
  dotnet publish tests/Xfbtree.Fuzz/Xfbtree.Fuzz.csproj -c "$config" -o "$out" --nologo -v q >/dev/null
  dotnet tool restore >/dev/null
  for dll in Xfbtree.Native.dll Xfbtree.Core.dll Xfbtree.Xfs.dll; do
    dotnet sharpfuzz "$out/$dll" >/dev/null
  done
  echo "$stamp" >"$out/.stamp"
fi

findings="$repo/fuzz-out/findings-$target-$config"
rm -rf "$findings"
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
timeout $((seconds + 120)) afl-fuzz -i "tests/Xfbtree.Fuzz/corpus/$target" -o "$findings" -t 10000 -m none -V "$seconds" \
  -- dotnet "$out/Xfbtree.Fuzz.dll" "$target" >"$findings.log" 2>&1 || true

stats="$findings/default/fuzzer_stats"
[ -f "$stats" ] || { echo "fuzz.sh: afl-fuzz did not start; see $findings.log" >&2; tail -20 "$findings.log" >&2; exit 2; }
execs=$(awk -F: '/^execs_done/ {gsub(/ /,"",$2); print $2}' "$stats")
crashes=$(find "$findings/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
hangs=$(find "$findings/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
echo "fuzz $target ($config): ${seconds}s, $execs executions, $crashes crashes, $hangs hangs"
if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
  echo "fuzz.sh: findings in $findings/default/{crashes,hangs}; replay with: dotnet $out/Xfbtree.Fuzz.dll $target < FILE" >&2
  exit 1
fi
