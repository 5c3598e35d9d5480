package segment

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/walship/walship/vfs"
)

// firstHole returns the offset of the first hole at or after off in the
// file: ext4 and XFS report preallocated (unwritten) extents as holes, so
// a zero-filled file has none before its end.
func firstHole(t *testing.T, path string, off int64) (hole, size int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	hole, err = unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE)
	if err != nil {
		t.Fatalf("SEEK_HOLE %s: %v", path, err)
	}
	return hole, st.Size()
}

// needUnwrittenAsHoles skips on filesystems that do not report
// preallocated space as holes (the test could not tell zeros from it);
// CI's ext4 does.
func needUnwrittenAsHoles(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	f, err := vfs.Default.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Preallocate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if hole, size := firstHole(t, filepath.Join(dir, "probe"), 0); hole >= size {
		t.Skip("this filesystem does not report preallocated space as holes")
	}
}

// TestZeroFill: with Options.ZeroFill a new log's first segment is
// written with zeros when it is created and the prepared next segment in
// the background, so no segment the writer writes into is left with
// preallocated (unwritten) space; without it they are only preallocated.
func TestZeroFill(t *testing.T) {
	needUnwrittenAsHoles(t)
	const size = 1 << 20
	for _, zero := range []bool{false, true} {
		dir := t.TempDir()
		l, _, err := Open(dir, Options{SegmentSize: size, ZeroFill: zero, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		first := filepath.Join(dir, SegmentName(1))
		if hole, n := firstHole(t, first, HeaderSize); (hole < n) == zero {
			t.Fatalf("zero fill %v: first segment (%d bytes) has its first hole at %d", zero, n, hole)
		}
		// Each prepared next segment is zero-filled in the background (1
		// MiB at the idle log's 4 MiB/s takes ~250 ms), the one after a
		// rotation too; the writer then rotates into it.
		lsn := uint64(1)
		for segs := 2; segs <= 3; segs++ {
			next := filepath.Join(dir, PreparedName)
			deadline := time.Now().Add(10 * time.Second)
			for zero {
				// The preparer creates the file before it sizes it, and
				// SEEK_HOLE fails on an empty file: look once it is whole.
				if st, err := os.Stat(next); err == nil && st.Size() == size {
					if hole, n := firstHole(t, next, 0); hole >= n && n == size {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("the prepared segment %d was never zero-filled", segs)
				}
				time.Sleep(5 * time.Millisecond)
			}
			for len(l.Segments()) < segs {
				raw := AppendRecord(nil, make([]byte, 64<<10), true, 1)
				if err := l.Write([]Batch{{Raw: raw, Count: 1, FirstLSN: lsn, TxnStart: lsn, EndsTxn: true, LastCommit: lsn, LastCommitTime: 1}}); err != nil {
					t.Fatal(err)
				}
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				lsn++
			}
			active := filepath.Join(dir, l.Segments()[segs-1].Name)
			if hole, n := firstHole(t, active, l.act.off); (hole < n) == zero {
				t.Fatalf("zero fill %v: segment %d (%d bytes) has its first hole at %d", zero, segs, n, hole)
			}
		}
		l.Close()
	}
}

// TestZeroFillGivesWayToTheWriter: a writer that needs the next segment
// before its paced zero fill is done gets it at once, partly zeroed (the
// rest stays preallocated), instead of waiting for the fill.
func TestZeroFillGivesWayToTheWriter(t *testing.T) {
	needUnwrittenAsHoles(t)
	dir := t.TempDir()
	const size = 256 << 20 // four seconds of fill at 64 MiB/s
	// written = size: nothing holds the fill below its full rate.
	p := startPreparer(vfs.Default, dir, size, true, true, size)
	defer p.stop()
	time.Sleep(50 * time.Millisecond) // let the fill begin
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		f, err := p.take()
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("take waited for the whole paced zero fill")
	}
	if hole, n := firstHole(t, filepath.Join(dir, PreparedName), 0); hole >= n {
		t.Fatalf("the taken segment was zero-filled whole (%d bytes): the fill did not stop", n)
	}
}

// writebackFS records the ranges whose writeback its files were asked to
// start.
type writebackFS struct {
	vfs.FS
	mu     sync.Mutex
	ranges [][2]int64
}

type writebackFile struct {
	vfs.File
	fs *writebackFS
}

func (w *writebackFS) Create(name string) (vfs.File, error) {
	f, err := w.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return writebackFile{File: f, fs: w}, nil
}

func (f writebackFile) StartWriteback(off, n int64) error {
	f.fs.mu.Lock()
	f.fs.ranges = append(f.fs.ranges, [2]int64{off, n})
	f.fs.mu.Unlock()
	return f.File.(vfs.Writebacker).StartWriteback(off, n)
}

// TestZeroFillStartsWriteback: the fill hands its zeros to the disk in
// chunks of at most zeroWriteChunk as it writes them, the whole file in
// order, instead of leaving them to go out in bursts at its fdatasyncs
// (which stalled the writer's fdatasyncs queued behind them).
func TestZeroFillStartsWriteback(t *testing.T) {
	if _, ok := any(osFileProbe(t)).(vfs.Writebacker); !ok {
		t.Fatal("vfs.Default's files do not implement vfs.Writebacker")
	}
	const size = 3<<20 + 4096 // not a multiple of the chunk
	wfs := &writebackFS{FS: vfs.Default}
	p := startPreparer(wfs, t.TempDir(), size, true, true, size)
	// The fill takes ~50 ms at zeroFillRate; take would hurry it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		wfs.mu.Lock()
		n := len(wfs.ranges)
		wfs.mu.Unlock()
		if n >= size/zeroWriteChunk+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s, writeback was started for %d chunks", n)
		}
	}
	f, err := p.take()
	p.stop()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	wfs.mu.Lock()
	defer wfs.mu.Unlock()
	var next int64
	for _, r := range wfs.ranges {
		if r[0] != next || r[1] <= 0 || r[1] > zeroWriteChunk {
			t.Fatalf("writeback started for [%d, +%d) after %d bytes; want chunks of at most %d in order (all: %v)", r[0], r[1], next, zeroWriteChunk, wfs.ranges)
		}
		next += r[1]
	}
	if next != size {
		t.Fatalf("writeback started for %d of %d bytes", next, size)
	}
}

// osFileProbe returns a file of vfs.Default.
func osFileProbe(t *testing.T) vfs.File {
	t.Helper()
	f, err := vfs.Default.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestZeroFillPacedByTheWriter: the fill of the next segment keeps pace
// with the active segment's progress, never more than zeroFillLead times
// its written bytes ahead unless the floor rate allows more, and speeds up
// when the writer does.
func TestZeroFillPacedByTheWriter(t *testing.T) {
	const size = 64 << 20
	wfs := &writebackFS{FS: vfs.Default}
	start := time.Now()
	p := startPreparer(wfs, t.TempDir(), size, true, true, 1<<20)
	defer p.stop()
	zeroed := func() int64 {
		wfs.mu.Lock()
		defer wfs.mu.Unlock()
		var n int64
		for _, r := range wfs.ranges {
			n += r[1]
		}
		return n
	}
	time.Sleep(300 * time.Millisecond)
	// Upper bound only (a loaded machine fills less, never more): the
	// lead over 1 MiB written, or the floor rate, plus one chunk; the
	// time is read after the bytes.
	n := zeroed()
	elapsed := time.Since(start)
	allowed := max(zeroFillLead<<20, int64(elapsed.Seconds()*zeroFillFloor)) + zeroWriteChunk
	if n > allowed {
		t.Fatalf("after %v with 1 MiB written, %d bytes zeroed; want at most %d", elapsed, n, allowed)
	}
	// The writer reaches the middle of its segment: the fill may finish
	// (in ~1 s at zeroFillRate; the floor alone would take 16 s).
	p.written.Store(size / 2)
	for deadline := time.Now().Add(60 * time.Second); zeroed() < size; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("writer half way, but after 60 s only %d of %d bytes zeroed", zeroed(), size)
		}
	}
}

// TestZeroPause: the fill's pacing rules, without a disk.
func TestZeroPause(t *testing.T) {
	p := &preparer{}
	p.written.Store(1 << 20)
	now := time.Now()
	long := now.Add(-time.Hour)
	for _, tt := range []struct {
		name        string
		off, n      int64
		start, last time.Time
		wait        bool
	}{
		{"behind the writer, rate allows", 1 << 20, zeroWriteChunk, long, long, false},
		{"behind the writer, chunk just written", 1 << 20, zeroWriteChunk, long, now, true},
		{"ahead of the writer, floor allows", 8 << 20, zeroWriteChunk, long, long, false},
		{"ahead of the writer, floor does not", 8 << 20, zeroWriteChunk, now, long, true},
	} {
		d := p.zeroPause(tt.off, tt.n, tt.start, tt.last)
		if (d > 0) != tt.wait || d > zeroFillPoll+time.Duration(float64(tt.n)/zeroFillRate*float64(time.Second)) {
			t.Errorf("%s: pause %v, want a wait: %v, and at most the poll interval or one chunk's spacing", tt.name, d, tt.wait)
		}
	}
}
