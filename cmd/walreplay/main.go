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
//	walreplay publish --archive URL --brokers B [--topics ordered|tables|both]
//	        [--from-lsn N | --from-time RFC3339] [--to-lsn N | --to-time RFC3339] [--force]
//
// Archive URLs are file:///abs/dir and s3://bucket/prefix; S3 settings come
// from --s3-* flags and the standard AWS environment. Each archive request
// is retried (a line on stderr per retry) for at most --timeout (default
// 2m), then walreplay exits 2 naming the endpoint and what to check. Replica URLs are
// sqlite:///abs/path.db and postgres://... . See docs/PITR.md.
//
// Exit codes: 0 success; 1 failure (verify: an object is corrupt; list,
// prune: a manifest is refused or corrupt); 2 bad usage or the archive
// cannot be read (or did not answer within --timeout); 3 (verify, list,
// restore, publish) a hole or a missing object (publish: also a hole the
// topic would get); 4 (restore, publish) the target is outside the archive
// or not in it.
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

// program is set in init, not in its declaration: its commands' flag sets
// (newFlagSet) read it for their help, which would make an initialization
// cycle.
var program *cli.Program

func init() {
	program = &cli.Program{Name: "walreplay", Commands: []cli.Command{
		{Name: "list", Summary: "list lineages, snapshots, the LSN and time window and gaps of an archive", Run: reachable(runList),
			Usage:   "--archive URL [--json] [--timeout D]",
			Example: "walreplay list --archive file:///var/backups/walship"},
		{Name: "verify", Summary: "check continuity and checksums of everything: exit 0 intact, 1 corrupt, 3 missing/hole, 2 unreadable", Run: reachable(runVerify),
			Usage:   "--archive URL [--json] [--parallel N] [--timeout D]",
			Example: "walreplay verify --archive file:///var/backups/walship --parallel 4"},
		{Name: "restore", Summary: "restore a replica to a point in time (or follow the archive as a standby)", Run: reachable(runRestore),
			Usage: "--archive URL --to TARGET_URL [--target-time RFC3339 | --target-lsn N | --target-source-lsn X/Y | " +
				"--target-xid N | --target-name NAME | --target latest] [--exclusive] [--dry-run] [--json] [--parallel N] " +
				"[--follow [--poll-interval D]] [--continue] [--no-snapshot] [--stream-verify] [--timeout D]",
			Example: "walreplay restore --archive file:///var/backups/walship --to sqlite:///tmp/restored.db --target-time 2026-01-02T15:04:05Z\n" +
				"walreplay restore --archive file:///var/backups/walship --to sqlite:///tmp/standby.db --follow"},
		{Name: "prune", Summary: "delete snapshots beyond a retention policy and the segments no kept snapshot needs", Run: reachable(runPrune),
			Usage:   "--archive URL (--keep-snapshots N | --keep-within D) [--dry-run] [--json] [--timeout D]",
			Example: "walreplay prune --archive file:///var/backups/walship --keep-snapshots 7 --dry-run"},
		{Name: "publish", Summary: "rebuild the Kafka topics from the archive: the daemon's records, from any point, skipping what the topics hold", Run: reachable(runPublish),
			Usage: "--archive URL --brokers B [--topics ordered|tables|both] [--topic-prefix P] [--partitions N] " +
				"[--from-lsn N | --from-time RFC3339] [--to-lsn N | --to-time RFC3339] [--force] [--parallel N] [--timeout D]",
			Example: "walreplay publish --archive file:///var/backups/walship --brokers localhost:9092 --topics ordered"},
	}}
}

func main() { program.Main() }

// run runs walreplay with args (tests call it in-process).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return program.Run(ctx, args, stdin, stdout, stderr)
}
