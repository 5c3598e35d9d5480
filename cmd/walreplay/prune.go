package main

import (
	"context"
	"fmt"
	"io"

	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/internal/secret"
	"github.com/walship/walship/pitr"
)

// runPrune applies a retention policy to the archive (pitr.Prune): it keeps
// the newest --keep-snapshots snapshots and those within --keep-within,
// and deletes older snapshots and the segments no kept snapshot needs.
// Manifests it ignored (refused in an encrypted archive, or corrupt) are
// a line each on stderr and make the exit code 1 once the pruning is done:
// damage, as list and verify report it.
func runPrune(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("prune", stderr)
	var af archiveFlags
	af.register(fset)
	keep := fset.Int("keep-snapshots", 0, "keep the newest N snapshots of each lineage")
	within := fset.Duration("keep-within", 0, "also keep the snapshots committed within this duration (e.g. 168h)")
	dryRun := fset.Bool("dry-run", false, "print what would be deleted and delete nothing")
	asJSON := fset.Bool("json", false, "print the result as JSON")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	// The policy is checked here, in the flags' words, rather than by
	// RetentionPolicy.Validate, whose errors speak of its fields.
	switch {
	case *keep < 0:
		return usageError("--keep-snapshots %d: must not be negative", *keep)
	case *within < 0:
		return usageError("--keep-within %v: must not be negative", *within)
	case *keep == 0 && *within == 0:
		return usageError("prune needs a retention policy, or it would keep nothing: give --keep-snapshots N and/or --keep-within D")
	}
	policy := pitr.RetentionPolicy{KeepSnapshots: *keep, KeepWithin: *within, Lineage: af.lineage, DryRun: *dryRun}
	src, err := openArchive(ctx, af, stderr)
	if err != nil {
		return err
	}
	if err := requireKey(ctx, src, af); err != nil {
		return err
	}
	rep, err := pitr.Prune(ctx, src.Archive(), policy)
	if rep != nil {
		if *asJSON {
			out := pruneJSON{Archive: secret.URL(af.url), DryRun: *dryRun, Lineages: []prunedJSON{}, Ignored: []catalogProblemJSON{}}
			for _, p := range rep.Ignored {
				out.Ignored = append(out.Ignored, catalogProblemJSON{Lineage: p.Lineage, Key: p.Key, Kind: p.Kind, Error: p.Error})
			}
			for _, l := range rep.Lineages {
				out.Lineages = append(out.Lineages, prunedJSON{Lineage: l.Lineage, OldestKept: l.OldestKept,
					KeptSnapshots: nonNil(l.KeptSnapshots), DeletedSnapshots: nonNil(l.DeletedSnapshots), DeletedSegments: nonNil(l.DeletedSegments)})
			}
			if werr := writeJSON(stdout, out); werr != nil && err == nil {
				err = werr
			}
		} else {
			verb := "deleted"
			if *dryRun {
				verb = "would delete"
			}
			for _, l := range rep.Lineages {
				fmt.Fprintf(stdout, "lineage %s: history now starts at the snapshot at LSN %d; %s %d snapshots and %d segments\n",
					l.Lineage, l.OldestKept, verb, len(l.DeletedSnapshots), len(l.DeletedSegments))
				for _, k := range append(l.DeletedSnapshots, l.DeletedSegments...) {
					fmt.Fprintf(stdout, "  %s %s\n", verb, k)
				}
			}
		}
	}
	if rep != nil {
		for _, p := range rep.Ignored {
			fmt.Fprintf(stderr, "walreplay: prune: ignored %s: %s\n", p.Key, p.Error)
		}
	}
	if err != nil {
		return restoreExit(err)
	}
	if len(rep.Ignored) > 0 {
		return cli.Exit(exitFailure, fmt.Errorf("archive %s is damaged: prune ignored %d refused or corrupt manifests (named above), deleting nothing of them",
			secret.URL(af.url), len(rep.Ignored)))
	}
	return nil
}

type pruneJSON struct {
	Archive  string       `json:"archive"`
	DryRun   bool         `json:"dry_run"`
	Lineages []prunedJSON `json:"lineages"`
	// Ignored: manifests left out, neither counted nor deleted (damage).
	Ignored []catalogProblemJSON `json:"ignored"`
}

type prunedJSON struct {
	Lineage          string   `json:"lineage"`
	OldestKept       uint64   `json:"oldest_kept_snapshot_lsn"`
	KeptSnapshots    []uint64 `json:"kept_snapshot_lsns"`
	DeletedSnapshots []string `json:"deleted_snapshots"`
	DeletedSegments  []string `json:"deleted_segments"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
