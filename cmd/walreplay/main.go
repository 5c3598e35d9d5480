// Command walreplay lists, verifies and restores from a walship archive
// (point-in-time recovery, docs/DESIGN.md §5.2):
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
	"io"

	"github.com/walship/walship/internal/cli"
)

// Exit codes.
const (
	exitFailure    = 1 // also: verify found a corrupt object
	exitUsage      = 2 // also: the archive cannot be read
	exitHole       = 3 // a hole or a missing object
	exitOutOfRange = 4 // restore: target outside the archive, or not found
)

var program = &cli.Program{Name: "walreplay", Commands: []cli.Command{
	{Name: "list", Summary: "list lineages, snapshots, the LSN and time window and gaps of an archive", Run: runList},
	{Name: "verify", Summary: "check continuity and checksums of everything: exit 0 intact, 1 corrupt, 3 missing/hole, 2 unreadable", Run: runVerify},
	{Name: "restore", Summary: "restore a replica to a point in time (or follow the archive as a standby)", Run: runRestore},
	{Name: "prune", Summary: "delete snapshots beyond a retention policy and the segments no kept snapshot needs", Run: runPrune},
}}

func main() { program.Main() }

// run runs walreplay with args (tests call it in-process).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return program.Run(ctx, args, stdin, stdout, stderr)
}
