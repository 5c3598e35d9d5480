package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/walship/walship/checksum"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/cli"
	"github.com/walship/walship/internal/secret"

	"github.com/walship/walship/pitr"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/walerr"
)

// runRestore plans a restore from the manifests, prints the plan (and stops
// there with --dry-run), verifies every object the plan needs, and only
// then creates the destination replica and applies. With --follow it then
// keeps applying new archive objects until interrupted (a standby).
func runRestore(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fset := newFlagSet("restore", stderr)
	var af archiveFlags
	af.register(fset)
	to := fset.String("to", "", "destination replica URL: sqlite:///abs/path.db or postgres://...")
	tTime := fset.String("target-time", "", "restore the transactions committed at or before this RFC 3339 time")
	tLSN := fset.String("target-lsn", "", "... with a walship commit LSN at or before N")
	tSource := fset.String("target-source-lsn", "", "... with a source (Postgres) commit LSN at or before X/Y")
	tXID := fset.String("target-xid", "", "... up to and including the transaction with source xid N")
	tName := fset.String("target-name", "", "... up to and including the named restore point")
	tLatest := fset.String("target", "", `"latest": every archived transaction (the default)`)
	exclusive := fset.Bool("exclusive", false, "stop just before the target instead of just after it")
	dryRun := fset.Bool("dry-run", false, "print the plan and change nothing")
	asJSON := fset.Bool("json", false, "print the plan and the result as JSON")
	parallel := fset.Int("parallel", 8, "segment objects fetched at once")
	follow := fset.Bool("follow", false, "after restoring, keep applying new archive objects until interrupted (a standby)")
	interval := fset.Duration("poll-interval", 5*time.Second, "with --follow: how often to poll the archive")
	cont := fset.Bool("continue", false, "continue an existing destination from its position instead of requiring a new one")
	noSnapshot := fset.Bool("no-snapshot", false, "replay the log from LSN 1 instead of starting from a snapshot")
	streamVerify := fset.Bool("stream-verify", false, "verify each object just before applying it (one read per object) instead of all before anything is applied")
	if help, err := parseFlags(fset, args); help || err != nil {
		return err
	}
	if err := requireFlag("archive", af.url); err != nil {
		return err
	}
	if *to == "" && !*dryRun {
		return usageError("--to is required (or --dry-run)")
	}
	if *parallel < 1 {
		return usageError("--parallel %d: want at least 1", *parallel)
	}
	if err := rejectEmptyFlags(fset, "target-time", "target-lsn", "target-source-lsn", "target-xid", "target-name", "target"); err != nil {
		return err
	}
	target, err := parseTarget(map[string]string{"time": *tTime, "lsn": *tLSN, "source-lsn": *tSource, "xid": *tXID,
		"name": *tName, "latest": *tLatest}, *exclusive)
	if err != nil {
		return err
	}
	if *follow && target.Kind != pitr.Latest {
		return usageError("--follow needs --target latest: a standby applies everything")
	}
	if *follow && *dryRun {
		return usageError("--follow and --dry-run exclude each other")
	}
	src, err := openArchive(ctx, af, stderr)
	if err != nil {
		return err
	}
	if err := requireKey(ctx, src, af); err != nil {
		return err
	}
	planOpts := pitr.PlanOptions{Lineage: af.lineage, ScanParallel: *parallel, NoSnapshot: *noSnapshot, Retry: archive.RetryPolicy{MaxElapsed: af.timeout}}
	if *to != "" {
		if _, _, err := replica.ParseURL(*to); err != nil {
			return usageError("--to: %v", err)
		}
	}
	if *cont && *to != "" {
		pos, exists, err := pitr.ReplicaPosition(ctx, *to)
		if err != nil {
			return fmt.Errorf("read the destination's position: %w", err)
		}
		if exists {
			planOpts.FromLSN = pos + 1
		}
	}
	plan, err := pitr.PlanRestore(ctx, src, target, planOpts)
	if err != nil {
		return restoreExit(err)
	}
	out := newRestoreJSON(af.url, *to, *dryRun, plan)
	if *dryRun {
		if *asJSON {
			return writeJSON(stdout, out)
		}
		printPlan(stdout, plan)
		return nil
	}
	if !*asJSON {
		printPlan(stdout, plan)
	}
	// Checks already recorded in the destination are not this restore's
	// (a destination that cannot be read yet has none).
	before, _ := replica.ReadChecksums(ctx, *to)
	bar := newProgressBar(stderr)
	opts := pitr.Options{Parallel: *parallel, StreamVerify: *streamVerify, Progress: bar.update, Retry: archive.RetryPolicy{MaxElapsed: af.timeout},
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	res, err := pitr.Restore(ctx, src, plan, *to, pitr.RestoreOptions{Options: opts, Continue: *cont})
	bar.done()
	if err != nil {
		return restoreExit(err)
	}
	out.Result = toResultJSON(res)
	tally, err := restoreChecksums(ctx, *to, len(before))
	if err != nil {
		return restoreExit(err)
	}
	out.Result.Checksums = tally
	if *asJSON {
		if err := writeJSON(stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, restoreSummary(*to, res))
		printChecksums(stdout, tally)
	}
	if !*follow {
		return nil
	}
	fmt.Fprintf(stderr, "walreplay: following %s (every %s) until interrupted\n", secret.URL(af.url), *interval)
	err = pitr.FollowURL(ctx, src, *to, pitr.FollowOptions{Options: opts, Lineage: plan.Lineage, Interval: *interval,
		OnApply: func(r *pitr.Result) {
			if *asJSON {
				writeJSON(stdout, toResultJSON(r))
			} else {
				fmt.Fprintf(stdout, "applied %d transactions; position LSN %d, last commit %s\n", r.Txns, r.Position, fmtTime(r.LastCommitTime))
			}
		}})
	if ctx.Err() != nil {
		return nil // interrupted: the standby stops cleanly
	}
	return restoreExit(err)
}

// rejectEmptyFlags fails (usage) when one of names was given with an empty
// value: an unset shell variable (`--target-time "$UNSET"`) must not
// quietly mean "no target", which restores the latest state.
func rejectEmptyFlags(fs *flag.FlagSet, names ...string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && slices.Contains(names, f.Name) && f.Value.String() == "" {
			err = usageError("--%s: empty value (leave the flag out, or give a value)", f.Name)
		}
	})
	return err
}

// restoreSummary is the line printed after a restore. The destination is
// shown with its password redacted: the summary lands in terminals, CI
// logs and tickets.
func restoreSummary(to string, res *pitr.Result) string {
	s := fmt.Sprintf("restored %s: %d transactions, %d changes applied (%d skipped) from %d objects (%d bytes) in %s; position LSN %d",
		secret.URL(to), res.Txns, res.Changes, res.Skipped, res.Objects, res.Bytes, res.Elapsed.Round(time.Millisecond), res.Position)
	if !res.LastCommitTime.IsZero() {
		s += ", last commit " + fmtTime(res.LastCommitTime)
	}
	return s
}

// newRestoreJSON is the --json document of a restore, with the archive
// and destination URLs' passwords redacted.
func newRestoreJSON(archiveURL, to string, dryRun bool, plan *pitr.Plan) restoreJSON {
	return restoreJSON{Archive: secret.URL(archiveURL), To: secret.URL(to), DryRun: dryRun, Plan: toPlanJSON(plan)}
}

// parseTarget builds the target from the one target flag given (latest
// when none is).
func parseTarget(flags map[string]string, exclusive bool) (pitr.Target, error) {
	kind, value, n := "latest", "", 0
	for _, k := range []string{"time", "lsn", "source-lsn", "xid", "name", "latest"} {
		if v := flags[k]; v != "" {
			kind, value = k, v
			n++
		}
	}
	if n > 1 {
		return pitr.Target{}, usageError("give one target: --target-time, --target-lsn, --target-source-lsn, --target-xid, --target-name or --target latest")
	}
	if kind == "latest" && value != "" && value != "latest" {
		return pitr.Target{}, usageError("--target %q: the only value is \"latest\"", value)
	}
	t, err := pitr.ParseTarget(kind, value, exclusive)
	if err != nil {
		return t, usageError("%v", err)
	}
	return t, nil
}

// restoreExit maps an error to walreplay's exit codes.
func restoreExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, walerr.ErrCorruption):
		return cli.Exit(exitFailure, err)
	case errors.Is(err, pitr.ErrHole), errors.Is(err, pitr.ErrMissing):
		return cli.Exit(exitHole, err)
	case errors.Is(err, pitr.ErrOutOfRange), errors.Is(err, pitr.ErrTargetNotFound):
		return cli.Exit(exitOutOfRange, err)
	case errors.Is(err, pitr.ErrUnreadable):
		return cli.Exit(exitUsage, err)
	}
	return err
}

func printPlan(w io.Writer, p *pitr.Plan) {
	rule := "applies every transaction"
	if p.Rule != "every transaction" {
		rule = "applies the transactions with " + p.Rule
	}
	fmt.Fprintf(w, "plan: lineage %s, %s (%s)\n", p.Lineage, p.Target, rule)
	if s := p.Snapshot; s != nil {
		fmt.Fprintf(w, "  base:    snapshot at LSN %d, committed %s, %d bytes: %s\n", s.LSN, fmtTime(s.CommitTime), s.Size, s.Key)
	} else if p.FromLSN > 1 {
		fmt.Fprintf(w, "  base:    the destination, at LSN %d\n", p.FromLSN-1)
	} else {
		fmt.Fprintf(w, "  base:    an empty replica\n")
	}
	if len(p.Segments) == 0 {
		fmt.Fprintf(w, "  replay:  nothing\n")
	} else {
		fmt.Fprintf(w, "  replay:  %d segments from LSN %d, %d bytes in all\n", len(p.Segments), p.FromLSN, p.Bytes())
		for _, s := range p.Segments {
			fmt.Fprintf(w, "    LSN %d-%d  commits %s .. %s  %d bytes  %s\n", s.FirstLSN, s.LastLSN,
				fmtTime(s.FirstCommitTime), fmtTime(s.LastCommitTime), s.Size, s.Key)
		}
	}
	fmt.Fprintf(w, "  archive: ends at LSN %d, committed %s\n", p.ArchiveLastLSN, fmtTime(p.ArchiveLastCommit))
}

type restoreJSON struct {
	Archive string      `json:"archive"`
	To      string      `json:"to,omitempty"`
	DryRun  bool        `json:"dry_run"`
	Plan    planJSON    `json:"plan"`
	Result  *resultJSON `json:"result,omitempty"`
}

type planJSON struct {
	Lineage           string        `json:"lineage"`
	Target            string        `json:"target"`
	TargetKind        string        `json:"target_kind"`
	Exclusive         bool          `json:"exclusive"`
	Rule              string        `json:"rule"`
	Snapshot          *snapshotJSON `json:"snapshot"`
	FromLSN           uint64        `json:"from_lsn"`
	Segments          []segmentJSON `json:"segments"`
	Bytes             int64         `json:"bytes"`
	ArchiveLastLSN    uint64        `json:"archive_last_lsn"`
	ArchiveLastCommit string        `json:"archive_last_commit_time,omitempty"`
}

type segmentJSON struct {
	Key             string `json:"key"`
	FirstLSN        uint64 `json:"first_lsn"`
	LastLSN         uint64 `json:"last_lsn"`
	FirstCommitTime string `json:"first_commit_time"`
	LastCommitTime  string `json:"last_commit_time"`
	FirstSourceLSN  string `json:"first_source_lsn,omitempty"`
	LastSourceLSN   string `json:"last_source_lsn,omitempty"`
	Bytes           int64  `json:"bytes"`
}

type resultJSON struct {
	Txns           int     `json:"txns"`
	Changes        int     `json:"changes"`
	Skipped        int     `json:"skipped"`
	Position       uint64  `json:"position"`
	LastCommitTime string  `json:"last_commit_time,omitempty"`
	Objects        int     `json:"objects"`
	Bytes          int64   `json:"bytes"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Checksums tallies the check chunks this restore applied (nil: none).
	Checksums *checksum.Tally `json:"checksums,omitempty"`
}

func toPlanJSON(p *pitr.Plan) planJSON {
	j := planJSON{Lineage: p.Lineage, Target: p.Target.String(), TargetKind: p.Target.Kind.String(), Exclusive: p.Target.Exclusive,
		Rule: p.Rule, FromLSN: p.FromLSN, Segments: []segmentJSON{}, Bytes: p.Bytes(),
		ArchiveLastLSN: p.ArchiveLastLSN, ArchiveLastCommit: jsonTime(p.ArchiveLastCommit)}
	if p.Snapshot != nil {
		s := toSnapshotJSON(*p.Snapshot)
		j.Snapshot = &s
	}
	for _, s := range p.Segments {
		j.Segments = append(j.Segments, segmentJSON{Key: s.Key, FirstLSN: s.FirstLSN, LastLSN: s.LastLSN,
			FirstCommitTime: jsonTime(s.FirstCommitTime), LastCommitTime: jsonTime(s.LastCommitTime),
			FirstSourceLSN: jsonSource(s.FirstSourceLSN), LastSourceLSN: jsonSource(s.LastSourceLSN), Bytes: s.Size})
	}
	return j
}

func toResultJSON(r *pitr.Result) *resultJSON {
	return &resultJSON{Txns: r.Txns, Changes: r.Changes, Skipped: r.Skipped, Position: r.Position,
		LastCommitTime: jsonTime(r.LastCommitTime), Objects: r.Objects, Bytes: r.Bytes, ElapsedSeconds: r.Elapsed.Seconds()}
}
