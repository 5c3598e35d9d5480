package segment

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
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
		// MiB at 64 MiB/s takes ~16 ms), the one after a rotation too;
		// the writer then rotates into it.
		lsn := uint64(1)
		for segs := 2; segs <= 3; segs++ {
			next := filepath.Join(dir, prepName)
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
	p := startPreparer(vfs.Default, dir, size, true, true)
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
	if hole, n := firstHole(t, filepath.Join(dir, prepName), 0); hole >= n {
		t.Fatalf("the taken segment was zero-filled whole (%d bytes): the fill did not stop", n)
	}
}
