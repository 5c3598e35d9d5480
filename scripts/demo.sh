#!/usr/bin/env bash
# The main job on embedded defaults: `walship demo` — a throwaway PostgreSQL
# (or the HTTP source if its binaries are missing), the WAL, a directory
# archive, an in-process Kafka-protocol broker and a SQLite replica fed by
# `walship consume`; a workload, point-in-time restores, and the proof that
# the replica and the restores equal the source. Ctrl-C cleans up.
#
# Flags are passed to `walship demo` (see `walship demo -h`), e.g.
#   ./scripts/demo.sh --txns 30000 --hold 10m     # then open the status page
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
mkdir -p .cache/bin
go build -o .cache/bin/walship ./cmd/walship
go build -o .cache/bin/walreplay ./cmd/walreplay   # the demo's closing hints run it
exec .cache/bin/walship demo "$@"
