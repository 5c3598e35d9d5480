package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/walship/walship/archive"
)

// RetentionPolicy says which snapshots of a lineage to keep; Prune deletes
// the older ones and the segments no kept snapshot needs.
type RetentionPolicy struct {
	// KeepSnapshots keeps the newest N snapshots of each lineage.
	KeepSnapshots int
	// KeepWithin also keeps every snapshot whose commit time is within
	// this duration of Now.
	KeepWithin time.Duration
	// Lineage restricts pruning to one lineage; "" prunes every lineage.
	Lineage string
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
	// Now is the clock for KeepWithin; default time.Now.
	Now func() time.Time
	// TempDir is where the oldest kept snapshot is downloaded to be
	// verified; default the system's temporary directory.
	TempDir string
}

// Validate reports a policy that keeps nothing.
func (p *RetentionPolicy) Validate() error {
	if p.KeepSnapshots < 0 || p.KeepWithin < 0 {
		return errors.New("pitr: RetentionPolicy: negative KeepSnapshots or KeepWithin")
	}
	if p.KeepSnapshots == 0 && p.KeepWithin == 0 {
		return errors.New("pitr: RetentionPolicy keeps nothing: set KeepSnapshots or KeepWithin")
	}
	return nil
}

// PruneReport says what Prune deleted (or would delete, with DryRun).
type PruneReport struct {
	Lineages []LineagePrune
	// Ignored are the manifests and records Prune left out, neither
	// counted nor deleted: refused in an encrypted archive (plain, sealed
	// with another key, moved) or corrupt. Prune decides only by what it
	// can trust, so they never make it delete more; they are damage the
	// caller should report (Kind "corrupt").
	Ignored []CatalogProblem
}

// LineagePrune is what Prune did to one lineage.
type LineagePrune struct {
	Lineage          string
	KeptSnapshots    []uint64 // LSNs
	OldestKept       uint64   // LSN of the oldest kept snapshot; history starts there
	DeletedSnapshots []string // keys
	DeletedSegments  []string // keys
}

// Prune applies policy to the archive: in each lineage it keeps the newest
// KeepSnapshots snapshots and those within KeepWithin (always at least the
// newest one), deletes the older snapshots, and deletes the segment
// objects that lie wholly at or below the oldest kept snapshot (LastLSN <=
// its LSN), which no restore from a kept snapshot reads. A lineage without
// snapshots is left alone: its segments are its only history.
//
// Safety, in this order: the oldest kept snapshot is downloaded and
// verified first (a corrupt one stops the lineage's pruning, since the
// history below it is what would replace it); snapshots go before
// segments, and each object's manifest is deleted before the object (an
// interruption leaves objects without manifests, which the catalog
// ignores as orphans, never manifests without objects); segments are
// deleted oldest first, so the remaining ones always form an unbroken
// suffix of the history. A restore to a point below the oldest kept
// snapshot is then refused (ErrOutOfRange).
func Prune(ctx context.Context, a *archive.Archive, policy RetentionPolicy) (*PruneReport, error) {
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	now := time.Now
	if policy.Now != nil {
		now = policy.Now
	}
	cat, err := a.Catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("pitr: prune: read the catalog: %w", err)
	}
	rep := &PruneReport{}
	ignore := func(lineage string, ps []archive.Problem) {
		for _, p := range ps {
			if p.Kind == archive.ProblemCorrupt {
				rep.Ignored = append(rep.Ignored, convProblem(lineage, p))
			}
		}
	}
	ignore("", cat.Problems)
	for _, l := range cat.Lineages {
		if policy.Lineage == "" || l.ID == policy.Lineage {
			ignore(l.ID, l.Problems)
		}
	}
	b := a.Backend()
	del := func(key string) error {
		if policy.DryRun {
			return nil
		}
		if err := b.Delete(ctx, archive.ManifestKey(key)); err != nil && !errors.Is(err, archive.ErrNotFound) {
			return fmt.Errorf("pitr: prune: delete %s: %w", archive.ManifestKey(key), err)
		}
		if err := b.Delete(ctx, key); err != nil && !errors.Is(err, archive.ErrNotFound) {
			return fmt.Errorf("pitr: prune: delete %s: %w", key, err)
		}
		return nil
	}
	for _, l := range cat.Lineages {
		if policy.Lineage != "" && l.ID != policy.Lineage {
			continue
		}
		snaps := l.Snapshots // sorted by LSN
		if len(snaps) == 0 {
			continue
		}
		lp := LineagePrune{Lineage: l.ID}
		cut := time.Time{}
		if policy.KeepWithin > 0 {
			cut = now().Add(-policy.KeepWithin)
		}
		oldest := len(snaps) - 1 // index of the oldest kept; the newest is always kept
		for i := len(snaps) - 1; i >= 0; i-- {
			byCount := len(snaps)-i <= policy.KeepSnapshots
			byTime := !cut.IsZero() && !snaps[i].CommitTime.Before(cut)
			if byCount || byTime {
				oldest = min(oldest, i)
			}
		}
		for _, s := range snaps[oldest:] {
			lp.KeptSnapshots = append(lp.KeptSnapshots, s.LSN)
		}
		base := snaps[oldest]
		lp.OldestKept = base.LSN
		if err := verifySnapshot(ctx, a, base, policy.TempDir); err != nil {
			return rep, fmt.Errorf("pitr: prune: lineage %s: the oldest kept snapshot does not verify, nothing below it is deleted: %w", l.ID, err)
		}
		for _, s := range snaps[:oldest] {
			if err := del(s.Key); err != nil {
				return rep, err
			}
			lp.DeletedSnapshots = append(lp.DeletedSnapshots, s.Key)
		}
		for _, g := range l.Segments { // sorted by FirstLSN: oldest first
			if g.LastLSN > base.LSN {
				break
			}
			if err := del(g.Key); err != nil {
				return rep, err
			}
			lp.DeletedSegments = append(lp.DeletedSegments, g.Key)
		}
		rep.Lineages = append(rep.Lineages, lp)
	}
	return rep, nil
}

func verifySnapshot(ctx context.Context, a *archive.Archive, s archive.SnapshotManifest, tempDir string) error {
	dir, err := os.MkdirTemp(tempDir, "walship-prune-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return a.GetSnapshot(ctx, s, filepath.Join(dir, "snapshot.db"))
}
