#!/usr/bin/env bash
# The full test suite, exactly as CI runs it (.ci/run calls this script).
#
#   FUZZTIME=10s  how long each fuzz target runs (0 to skip fuzzing)
#
# Every test that needs a real server starts it itself; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
fuzztime="${FUZZTIME:-10s}"
start=$SECONDS

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 25m ./...

if [ "$fuzztime" != "0" ]; then
  echo "== fuzz targets, $fuzztime each"
  for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
    for target in $(cat "$dir"/*_test.go | grep -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/^func //'); do
      go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$dir"
    done
  done
fi

echo "== all tests passed in $((SECONDS - start))s"
