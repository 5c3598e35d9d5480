// Command walship is the walship daemon and its operator tools.
//
//	walship run    --config FILE                  the primary daemon
//	walship consume --config FILE                 the replica daemon
//	walship demo                                  the whole pipeline on one machine
//	walship append --wal DIR [--sync local|off]   NDJSON transactions in, acknowledgements out
//	walship dump   --wal DIR [--from LSN] [--to LSN]
//	walship verify --wal DIR [--json]
//	walship checksum start|report|repair --config FILE
//
// See docs/DESIGN.md §5.1 and docs/OPERATIONS.md.
//
// # Building
//
// `walship demo` is part of the command line (the README's tour and
// scripts/demo.sh run it), so a plain build includes it, and with it what
// only the demo needs: an in-process Kafka-protocol broker (kfake) and the
// PostgreSQL cluster runner (internal/pgcluster), about 5.3 MB of a 58 MB
// binary. The demo imports those two directly, not the test helpers
// kafkatest and pgtest, so that no package made for tests is linked into
// the binary. A production build can leave the demo out and change nothing
// else:
//
//	go build -tags nodemo ./cmd/walship
//
// Its `walship demo` exits 2 and says how to get the demo.
package main

import "github.com/walship/walship/internal/cli"

// program is set in init, not in its declaration: its commands' flag sets
// (newFlagSet) read it for their help, which would make an initialization
// cycle.
var program *cli.Program

func init() {
	program = &cli.Program{Name: "walship", Commands: []cli.Command{
		{Name: "run", Summary: "the primary daemon: sources -> WAL -> sinks", Run: runRun,
			Usage:   "--config FILE",
			Example: "walship run --config /etc/walship/walship.yaml"},
		{Name: "consume", Summary: "the replica daemon: Kafka -> replica, exactly once", Run: runConsume,
			Usage:   "--config FILE",
			Example: "walship consume --config /etc/walship/replica.yaml"},
		{Name: "ha", Summary: "check an HA group: exit 0 when no transaction was lost, 1 naming each lost range", Run: runHA,
			Usage:   "check --config FILE [--acknowledge] [--json]",
			Example: "walship ha check --config /etc/walship/walship.yaml"},
		{Name: "snapshot", Summary: "ask the running daemon for an incremental snapshot of a PostgreSQL table", Run: runSnapshot,
			Usage:   "--config FILE --table SCHEMA.TABLE [--where SQL]",
			Example: "walship snapshot --config /etc/walship/walship.yaml --table public.orders --where \"created > '2024-01-01'\""},
		{Name: "checksum", Summary: "consistency checks in the stream: start a round, report a replica's verdict (exit 0 equal, 1 different, 3 unfinished), or repair the chunks it found different", Run: runChecksum,
			Usage:   "start --config RUN_CONFIG [--table T] | report --config CONSUME_CONFIG [--json] | repair --config CONSUME_CONFIG --run-config RUN_CONFIG",
			Example: "walship checksum report --config /etc/walship/replica.yaml"},
		{Name: "demo", Summary: "run the whole pipeline locally on embedded defaults and prove replica and restore equal the source", Run: runDemo,
			Usage:   "[--txns N] [--dir DIR] [--keep] [--listen ADDR] [--http-source] [--hold DURATION]",
			Example: "walship demo --txns 30000 --hold 10m"},
		{Name: "append", Summary: "append NDJSON transactions from stdin to the WAL, acknowledging each once durable", Run: runAppend,
			Usage:   "--wal DIR [--sync local|off] [--segment-size SIZE] [--compression none|s2|zstd] [--idempotency-key KEY] < NDJSON",
			Example: `echo '{"table":"public.t","op":"c","key":{"id":1},"after":{"id":1,"v":"x"}}' | walship append --wal /tmp/wal`},
		{Name: "dump", Summary: "print the WAL's changes as NDJSON", Run: runDump,
			Usage:   "--wal DIR [--from LSN] [--to LSN]",
			Example: "walship dump --wal /tmp/wal --from 1 --to 100"},
		{Name: "verify", Summary: "check the WAL's integrity: exit 0 intact, 1 corrupt, 2 unreadable", Run: runVerify,
			Usage:   "--wal DIR [--json] [-v]",
			Example: "walship verify --wal /tmp/wal --json"},
	}}
}

func main() { program.Main() }
