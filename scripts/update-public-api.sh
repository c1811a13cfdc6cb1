#!/usr/bin/env bash
# Brings the public API lists of every library (PublicAPI.Shipped.txt / PublicAPI.Unshipped.txt, checked by
# Microsoft.CodeAnalysis.PublicApiAnalyzers) up to date with the source, after a deliberate change to the public API:
#   RS0017 (a declared symbol that no longer exists)    -> removed from PublicAPI.Unshipped.txt, or, when it had
#                                                          shipped, marked "*REMOVED*" there
#   RS0016 (a public symbol the lists do not declare)  -> added to PublicAPI.Unshipped.txt (dotnet format's fix)
# Then builds the libraries, which must be clean. Review the diff of the lists before committing: it is the API
# change users will see. After a merge that brought in other branches' public API, run it and commit the lists.
# Usage: scripts/update-public-api.sh [--unreleased] [PROJECT_DIR...]     default: every library under src/
#   --unreleased: the version in PublicAPI.Shipped.txt was never published, so a symbol that is gone leaves
#                 PublicAPI.Shipped.txt instead of being marked *REMOVED* (nobody can depend on it yet).
set -euo pipefail
cd "$(dirname "$0")/.."
unreleased=false
if [ "${1:-}" = "--unreleased" ]; then unreleased=true; shift; fi
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(src/Native/Xfbtree.Native src/Managed/Xfbtree src/Managed/Xfbtree.Xfs)

for project in "${projects[@]}"; do
  project=${project%/}
  csproj=$(ls "$project"/*.csproj)
  unshipped="$project/PublicAPI.Unshipped.txt"
  shipped="$project/PublicAPI.Shipped.txt"
  [ -f "$unshipped" ] && [ -f "$shipped" ] || { echo "update-public-api: $project has no PublicAPI.*.txt" >&2; exit 1; }
  echo "update-public-api: $project" >&2

  # RS0017 has no automatic fix: take the symbols from the compiler's messages for this project.
  # --no-incremental: an up-to-date build reports no diagnostics at all.
  out=$(dotnet build "$csproj" -c Release --nologo -v q --no-incremental -p:TreatWarningsAsErrors=false 2>&1 || true)
  mapfile -t gone < <(grep -F "[$(realpath "$csproj")]" <<<"$out" | grep -oE "RS0017: Symbol '[^']+'" \
                        | sed -E "s/^RS0017: Symbol '(.*)'$/\1/" | sort -u)
  for symbol in "${gone[@]}"; do
    if grep -Fxq -- "$symbol" "$unshipped"; then
      grep -Fxv -- "$symbol" "$unshipped" > "$unshipped.new" || true
      mv "$unshipped.new" "$unshipped"
      echo "  removed (never shipped): $symbol" >&2
    elif grep -Fxq -- "$symbol" "$shipped" && $unreleased; then
      grep -Fxv -- "$symbol" "$shipped" > "$shipped.new" || true
      mv "$shipped.new" "$shipped"
      echo "  removed (in the unreleased Shipped list): $symbol" >&2
    elif grep -Fxq -- "$symbol" "$shipped"; then
      printf '%s\n' "*REMOVED*$symbol" >> "$unshipped"
      echo "  removed (had shipped, marked *REMOVED*): $symbol" >&2
    fi
  done

  # RS0016: dotnet format applies the analyzer's own fix (warn severity: as errors the load would stop early).
  dotnet format analyzers "$csproj" --diagnostics RS0016 --severity warn -v q
done

for project in "${projects[@]}"; do
  dotnet build "$project" -c Release --nologo -v q --no-incremental >/dev/null || {
    echo "update-public-api: $project does not build cleanly after the update; see: dotnet build $project -c Release" >&2; exit 1; }
done
echo "update-public-api: done; review: git diff -- '*PublicAPI*.txt'" >&2
