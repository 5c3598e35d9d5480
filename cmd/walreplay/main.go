// Command walreplay lists, verifies and restores from a walship archive
// (point-in-time recovery, DESIGN.md §5):
//
//	walreplay list    --archive URL [--json]
//	walreplay verify  --archive URL [--json]
//	walreplay restore --archive URL --to TARGET_URL
//	        [--target-time RFC3339 | --target-lsn N | --target-source-lsn X/Y |
//	         --target-xid N | --target-name NAME | --target latest]
//	        [--exclusive] [--dry-run] [--json] [--parallel N] [--follow]
//	walreplay prune   --archive URL (--keep-snapshots N | --keep-within D) [--dry-run] [--json]
//
// Archive URLs are file:///abs/dir and s3://bucket/prefix; S3 settings come
// from --s3-* flags and the standard AWS environment. Replica URLs are
// sqlite:///abs/path.db and postgres://... . See docs/PITR.md.
//
// Exit codes: 0 success; 1 failure (verify: an object is corrupt); 2 bad
// usage or the archive cannot be read; 3 (verify, restore) a hole or a
// missing object; 4 (restore) the target is outside the archive or not in
// it.
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

// Exit codes.
const (
	exitFailure    = 1 // also: verify found a corrupt object
	exitUsage      = 2 // also: the archive cannot be read
	exitHole       = 3 // a hole or a missing object
	exitOutOfRange = 4 // restore: target outside the archive, or not found
)

// usageError marks bad command-line usage (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"list", "list lineages, snapshots, the LSN and time window and gaps of an archive", runList},
	{"verify", "check continuity and checksums of everything: exit 0 intact, 1 corrupt, 3 missing/hole, 2 unreadable", runVerify},
	{"restore", "restore a replica to a point in time (or follow the archive as a standby)", runRestore},
	{"prune", "delete snapshots beyond a retention policy and the segments no kept snapshot needs", runPrune},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "walreplay:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(exitFailure)
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
	fmt.Fprintln(w, "usage: walreplay <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'walreplay <command> -h' for a command's flags")
}
