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

echo "== dependencies (scripts/deps.sh)"
./scripts/deps.sh
export WALSHIP_MINIO="${WALSHIP_MINIO:-$(go env GOPATH)/bin/minio}"

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go mod tidy -diff"
if ! go mod tidy -diff; then
  echo "go.mod/go.sum are not tidy: run go mod tidy and commit the result"; exit 1
fi

gobin="$(go env GOPATH)/bin"
echo "== staticcheck $("$gobin/staticcheck" -version)"
if ! "$gobin/staticcheck" ./...; then
  echo "staticcheck found the problems above: fix them (a deliberate exception is a //lint:ignore CHECK reason comment)"; exit 1
fi

# deadcode exits 0 whatever it finds, so any output is the failure.
echo "== deadcode -test"
if ! dead=$("$gobin/deadcode" -test ./... 2>&1) || [ -n "$dead" ]; then
  echo "$dead"
  echo "deadcode: the functions above are reached neither from a main nor from a test: delete them, or call them"; exit 1
fi

echo "== go test -race"
go test -race -count=1 -timeout 25m ./...

# fuzz_one runs one fuzz target. A real finding (a failing input written to
# testdata/) fails at once. Go's coordinator can also give up with "context
# deadline exceeded" when a worker is still minimizing a new input as the time
# runs out; that toolchain stall, and only that, is retried once.
fuzz_one() {
  local out
  if out=$(go test -run='^$' -fuzz="^$2\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$1" 2>&1); then
    echo "$out" | tail -n 2; return 0
  fi
  echo "$out"
  if echo "$out" | grep -q 'context deadline exceeded' && ! echo "$out" | grep -q 'Failing input written'; then
    echo "(fuzz coordinator stall, not a finding: retrying $2 once)"
    go test -run='^$' -fuzz="^$2\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$1"
    return
  fi
  return 1
}

if [ "$fuzztime" != "0" ]; then
  echo "== fuzz targets, $fuzztime each"
  for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
    for target in $(cat "$dir"/*_test.go | grep -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/^func //'); do
      fuzz_one "$dir" "$target"
    done
  done
fi

echo "== all tests passed in $((SECONDS - start))s"
