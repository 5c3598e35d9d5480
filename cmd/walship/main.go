// Command walship is the walship daemon and its operator tools.
//
//	walship run    --config FILE                  the primary daemon
//	walship consume --config FILE                 the replica daemon
//	walship demo                                  the whole pipeline on one machine
//	walship append --wal DIR [--sync local|off]   NDJSON transactions in, acknowledgements out
//	walship dump   --wal DIR [--from LSN] [--to LSN]
//	walship verify --wal DIR [--json]
//
// See DESIGN.md §5 and docs/OPERATIONS.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitError carries a process exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad command-line usage (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"run", "the primary daemon: sources -> WAL -> sinks (--config FILE)", runRun},
	{"consume", "the replica daemon: Kafka -> replica, exactly once (--config FILE)", runConsume},
	{"demo", "run the whole pipeline locally on embedded defaults and prove replica and restore equal the source", runDemo},
	{"append", "append NDJSON transactions from stdin to the WAL, acknowledging each once durable", runAppend},
	{"dump", "print the WAL's changes as NDJSON", runDump},
	{"verify", "check the WAL's integrity: exit 0 intact, 1 corrupt, 2 unreadable", runVerify},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "walship:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return usageError("no command given")
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	printUsage(stderr)
	return usageError("unknown command %q", args[0])
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: walship <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'walship <command> -h' for a command's flags")
}
