package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// streamChange is change i of a streamed transaction, with a value of size
// bytes, so a test can regenerate it instead of keeping it.
func streamChange(i, size int) change.Change {
	id := change.IntValue(int64(i))
	return change.Change{
		Table: change.Table{Schema: "public", Name: "big"}, Op: change.Insert,
		Key:   change.Row{{Name: "id", Value: id}},
		After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(strings.Repeat(string(rune('a'+i%26)), size))}},
	}
}

// streamOf returns a next function producing n changes of size bytes and
// then io.EOF, calling hook (if set) before change i.
func streamOf(n, size int, hook func(i int) error) func() (*change.Change, error) {
	i := 0
	return func() (*change.Change, error) {
		if hook != nil {
			if err := hook(i); err != nil {
				return nil, err
			}
		}
		if i == n {
			return nil, io.EOF
		}
		c := streamChange(i, size)
		i++
		return &c, nil
	}
}

func wantStreamTxn(xid uint64, n, size int) change.Txn {
	t := change.Txn{Header: change.TxHeader{XID: xid}}
	for i := range n {
		t.Changes = append(t.Changes, streamChange(i, size))
	}
	return t
}

// checkTxns asserts that got holds exactly want, in order, with dense
// LSNs between consecutive transactions except across aborted ones.
func checkTxns(t *testing.T, got []change.Committed, want []change.Txn) {
	t.Helper()
	if len(got) != len(want) {
		var xids []uint64
		for _, g := range got {
			xids = append(xids, g.Header.XID)
		}
		t.Fatalf("read %d transactions (xids %v), want %d", len(got), xids, len(want))
	}
	for i := range got {
		if !got[i].Txn.Equal(&want[i]) {
			t.Fatalf("transaction %d (xid %d, %d changes) differs from the one appended (xid %d, %d changes)",
				i, got[i].Header.XID, len(got[i].Changes), want[i].Header.XID, len(want[i].Changes))
		}
		if got[i].CommitLSN-got[i].FirstLSN+1 != uint64(len(want[i].Changes)) {
			t.Fatalf("transaction %d spans LSNs %d..%d for %d changes", i, got[i].FirstLSN, got[i].CommitLSN, len(want[i].Changes))
		}
	}
}

func TestAppendStreamRoundTrip(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), SegmentSize: 64 << 10, MaxBatchBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a := txnOf(1, 2)
	if _, err := w.Append(ctx, &a); err != nil {
		t.Fatal(err)
	}
	// Ahead of the first append's commit time (now), so recorded as given,
	// and within the bound on future commit times.
	ct := time.Now().Add(time.Minute).Truncate(time.Second).Add(6).UTC()
	tk, err := w.AppendStream(ctx, change.TxHeader{XID: 2, SourceCommitTime: ct}, streamOf(300, 1000, nil))
	if err != nil {
		t.Fatal(err)
	}
	if tk.Last-tk.First+1 != 300 || tk.First != 3 || !tk.Time().Equal(ct) {
		t.Fatalf("ticket %+v, want LSNs 3..302 at %v", tk, ct)
	}
	if w.Durable() < tk.Last {
		t.Fatalf("durable %d after AppendStream returned %d", w.Durable(), tk.Last)
	}
	// A later source commit time earlier than the stream's is raised.
	b := txnOf(3, 1)
	b.Header.SourceCommitTime = ct.Add(-time.Hour)
	tb, err := w.Append(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if tb.CommitTime != tk.CommitTime || tb.First != tk.Last+1 {
		t.Fatalf("next append %+v after stream %+v: want dense LSN and commit time not decreasing", tb, tk)
	}
	s := wantStreamTxn(2, 300, 1000)
	s.Header.SourceCommitTime = ct
	checkTxns(t, readTxns(t, w.seg, 1), []change.Txn{a, s, b})

	// An empty stream and an invalid change are rejected; nothing is written.
	if _, err := w.AppendStream(ctx, change.TxHeader{XID: 4}, streamOf(0, 1, nil)); err == nil {
		t.Fatal("empty streamed transaction accepted")
	}
	bad := 0
	_, err = w.AppendStream(ctx, change.TxHeader{XID: 5}, func() (*change.Change, error) {
		bad++
		if bad == 3 {
			return &change.Change{Op: change.Insert}, nil // no table
		}
		c := streamChange(bad, 10)
		return &c, nil
	})
	if err == nil || !strings.Contains(err.Error(), "change 2") {
		t.Fatalf("invalid change: err %v, want one naming change 2", err)
	}
	tc, err := w.Append(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	// The second stream's first change was queued when the third failed:
	// either it was dropped before the flusher took it (LSNs reused) or it
	// was written and an abort record ended it (2 LSNs, skipped by readers).
	if gap := tc.First - tb.Last - 1; gap != 0 && gap != 2 {
		t.Fatalf("LSN %d after rejected streams, want %d or %d", tc.First, tb.Last+1, tb.Last+3)
	}
	checkTxns(t, readTxns(t, w.seg, 1), []change.Txn{a, s, b, b})
}

// TestAppendStreamBoundedMemory streams a transaction much larger than the
// stream's memory bound and checks the live heap stays bounded, then
// checks every record without holding the transaction in memory.
func TestAppendStreamBoundedMemory(t *testing.T) {
	const (
		size  = 16 << 10
		n     = 8192 // 128 MiB
		limit = 48 << 20
	)
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, uint64(0)
	tk, err := w.AppendStream(ctx, change.TxHeader{XID: 9}, streamOf(n, size, func(i int) error {
		if i%512 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if grew := int64(peak) - int64(base); grew > limit {
		t.Fatalf("live heap grew by %d MiB while streaming %d MiB; want under %d MiB", grew>>20, n*size>>20, limit>>20)
	} else {
		t.Logf("live heap grew by at most %.1f MiB while streaming %d MiB", float64(grew)/(1<<20), n*size>>20)
	}
	if tk.First != 1 || tk.Last != n {
		t.Fatalf("ticket %+v, want LSNs 1..%d", tk, n)
	}
	r, err := w.seg.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range n {
		rec, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		hdr, c, err := change.DecodeRecord(rec.Data)
		if err != nil {
			t.Fatal(err)
		}
		want := streamChange(i, size)
		if (hdr != nil) != (i == 0) || !c.Equal(&want) || rec.Commit != (i == n-1) || rec.TxnStart != 1 {
			t.Fatalf("record %d (LSN %d) differs from change %d", i, rec.LSN, i)
		}
	}
	if _, err := r.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after the transaction: %v, want io.EOF", err)
	}
}

var errBoom = errors.New("source connection lost")

// TestAppendStreamAbort aborts streamed transactions midway, after some of
// their frames were written and synced (abort record) and before (records
// dropped), and checks that no reader, before or after reopening, ever sees
// any of them, that LSNs stay dense and that verify accepts the log.
func TestAppendStreamAbort(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var flushed atomic.Int64
	opts := Options{Dir: dir, SegmentSize: 64 << 10, MaxBatchBytes: 8 << 10,
		Observe: func(records, _ int, _ time.Duration) { flushed.Add(int64(records)) }}
	w, _, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()

	// A following reader runs throughout: it must never see a partial or
	// aborted transaction.
	fctx, stopFollow := context.WithCancel(ctx)
	var followed []change.Committed
	var fmu sync.Mutex
	var fwg sync.WaitGroup
	fr, err := newReader(w.seg, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for {
			tx, err := fr.Next(fctx)
			if err != nil {
				return
			}
			fmu.Lock()
			followed = append(followed, *tx)
			fmu.Unlock()
		}
	}()

	var want []change.Txn
	appendOne := func(xid uint64) {
		tx := txnOf(xid, 2)
		if _, err := w.Append(ctx, &tx); err != nil {
			t.Fatal(err)
		}
		want = append(want, tx)
	}
	appendOne(1)

	// 1. next fails after frames of the transaction were synced.
	_, err = w.AppendStream(ctx, change.TxHeader{XID: 100}, streamOf(1000, 1000, func(i int) error {
		if i < 200 {
			return nil
		}
		for deadline := time.Now().Add(10 * time.Second); flushed.Load() < 100; {
			if time.Now().After(deadline) {
				return errors.New("test: no frame of the stream was flushed")
			}
			time.Sleep(time.Millisecond)
		}
		return errBoom
	}))
	if !errors.Is(err, errBoom) {
		t.Fatalf("AppendStream: %v, want %v", err, errBoom)
	}
	appendOne(2)

	// 2. ctx ends midway, again after frames were synced.
	cctx, cancel := context.WithCancel(ctx)
	before := flushed.Load()
	_, err = w.AppendStream(cctx, change.TxHeader{XID: 101}, streamOf(1000, 1000, func(i int) error {
		if i == 300 {
			for flushed.Load() < before+100 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}
		return nil
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendStream with a cancelled context: %v", err)
	}
	appendOne(3)

	// 3. next fails before anything of the transaction was written: its
	// records are dropped and their LSNs reused.
	lastBefore := w.Durable()
	_, err = w.AppendStream(ctx, change.TxHeader{XID: 102}, streamOf(10, 10, func(i int) error {
		if i == 1 {
			return errBoom
		}
		return nil
	}))
	if !errors.Is(err, errBoom) {
		t.Fatalf("AppendStream: %v", err)
	}
	tx := txnOf(4, 2)
	tk, err := w.Append(ctx, &tx)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, tx)
	if tk.First != lastBefore+1 {
		t.Fatalf("first LSN %d after an abort before any write, want %d", tk.First, lastBefore+1)
	}

	check := func(stage string, l *segment.Log) {
		t.Helper()
		checkTxns(t, readTxns(t, l, 1), want)
		// Dense LSNs, and exactly two abort records, each right before the
		// next committed transaction.
		r, err := l.NewReader(1, false)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var aborts []uint64
		next := uint64(1)
		for {
			rec, err := r.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", stage, err)
			}
			if rec.LSN != next {
				t.Fatalf("%s: LSN %d after %d", stage, rec.LSN, next-1)
			}
			next++
			if rec.Aborted {
				aborts = append(aborts, rec.LSN)
			}
		}
		if len(aborts) != 2 {
			t.Fatalf("%s: abort records at %v, want 2", stage, aborts)
		}
		// A reader starting inside an aborted transaction starts at the
		// next whole committed one.
		got := readTxns(t, l, aborts[0]-50)
		checkTxns(t, got, want[1:])
		rep, err := segment.Verify(nil, dir)
		if err != nil {
			t.Fatalf("%s: verify: %v", stage, err)
		}
		if rep.Aborted != 2 || rep.Unfinished != nil || rep.Torn != nil || rep.LastLSN != next-1 {
			t.Fatalf("%s: verify report %+v, want 2 aborted and LastLSN %d", stage, rep, next-1)
		}
	}
	check("live", w.seg)
	// The follower has seen everything committed, and nothing else.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		fmu.Lock()
		n := len(followed)
		fmu.Unlock()
		if n >= len(want) {
			break
		}
	}
	stopFollow()
	fwg.Wait()
	fr.Close()
	checkTxns(t, followed, want)

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, rep, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("recovery after aborted streams: %v", rep)
	}
	check("reopened", w.seg)
	appendOne(5)
	if _, err := w.AppendStream(ctx, change.TxHeader{XID: 6}, streamOf(50, 500, nil)); err != nil {
		t.Fatal(err)
	}
	want = append(want, wantStreamTxn(6, 50, 500))
	checkTxns(t, readTxns(t, w.seg, 1), want)
}

// TestAppendStreamExclusive: appends issued while a stream is active wait
// for it, then proceed after it; the stream's records are contiguous.
func TestAppendStreamExclusive(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), MaxBatchBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	release := make(chan struct{})
	midway := make(chan struct{})
	var done atomic.Int32
	var wg sync.WaitGroup
	tickets := make([]uint64, 8)
	type res struct {
		first, last uint64
		err         error
	}
	streamDone := make(chan res, 1)
	go func() {
		tk, err := w.AppendStream(ctx, change.TxHeader{XID: 50}, streamOf(200, 300, func(i int) error {
			if i == 100 {
				close(midway)
				<-release
			}
			return nil
		}))
		streamDone <- res{tk.First, tk.Last, err}
	}()
	<-midway
	for g := range tickets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx := txnOf(uint64(g+1), 3)
			tk, err := w.Append(ctx, &tx)
			if err != nil {
				t.Error(err)
				return
			}
			tickets[g] = tk.First
			done.Add(1)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if n := done.Load(); n != 0 {
		t.Fatalf("%d appends completed while a stream held the WAL", n)
	}
	// A second stream waits too; its context bounds the wait.
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = w.AppendStream(sctx, change.TxHeader{XID: 51}, streamOf(1, 1, nil))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second stream while one is active: %v, want deadline exceeded", err)
	}
	close(release)
	r := <-streamDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	wg.Wait()
	for g, first := range tickets {
		if first <= r.last {
			t.Fatalf("append %d got LSN %d, inside or before the stream %d..%d", g, first, r.first, r.last)
		}
	}
	got := readTxns(t, w.seg, 1)
	if len(got) != 9 || got[0].Header.XID != 50 || len(got[0].Changes) != 200 {
		t.Fatalf("read %d transactions, first xid %d; want the stream then 8 appends", len(got), got[0].Header.XID)
	}
}

// TestAppendStreamCrash crashes the machine (vfs.CrashFS) at random points
// while a streamed transaction is written, with appends waiting behind it:
// after reopening, every acknowledged transaction is there exactly once,
// the stream is there whole or not at all (whole only if it may have been
// acknowledged), verify passes, and appends and streams continue.
func TestAppendStreamCrash(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("WAL_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	modes := []vfs.CrashMode{vfs.DropUnsynced, vfs.KeepRandomPrefix, vfs.KeepRandomSectors}
	for iter := range 100 {
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			ctx := context.Background()
			fs := vfs.NewCrashFS()
			opts := Options{Dir: "/wal", FS: fs, SegmentSize: 32 << 10, MaxBatchBytes: 4 << 10,
				Logger: slog.New(slog.DiscardHandler)}
			w, _, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			var acked []change.Txn
			var ackMu sync.Mutex
			for x := uint64(1); x <= 3; x++ {
				tx := txnOf(x, 2)
				if _, err := w.Append(ctx, &tx); err != nil {
					t.Fatal(err)
				}
				acked = append(acked, tx)
			}
			mode := modes[rng.IntN(len(modes))]
			crashRNG := rand.New(rand.NewPCG(rng.Uint64(), 1))
			var crashed atomic.Bool
			crash := func() {
				if crashed.CompareAndSwap(false, true) {
					fs.Crash(crashRNG, mode)
				}
			}
			const n, size = 120, 700
			crashAt := rng.IntN(n + 1)
			if rng.IntN(2) == 0 {
				crashAt = -1 // crash at a random sync instead
				k := int64(rng.IntN(40) + 1)
				var syncs atomic.Int64
				fs.SetSyncHook(func(string) {
					if syncs.Add(1) == k {
						crash()
					}
				})
			}
			// Appenders waiting behind the stream.
			var wg sync.WaitGroup
			started := make(chan struct{})
			var startOnce sync.Once
			for g := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-started
					for j := range 5 {
						tx := txnOf(uint64(1000+g*10+j), 2)
						if _, err := w.Append(ctx, &tx); err != nil {
							return
						}
						ackMu.Lock()
						acked = append(acked, tx)
						ackMu.Unlock()
					}
				}()
			}
			_, serr := w.AppendStream(ctx, change.TxHeader{XID: 500}, streamOf(n, size, func(i int) error {
				if i == 10 {
					startOnce.Do(func() { close(started) })
				}
				if i == crashAt {
					crash()
				}
				return nil
			}))
			// The stream may still be acknowledged after a crash in next:
			// a segment file created after the simulated crash is valid, so
			// the writer can go on durably. Acknowledged means present.
			startOnce.Do(func() { close(started) }) // the stream may have failed before change 10
			wg.Wait()
			crash() // if the sync hook never fired
			w.Close()
			fs.SetSyncHook(nil)

			w2, rep, err := Open(opts)
			if err != nil {
				t.Fatalf("reopen after crash (%v): %v", mode, err)
			}
			defer w2.Close()
			got := readTxns(t, w2.seg, 1)
			seen := map[uint64]int{}
			for _, g := range got {
				seen[g.Header.XID]++
				if g.Header.XID == 500 {
					s := wantStreamTxn(500, n, size)
					if !g.Txn.Equal(&s) {
						t.Fatalf("streamed transaction visible with %d of %d changes (recovery %v)", len(g.Changes), n, rep)
					}
				}
			}
			if serr == nil && seen[500] != 1 {
				t.Fatalf("acknowledged stream missing after crash (recovery %v)", rep)
			}
			for _, a := range acked {
				if seen[a.Header.XID] != 1 {
					t.Fatalf("acknowledged transaction %d seen %d times (recovery %v)", a.Header.XID, seen[a.Header.XID], rep)
				}
			}
			if _, err := segment.Verify(fs, "/wal"); err != nil {
				t.Fatalf("verify after recovery: %v", err)
			}
			tx := txnOf(9, 1)
			if _, err := w2.Append(ctx, &tx); err != nil {
				t.Fatal(err)
			}
			if _, err := w2.AppendStream(ctx, change.TxHeader{XID: 600}, streamOf(40, 700, nil)); err != nil {
				t.Fatal(err)
			}
			again := readTxns(t, w2.seg, 1)
			if len(again) != len(got)+2 || again[len(again)-1].Header.XID != 600 || len(again[len(again)-1].Changes) != 40 {
				t.Fatalf("after reopen: %d transactions, want %d then a 40-change stream", len(again), len(got)+2)
			}
		})
	}
}
