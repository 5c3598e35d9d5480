package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/walerr"
)

// Gap is a range of LSNs of a lineage that no segment holds although a
// restore may need it.
type Gap struct {
	Lineage  string `json:"lineage"`
	From, To uint64 // inclusive
}

// LineageInfo summarizes one lineage of a catalog.
type LineageInfo struct {
	Lineage       string
	Segments      int
	Bytes         int64 // stored bytes of segments and snapshots
	FirstLSN      uint64
	LastLSN       uint64 // the last archived commit
	FirstCommit   time.Time
	LastCommit    time.Time
	FirstSource   uint64 // source LSNs, 0 if none
	LastSource    uint64
	Snapshots     []Snapshot
	RestorePoints []RestorePoint
	Gaps          []Gap
	// RestorableFrom is the earliest LSN a restore can reach: 0 (the empty
	// state) when segments start at LSN 1, else the first snapshot whose
	// LSN segments continue from.
	RestorableFrom uint64
	// RestorableFromTime is the commit time at RestorableFrom (zero for 0).
	RestorableFromTime time.Time
}

// Describe summarizes each lineage of cat: its LSN, time and source-LSN
// window, snapshots, restore points and gaps. It reads nothing but cat.
func Describe(cat *Catalog) []LineageInfo {
	var out []LineageInfo
	for _, lin := range cat.Lineages {
		segs, snaps := lineageObjects(cat, lin)
		li := LineageInfo{Lineage: lin, Segments: len(segs), Snapshots: snaps}
		for _, s := range snaps {
			li.Bytes += s.Size
		}
		next := uint64(0)
		for i, g := range segs {
			li.Bytes += g.Size
			li.RestorePoints = append(li.RestorePoints, g.RestorePoints...)
			if i == 0 {
				li.FirstLSN, li.FirstCommit = g.FirstLSN, g.FirstCommitTime
			} else if g.FirstLSN > next {
				li.Gaps = append(li.Gaps, Gap{Lineage: lin, From: next, To: g.FirstLSN - 1})
			}
			if g.LastLSN+1 > next {
				next = g.LastLSN + 1
				li.LastLSN, li.LastCommit = g.LastLSN, g.LastCommitTime
			}
			if li.FirstSource == 0 {
				li.FirstSource = g.FirstSourceLSN
			}
			li.LastSource = max(li.LastSource, g.LastSourceLSN)
		}
		// The start of history: LSN 1, or a snapshot segments continue from.
		switch {
		case len(segs) > 0 && segs[0].FirstLSN == 1:
		default:
			base, ok := Snapshot{}, false
			for _, s := range snaps {
				if len(segs) == 0 || s.LSN+1 >= segs[0].FirstLSN {
					base, ok = s, true
					break
				}
			}
			if ok {
				li.RestorableFrom, li.RestorableFromTime = base.LSN, base.CommitTime
				if base.LSN > li.LastLSN {
					li.LastLSN, li.LastCommit = base.LSN, base.CommitTime
				}
			} else if len(segs) > 0 {
				from := uint64(1)
				for _, s := range snaps {
					from = s.LSN + 1 // the newest snapshot before the segments
				}
				li.Gaps = append([]Gap{{Lineage: lin, From: from, To: segs[0].FirstLSN - 1}}, li.Gaps...)
			}
		}
		out = append(out, li)
	}
	return out
}

// ObjectProblem is an object verify could not vouch for.
type ObjectProblem struct {
	Key   string
	Error string
}

// VerifyReport is the result of VerifyArchive.
type VerifyReport struct {
	Lineages   []LineageInfo
	Objects    int   // objects read and verified
	Bytes      int64 // their stored bytes
	Corrupt    []ObjectProblem
	Missing    []ObjectProblem
	Unreadable []ObjectProblem // transient errors that retries did not overcome
	Gaps       []Gap
	// Notes are harmless findings: objects without a manifest left by an
	// interrupted upload, overlapping segments.
	Notes []ObjectProblem
}

// Intact reports whether nothing is wrong.
func (r *VerifyReport) Intact() bool {
	return len(r.Corrupt)+len(r.Missing)+len(r.Unreadable)+len(r.Gaps) == 0
}

// VerifyOptions configure VerifyArchive.
type VerifyOptions struct {
	Parallel int // objects read at once; default 4
	Retry    archive.RetryPolicy
	TempDir  string // snapshots are downloaded here and deleted; default the system's
	// Progress, if set, is called after each object.
	Progress func(Progress)
}

// VerifyArchive checks everything in the archive: the LSN continuity of
// each lineage (from the manifests), and every segment and snapshot object
// (fetched, checksum verified, decoded and compared with its manifest). It
// reads all objects, opts.Parallel at a time, and reports every problem
// rather than stopping at the first. The error is non-nil only when the
// catalog cannot be read.
func VerifyArchive(ctx context.Context, src Source, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	cat, err := src.Catalog(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list the catalog: %w", ErrUnreadable, err)
	}
	rep := &VerifyReport{Lineages: Describe(cat)}
	var total int64
	for _, li := range rep.Lineages {
		rep.Gaps = append(rep.Gaps, li.Gaps...)
		total += li.Bytes
	}
	seen := map[string]bool{}
	for _, p := range cat.Problems {
		op := ObjectProblem{Key: p.Key, Error: p.Error}
		switch p.Kind {
		case "corrupt":
			rep.Corrupt = append(rep.Corrupt, op)
		case "missing":
			rep.Missing = append(rep.Missing, op)
		default:
			op.Error = p.Kind + ": " + p.Error
			rep.Notes = append(rep.Notes, op)
			continue
		}
		seen[p.Key] = true
	}
	record := func(key string, size int64, err error) {
		if seen[key] {
			return // reported from the listing
		}
		if err == nil {
			rep.Objects++
			rep.Bytes += size
			return
		}
		p := ObjectProblem{Key: key, Error: err.Error()}
		switch {
		case errors.Is(err, walerr.ErrCorruption):
			rep.Corrupt = append(rep.Corrupt, p)
		case errors.Is(err, ErrMissing):
			rep.Missing = append(rep.Missing, p)
		default:
			rep.Unreadable = append(rep.Unreadable, p)
		}
	}
	var segs []Segment
	for _, lin := range cat.Lineages {
		s, _ := lineageObjects(cat, lin)
		segs = append(segs, s...)
	}
	nobj := len(segs) + len(cat.Snapshots)
	var done int64
	progress := func(i int) {
		if opts.Progress != nil {
			opts.Progress(Progress{Phase: "verify", Objects: i, TotalObjects: nobj, Bytes: done, TotalBytes: total})
		}
	}
	pf := newPrefetcher(ctx, segs, opts.Parallel, 2*opts.Parallel, func(ctx context.Context, s Segment) (struct{}, error) {
		_, err := readSegment(ctx, src, opts.Retry, s)
		return struct{}{}, err // keep nothing: verify only
	})
	defer pf.Close()
	for i := range segs {
		_, s, err := pf.Next()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		record(s.Key, s.Size, err)
		done += s.Size
		progress(i + 1)
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "walreplay-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	for i, s := range cat.Snapshots {
		f := filepath.Join(tmp, "snapshot.db")
		err := retry(ctx, opts.Retry, func(ctx context.Context) error {
			os.Remove(f)
			return src.GetSnapshot(ctx, s, f)
		})
		os.Remove(f)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		record(s.Key, s.Size, err)
		done += s.Size
		progress(len(segs) + i + 1)
	}
	return rep, nil
}
