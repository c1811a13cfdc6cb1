#!/usr/bin/env bash
# Runs one SharpFuzz target under afl++ for a bounded time and fails when afl++ recorded a crash or a hang.
#   scripts/fuzz.sh TARGET SECONDS [Release|Debug]
# TARGET is one of: btree, reader, orderedmap (see docs/fuzzing.md). The harness is published and its library
# assemblies instrumented once per configuration and source state (fuzz-out/build-CONFIG, reused while the sources
# are unchanged). Seeds: tests/Xfbtree.Fuzz/corpus/TARGET plus the regression inputs tests/Xfbtree.Fuzz/regressions/TARGET.
# Findings: fuzz-out/findings-TARGET-CONFIG/default/{crashes,hangs}; afl's log next to it. Installs afl++ when
# missing and running as root. Exit status: 0 clean, 1 findings, 2 setup failure.
set -euo pipefail
usage="usage: fuzz.sh TARGET SECONDS [Release|Debug]"
target=${1:?$usage}
seconds=${2:?$usage}
config=${3:-Release}
case "$target" in btree|reader|orderedmap) ;; *) echo "fuzz.sh: unknown target '$target'" >&2; exit 2 ;; esac
case "$config" in Release|Debug) ;; *) echo "$usage" >&2; exit 2 ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PATH="$PATH:/usr/sbin:/sbin"

command -v afl-fuzz >/dev/null 2>&1 || {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz.sh: installing afl++ ..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++ >/dev/null
  else
    echo "fuzz.sh: afl-fuzz is missing (sudo apt-get install afl++)" >&2; exit 2
  fi
}
scripts/ensure-tools.sh

# Publish + instrument once per source state (tracked, modified and untracked files of src/ and the harness).
out="$repo/fuzz-out/build-$config"
stamp=$( { git ls-files -s src tests/Xfbtree.Fuzz; git diff HEAD -- src tests/Xfbtree.Fuzz;
           git ls-files -o --exclude-standard src tests/Xfbtree.Fuzz | sort | xargs -r cat; echo "$config"; } | git hash-object --stdin)
if [ "$(cat "$out/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "fuzz.sh: publishing and instrumenting ($config)" >&2
  rm -rf "$out"
  dotnet publish tests/Xfbtree.Fuzz/Xfbtree.Fuzz.csproj -c "$config" -o "$out" --nologo -v q >/dev/null
  dotnet tool restore >/dev/null
  for dll in Xfbtree.Native.dll Xfbtree.Core.dll Xfbtree.Xfs.dll xfbtree.dll; do
    [ -f "$out/$dll" ] || continue
    dotnet sharpfuzz "$out/$dll" >/dev/null
  done
  echo "$stamp" >"$out/.stamp"
fi

# Seeds: the corpus and the regression inputs (afl-fuzz refuses to start when one of them crashes).
seeds="$repo/fuzz-out/seeds-$target"
rm -rf "$seeds"
mkdir -p "$seeds"
for d in corpus regressions; do
  [ -d "tests/Xfbtree.Fuzz/$d/$target" ] || continue
  find "tests/Xfbtree.Fuzz/$d/$target" -type f ! -name '.*' -exec cp -t "$seeds" {} +
done
[ -n "$(ls -A "$seeds")" ] || { echo "fuzz.sh: no seeds for $target" >&2; exit 2; }

findings="$repo/fuzz-out/findings-$target-$config"
# One processor as far as .NET can tell: the reader's scan then runs its AGs on one thread (stable coverage).
export DOTNET_PROCESSOR_COUNT=1
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
stats="$findings/default/fuzzer_stats"
for attempt in 1 2 3 4 5; do
  rm -rf "$findings"
  timeout $((seconds + 300)) afl-fuzz -i "$seeds" -o "$findings" -t 5000 -m none -V "$seconds" \
    -- dotnet "$out/Xfbtree.Fuzz.dll" "$target" >"$findings.log" 2>&1 || true
  [ -f "$stats" ] && break
  # afl++ sometimes sees an empty coverage map on the first run of a fresh build, more often on a loaded machine
  # (two attempts in a row failed so at load 30, three in a clean-clone suite run, where the same build
  # started at once when run again): try up to five times, keeping each failed start's log.
  if grep -q "No instrumentation detected" "$findings.log" && [ "$attempt" -lt 5 ]; then
    cp "$findings.log" "$findings.start-$attempt.log"
    echo "fuzz.sh: retrying start-up (empty coverage map on the dry run; log kept in $findings.start-$attempt.log)" >&2
    continue
  fi
  break
done
[ -f "$stats" ] || { echo "fuzz.sh: afl-fuzz did not start; see $findings.log" >&2; tail -20 "$findings.log" >&2; exit 2; }
stat() { awk -F: -v k="$1" '$1 ~ "^"k" *$" {gsub(/ /,"",$2); print $2}' "$stats"; }
execs=$(stat execs_done)
runtime=$(( $(stat last_update) - $(stat start_time) ))
rate=$(( runtime > 0 ? execs / runtime : execs ))
crashes=$(find "$findings/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
hangs=$(find "$findings/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
echo "fuzz $target ($config): ${runtime}s, $execs executions, $rate exec/s, $(stat corpus_count) corpus entries, $crashes crashes, $hangs hangs"
if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
  echo "fuzz.sh: findings in $findings/default/{crashes,hangs}; replay with: dotnet $out/Xfbtree.Fuzz.dll $target FILE..." >&2
  exit 1
fi
