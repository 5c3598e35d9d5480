package archivesink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/wal"
)

// SnapshotterCheckpoint is the checkpoint name under which the snapshotter's
// local replica holds back local WAL retention.
const SnapshotterCheckpoint = "pitr-snapshotter"

// SnapshotterOptions configure a Snapshotter.
type SnapshotterOptions struct {
	// Lineage the snapshots are stored under: the archiver's. Default
	// "main" (the archiver's default).
	Lineage string
	// Dir holds the local SQLite replica (replica.db) the snapshots are
	// copied from, and their temporary copies. Required.
	Dir string
	// Interval between scheduled snapshots; 0 takes none (TakeSnapshot
	// only). A scheduled snapshot is skipped when nothing was applied
	// since the last one.
	Interval time.Duration
	// BatchTxns is the most transactions applied in one replica
	// transaction; default 1000.
	BatchTxns int
	// Gate, if set, is called right before each snapshot object or
	// manifest is put (archive.Archive.WithPutGate). Its error stops the
	// snapshotter: Run returns it (matching archive.ErrGateClosed and the
	// gate's error). It must be cheap and must not block.
	Gate func() error
	// Through, if set, bounds what the local replica applies, and so what
	// a snapshot holds: only transactions whose commit LSN is at most
	// Through() (HA: as ArchiverOptions.Through). Nil: no bound.
	Through func() uint64
	// Logger defaults to discard.
	Logger *slog.Logger
}

// Validate reports a bad option.
func (o *SnapshotterOptions) Validate() error {
	if o.Dir == "" {
		return errors.New("pitr: SnapshotterOptions.Dir is required")
	}
	if o.Lineage != "" {
		if err := archive.CheckLineage(o.Lineage); err != nil {
			return fmt.Errorf("pitr: SnapshotterOptions.Lineage: %w", err)
		}
	}
	if o.Interval < 0 || o.BatchTxns < 0 {
		return errors.New("pitr: SnapshotterOptions.Interval and BatchTxns must not be negative")
	}
	return nil
}

// SnapshotInfo describes a snapshot taken.
type SnapshotInfo struct {
	Lineage    string
	LSN        uint64
	CommitTime time.Time
	Bytes      int64 // the database file's size
	Existed    bool  // the archive already had a snapshot at LSN
}

// Snapshotter keeps a local SQLite replica up to date from the WAL and
// stores base snapshots of it in the archive, on a schedule and on demand,
// so that a restore replays only from the latest snapshot at or before its
// target (docs/PITR.md, "Base snapshots in `walship run`").
//
// Guarantees:
//   - A snapshot at LSN L holds exactly the effect of the transactions with
//     commit LSN <= L: it is a VACUUM INTO copy of one committed state of
//     the replica, whose walship_applied row (read back from the copy)
//     gives L and its commit time.
//   - The local replica never skips or repeats a transaction (replica
//     bookkeeping, docs/DESIGN.md §4.7), across restarts.
//   - Its position is checkpointed as SnapshotterCheckpoint (the last
//     applied commit LSN), so local WAL retention keeps what it has not
//     applied yet.
//   - Only durable transactions are applied (it reads the WAL like any
//     sink), so a snapshot is never ahead of the local log.
type Snapshotter struct {
	a     *archive.Archive
	w     *wal.WAL
	ckpts *checkpoint.Store
	opts  SnapshotterOptions
	log   *slog.Logger
	path  string
	reqs  chan snapReq

	mu struct {
		sync.Mutex
		app     replica.Applier
		last    SnapshotInfo // the last snapshot taken
		applied uint64
		running bool
	}
}

type snapReq struct {
	ctx  context.Context
	resp chan snapResp
}

type snapResp struct {
	info SnapshotInfo
	err  error
}

// NewSnapshotter opens (creating) the local replica in opts.Dir and
// registers its checkpoint in ckpts. Run does the work.
func NewSnapshotter(a *archive.Archive, w *wal.WAL, ckpts *checkpoint.Store, opts SnapshotterOptions) (*Snapshotter, error) {
	if a == nil || w == nil || ckpts == nil {
		return nil, errors.New("pitr: NewSnapshotter needs an archive, a WAL and a checkpoint store")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Lineage == "" {
		opts.Lineage = "main"
	}
	if opts.BatchTxns == 0 {
		opts.BatchTxns = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pitr: snapshotter directory: %w", err)
	}
	if err := ckpts.Register(SnapshotterCheckpoint); err != nil {
		return nil, err
	}
	s := &Snapshotter{a: a.WithPutGate(opts.Gate), w: w, ckpts: ckpts, opts: opts, log: opts.Logger,
		path: filepath.Join(opts.Dir, "replica.db"), reqs: make(chan snapReq)}
	if err := s.seed(context.Background()); err != nil {
		return nil, err
	}
	app, err := replica.Open(context.Background(), "sqlite://"+s.path, replica.Options{Lineage: opts.Lineage, MaxBatchTxns: opts.BatchTxns})
	if err != nil {
		return nil, fmt.Errorf("pitr: snapshotter replica: %w", err)
	}
	s.mu.app = app
	return s, nil
}

// seed starts a missing local replica from the archive's newest snapshot
// when the WAL no longer holds LSN 1 (snapshots enabled on a running
// deployment, or the replica's directory lost): the WAL must still hold
// what follows the snapshot. An existing replica the WAL can no longer
// continue (its next LSN was removed: a standby of an HA group trims its
// log while its replica stands still) is replaced the same way.
func (s *Snapshotter) seed(ctx context.Context) error {
	first := s.w.FirstLSN()
	if _, err := os.Stat(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	} else if err == nil {
		pos, err := s.replicaPosition(ctx)
		if err != nil {
			return err
		}
		if pos+1 >= first {
			return nil // the WAL continues it
		}
		s.log.Warn("pitr: snapshotter replica is behind the WAL's first LSN; replacing it with an archived snapshot",
			"replica_lsn", pos, "wal_first_lsn", first)
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if err := os.Remove(s.path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("pitr: snapshotter: remove the stale replica: %w", err)
			}
		}
	}
	if first <= 1 {
		return nil // the WAL holds the whole history: build from LSN 1
	}
	cat, err := s.a.LineageCatalog(ctx, s.opts.Lineage)
	if err != nil {
		return fmt.Errorf("pitr: snapshotter: read the archive to seed the replica: %w", err)
	}
	for i := len(cat.Snapshots) - 1; i >= 0; i-- {
		sn := cat.Snapshots[i]
		if sn.LSN+1 < first || sn.LSN > s.w.Durable() {
			continue // the WAL lacks what follows it, or it is ahead of the WAL
		}
		if err := s.a.GetSnapshot(ctx, sn, s.path); err != nil {
			return fmt.Errorf("pitr: snapshotter: seed the replica from snapshot %s: %w", sn.Key, err)
		}
		s.log.Info("pitr: snapshotter replica seeded from the archive", "snapshot", sn.Key, "lsn", sn.LSN)
		return nil
	}
	return fmt.Errorf("pitr: snapshotter: the WAL starts at LSN %d and lineage %s has no snapshot from LSN %d on to start the local replica from; "+
		"restore one into %s (walreplay restore --to sqlite://%s)", first, s.opts.Lineage, first-1, s.path, s.path)
}

// replicaPosition is the commit LSN the replica file at s.path has applied.
func (s *Snapshotter) replicaPosition(ctx context.Context) (uint64, error) {
	app, err := replica.Open(ctx, "sqlite://"+s.path, replica.Options{Lineage: s.opts.Lineage})
	if err != nil {
		return 0, fmt.Errorf("pitr: snapshotter replica: %w", err)
	}
	defer app.Close()
	pos, err := app.Position(ctx)
	if err != nil {
		return 0, fmt.Errorf("pitr: snapshotter replica: %w", err)
	}
	return pos, nil
}

// Position is the commit LSN the local replica has applied.
func (s *Snapshotter) Position() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.applied
}

// Last returns the last snapshot taken by this Snapshotter (zero if none).
func (s *Snapshotter) Last() SnapshotInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.last
}

// Run applies the WAL to the local replica, following it, takes a snapshot
// every opts.Interval and serves TakeSnapshot, until ctx ends (it returns
// ctx's error) or an error: a WAL read, replica or checkpoint error, or
// the Gate closed (archive.ErrGateClosed) before a snapshot's put. A
// failed scheduled snapshot (e.g. the archive unreachable) is logged and
// tried again at the next tick; it does not stop Run.
func (s *Snapshotter) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.mu.running || s.mu.app == nil {
		s.mu.Unlock()
		return errors.New("pitr: Snapshotter.Run called twice or after Close")
	}
	s.mu.running = true
	app := s.mu.app
	s.mu.Unlock()

	pos, err := app.Position(ctx)
	if err != nil {
		return err
	}
	s.setApplied(pos)
	if err := s.checkpoint(ctx, pos); err != nil {
		return err
	}
	r, err := s.w.NewReader(pos+1, true)
	if err != nil {
		return fmt.Errorf("pitr: snapshotter: read the WAL from LSN %d: %w", pos+1, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	txns := make(chan change.Committed, s.opts.BatchTxns)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the reader: blocks in NextTxn while the log is idle
		defer wg.Done()
		defer r.Close()
		for {
			t, err := r.Next(ctx)
			if err == nil {
				err = waitThrough(ctx, s.opts.Through, t.CommitLSN)
			}
			if err != nil {
				readErr <- err
				return
			}
			select {
			case txns <- *t:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	var tick <-chan time.Time
	if s.opts.Interval > 0 {
		t := time.NewTicker(s.opts.Interval)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]change.Committed, 0, s.opts.BatchTxns)
	for {
		select {
		case t := <-txns:
			batch = append(batch[:0], t)
		drain:
			for len(batch) < s.opts.BatchTxns {
				select {
				case t := <-txns:
					batch = append(batch, t)
				default:
					break drain
				}
			}
			if err := app.Apply(ctx, batch); err != nil {
				return fmt.Errorf("pitr: snapshotter: apply LSNs %d-%d: %w", batch[0].FirstLSN, batch[len(batch)-1].CommitLSN, err)
			}
			last := batch[len(batch)-1].CommitLSN
			s.setApplied(last)
			clear(batch)
			if err := s.checkpoint(ctx, last); err != nil {
				return err
			}
		case <-tick:
			if s.Position() == s.Last().LSN {
				continue // nothing new
			}
			if info, err := s.snapshot(ctx); errors.Is(err, archive.ErrGateClosed) {
				return err
			} else if err != nil {
				s.log.Warn("pitr: scheduled snapshot failed; retrying at the next tick", "err", err)
			} else {
				s.log.Info("pitr: snapshot stored", "lineage", info.Lineage, "lsn", info.LSN, "bytes", info.Bytes)
			}
		case req := <-s.reqs:
			info, err := s.snapshot(req.ctx)
			req.resp <- snapResp{info, err}
			if errors.Is(err, archive.ErrGateClosed) {
				return err
			}
		case err := <-readErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("pitr: snapshotter: read the WAL: %w", err)
		}
	}
}

func (s *Snapshotter) setApplied(lsn uint64) {
	s.mu.Lock()
	s.mu.applied = lsn
	s.mu.Unlock()
}

func (s *Snapshotter) checkpoint(ctx context.Context, lsn uint64) error {
	if c, ok := s.ckpts.Get(SnapshotterCheckpoint); ok && c.Pos >= lsn {
		return nil
	}
	if err := s.ckpts.Set(ctx, SnapshotterCheckpoint, lsn, nil); err != nil {
		return fmt.Errorf("pitr: snapshotter checkpoint: %w", err)
	}
	return nil
}

// TakeSnapshot stores a snapshot of the local replica as it stands (every
// transaction it has applied) and returns it. It blocks until the snapshot
// is stored, and needs Run to be running. If the archive already has a
// snapshot at that LSN, nothing is stored and Existed is set.
func (s *Snapshotter) TakeSnapshot(ctx context.Context) (SnapshotInfo, error) {
	resp := make(chan snapResp, 1)
	select {
	case s.reqs <- snapReq{ctx: ctx, resp: resp}:
	case <-ctx.Done():
		return SnapshotInfo{}, ctx.Err()
	}
	select {
	case r := <-resp:
		return r.info, r.err
	case <-ctx.Done():
		return SnapshotInfo{}, ctx.Err()
	}
}

// snapshot copies the replica and stores the copy. Called from Run's loop,
// so no Apply runs meanwhile (VACUUM INTO would be consistent anyway).
func (s *Snapshotter) snapshot(ctx context.Context) (SnapshotInfo, error) {
	tmp, err := os.MkdirTemp(s.opts.Dir, "snapshot-")
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer os.RemoveAll(tmp)
	f := filepath.Join(tmp, "snapshot.db")
	if err := replica.Snapshot(ctx, s.path, f); err != nil {
		return SnapshotInfo{}, fmt.Errorf("pitr: %w", err)
	}
	st, err := replica.ReadState(ctx, "sqlite://"+f)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("pitr: read the snapshot's position: %w", err)
	}
	if st.LSN == 0 {
		return SnapshotInfo{}, errors.New("pitr: nothing to snapshot: the replica has applied no transaction")
	}
	fi, err := os.Stat(f)
	if err != nil {
		return SnapshotInfo{}, err
	}
	info := SnapshotInfo{Lineage: s.opts.Lineage, LSN: st.LSN, CommitTime: st.CommitTime, Bytes: fi.Size()}
	err = s.a.PutSnapshot(ctx, s.opts.Lineage, st.LSN, st.CommitTime, f)
	if errors.Is(err, archive.ErrExists) {
		info.Existed, err = true, nil
	}
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("pitr: store snapshot at LSN %d: %w", st.LSN, err)
	}
	s.mu.Lock()
	s.mu.last = info
	s.mu.Unlock()
	return info, nil
}

// Close closes the local replica. Call it after Run has returned. It is
// idempotent.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	app := s.mu.app
	s.mu.app = nil
	s.mu.Unlock()
	if app == nil {
		return nil
	}
	return app.Close()
}
