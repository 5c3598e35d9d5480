package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// ArchiveFollowOptions configure an ArchiveFollower.
type ArchiveFollowOptions struct {
	// Archive is the archive the leader's archiver (archivesink.Archiver)
	// ships to. Required.
	Archive *archive.Archive
	// Lineage is the archive lineage the leader archives into. Required.
	Lineage string
	// Poll is how often Run lists the lineage's segments for new ones.
	// Default 1s.
	Poll time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate checks the options and fills in the defaults.
func (o *ArchiveFollowOptions) Validate() error {
	var errs []error
	if o.Archive == nil {
		errs = append(errs, errors.New("ha: archive follower: no archive"))
	}
	if err := archive.CheckLineage(o.Lineage); err != nil {
		errs = append(errs, fmt.Errorf("ha: archive follower: %w", err))
	}
	if o.Poll < 0 {
		errs = append(errs, fmt.Errorf("ha: archive follower: Poll %v is negative", o.Poll))
	}
	if o.Poll == 0 {
		o.Poll = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// ArchiveFollower copies the segments of an archive lineage into a local
// log, for groups without Kafka: what Follower does with the ordered
// topic, with the same guarantees (package doc). A segment is part of the
// history once its manifest exists; the archiver stores segments in LSN
// order, each adjacent to the one before, ending with a commit. The LSNs
// between two transactions of the archive belong to transactions the
// leader aborted midway: the follower writes them as one aborted range,
// with the following transaction's commit time as the abort's time (the
// archive does not keep the abort's own), so that its log skips the same
// LSNs and has the same next LSN as the leader's. Run and CatchUp may not
// run at the same time; the ArchiveFollower must be the log's only
// appender while either runs.
type ArchiveFollower struct {
	w    *wal.WAL
	o    ArchiveFollowOptions
	log  *slog.Logger
	busy sync.Mutex // held by Run or CatchUp
}

// NewArchiveFollower returns a follower appending to w. It does no I/O.
func NewArchiveFollower(w *wal.WAL, o ArchiveFollowOptions) (*ArchiveFollower, error) {
	if w == nil {
		return nil, errors.New("ha: archive follower: nil log")
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &ArchiveFollower{w: w, o: o, log: o.Logger.With("component", "ha.follower", "lineage", o.Lineage)}, nil
}

// Position returns the last LSN appended and durable (the log's Durable).
func (f *ArchiveFollower) Position() uint64 { return f.w.Durable() }

// Run copies the lineage's segments from the log's next LSN, listing the
// lineage every Poll for new ones, until ctx ends (it then returns nil) or
// an error stops it: ErrDiverged, a gap (kafkawire.ErrGap: a segment the
// log needs is not in the archive), a corrupt object or manifest
// (walerr.ErrCorruption), an error of the log, or one of the archive's
// that is not transient. Transient failures, once the backend's own
// retries gave up, are logged and retried at the next poll.
func (f *ArchiveFollower) Run(ctx context.Context) error {
	err := f.follow(ctx, false)
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}

// CatchUp appends every transaction of every segment whose manifest
// exists when it is called (one listing) and returns once they are
// durable: the log then ends exactly where that listing's archive ends. It
// fails with ErrDiverged if the local log's last transaction is not the
// archive's, or if the log ends beyond the archive's end.
func (f *ArchiveFollower) CatchUp(ctx context.Context) error { return f.follow(ctx, true) }

// follow is Run (catchUp false: until ctx ends) and CatchUp.
func (f *ArchiveFollower) follow(ctx context.Context, catchUp bool) (err error) {
	if !f.busy.TryLock() {
		return errors.New("ha: the archive follower is already running (Run or CatchUp)")
	}
	defer f.busy.Unlock()
	last, err := lastTxn(ctx, f.w)
	if err != nil {
		return err
	}
	c := &archiveCopy{f: f, last: last, next: f.w.NextLSN()}
	if last != nil {
		// The archive is read from the log's last transaction on, to check
		// it before anything is appended after it.
		c.next = last.FirstLSN
	}
	f.log.Info("following the archive", "next_lsn", f.w.NextLSN(), "catch_up", catchUp)
	defer func() {
		// Appends queued are written even if ctx ended: wait until they are
		// durable, so that whoever reads the log next sees them all.
		if c.queued > 0 {
			if werr := f.w.Wait(context.WithoutCancel(ctx), c.queued); werr != nil && err == nil {
				err = fmt.Errorf("ha: waiting for LSN %d to be durable: %w", c.queued, werr)
			}
		}
	}()
	var warned time.Time // the last transient failure logged: one every 10s
	for {
		end, err := c.round(ctx)
		if err != nil {
			if catchUp || ctx.Err() != nil || !archive.IsTransient(err) {
				return err
			}
			if time.Since(warned) >= 10*time.Second {
				warned = time.Now()
				f.log.Warn("reading the archive failed; retrying", "err", err)
			}
		}
		if catchUp {
			if c.last != nil {
				return fmt.Errorf("%w: the local log ends at LSN %d (its last transaction begins at LSN %d) but the archive's lineage %q ends at LSN %d",
					ErrDiverged, c.last.CommitLSN, c.last.FirstLSN, f.o.Lineage, end)
			}
			return nil
		}
		t := time.NewTimer(f.o.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// archiveCopy is the state of one Run or CatchUp.
type archiveCopy struct {
	f *ArchiveFollower
	// last is the log's last transaction until the archive's has been
	// compared with it (then nil).
	last *change.Committed
	// next is the next LSN the archive must give: the log's next LSN once
	// last is checked.
	next   uint64
	queued uint64 // the last LSN appended, perhaps not durable yet
}

// round lists the lineage once and copies every segment after next in
// that listing. It returns the listing's end (its last LSN).
func (c *archiveCopy) round(ctx context.Context) (end uint64, err error) {
	f := c.f
	segs, err := f.o.Archive.ListSegments(ctx, f.o.Lineage)
	if err != nil {
		return 0, fmt.Errorf("ha: list the segments of lineage %q in the archive: %w", f.o.Lineage, err)
	}
	if len(segs) > 0 {
		end = segs[len(segs)-1].LastLSN
	}
	for i := 1; i < len(segs); i++ {
		// Two segments covering a common LSN are two histories (a
		// replaced leader's put that landed late, docs/HA.md "Limits"):
		// copying from both would mix them.
		if p, s := segs[i-1], segs[i]; s.FirstLSN <= p.LastLSN {
			return end, &walerr.CorruptionError{Component: "archive", Object: archive.SegmentKey(f.o.Lineage, s.FirstLSN, s.LastLSN), Offset: -1,
				Reason: fmt.Sprintf("segment of LSNs %d-%d overlaps segment %s (LSNs %d-%d): the archive holds two histories; remove the one that is not the group's (walreplay inspect) before standbys can copy it",
					s.FirstLSN, s.LastLSN, archive.SegmentKey(f.o.Lineage, p.FirstLSN, p.LastLSN), p.FirstLSN, p.LastLSN)}
		}
	}
	for _, s := range segs {
		if s.LastLSN < c.next {
			continue
		}
		if s.FirstLSN > c.next {
			return end, fmt.Errorf("%w: the log needs LSN %d next, but the archive's lineage %q has no segment holding it (the next one covers LSNs %d-%d): removed by retention, or never archived; rebuild the log from the archive (ArchiveStart)",
				kafkawire.ErrGap, c.next, f.o.Lineage, s.FirstLSN, s.LastLSN)
		}
		if err := c.segment(ctx, s); err != nil {
			return end, err
		}
	}
	return end, nil
}

// segment copies the transactions of segment s at or after next.
func (c *archiveCopy) segment(ctx context.Context, s archive.SegmentRange) error {
	f := c.f
	gone := func(err error) error {
		if errors.Is(err, archive.ErrNotFound) {
			return fmt.Errorf("%w: the log needs LSN %d next, but the archive's segment of LSNs %d-%d is gone (retention): %w; rebuild the log from the archive (ArchiveStart)",
				kafkawire.ErrGap, c.next, s.FirstLSN, s.LastLSN, err)
		}
		return fmt.Errorf("ha: read the archive's segment of LSNs %d-%d: %w", s.FirstLSN, s.LastLSN, err)
	}
	m, err := f.o.Archive.SegmentManifestOf(ctx, f.o.Lineage, s)
	if err != nil {
		return gone(err)
	}
	txns, err := f.o.Archive.ReadSegment(ctx, m)
	if err != nil {
		return gone(err)
	}
	for i := range txns {
		t := &txns[i]
		if t.CommitLSN < c.next {
			continue
		}
		if t.FirstLSN > c.next {
			// LSNs no archived transaction holds: aborted midway.
			gap := change.Committed{FirstLSN: c.next, CommitLSN: t.FirstLSN - 1, CommitTime: t.CommitTime, Aborted: true}
			if err := c.add(ctx, &gap, m.Key); err != nil {
				return err
			}
		}
		if err := c.add(ctx, t, m.Key); err != nil {
			return err
		}
	}
	if c.queued > 0 {
		if err := f.w.Wait(ctx, c.queued); err != nil {
			return fmt.Errorf("ha: waiting for LSN %d to be durable: %w", c.queued, err)
		}
	}
	return nil
}

// add checks the log's last transaction against t, the archive's entry
// (a transaction or an aborted range) at next, or appends t once it has.
func (c *archiveCopy) add(ctx context.Context, t *change.Committed, key string) error {
	if t.FirstLSN < c.next {
		if c.last == nil {
			return fmt.Errorf("%w: the log's next LSN %d lies inside the archive's transaction at LSNs %d-%d (segment %s)",
				ErrDiverged, c.next, t.FirstLSN, t.CommitLSN, key)
		}
		// It straddles the start of the log's last transaction.
		return compareTxn(c.last, t, key, "the archive")
	}
	if last := c.last; last != nil {
		if last.Aborted && t.Aborted && t.CommitLSN >= last.CommitLSN {
			// The archive has no transaction at the LSNs of the log's
			// final aborted range; its range may go on (the log's was
			// cut where the leader had two aborted ranges in a row): the
			// rest is appended as a range of its own.
			c.last, c.next = nil, last.CommitLSN+1
			if t.CommitLSN == last.CommitLSN {
				return nil
			}
			rest := *t
			rest.FirstLSN = c.next
			return c.add(ctx, &rest, key)
		}
		if err := compareTxn(last, t, key, "the archive"); err != nil {
			return err
		}
		c.last, c.next = nil, last.CommitLSN+1
		return nil
	}
	tk, err := c.f.w.AppendReplicaAsync(ctx, t)
	if err != nil {
		kind := "transaction"
		if t.Aborted {
			kind = "aborted range"
		}
		return fmt.Errorf("ha: append the %s at LSNs %d-%d (archive segment %s): %w", kind, t.FirstLSN, t.CommitLSN, key, err)
	}
	c.queued, c.next = tk.Last, t.CommitLSN+1
	return nil
}

// ArchiveStart returns where a fresh log copying lineage from a starts
// (wal.Options.FirstLSN): the first LSN of its first segment, which
// retention (pitr.Prune) may have moved past LSN 1; and whether the
// lineage has no segment at all. A lineage whose segments were all
// removed looks empty: a log started at LSN 1 then finds, once the leader
// archives again, that it needs what the archive lacks (kafkawire.ErrGap),
// and is rebuilt from the new start.
func ArchiveStart(ctx context.Context, a *archive.Archive, lineage string) (firstLSN uint64, empty bool, err error) {
	if a == nil {
		return 0, false, errors.New("ha: ArchiveStart: no archive")
	}
	segs, err := a.ListSegments(ctx, lineage)
	if err != nil {
		return 0, false, fmt.Errorf("ha: list the segments of lineage %q in the archive: %w", lineage, err)
	}
	if len(segs) == 0 {
		return 0, true, nil
	}
	return segs[0].FirstLSN, false, nil
}
