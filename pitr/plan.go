package pitr

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// Plan is a restore computed from manifests alone (plus, for an xid
// target, a scan of segment objects): the base snapshot to start from and
// the segment objects to replay, in order. Nothing is applied while
// planning.
type Plan struct {
	Target  Target
	Lineage string
	// Snapshot is the base snapshot, nil to start from an empty replica.
	Snapshot *Snapshot
	// FromLSN is the first LSN to replay: Snapshot.LSN+1, or 1.
	FromLSN uint64
	// Segments are the objects to replay, covering FromLSN on without a
	// hole, the last one holding the target (or the end of the archive).
	Segments []Segment
	// Rule says which transactions are applied, e.g. "commit LSN <= 42".
	Rule string
	// ArchiveLastLSN and ArchiveLastCommit are the end of the lineage.
	ArchiveLastLSN    uint64
	ArchiveLastCommit time.Time

	rule stopRule
}

// Bytes is the stored size of the plan's objects.
func (p *Plan) Bytes() int64 {
	var n int64
	if p.Snapshot != nil {
		n += p.Snapshot.Size
	}
	for _, s := range p.Segments {
		n += s.Size
	}
	return n
}

// PlanOptions configure planning.
type PlanOptions struct {
	// Lineage to restore; "" means the archive's only lineage (an archive
	// with several needs one named).
	Lineage string
	// FromLSN > 0 plans a continuation of a replica already at FromLSN-1:
	// no snapshot, replay from FromLSN.
	FromLSN uint64
	// NoSnapshot replays from LSN 1 instead of starting from a snapshot
	// (PostgreSQL destinations).
	NoSnapshot bool
	// ScanParallel is the number of segments read at once by an xid
	// target's scan; default 4.
	ScanParallel int
	// Retry bounds the retries of transient errors of that scan, per
	// segment (as Options.Retry does for the restore).
	Retry archive.RetryPolicy
}

// PlanRestore computes the restore of target from src's catalog. It refuses
// (before anything is applied) a target outside the archive (ErrOutOfRange),
// an xid or name that the archive does not hold (ErrTargetNotFound), and a
// hole in the LSNs the restore needs (*HoleError). Only an xid target reads
// segment objects: manifests bound the xids of each segment but do not list
// them, so the candidate segments are read newest first until the xid is
// found.
func PlanRestore(ctx context.Context, src Source, target Target, opts PlanOptions) (*Plan, error) {
	if err := target.Validate(); err != nil {
		return nil, err
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list the catalog: %w", ErrUnreadable, err)
	}
	lin, err := chooseLineage(cat, opts.Lineage)
	if err != nil {
		return nil, err
	}
	segs, snaps := lineageObjects(cat, lin)
	if len(segs) == 0 && len(snaps) == 0 {
		// Manifests that do not verify are not "no segments".
		if err := corruptFrom(cat, lin, opts.FromLSN); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: lineage %s has no segments and no snapshots", ErrOutOfRange, lin)
	}
	p := &Plan{Target: target, Lineage: lin}
	for _, s := range segs {
		if s.LastLSN > p.ArchiveLastLSN {
			p.ArchiveLastLSN, p.ArchiveLastCommit = s.LastLSN, s.LastCommitTime
		}
	}
	for _, s := range snaps {
		if s.LSN > p.ArchiveLastLSN {
			p.ArchiveLastLSN, p.ArchiveLastCommit = s.LSN, s.CommitTime
		}
	}
	if p.rule, err = resolve(ctx, src, target, segs, p, opts); err != nil {
		// A target beyond what verifies may lie in what does not.
		if cerr := corruptFrom(cat, lin, opts.FromLSN); cerr != nil && (errors.Is(err, ErrOutOfRange) || errors.Is(err, ErrTargetNotFound)) {
			return nil, cerr
		}
		return nil, err
	}
	p.Rule = p.rule.String()

	// The base: the latest snapshot whose state is within the target.
	if opts.FromLSN > 0 {
		if at := opts.FromLSN - 1; at > 0 && p.rule.kind == ruleCommitLSN && p.rule.beyond(&change.Committed{FirstLSN: at, CommitLSN: at}) {
			return nil, fmt.Errorf("%w: the destination is at LSN %d, past %s", ErrOutOfRange, at, target)
		}
		p.FromLSN = opts.FromLSN
	} else {
		p.FromLSN = 1
		for i := len(snaps) - 1; i >= 0 && !opts.NoSnapshot; i-- {
			if snapshotWithin(snaps[i], segs, p.rule) {
				s := snaps[i]
				p.Snapshot, p.FromLSN = &s, s.LSN+1
				break
			}
		}
		if p.Snapshot == nil && (len(segs) == 0 || segs[0].FirstLSN > 1) {
			first := "no segment"
			if len(segs) > 0 {
				first = fmt.Sprintf("segments from LSN %d", segs[0].FirstLSN)
			}
			if len(snaps) == 0 || opts.NoSnapshot {
				return nil, fmt.Errorf("%w: %s needs the log from LSN 1 (no snapshot usable), but lineage %s has %s",
					ErrOutOfRange, target, lin, first)
			}
			return nil, fmt.Errorf("%w: %s is before the first snapshot (LSN %d, committed %s) and lineage %s has %s",
				ErrOutOfRange, target, snaps[0].LSN, snaps[0].CommitTime.Format(time.RFC3339Nano), lin, first)
		}
	}
	// A time before the first archived commit selects nothing: an empty
	// replica is almost surely not what was meant (a mistyped year), so it
	// is refused like a time after the last commit.
	if target.Kind == Time && p.Snapshot == nil && p.FromLSN == 1 && len(segs) > 0 && !segs[0].FirstCommitTime.IsZero() {
		first := segs[0].FirstCommitTime
		if target.Time.Before(first) {
			return nil, fmt.Errorf("%w: %s is before the first archived commit (%s): the restore would be empty",
				ErrOutOfRange, target, first.Format(time.RFC3339Nano))
		}
	}
	// A segment manifest that does not verify is left out of the catalog:
	// in the middle of the history it shows as a hole (above), at its end
	// it would silently shorten the archive. Refuse any the restore may
	// need — from FromLSN on, or whose range the key does not tell — as
	// corrupt, naming the key.
	if err := corruptFrom(cat, lin, p.FromLSN); err != nil {
		return nil, err
	}
	p.Segments, err = cover(lin, segs, p.FromLSN, p.rule)
	if err != nil {
		var corrupt []string
		for _, pr := range cat.Problems {
			if pr.Kind == "corrupt" && (pr.Lineage == lin || pr.Lineage == "") {
				corrupt = append(corrupt, pr.Key)
			}
		}
		if len(corrupt) > 0 {
			err = fmt.Errorf("%w (the archive has manifests that do not verify: %s)", err, strings.Join(corrupt, ", "))
		}
		return nil, err
	}
	// Refuse at once what the listing already knows is missing.
	for _, pr := range cat.Problems {
		if pr.Kind != "missing" {
			continue
		}
		for _, g := range p.Segments {
			if g.Key == pr.Key {
				return nil, &ObjectError{Key: g.Key, Op: "plan", Err: fmt.Errorf("%w: %s", ErrMissing, pr.Error)}
			}
		}
		if p.Snapshot != nil && p.Snapshot.Key == pr.Key {
			return nil, &ObjectError{Key: pr.Key, Op: "plan", Err: fmt.Errorf("%w: %s", ErrMissing, pr.Error)}
		}
	}
	return p, nil
}

// corruptFrom is an *ObjectError for the first manifest of lineage lin
// that does not verify and may hold LSNs from `from` on (a segment
// reaching `from`, a snapshot at or after it, or one whose range its key
// does not tell), nil if there is none. Those wholly before `from` are
// not needed (in an encrypted archive after a key change, they are the
// ones sealed with the old key).
func corruptFrom(cat *Catalog, lin string, from uint64) error {
	for _, pr := range cat.Problems {
		if pr.Kind != "corrupt" || (pr.Lineage != lin && pr.Lineage != "") {
			continue
		}
		last, ok := snapshotKeyLSN(pr.Key)
		if !ok {
			_, last, ok = segmentKeyRange(pr.Key)
		}
		if !ok || last >= from {
			return &ObjectError{Key: pr.Key, Op: "plan", Err: fmt.Errorf("%w: %s", walerr.ErrCorruption, pr.Error)}
		}
	}
	return nil
}

func chooseLineage(cat *Catalog, want string) (string, error) {
	if want != "" {
		if !slices.Contains(cat.Lineages, want) {
			return "", fmt.Errorf("%w: the archive has no lineage %q (it has: %s)", ErrOutOfRange, want, strings.Join(cat.Lineages, ", "))
		}
		return want, nil
	}
	switch len(cat.Lineages) {
	case 0:
		return "", fmt.Errorf("%w: the archive is empty", ErrOutOfRange)
	case 1:
		return cat.Lineages[0], nil
	}
	return "", fmt.Errorf("pitr: the archive holds %d lineages (%s): name one (walreplay --lineage)", len(cat.Lineages), strings.Join(cat.Lineages, ", "))
}

// lineageObjects returns lin's segments sorted by (FirstLSN, LastLSN) and
// snapshots sorted by LSN.
func lineageObjects(cat *Catalog, lin string) ([]Segment, []Snapshot) {
	var segs []Segment
	for _, s := range cat.Segments {
		if s.Lineage == lin {
			segs = append(segs, s)
		}
	}
	slices.SortFunc(segs, func(a, b Segment) int {
		return cmp.Or(cmp.Compare(a.FirstLSN, b.FirstLSN), cmp.Compare(a.LastLSN, b.LastLSN))
	})
	var snaps []Snapshot
	for _, s := range cat.Snapshots {
		if s.Lineage == lin {
			snaps = append(snaps, s)
		}
	}
	slices.SortFunc(snaps, func(a, b Snapshot) int { return cmp.Compare(a.LSN, b.LSN) })
	return segs, snaps
}

// resolve turns target into a stop rule and checks it against the end of
// the archive.
func resolve(ctx context.Context, src Source, t Target, segs []Segment, p *Plan, opts PlanOptions) (stopRule, error) {
	last := p.ArchiveLastLSN
	switch t.Kind {
	case Latest:
		return stopRule{}, nil
	case Time:
		if t.Time.After(p.ArchiveLastCommit) {
			return stopRule{}, fmt.Errorf("%w: %s is after the last archived commit (LSN %d at %s); use --target latest for the newest state",
				ErrOutOfRange, t, last, p.ArchiveLastCommit.Format(time.RFC3339Nano))
		}
		return stopRule{kind: ruleTime, time: t.Time, exclusive: t.Exclusive}, nil
	case LSN:
		if t.LSN > last {
			return stopRule{}, fmt.Errorf("%w: %s is after the last archived commit (LSN %d); use --target latest for the newest state",
				ErrOutOfRange, t, last)
		}
		return stopRule{kind: ruleCommitLSN, lsn: t.LSN, exclusive: t.Exclusive}, nil
	case SourceLSN:
		var maxSrc uint64
		for _, s := range segs {
			maxSrc = max(maxSrc, s.LastSourceLSN)
		}
		if maxSrc == 0 {
			return stopRule{}, fmt.Errorf("%w: %s: lineage %s records no source LSNs", ErrTargetNotFound, t, p.Lineage)
		}
		if t.LSN > maxSrc {
			return stopRule{}, fmt.Errorf("%w: %s is after the last archived source commit %s; use --target latest for the newest state",
				ErrOutOfRange, t, change.FormatSourceLSN(maxSrc))
		}
		return stopRule{kind: ruleSource, lsn: t.LSN, exclusive: t.Exclusive}, nil
	case Name:
		var at uint64
		var n int
		for _, s := range segs {
			for _, rp := range s.RestorePoints {
				if rp.Name == t.Name {
					n++
					at = max(at, rp.LSN)
				}
			}
		}
		if n == 0 {
			return stopRule{}, fmt.Errorf("%w: no restore point named %q in lineage %s", ErrTargetNotFound, t.Name, p.Lineage)
		}
		// at is the commit LSN of the transaction holding the restore
		// point: the transactions before it commit below its first LSN.
		return stopRule{kind: ruleCommitLSN, lsn: at, exclusive: t.Exclusive}, nil
	case XID:
		commit, err := findXID(ctx, src, segs, t.XID, opts.ScanParallel, opts.Retry)
		if err != nil {
			return stopRule{}, err
		}
		return stopRule{kind: ruleCommitLSN, lsn: commit, exclusive: t.Exclusive}, nil
	}
	return stopRule{}, t.Validate()
}

// findXID returns the commit LSN of the most recent transaction with xid,
// reading the segments whose xid bounds hold xid, newest first, several at
// a time.
func findXID(ctx context.Context, src Source, segs []Segment, xid uint64, parallel int, retry archive.RetryPolicy) (uint64, error) {
	if parallel <= 0 {
		parallel = 4
	}
	// Manifests bound each segment's xids: read only the candidates.
	var rev []Segment
	for i := len(segs) - 1; i >= 0; i-- {
		if s := segs[i]; s.MinXID <= xid && xid <= s.MaxXID {
			rev = append(rev, s)
		}
	}
	pf := newPrefetcher(ctx, rev, parallel, 2*parallel, func(ctx context.Context, s Segment) ([]change.Committed, error) {
		return readSegment(ctx, src, retry, s)
	})
	defer pf.Close()
	for range rev {
		txns, _, err := pf.Next()
		if err != nil {
			return 0, err
		}
		for i := len(txns) - 1; i >= 0; i-- {
			if txns[i].Header.XID == xid {
				return txns[i].CommitLSN, nil
			}
		}
	}
	if len(segs) == 0 {
		return 0, fmt.Errorf("%w: xid %d: the lineage has no segments to search", ErrTargetNotFound, xid)
	}
	return 0, fmt.Errorf("%w: no archived transaction has xid %d (searched LSNs %d-%d)",
		ErrTargetNotFound, xid, segs[0].FirstLSN, segs[len(segs)-1].LastLSN)
}

// snapshotWithin reports whether every transaction in snapshot s is within
// rule (none is beyond). It errs on the side of false, which only makes the
// restore start from an earlier snapshot.
func snapshotWithin(s Snapshot, segs []Segment, r stopRule) bool {
	switch r.kind {
	case ruleNone:
		return true
	case ruleSource:
		// A snapshot manifest has no source LSN; bound the source LSN of the
		// transaction at s.LSN by the segments around it.
		bound, ok := uint64(0), false
		for _, g := range segs {
			if g.FirstLSN <= s.LSN && s.LSN <= g.LastLSN && g.LastSourceLSN != 0 {
				bound, ok = g.LastSourceLSN, true // >= every source LSN at or before s.LSN in g
				if g.LastLSN == s.LSN {
					break
				}
			}
			if g.FirstLSN == s.LSN+1 && g.FirstSourceLSN != 0 && !ok {
				bound, ok = g.FirstSourceLSN, true
			}
		}
		return ok && !r.beyond(&change.Committed{Txn: change.Txn{Header: change.TxHeader{SourceLSN: bound}}})
	}
	// The transaction at s.LSN: its first LSN is unknown, s.LSN bounds it.
	return !r.beyond(&change.Committed{FirstLSN: s.LSN, CommitLSN: s.LSN, CommitTime: s.CommitTime})
}

// firstBeyond reports whether the first transaction of g is surely beyond r.
func firstBeyond(g Segment, r stopRule) bool {
	switch r.kind {
	case ruleNone:
		return false
	case ruleSource:
		return false // FirstSourceLSN may skip transactions without one
	}
	// The first transaction's commit LSN is at least FirstLSN.
	return r.beyond(&change.Committed{FirstLSN: g.FirstLSN, CommitLSN: g.FirstLSN, CommitTime: g.FirstCommitTime})
}

// lastBeyond reports whether g surely holds a transaction beyond r (its
// last one is).
func lastBeyond(g Segment, r stopRule) bool {
	switch r.kind {
	case ruleNone:
		return false
	case ruleSource:
		return g.LastSourceLSN != 0 && r.beyond(&change.Committed{Txn: change.Txn{Header: change.TxHeader{SourceLSN: g.LastSourceLSN}}})
	}
	return r.beyond(&change.Committed{FirstLSN: g.LastLSN, CommitLSN: g.LastLSN, CommitTime: g.LastCommitTime})
}

// cover picks the segments that replay from LSN from up to the target:
// greedily the one reaching furthest among those that hold from, until a
// segment holds a transaction beyond the target or the next is beyond. A
// range that the restore may need and no segment holds is a *HoleError.
func cover(lin string, segs []Segment, from uint64, r stopRule) ([]Segment, error) {
	var out []Segment
	next := from
	for {
		if len(out) > 0 && lastBeyond(out[len(out)-1], r) {
			return out, nil
		}
		best, found := Segment{}, false
		nextStart := uint64(0) // first LSN of the nearest segment after next
		for _, g := range segs {
			if g.FirstLSN <= next && g.LastLSN >= next {
				if !found || g.LastLSN > best.LastLSN {
					best, found = g, true
				}
			} else if g.FirstLSN > next && (nextStart == 0 || g.FirstLSN < nextStart) {
				nextStart = g.FirstLSN
			}
		}
		if !found {
			if nextStart == 0 {
				return out, nil // the end of the archive
			}
			// A hole at next: harmless only if everything from next is
			// beyond the target.
			if firstBeyond(Segment{FirstLSN: next, FirstCommitTime: lastCommit(out)}, r) && r.kind != ruleTime {
				return out, nil
			}
			return nil, &HoleError{Lineage: lin, From: next, To: nextStart - 1}
		}
		if firstBeyond(best, r) {
			return out, nil // with no segment at all: the target is the base itself
		}
		out = append(out, best)
		next = best.LastLSN + 1
	}
}

func lastCommit(out []Segment) time.Time {
	if len(out) == 0 {
		return time.Time{}
	}
	return out[len(out)-1].LastCommitTime
}

// snapshotKeyLSN parses the LSN of a snapshot object or manifest key,
// "<lineage>/snap/<lsn>.wss" or ".wsm".
func snapshotKeyLSN(key string) (uint64, bool) {
	i := strings.LastIndex(key, "/snap/")
	if i < 0 {
		return 0, false
	}
	name, _, _ := strings.Cut(key[i+len("/snap/"):], ".")
	if len(name) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(name, 16, 64)
	return n, err == nil
}

// segmentKeyRange parses the LSN range of a segment object or manifest key,
// "<lineage>/wal/<first>-<last>.<suffix>" with 16 hex digits each
// (docs/ARCHIVE.md). ok is false for any other key.
func segmentKeyRange(key string) (first, last uint64, ok bool) {
	i := strings.LastIndex(key, "/wal/")
	if i < 0 {
		return 0, 0, false
	}
	name := key[i+len("/wal/"):]
	if j := strings.IndexByte(name, '.'); j >= 0 {
		name = name[:j]
	}
	a, b, found := strings.Cut(name, "-")
	if !found || len(a) != 16 || len(b) != 16 {
		return 0, 0, false
	}
	f, err1 := strconv.ParseUint(a, 16, 64)
	l, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || l < f {
		return 0, 0, false
	}
	return f, l, true
}

// ChooseLineage returns want if the catalog holds it, else (want empty)
// the catalog's only lineage; an archive with several needs one named.
func (c *Catalog) ChooseLineage(want string) (string, error) { return chooseLineage(c, want) }
