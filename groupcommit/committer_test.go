package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

func openLog(t *testing.T, dir string, opts segment.Options) *segment.Log {
	t.Helper()
	l, _, err := segment.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// readAll returns every visible record's data, checking dense LSNs and
// transaction boundaries.
func readAll(t *testing.T, l *segment.Log) (datas []string, commits []uint64) {
	t.Helper()
	r, err := l.NewReader(l.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := l.FirstLSN()
	var lastTime int64
	for {
		rec, err := r.Next(context.Background())
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.LSN != want {
			t.Fatalf("LSN %d, want %d", rec.LSN, want)
		}
		want++
		datas = append(datas, string(rec.Data))
		if rec.Commit {
			if rec.CommitTime < lastTime {
				t.Fatalf("commit time went backwards at LSN %d", rec.LSN)
			}
			lastTime = rec.CommitTime
			commits = append(commits, rec.LSN)
		}
	}
}

func TestConcurrentTransactionsAreContiguousAndDurable(t *testing.T) {
	for _, codec := range []segment.Codec{segment.CodecNone, segment.CodecS2, segment.CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			dir := t.TempDir()
			// 8 KiB, not 32: the records are mostly zero padding, and zstd
			// stored the whole run in under two 32 KiB segments, failing the
			// rotation check below in most runs.
			l := openLog(t, dir, segment.Options{SegmentSize: 8 << 10, Codec: codec})
			c, err := New(l, Options{MaxBatchBytes: 4 << 10})
			if err != nil {
				t.Fatal(err)
			}
			const writers, txns = 16, 100
			var mu sync.Mutex
			acked := map[uint64][]string{} // commit LSN -> records
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range txns {
						n := 1 + (i % 5)
						var recs [][]byte
						var strs []string
						for k := range n {
							s := fmt.Sprintf("w%d-t%d-r%d-%0*d", w, i, k, (i*37)%300, 0)
							recs = append(recs, []byte(s))
							strs = append(strs, s)
						}
						tk, err := c.Append(context.Background(), recs, time.Time{})
						if err != nil {
							t.Error(err)
							return
						}
						if tk.Last-tk.First+1 != uint64(n) {
							t.Errorf("ticket %+v for %d records", tk, n)
						}
						if c.Durable() < tk.Last {
							t.Errorf("Append returned before LSN %d was durable (%d)", tk.Last, c.Durable())
						}
						mu.Lock()
						acked[tk.Last] = strs
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			l.Close()

			l = openLog(t, dir, segment.Options{SegmentSize: 8 << 10, Codec: codec})
			defer l.Close()
			datas, commits := readAll(t, l)
			if len(commits) != writers*txns {
				t.Fatalf("%d commits, want %d", len(commits), writers*txns)
			}
			start := 0
			for _, cl := range commits {
				want := acked[cl]
				got := datas[start : cl-l.FirstLSN()+1]
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("transaction ending at %d: got %q want %q", cl, got, want)
				}
				start = int(cl - l.FirstLSN() + 1)
			}
			if len(l.Segments()) < 3 {
				t.Fatalf("expected rotation, got %d segments", len(l.Segments()))
			}
		})
	}
}

func TestLargeTransactionSpansFramesAndSegments(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, segment.Options{SegmentSize: 8 << 10})
	c, err := New(l, Options{MaxBatchBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Append(ctx, [][]byte{[]byte("small")}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	var big [][]byte
	for i := range 500 {
		big = append(big, []byte(fmt.Sprintf("big-%04d-%0100d", i, i)))
	}
	tk, err := c.Append(ctx, big, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if tk.First != 2 || tk.Last != 501 {
		t.Fatalf("ticket %+v", tk)
	}
	c.Close()
	l.Close()
	l = openLog(t, dir, segment.Options{SegmentSize: 8 << 10})
	defer l.Close()
	datas, commits := readAll(t, l)
	if len(datas) != 501 || len(commits) != 2 || commits[1] != 501 {
		t.Fatalf("read %d records, commits %v", len(datas), commits)
	}
}

func TestCommitTimeNeverDecreases(t *testing.T) {
	l := openLog(t, t.TempDir(), segment.Options{})
	defer l.Close()
	c, _ := New(l, Options{})
	defer c.Close()
	ctx := context.Background()
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a, _ := c.Append(ctx, [][]byte{[]byte("a")}, t1)
	b, _ := c.Append(ctx, [][]byte{[]byte("b")}, t1.Add(-time.Hour))
	if a.CommitTime != t1.UnixNano() || b.CommitTime != t1.UnixNano() {
		t.Fatalf("commit times %v %v", a.Time(), b.Time())
	}
}

func TestPipelinedAppendAsyncThenWait(t *testing.T) {
	l := openLog(t, t.TempDir(), segment.Options{})
	defer l.Close()
	c, _ := New(l, Options{MaxPendingBytes: 64 << 10})
	ctx := context.Background()
	var last Ticket
	for i := range 20000 {
		tk, err := c.AppendAsync(ctx, [][]byte{[]byte(fmt.Sprintf("rec-%d", i))}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if tk.First != uint64(i+1) {
			t.Fatalf("LSN %d want %d", tk.First, i+1)
		}
		last = tk
	}
	if err := c.Wait(ctx, last.Last); err != nil {
		t.Fatal(err)
	}
	if l.Visible() < last.Last {
		t.Fatalf("visible %d < %d", l.Visible(), last.Last)
	}
	c.Close()
	if _, err := c.AppendAsync(ctx, [][]byte{[]byte("x")}, time.Time{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func TestFollowingReaderSeesOnlyDurableCommits(t *testing.T) {
	l := openLog(t, t.TempDir(), segment.Options{})
	defer l.Close()
	c, _ := New(l, Options{})
	defer c.Close()
	r, err := l.NewReader(1, true)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan segment.Record, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		for range got {
		}
		r.Close()
	}()
	go func() {
		for {
			rec, err := r.Next(ctx)
			if err != nil {
				close(got)
				return
			}
			rec.Data = append([]byte(nil), rec.Data...)
			got <- rec
		}
	}()
	for range 50 {
		if _, err := c.Append(ctx, [][]byte{[]byte("x"), []byte("y")}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			rec := <-got
			if rec.LSN > c.Durable() {
				t.Fatalf("reader saw LSN %d beyond durable %d", rec.LSN, c.Durable())
			}
		}
	}
}

// hookFS calls onSync, with the file's real Sync, in place of every Sync of
// a segment file it creates or opens. The preparer's background sync of the
// next segment (next.seg.tmp) is never hooked: it runs at moments the tests
// do not control.
type hookFS struct {
	vfs.FS
	onSync func(sync func() error) error
}

type hookFile struct {
	vfs.File
	onSync func(sync func() error) error // nil for the preparer's file
}

func (h *hookFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	if filepath.Base(name) == segment.PreparedName {
		return hookFile{File: f}, nil
	}
	return hookFile{f, h.onSync}, nil
}

func (h *hookFS) Create(n string) (vfs.File, error) {
	f, err := h.FS.Create(n)
	return h.wrap(n, f, err)
}

func (h *hookFS) OpenReadWrite(n string) (vfs.File, error) {
	f, err := h.FS.OpenReadWrite(n)
	return h.wrap(n, f, err)
}

func (f hookFile) Sync() error {
	if f.onSync == nil {
		return f.File.Sync()
	}
	return f.onSync(f.File.Sync)
}

// failFS fails every Sync of a segment file after the first left.
type failFS struct {
	hookFS
	mu    sync.Mutex
	left  int
	calls int
}

var errDisk = errors.New("injected EIO")

func newFailFS(left int) *failFS {
	f := &failFS{left: left}
	f.hookFS = hookFS{FS: vfs.Default, onSync: func(sync func() error) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls++
		if f.left <= 0 {
			return errDisk
		}
		f.left--
		return sync()
	}}
	return f
}

func TestFailedSyncIsSticky(t *testing.T) {
	fsys := newFailFS(1000)
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	c, _ := New(l, Options{})
	ctx := context.Background()
	if _, err := c.Append(ctx, [][]byte{[]byte("ok")}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	fsys.left = 0
	fsys.mu.Unlock()
	_, err := c.Append(ctx, [][]byte{[]byte("lost")}, time.Time{})
	if !errors.Is(err, errDisk) || !errors.Is(err, segment.ErrFailed) {
		t.Fatalf("append with failing fsync: %v", err)
	}
	fsys.mu.Lock()
	fsys.left = 1000
	calls := fsys.calls
	fsys.mu.Unlock()
	for range 3 {
		if _, err := c.Append(ctx, [][]byte{[]byte("later")}, time.Time{}); !errors.Is(err, errDisk) {
			t.Fatalf("append after failed fsync: %v", err)
		}
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.calls != calls {
		t.Fatalf("fsync retried after failure: %d calls, want %d", fsys.calls, calls)
	}
	if l.Visible() != 1 {
		t.Fatalf("visible %d after failed sync, want 1", l.Visible())
	}
}

func TestBackpressureBoundsPending(t *testing.T) {
	l := openLog(t, t.TempDir(), segment.Options{})
	defer l.Close()
	var maxBytes int
	var mu sync.Mutex
	c, _ := New(l, Options{MaxPendingBytes: 16 << 10, Observe: func(_, b int, _ time.Duration) {
		mu.Lock()
		maxBytes = max(maxBytes, b)
		mu.Unlock()
	}})
	defer c.Close()
	rec := make([]byte, 1000)
	var last Ticket
	for range 2000 {
		tk, err := c.AppendAsync(context.Background(), [][]byte{rec}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		last = tk
	}
	c.Wait(context.Background(), last.Last)
	mu.Lock()
	defer mu.Unlock()
	if maxBytes > 16<<10+1100 {
		t.Fatalf("a flush carried %d bytes, above the 16 KiB bound", maxBytes)
	}
}

// blockFS blocks Sync of a segment file while blocked is set, and then
// sends on entered, if it is not nil and has room.
type blockFS struct {
	hookFS
	blocked atomic.Bool
	release chan struct{}
	entered chan struct{}
}

func newBlockFS(entered chan struct{}) *blockFS {
	b := &blockFS{release: make(chan struct{}), entered: entered}
	b.hookFS = hookFS{FS: vfs.Default, onSync: func(sync func() error) error {
		if b.blocked.Load() {
			select {
			case b.entered <- struct{}{}:
			default:
			}
			<-b.release
		}
		return sync()
	}}
	return b
}

func TestBackpressureHonoursContext(t *testing.T) {
	fsys := newBlockFS(nil)
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	c, _ := New(l, Options{MaxPendingBytes: 4 << 10})
	defer c.Close()
	defer close(fsys.release)
	fsys.blocked.Store(true) // every flush from now on hangs in fdatasync
	rec := make([]byte, 1000)
	// The first flush blocks in Sync; fill the pending budget behind it.
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := c.AppendAsync(ctx, [][]byte{rec}, time.Time{})
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return // blocked by backpressure and released by its context
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("appends never blocked on a full pending queue")
}

// TestCloseWaitsForALeadersFlush: Close while a synchronous appender leads
// a flush (writes and syncs it in its own goroutine) returns only after
// that flush, and a waiter of the leader's transaction sees it durable,
// not ErrClosed.
func TestCloseWaitsForALeadersFlush(t *testing.T) {
	fsys := newBlockFS(make(chan struct{}, 1))
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	c, _ := New(l, Options{})
	ctx := context.Background()
	lsn := l.NextLSN()
	fsys.blocked.Store(true)
	var once sync.Once
	release := func() {
		once.Do(func() {
			fsys.blocked.Store(false)
			close(fsys.release)
		})
	}
	defer release() // before l.Close, if the test fails early
	led := make(chan error, 1)
	go func() {
		// The flusher is idle, so this appender leads the flush.
		_, err := c.Append(ctx, [][]byte{[]byte("led")}, time.Time{})
		led <- err
	}()
	<-fsys.entered // the leader is in its fdatasync
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	waited := make(chan error, 1)
	go func() { waited <- c.Wait(ctx, lsn) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait(%d) returned %v while the flush covering it was still running", lsn, err)
	case err := <-closed:
		t.Fatalf("Close returned %v while a leader's flush was still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	for name, ch := range map[string]chan error{"the leader's Append": led, "Wait": waited, "Close": closed} {
		if err := <-ch; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestReleasedAppendersJoinTheNextBatch: closed-loop appenders released by
// a flush, which append again at once, are all taken by the next flush
// (awaitWoken), instead of splitting into two cohorts that alternate and
// each wait two flushes. Each fdatasync takes at least a millisecond here,
// so the budget is ample for 16 goroutines to run.
func TestReleasedAppendersJoinTheNextBatch(t *testing.T) {
	fsys := &hookFS{FS: vfs.Default, onSync: func(sync func() error) error {
		time.Sleep(time.Millisecond)
		return sync()
	}}
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	var mu sync.Mutex
	var batches []int
	c, _ := New(l, Options{Observe: func(records, _ int, _ time.Duration) {
		mu.Lock()
		batches = append(batches, records)
		mu.Unlock()
	}})
	const writers, rounds = 16, 60
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if _, err := c.Append(context.Background(), [][]byte{[]byte("x")}, time.Time{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Skip the start (appenders arriving one by one) and the end (those
	// that finished their rounds drop out).
	mid := batches[len(batches)/4 : len(batches)*3/4]
	sum := 0
	for _, b := range mid {
		sum += b
	}
	// Two alternating cohorts average writers/2 (8+8, or 1+16 when the
	// first appender back leads a flush of its own); on a loaded machine
	// one or two appenders sometimes miss a batch.
	if mean := float64(sum) / float64(len(mid)); mean < 0.75*writers {
		t.Fatalf("flushes in the middle of the run took %.1f of %d appenders on average (want at least 75%%); batches: %v",
			mean, writers, mid)
	}
}

// TestCancelledWaitersAreNotAwaited: a waiter that leaves Wait through
// its context is no longer counted as one to await, whether its flush
// released it meanwhile or not; otherwise every later flush would wait its
// whole budget for it.
func TestCancelledWaitersAreNotAwaited(t *testing.T) {
	fsys := newBlockFS(make(chan struct{}, 1))
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	c, _ := New(l, Options{})
	var once sync.Once
	release := func() {
		once.Do(func() {
			fsys.blocked.Store(false)
			close(fsys.release)
		})
	}
	defer release()
	fsys.blocked.Store(true)
	ctx := context.Background()
	// A leader's flush hangs in fdatasync; the waiters below park on it
	// (its LSN) and on the next take (later LSNs).
	tk, err := c.AppendAsync(ctx, [][]byte{[]byte("first")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	<-fsys.entered
	later, err := c.AppendAsync(ctx, [][]byte{[]byte("second")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lsn := tk.Last
			if i%2 == 1 {
				lsn = later.Last
			}
			if err := c.Wait(wctx, lsn); !errors.Is(err, context.Canceled) {
				t.Errorf("Wait(%d) after cancel: %v", lsn, err)
			}
		}()
	}
	waitFor(t, func() bool {
		c.w.Lock()
		defer c.w.Unlock()
		n := len(c.w.next)
		for _, g := range c.w.gens {
			n += len(g.waiters)
		}
		return n == 8
	})
	cancel()
	wg.Wait()
	release()
	if err := c.Wait(ctx, later.Last); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, [][]byte{[]byte("third")}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := c.waking.Load(); n != 0 {
		t.Fatalf("%d waiters still counted as waking after all left", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAwaitWokenWaitsWhileWaitersArrive: a flush waits, slice after slice
// of the previous flush's duration, while the waiters it awaits keep
// running, and stops after a slice in which none ran. The awaited waiters
// are stand-ins counted in c.waking; awaitWoken is called as a flush calls
// it, holding the flushing token.
func TestAwaitWokenWaitsWhileWaitersArrive(t *testing.T) {
	const slice = 200 * time.Millisecond
	l := openLog(t, t.TempDir(), segment.Options{})
	defer l.Close()
	c, _ := New(l, Options{})
	defer c.Close()
	c.flushing <- struct{}{}
	defer func() { <-c.flushing }()

	// Three stand-ins run one every half slice, the first two in the
	// first slice and the third in the second: the wait lasts until the
	// third (1.5 slices), past its first slice.
	c.waking.Add(3)
	started := make(chan struct{})
	go func() {
		<-started
		for range 3 {
			time.Sleep(slice / 2)
			c.resumed()
		}
	}()
	start := time.Now()
	close(started)
	c.awaitWoken(slice)
	if d, n := time.Since(start), c.waking.Load(); n != 0 || d < slice*3/2 {
		t.Fatalf("with waiters arriving every half slice: the wait ended after %v with %d not run, want all run after 1.5 slices (%v)", d, n, slice*3/2)
	}

	// A signal sent late by the last waiter of an earlier wait (it found
	// the count at 0, then sent after this wait began) does not end this
	// one while its waiters have not run.
	c.waking.Add(1)
	go func() {
		time.Sleep(slice / 4)
		c.allWoken <- struct{}{}
		time.Sleep(slice / 4)
		c.resumed()
	}()
	start = time.Now()
	c.awaitWoken(slice)
	if d, n := time.Since(start), c.waking.Load(); n != 0 || d < slice/2 {
		t.Fatalf("with a late signal: the wait ended after %v with %d not run, want it run after half a slice", d, n)
	}

	// A stand-in that never runs: the wait ends after one slice without
	// progress, not after maxWokenSlices.
	c.waking.Add(1)
	defer c.waking.Add(-1)
	start = time.Now()
	c.awaitWoken(slice)
	if d := time.Since(start); d < slice || d >= 2*slice {
		t.Errorf("with a waiter that never runs: the wait took %v, want one slice (%v)", d, slice)
	}
}

// TestUnparkAfterRelease: a waiter whose context ends after its flush
// released it is counted as run, so that the next flush does not wait
// for it.
func TestUnparkAfterRelease(t *testing.T) {
	fsys := newBlockFS(make(chan struct{}, 1))
	l := openLog(t, t.TempDir(), segment.Options{FS: fsys})
	defer l.Close()
	c, _ := New(l, Options{})
	defer c.Close()
	fsys.blocked.Store(true)
	tk, err := c.AppendAsync(context.Background(), [][]byte{[]byte("x")}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	<-fsys.entered // its flush hangs in fdatasync
	// Park a waiter by hand on that flush, then let the flush release it
	// without the waiter running.
	w := &waiter{ch: make(chan struct{}, 1)}
	if !c.park(w, tk.Last, nil) {
		t.Fatal("park: the LSN of a flush still in fdatasync counted as durable")
	}
	fsys.blocked.Store(false)
	close(fsys.release)
	if err := c.Wait(context.Background(), tk.Last); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(w.ch) == 1 }) // its token was sent
	if n := c.waking.Load(); n != 1 {
		t.Fatalf("waking = %d with the released waiter not run, want 1", n)
	}
	c.unpark(w)
	if n := c.waking.Load(); n != 0 {
		t.Fatalf("waking = %d after the released waiter left, want 0", n)
	}
}
