#!/usr/bin/env bash
# Runs every test project and prints, last, one line "N passed, N failed" summed over all of them.
# Usage: ./test.sh [extra arguments for the Expecto runners, e.g. --filter-test-list Backoff]
set -uo pipefail
cd "$(dirname "$0")"

configuration=${CONFIGURATION:-Release}
counts_dir=$(mktemp -d)
trap 'rm -rf "$counts_dir"' EXIT

passed=0
failed=0
status=0

# Expecto projects: each writes "passed failed" to the file named by EVENTS_TEST_COUNTS.
expecto_projects=(tests/Events.Tests)
# xunit projects (the C# facade): counted from their TRX results.
xunit_projects=()
[ -d tests/Events.CSharp.Tests ] && xunit_projects+=(tests/Events.CSharp.Tests)
[ -d tests/Events.AspNetCore.Tests ] && xunit_projects+=(tests/Events.AspNetCore.Tests)

for project in "${expecto_projects[@]}"; do
  [ -d "$project" ] || continue
  name=$(basename "$project")
  echo "== $name"
  counts="$counts_dir/$name.counts"
  if ! EVENTS_TEST_COUNTS="$counts" dotnet run --project "$project" -c "$configuration" -- "$@"; then
    status=1
  fi
  if [ -s "$counts" ]; then
    read -r p f <"$counts"
    passed=$((passed + p))
    failed=$((failed + f))
  else
    echo "!! $name reported no results (it did not build or crashed)"
    status=1
  fi
done

for project in "${xunit_projects[@]}"; do
  name=$(basename "$project")
  echo "== $name"
  results="$counts_dir/$name"
  if ! dotnet test "$project" -c "$configuration" --logger "trx;LogFileName=results.trx" --results-directory "$results"; then
    status=1
  fi
  trx="$results/results.trx"
  if [ -s "$trx" ]; then
    p=$(grep -o '<Counters [^>]*' "$trx" | grep -o ' passed="[0-9]*"' | grep -o '[0-9]*')
    f=$(grep -o '<Counters [^>]*' "$trx" | grep -o ' failed="[0-9]*"' | grep -o '[0-9]*')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
  else
    echo "!! $name reported no results (it did not build or crashed)"
    status=1
  fi
done

# The packages as a user gets them: packed into artifacts/packages (unless the caller packed them there
# already and says so with EVENTS_PACKED=1), then restored into fresh projects by tests/Packages/check.sh.
if [ -x tests/Packages/check.sh ]; then
  echo "== packages"
  if [ "${EVENTS_PACKED:-}" != 1 ]; then
    rm -rf artifacts/packages
    if ! dotnet pack Events.sln -c "$configuration" -o artifacts/packages >"$counts_dir/pack.log" 2>&1; then
      tail -40 "$counts_dir/pack.log"
      echo "!! dotnet pack failed"
      status=1
    fi
  fi
  counts="$counts_dir/packages.counts"
  if ! EVENTS_TEST_COUNTS="$counts" tests/Packages/check.sh artifacts/packages; then
    status=1
  fi
  if [ -s "$counts" ]; then
    read -r p f <"$counts"
    passed=$((passed + p))
    failed=$((failed + f))
  else
    echo "!! the package checks reported no results"
    status=1
  fi
fi

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  # A project that could not run counts as one failure, so the summary never reads as all green.
  failed=1
fi
printf "\n%s passed, %s failed\n" "$passed" "$failed"
exit "$status"
