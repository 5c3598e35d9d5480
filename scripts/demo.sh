#!/usr/bin/env bash
# A short real run of walship on embedded defaults: append transactions to a
# fresh WAL (each acknowledged only once fdatasync has made it durable), dump
# them back, and verify the log.
#
#   N=10000       number of transactions
#   WAL_DIR=DIR   where to put the log (default: a new temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
n="${N:-10000}"
dir="${WAL_DIR:-$(mktemp -d)/wal}"
bin=.cache/bin
mkdir -p "$bin"
go build -o "$bin/walship" ./cmd/walship

echo "== walship append: $n transactions into $dir"
start=$(date +%s.%N)
seq 1 "$n" | awk '{
  if ($1 % 10 == 0)
    printf "{\"xid\":%d,\"changes\":[{\"table\":\"public.accounts\",\"op\":\"u\",\"key\":{\"id\":%d},\"after\":{\"id\":%d,\"balance\":{\"$type\":\"numeric\",\"value\":\"%d.50\"}}},{\"table\":\"audit.log\",\"op\":\"c\",\"key\":{\"seq\":%d},\"after\":{\"seq\":%d,\"note\":\"transfer\"}}]}\n", $1, $1 % 100, $1 % 100, $1, $1, $1;
  else
    printf "{\"table\":\"public.accounts\",\"op\":\"c\",\"key\":{\"id\":%d},\"after\":{\"id\":%d,\"owner\":\"user-%d\",\"balance\":{\"$type\":\"numeric\",\"value\":\"100.00\"}}}\n", $1, $1, $1;
}' | "$bin/walship" append --wal "$dir" > "$dir.acks"
end=$(date +%s.%N)
echo "acknowledged $(wc -l < "$dir.acks") transactions in $(echo "$end - $start" | bc) s; last acks:"
tail -n 2 "$dir.acks"

echo "== walship dump (first and last changes)"
last=$(tail -n 1 "$dir.acks" | sed 's/.*"lsn":\([0-9]*\).*/\1/')
"$bin/walship" dump --wal "$dir" --to 2
echo "..."
"$bin/walship" dump --wal "$dir" --from "$((last - 1))"

echo "== walship verify"
"$bin/walship" verify --wal "$dir" -v
