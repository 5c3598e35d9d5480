package segment_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

const crashDir = "/wal"

// crashTrigger crashes a process (its fence) at its target-th sync, from
// inside the sync: the hook runs before the sync takes effect, so that sync
// and every later operation of the process fail.
type crashTrigger struct {
	fen    *fence
	target int64
	count  atomic.Int64
	rng    *rand.Rand // used only by the one Crash call
	mode   vfs.CrashMode
}

func (ct *crashTrigger) onSync(string) {
	if ct.count.Add(1) == ct.target {
		ct.fen.crash(ct.rng, ct.mode)
	}
}

// crashRound is what one process appended: every transaction that got
// LSNs (attempted, by first LSN) and which of them were acknowledged.
type crashRound struct {
	mu        sync.Mutex
	attempted map[uint64]txn
	acked     []uint64
	errs      []error // each writer's failure, and that of its next append
}

// TestCrashAtRandomPoints runs concurrent appenders through groupcommit
// (sync local) on a CrashFS with small segments, crashes the "machine" at
// a random point (inside a random fsync, or while appends are in flight),
// reopens and checks: every acknowledged transaction is there exactly once
// with its records, at its LSNs; nothing else is there but whole
// transactions that were appended; LSNs are dense; Verify agrees with what
// Open repaired; and the log takes appends that survive another crash
// (docs/DESIGN.md §4.1-4.3). Sometimes the recovery itself is crashed too.
// A failing iteration is rerun with -run 'TestCrashAtRandomPoints/MODE/seed=N'
// (goroutine interleaving varies, so it may take a few runs).
func TestCrashAtRandomPoints(t *testing.T) {
	iters := 70
	if testing.Short() {
		iters = 10
	}
	for _, mode := range []vfs.CrashMode{vfs.DropUnsynced, vfs.KeepRandomPrefix, vfs.KeepRandomSectors} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			for i := range iters {
				seed := uint64(i)
				if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { crashIteration(t, seed, mode) }) {
					return // one failure is enough to read
				}
			}
		})
	}
}

func crashIteration(t *testing.T, seed uint64, mode vfs.CrashMode) {
	rng := rand.New(rand.NewPCG(seed, uint64(mode)))
	fs := vfs.NewCrashFS()
	opts := segment.Options{
		SegmentSize:   []int64{4096, 8192}[rng.IntN(2)],
		Codec:         segment.Codec(rng.IntN(3)),
		NoPreallocate: rng.IntN(3) == 0,
		ZeroFill:      rng.IntN(2) == 0,
		Logger:        quiet,
	}
	gopts := groupcommit.Options{MaxBatchBytes: 256 + rng.IntN(1800), Logger: quiet}
	t.Logf("seed %d mode %v: %+v MaxBatchBytes %d", seed, mode, opts, gopts.MaxBatchBytes)

	var cur atomic.Pointer[crashTrigger]
	fs.SetSyncHook(func(name string) {
		if ct := cur.Load(); ct != nil {
			ct.onSync(name)
		}
	})

	var prefix []txn // what the log held after the last recovery
	var l *segment.Log
	fen := &fence{fs: fs}
	l, _ = open(t, crashDir, withFS(opts, fen))
	for round := range 3 {
		st := &crashRound{attempted: map[uint64]txn{}}
		crashRng := rand.New(rand.NewPCG(seed, uint64(1000+round)))
		c := newCommitter(t, l, gopts)
		ct := &crashTrigger{fen: fen, target: 1 + rng.Int64N(150), rng: crashRng, mode: mode}
		byTest := rng.IntN(3) == 0
		if !byTest {
			cur.Store(ct)
		}
		acks := make(chan struct{}, 1024)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(100*round+w)))
			go func() {
				defer wg.Done()
				appendUntilDead(c, fen, st, wrng, fmt.Sprintf("s%d/r%d/w%d", seed, round, w), acks)
			}()
		}
		if byTest {
			// Crash from outside while appends are in flight, after a
			// random number of acknowledgements.
			n := rng.IntN(200)
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
		wait:
			for range n {
				select {
				case <-acks:
				case <-done:
					break wait
				}
			}
			fen.crash(crashRng, mode)
		}
		wg.Wait()
		cur.Store(nil)
		c.Close() // the sticky error, if the crash hit it
		l.Close()
		// If the crash point was never reached, crash now: the appends
		// are all acknowledged, only the preparer's work may be unsynced.
		fen.crash(crashRng, mode)
		st.mu.Lock()
		t.Logf("round %d: %d attempted, %d acknowledged, %d syncs before the crash", round, len(st.attempted), len(st.acked), ct.count.Load())
		for _, err := range st.errs {
			// The crash reaches appenders as the log's sticky failure,
			// caused by the crashed filesystem, not as a panic or a hang.
			if err == nil || !errors.Is(err, vfs.ErrCrashed) || !errors.Is(err, segment.ErrFailed) {
				t.Fatalf("append after the crash: %v, want a sticky segment.ErrFailed caused by vfs.ErrCrashed", err)
			}
		}
		st.mu.Unlock()

		fen, l, prefix = recoverAndCheck(t, fs, opts, rng, mode, &cur, prefix, st)
	}
	l.Close()
	vrep, err := segment.Verify(fs, crashDir)
	if err != nil {
		t.Fatalf("Verify after the last recovery: %v", err)
	}
	if vrep.Torn != nil || vrep.Unfinished != nil || vrep.TornCreation != "" {
		t.Fatalf("Verify after recovery is not clean: %+v", vrep)
	}
}

func withFS(o segment.Options, fs vfs.FS) segment.Options {
	o.FS = fs
	return o
}

// appendUntilDead appends transactions of 1-4 records, some large enough
// to span frames and segments, until the committer fails or the process
// has crashed (or 60 transactions).
func appendUntilDead(c *groupcommit.Committer, fen *fence, st *crashRound, rng *rand.Rand, tag string, acks chan<- struct{}) {
	for i := range 60 {
		var recs [][]byte
		for k := range 1 + rng.IntN(4) {
			n := 1 + rng.IntN(200)
			if rng.IntN(8) == 0 {
				n = 300 + rng.IntN(900)
			}
			recs = append(recs, payload(fmt.Sprintf("%s/t%d", tag, i), k, n, rng))
		}
		tk, err := c.Append(context.Background(), recs, time.Time{})
		if tk.Last != 0 {
			st.mu.Lock()
			st.attempted[tk.First] = txn{first: tk.First, last: tk.Last, recs: recs, commitTime: tk.CommitTime}
			if err == nil {
				st.acked = append(st.acked, tk.First)
			}
			st.mu.Unlock()
		}
		if err != nil {
			// The failure is sticky: the next append fails too.
			_, err2 := c.Append(context.Background(), [][]byte{[]byte("after failure")}, time.Time{})
			st.mu.Lock()
			st.errs = append(st.errs, err, err2)
			st.mu.Unlock()
			return
		}
		if fen.isDead() {
			return
		}
		select {
		case acks <- struct{}{}:
		default:
		}
	}
}

// recoverAndCheck reopens the crashed log as a new process would and checks
// it against prefix (the log as recovered before this round) and the
// round's appends. Sometimes it first crashes a recovery part way. It
// returns the new process's fence, the open log, and its content.
func recoverAndCheck(t *testing.T, fs *vfs.CrashFS, opts segment.Options, rng *rand.Rand, mode vfs.CrashMode,
	cur *atomic.Pointer[crashTrigger], prefix []txn, st *crashRound) (*fence, *segment.Log, []txn) {
	t.Helper()
	if rng.IntN(4) == 0 {
		// Crash inside one of the first syncs of recovery (directory sync
		// after removing files, the sync of the truncated segment, the
		// preparer's): recovery must be idempotent.
		fen := &fence{fs: fs}
		ct := &crashTrigger{fen: fen, target: 1 + rng.Int64N(3), rng: rand.New(rand.NewPCG(rng.Uint64(), 0)), mode: mode}
		cur.Store(ct)
		l, _, err := segment.Open(crashDir, withFS(opts, fen))
		if err == nil {
			l.Close()
		} else if !errors.Is(err, vfs.ErrCrashed) {
			t.Fatalf("open crashed during recovery: %v, want vfs.ErrCrashed", err)
		}
		cur.Store(nil)
		fen.crash(ct.rng, mode)
	}

	fen := &fence{fs: fs}
	vrep, err := segment.Verify(fen, crashDir)
	if err != nil {
		t.Fatalf("Verify after the crash: %v", err)
	}
	l, rep, err := segment.Open(crashDir, withFS(opts, fen))
	if err != nil {
		t.Fatalf("Open after the crash: %v (Verify said %+v)", err, vrep)
	}
	t.Logf("recovered: %v", rep)
	if fmt.Sprint(vrep.Unfinished) != fmt.Sprint(rep.Discarded) {
		t.Fatalf("Verify found unfinished %+v, Open discarded %+v", vrep.Unfinished, rep.Discarded)
	}
	if (vrep.Torn == nil) != (rep.Torn == nil) ||
		vrep.Torn != nil && (vrep.Torn.Segment != rep.Torn.Segment || vrep.Torn.Offset != rep.Torn.Offset) {
		t.Fatalf("Verify found torn tail %+v, Open %+v", vrep.Torn, rep.Torn)
	}
	if vrep.TornCreation != "" && !slices.Contains(rep.Removed, vrep.TornCreation) {
		t.Fatalf("Verify found torn creation %s, Open removed %v", vrep.TornCreation, rep.Removed)
	}

	got := readTxns(t, l)
	if len(got) < len(prefix) {
		t.Fatalf("recovered %d transactions, fewer than the %d recovered before", len(got), len(prefix))
	}
	checkTxns(t, got[:len(prefix)], prefix)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, x := range got[len(prefix):] {
		want, ok := st.attempted[x.first]
		if !ok || !sameTxn(x, want) {
			t.Fatalf("recovered %v, which was never appended (appended there: %v, %v)", x, want, ok)
		}
	}
	present := map[uint64]bool{}
	for _, x := range got {
		present[x.first] = true
	}
	for _, first := range st.acked {
		if !present[first] {
			t.Fatalf("acknowledged %v lost (recovered %d transactions, next LSN %d)", st.attempted[first], len(got), rep.NextLSN)
		}
	}
	next := l.FirstLSN()
	if len(got) > 0 {
		next = got[len(got)-1].last + 1
	}
	if rep.NextLSN != next || l.NextLSN() != next || l.Visible() != next-1 {
		t.Fatalf("next LSN %d, report %d, visible %d; want next %d", l.NextLSN(), rep.NextLSN, l.Visible(), next)
	}
	return fen, l, got
}

// TestTornCreation damages a new segment as a crash before its first fsync
// can: the sector holding its header is lost (still the preallocated
// zeros) while later sectors of the same first write survive. Nothing in
// it was acknowledged, so recovery removes it; the transaction it was
// finishing is discarded. The same zeroed header in front of a second,
// later write (which proves the first one, header included, was synced)
// is corruption.
func TestTornCreation(t *testing.T) {
	for _, later := range []bool{false, true} {
		t.Run(fmt.Sprintf("later-write=%v", later), func(t *testing.T) {
			fs := vfs.NewCrashFS()
			opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
			l, _ := open(t, crashDir, opts)
			lsn := l.NextLSN()
			var committed []txn
			write := func(b segment.Batch) {
				t.Helper()
				if err := l.Write([]segment.Batch{b}); err != nil {
					t.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				lsn += uint64(b.Count)
			}
			for i := range 3 {
				recs := recsOf(fmt.Sprintf("c%d", i), 2, 500)
				committed = append(committed, txn{first: lsn, last: lsn + 1, recs: recs, commitTime: int64(i)})
				write(batch(lsn, lsn, recs, true, int64(i)))
			}
			// T begins in the first segment and ends in a new one, with one
			// large frame of its own that spans several sectors.
			tStart := lsn
			write(batch(lsn, tStart, recsOf("t0", 1, 400), false, 0))
			// The new segment's write is never acknowledged as far as
			// recovery can tell (the watermark lags the log by design).
			restore := ackSnapshot(t, fs, crashDir)
			write(batch(lsn, tStart, recsOf("t1", 2, 900), true, 9))
			if later {
				write(batch(lsn, lsn, recsOf("after", 1, 50), true, 10))
			}
			segs := segFiles(t, fs, crashDir)
			if len(segs) != 2 {
				t.Fatalf("segments %v, want 2", segs)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			restore()
			name := vfs.Join(crashDir, segs[1])
			b, err := fs.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			clear(b[:vfs.SectorSize])
			if err := fs.WriteFile(name, b, true); err != nil {
				t.Fatal(err)
			}

			vrep, verr := segment.Verify(fs, crashDir)
			l, rep, err := segment.Open(crashDir, opts)
			if later {
				wantCorrupt(t, "Verify", verr, segs[1], 0, segment.HeaderSize)
				wantCorrupt(t, "Open", err, segs[1], 0, segment.HeaderSize)
				return
			}
			if verr != nil || vrep.TornCreation != segs[1] {
				t.Fatalf("Verify: %+v, %v; want torn creation of %s", vrep, verr, segs[1])
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			want := &segment.DiscardedTxn{FirstLSN: tStart, Records: 1}
			if !slices.Contains(rep.Removed, segs[1]) || fmt.Sprint(rep.Discarded) != fmt.Sprint(want) {
				t.Fatalf("report %v, want %s removed and %+v discarded", rep, segs[1], want)
			}
			checkTxns(t, readTxns(t, l), committed)
		})
	}
}
