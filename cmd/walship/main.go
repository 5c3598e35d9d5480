// Command walship is the walship daemon and its operator tools.
//
//	walship run    --config FILE                  the primary daemon
//	walship consume --config FILE                 the replica daemon
//	walship demo                                  the whole pipeline on one machine
//	walship append --wal DIR [--sync local|off]   NDJSON transactions in, acknowledgements out
//	walship dump   --wal DIR [--from LSN] [--to LSN]
//	walship verify --wal DIR [--json]
//
// See docs/DESIGN.md §5.1 and docs/OPERATIONS.md.
package main

import "github.com/walship/walship/internal/cli"

var program = &cli.Program{Name: "walship", Commands: []cli.Command{
	{Name: "run", Summary: "the primary daemon: sources -> WAL -> sinks (--config FILE)", Run: runRun},
	{Name: "consume", Summary: "the replica daemon: Kafka -> replica, exactly once (--config FILE)", Run: runConsume},
	{Name: "demo", Summary: "run the whole pipeline locally on embedded defaults and prove replica and restore equal the source", Run: runDemo},
	{Name: "append", Summary: "append NDJSON transactions from stdin to the WAL, acknowledging each once durable", Run: runAppend},
	{Name: "dump", Summary: "print the WAL's changes as NDJSON", Run: runDump},
	{Name: "verify", Summary: "check the WAL's integrity: exit 0 intact, 1 corrupt, 2 unreadable", Run: runVerify},
}}

func main() { program.Main() }
