package pitr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
)

// Applier is what a restore applies to: replica.Applier satisfies it.
type Applier interface {
	// Position is the commit LSN of the last applied transaction, 0 if none.
	Position(ctx context.Context) (uint64, error)
	// Apply applies whole transactions in log order, atomically with the
	// position; transactions at or below Position are skipped.
	Apply(ctx context.Context, txns []change.Committed) error
}

// Options configure the execution of a plan. The zero value is valid.
type Options struct {
	// Parallel is the number of segment objects fetched at once; default 4.
	Parallel int
	// Window is how many fetched objects may wait in memory ahead of the
	// applier; default 2×Parallel. Memory is bounded by Window decoded
	// objects (plus the verify cache).
	Window int
	// BatchTxns is the number of transactions given to one Apply call
	// (one database transaction); default 1000.
	BatchTxns int
	// StreamVerify verifies each object just before applying it instead
	// of verifying every object of the plan before anything is applied.
	// Default false: the verify pass downloads and decodes every object
	// first (a corrupt or missing one is found before the destination
	// changes) and keeps the verified bytes for the apply pass, in memory
	// up to VerifyMemory and beyond that in files under TempDir, so each
	// object is downloaded once either way.
	StreamVerify bool
	// VerifyMemory is how many stored bytes of verified objects are kept in
	// memory for the apply pass; the rest is spooled to TempDir. Default
	// 256 MiB.
	VerifyMemory int64
	// TempDir holds the downloaded snapshot until it is used, and spooled
	// objects; default the system's temporary directory.
	TempDir string
	// Retry bounds the retries of transient fetch errors, per object; a
	// zero or negative MaxElapsed is archive.DefaultRetryMaxElapsed. It
	// also bounds the retries of the archive's backend under each fetch.
	Retry archive.RetryPolicy
	// Progress, if set, is called after each object is verified or
	// applied, from the calling goroutine.
	Progress func(Progress)
	// Logger receives retries and phase changes; default discard.
	Logger *slog.Logger
	// CheckNames, if set, is given the tables of the base snapshot and the
	// planned transactions of every segment object during the verify pass
	// (not with StreamVerify), concurrently; an error stops the restore
	// before the destination is opened. Restore sets it to a
	// replica.NameCheck for its destination, so that two source names
	// that would share one replica name are refused before anything is
	// written.
	CheckNames func(txns []change.Committed) error
}

func (o Options) withDefaults() Options {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Window <= 0 {
		o.Window = 2 * o.Parallel
	}
	if o.BatchTxns <= 0 {
		o.BatchTxns = 1000
	}
	if o.VerifyMemory == 0 {
		o.VerifyMemory = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Progress reports how far a restore has got.
type Progress struct {
	Phase                 string // "verify" or "apply"
	Objects, TotalObjects int
	Bytes, TotalBytes     int64
	Txns                  int    // applied so far
	LSN                   uint64 // last applied commit LSN
}

// Result describes a finished restore.
type Result struct {
	Txns, Changes  int    // applied
	Skipped        int    // already in the snapshot or the destination
	Position       uint64 // the destination's position afterwards
	LastCommitTime time.Time
	Objects        int
	Bytes          int64
	Elapsed        time.Duration
}

// Verified is a plan whose objects have been fetched and verified, ready to
// be applied. Close removes its temporary files.
type Verified struct {
	plan    *Plan
	src     Source
	opts    Options
	tmp     string
	snap    string
	started time.Time

	mu struct {
		sync.Mutex
		mem   map[string][]byte // verified objects kept in memory
		files map[string]string // verified objects spooled to files
	}
}

// Verify fetches the plan's snapshot into a temporary file and, unless
// opts.StreamVerify, downloads, verifies (checksum, decoding, LSN
// continuity against the manifest) and keeps every segment object of the
// plan, opts.Parallel at a time. It applies nothing. A missing or corrupt
// object is an *ObjectError naming its key (errors.Is ErrMissing or
// walerr.ErrCorruption); transient errors are retried per opts.Retry.
func Verify(ctx context.Context, src Source, plan *Plan, opts Options) (*Verified, error) {
	opts = opts.withDefaults()
	v := &Verified{plan: plan, src: src, opts: opts, started: time.Now()}
	v.mu.mem = map[string][]byte{}
	v.mu.files = map[string]string{}
	var err error
	if v.tmp, err = os.MkdirTemp(opts.TempDir, "walreplay-"); err != nil {
		return nil, fmt.Errorf("pitr: temporary directory: %w", err)
	}
	if plan.Snapshot != nil {
		v.snap = filepath.Join(v.tmp, "snapshot.db")
		s := *plan.Snapshot
		err := retry(ctx, opts.Retry, func(ctx context.Context) error {
			os.Remove(v.snap)
			return src.GetSnapshot(ctx, s, v.snap)
		})
		if err != nil {
			v.Close()
			return nil, &ObjectError{Key: s.Key, Op: "get snapshot", Err: err}
		}
		if opts.CheckNames != nil {
			names, err := snapshotNames(ctx, v.snap)
			if err == nil {
				err = opts.CheckNames(names)
			}
			if err != nil {
				v.Close()
				return nil, fmt.Errorf("pitr: snapshot %s: %w", s.Key, err)
			}
		}
	}
	if opts.StreamVerify {
		return v, nil
	}
	total := plan.Bytes()
	var done int64
	if plan.Snapshot != nil {
		done = plan.Snapshot.Size
	}
	var memUsed atomic.Int64
	pf := newPrefetcher(ctx, plan.Segments, opts.Parallel, opts.Window, func(ctx context.Context, s Segment) (struct{}, error) {
		obj, err := fetchRaw(ctx, src, opts.Retry, s)
		if err != nil {
			return struct{}{}, err
		}
		txns, err := decode(src, s, obj)
		if err != nil {
			return struct{}{}, err
		}
		if opts.CheckNames != nil {
			if err := opts.CheckNames(plan.planned(txns)); err != nil {
				return struct{}{}, fmt.Errorf("pitr: segment %s: %w", s.Key, err)
			}
		}
		if memUsed.Add(int64(len(obj))) <= opts.VerifyMemory {
			v.mu.Lock()
			v.mu.mem[s.Key] = obj
			v.mu.Unlock()
			return struct{}{}, nil
		}
		memUsed.Add(-int64(len(obj)))
		f, err := os.CreateTemp(v.tmp, "segment-")
		if err == nil {
			_, err = f.Write(obj)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			return struct{}{}, fmt.Errorf("pitr: spool %s: %w", s.Key, err)
		}
		v.mu.Lock()
		v.mu.files[s.Key] = f.Name()
		v.mu.Unlock()
		return struct{}{}, nil
	})
	defer pf.Close()
	for i := range plan.Segments {
		_, seg, err := pf.Next()
		if err != nil {
			pf.Close()
			v.Close()
			return nil, err
		}
		done += seg.Size
		if opts.Progress != nil {
			opts.Progress(Progress{Phase: "verify", Objects: i + 1, TotalObjects: len(plan.Segments), Bytes: done, TotalBytes: total})
		}
	}
	return v, nil
}

// planned returns the transactions of one segment object that the plan
// applies: from FromLSN, up to the target.
func (p *Plan) planned(txns []change.Committed) []change.Committed {
	for len(txns) > 0 && txns[0].CommitLSN < p.FromLSN {
		txns = txns[1:]
	}
	for i := range txns {
		if p.rule.beyond(&txns[i]) {
			return txns[:i]
		}
	}
	return txns
}

// SnapshotFile is the downloaded base snapshot ("" if the plan has none).
// The destination may move it away (os.Rename) or copy it.
func (v *Verified) SnapshotFile() string { return v.snap }

// Close removes the temporary files. It is idempotent.
func (v *Verified) Close() error {
	if v.tmp == "" {
		return nil
	}
	err := os.RemoveAll(v.tmp)
	v.tmp = ""
	return err
}

// object returns the transactions of s: from the verify pass's memory or
// spool file, else downloaded now (StreamVerify).
func (v *Verified) object(ctx context.Context, s Segment) ([]change.Committed, error) {
	v.mu.Lock()
	obj, inMem := v.mu.mem[s.Key]
	file, inFile := v.mu.files[s.Key]
	delete(v.mu.mem, s.Key)
	delete(v.mu.files, s.Key)
	v.mu.Unlock()
	switch {
	case inMem:
	case inFile:
		var err error
		if obj, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("pitr: read spooled %s: %w", s.Key, err)
		}
		os.Remove(file)
	default:
		return readSegment(ctx, v.src, v.opts.Retry, s)
	}
	return decode(v.src, s, obj)
}

// Apply replays the plan's segments into app, which must already hold the
// plan's base: its position must be FromLSN-1. It reads objects with
// opts.Parallel prefetchers, in order, and applies whole transactions in
// batches of opts.BatchTxns up to the target; it stops at the first
// transaction beyond the target. On error, app holds a prefix of the
// planned transactions (each Apply is atomic).
func (v *Verified) Apply(ctx context.Context, app Applier) (*Result, error) {
	plan, opts := v.plan, v.opts
	pos, err := app.Position(ctx)
	if err != nil {
		return nil, fmt.Errorf("pitr: destination position: %w", err)
	}
	if pos != plan.FromLSN-1 {
		return nil, fmt.Errorf("pitr: destination is at LSN %d, the plan starts after LSN %d", pos, plan.FromLSN-1)
	}
	res := &Result{Position: pos}
	pf := newPrefetcher(ctx, plan.Segments, opts.Parallel, opts.Window, v.object)
	defer pf.Close()
	var total int64
	for _, s := range plan.Segments {
		total += s.Size
	}
	batch := make([]change.Committed, 0, opts.BatchTxns)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := app.Apply(ctx, batch); err != nil {
			return fmt.Errorf("pitr: apply LSNs %d-%d: %w", batch[0].FirstLSN, batch[len(batch)-1].CommitLSN, err)
		}
		last := batch[len(batch)-1]
		res.Txns += len(batch)
		for i := range batch {
			res.Changes += len(batch[i].Changes)
		}
		res.Position, res.LastCommitTime = last.CommitLSN, last.CommitTime
		clear(batch)
		batch = batch[:0]
		return nil
	}
	next := pos + 1
	done := false
	for i := 0; i < len(plan.Segments) && !done; i++ {
		txns, seg, err := pf.Next()
		if err != nil {
			return res, err
		}
		if seg.FirstLSN > next { // the plan is contiguous; the catalog changed?
			return res, &HoleError{Lineage: plan.Lineage, From: next, To: seg.FirstLSN - 1}
		}
		for j := range txns {
			t := &txns[j]
			if t.CommitLSN < next {
				res.Skipped++ // an overlapping object's already applied part
				continue
			}
			if plan.rule.beyond(t) {
				done = true
				break
			}
			batch = append(batch, *t)
			next = t.CommitLSN + 1
			if len(batch) == opts.BatchTxns {
				if err := flush(); err != nil {
					return res, err
				}
			}
		}
		if err := flush(); err != nil {
			return res, err
		}
		next = max(next, seg.LastLSN+1)
		res.Objects++
		res.Bytes += seg.Size
		if opts.Progress != nil {
			opts.Progress(Progress{Phase: "apply", Objects: i + 1, TotalObjects: len(plan.Segments),
				Bytes: res.Bytes, TotalBytes: total, Txns: res.Txns, LSN: res.Position})
		}
	}
	got, err := app.Position(ctx)
	if err != nil {
		return res, fmt.Errorf("pitr: destination position: %w", err)
	}
	if got != res.Position {
		return res, fmt.Errorf("pitr: destination reports LSN %d after applying up to LSN %d", got, res.Position)
	}
	res.Elapsed = time.Since(v.started)
	return res, nil
}

// Execute verifies the plan (see Verify), opens the destination with open —
// given the downloaded snapshot file, "" if none — and applies the plan
// (see Verified.Apply). Nothing is opened or applied if verification
// fails.
func Execute(ctx context.Context, src Source, plan *Plan, open func(ctx context.Context, snapshotFile string) (Applier, error), opts Options) (*Result, error) {
	v, err := Verify(ctx, src, plan, opts)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	app, err := open(ctx, v.SnapshotFile())
	if err != nil {
		return nil, err
	}
	res, err := v.Apply(ctx, app)
	if c, ok := app.(interface{ Close() error }); ok {
		err = errors.Join(err, c.Close())
	}
	return res, err
}
