package segment_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// buildLog appends transactions of 1-3 records to a new log until it has
// at least segs segments, pipelining a few at a time so frames and writes
// hold several transactions. It returns the log, still open, and what it
// holds.
func buildLog(t *testing.T, dir string, opts segment.Options, segs int, recSize int) (*segment.Log, []txn) {
	t.Helper()
	l, _ := open(t, dir, opts)
	c := newCommitter(t, l, groupcommit.Options{MaxBatchBytes: 4 << 10})
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	var all []txn
	for len(l.Segments()) < segs {
		var tks []groupcommit.Ticket
		var recs [][][]byte
		for range 1 + rng.IntN(6) {
			i := len(all) + len(tks)
			var rs [][]byte
			for k := range 1 + rng.IntN(3) {
				rs = append(rs, payload(fmt.Sprintf("b%d", i), k, 1+rng.IntN(recSize), rng))
			}
			tk, err := c.AppendAsync(ctx, rs, time0.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			tks, recs = append(tks, tk), append(recs, rs)
		}
		if err := c.Wait(ctx, tks[len(tks)-1].Last); err != nil {
			t.Fatal(err)
		}
		for i, tk := range tks {
			all = append(all, txn{first: tk.First, last: tk.Last, recs: recs[i], commitTime: tk.CommitTime})
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return l, all
}

// flatten lists the records of txns as a reader returns them.
func flatten(txns []txn) []segment.Record {
	var out []segment.Record
	for _, x := range txns {
		for i, r := range x.recs {
			rec := segment.Record{LSN: x.first + uint64(i), Data: r, TxnStart: x.first}
			if i == len(x.recs)-1 {
				rec.Commit, rec.CommitTime = true, x.commitTime
			}
			out = append(out, rec)
		}
	}
	return out
}

func sameRecords(got, want []segment.Record) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.LSN != w.LSN || !bytes.Equal(g.Data, w.Data) || g.Commit != w.Commit || g.CommitTime != w.CommitTime || g.TxnStart != w.TxnStart {
			return fmt.Errorf("record %d: got {%d %q %v %d %d}, want {%d %q %v %d %d}", i,
				g.LSN, g.Data, g.Commit, g.CommitTime, g.TxnStart, w.LSN, w.Data, w.Commit, w.CommitTime, w.TxnStart)
		}
	}
	return nil
}

// TestReaderFromEveryLSN positions a reader at every LSN of a log of
// several segments (each with several sparse-index entries) and checks it
// returns exactly the records from there to the end: on the live log, whose
// index was built while writing, and after a reopen, where sealed segments
// are indexed on first use.
func TestReaderFromEveryLSN(t *testing.T) {
	dir := t.TempDir()
	opts := segment.Options{SegmentSize: 80 << 10, Logger: quiet}
	l, all := buildLog(t, dir, opts, 4, 700)
	recs := flatten(all)
	t.Logf("%d records in %d segments", len(recs), len(l.Segments()))
	check := func(l *segment.Log, stage string) {
		first := l.FirstLSN()
		for from := first; from <= l.NextLSN()+1; from++ {
			got, err := readRecords(l, from)
			if err != nil {
				t.Fatalf("%s: reader from %d: %v", stage, from, err)
			}
			want := recs[min(int(from-first), len(recs)):]
			if err := sameRecords(got, want); err != nil {
				t.Fatalf("%s: reader from %d: %v", stage, from, err)
			}
		}
	}
	check(l, "live")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.NewReader(l.FirstLSN(), false); !errors.Is(err, segment.ErrClosed) {
		t.Fatalf("NewReader on a closed log: %v, want ErrClosed", err)
	}
	l, _ = open(t, dir, opts)
	defer l.Close()
	check(l, "reopened")
}

// durability is an FS that knows, independently of the log, the highest LSN
// that is durable: it decodes the frames each write carries (doc.go) and
// credits them when a Sync of the same file (through any of its open
// handles: the log syncs through extra ones) returns.
type durability struct {
	vfs.FS
	durable atomic.Uint64
	mu      sync.Mutex
	files   map[string]*atomic.Uint64 // path -> highest LSN written to the file
}

type trackedFile struct {
	vfs.File
	d       *durability
	written *atomic.Uint64 // highest LSN written to this file
}

func (d *durability) track(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.files == nil {
		d.files = map[string]*atomic.Uint64{}
	}
	w := d.files[name]
	if w == nil {
		w = new(atomic.Uint64)
		d.files[name] = w
	}
	return &trackedFile{File: f, d: d, written: w}, nil
}

func (d *durability) Create(n string) (vfs.File, error) {
	d.mu.Lock()
	delete(d.files, n) // a new file
	d.mu.Unlock()
	f, err := d.FS.Create(n)
	return d.track(n, f, err)
}

func (d *durability) OpenReadWrite(n string) (vfs.File, error) {
	f, err := d.FS.OpenReadWrite(n)
	return d.track(n, f, err)
}

func (d *durability) Rename(o, n string) error {
	if err := d.FS.Rename(o, n); err != nil {
		return err
	}
	d.mu.Lock()
	d.files[n] = d.files[o]
	delete(d.files, o)
	d.mu.Unlock()
	return nil
}

func (f *trackedFile) WriteAt(b []byte, off int64) (int, error) {
	if off >= segment.HeaderSize {
		for p := 0; p+segment.FrameHeaderSize <= len(b); {
			h := b[p:]
			last := binary.LittleEndian.Uint64(h[16:]) + uint64(binary.LittleEndian.Uint32(h[32:])) - 1
			if last > f.written.Load() {
				f.written.Store(last)
			}
			p += (segment.FrameHeaderSize + int(binary.LittleEndian.Uint32(h[8:])) + 7) &^ 7
		}
	}
	return f.File.WriteAt(b, off)
}

func (f *trackedFile) Sync() error {
	w := f.written.Load()
	if err := f.File.Sync(); err != nil {
		return err
	}
	for {
		d := f.d.durable.Load()
		if w <= d || f.d.durable.CompareAndSwap(d, w) {
			return nil
		}
	}
}

// TestFollowingReaderSeesOnlyDurableRecords starts a following reader on an
// empty log, appends concurrently through groupcommit, and checks that the
// reader gets every record exactly once, in order, and each only after an
// fsync covering it returned (docs/DESIGN.md §4.2), and that groupcommit
// considers it durable too.
func TestFollowingReaderSeesOnlyDurableRecords(t *testing.T) {
	d := &durability{FS: vfs.NewCrashFS()}
	l, _ := open(t, "/wal", segment.Options{FS: d, SegmentSize: 16 << 10, Codec: segment.CodecS2})
	defer l.Close()
	c := newCommitter(t, l, groupcommit.Options{MaxBatchBytes: 2 << 10})
	r, err := l.NewReader(l.FirstLSN(), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan segment.Record, 64)
	errc := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer r.Close()
		for {
			rec, err := r.Next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					errc <- err
				}
				return
			}
			if dur := d.durable.Load(); rec.LSN > dur {
				errc <- fmt.Errorf("reader got LSN %d, durable is %d", rec.LSN, dur)
				return
			}
			if err := c.Wait(ctx, rec.LSN); err != nil {
				errc <- fmt.Errorf("groupcommit Wait(%d) after the reader got it: %v", rec.LSN, err)
				return
			}
			rec.Data = bytes.Clone(rec.Data)
			select {
			case got <- rec:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-stopped
	}()

	var mu sync.Mutex
	var all []txn
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for i := range 150 {
				var rs [][]byte
				for k := range 1 + rng.IntN(3) {
					rs = append(rs, payload(fmt.Sprintf("w%d/%d", w, i), k, 1+rng.IntN(300), rng))
				}
				tk, err := c.Append(context.Background(), rs, time.Time{})
				if err != nil {
					t.Error(err)
					return
				}
				if c.Durable() < tk.Last {
					t.Errorf("Append returned LSN %d before Durable %d covered it", tk.Last, c.Durable())
				}
				mu.Lock()
				all = append(all, txn{first: tk.First, last: tk.Last, recs: rs, commitTime: tk.CommitTime})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(all, func(a, b txn) int { return int(a.first) - int(b.first) })
	want := flatten(all)
	var recs []segment.Record
	for len(recs) < len(want) {
		select {
		case rec := <-got:
			recs = append(recs, rec)
		case err := <-errc:
			t.Fatalf("after %d records: %v", len(recs), err)
		case <-time.After(10 * time.Second):
			t.Fatalf("reader stuck after %d of %d records", len(recs), len(want))
		}
	}
	if err := sameRecords(recs, want); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveBefore checks the retention primitive: it removes exactly the
// sealed segments all of whose records are below the LSN, never the active
// one; readers below the new first LSN get ErrRemoved, readers from it read
// everything; a reopen agrees.
func TestRemoveBefore(t *testing.T) {
	type segRange struct{ base, next uint64 }
	// The bases are known only once the log is built: cases are functions
	// of the segment list.
	cases := []struct {
		name        string
		lsn         func(s []segRange, next uint64) uint64
		wantRemoved int // number of leading segments removed; -1: all sealed
	}{
		{"first LSN", func(s []segRange, _ uint64) uint64 { return s[0].base }, 0},
		{"last of the first segment", func(s []segRange, _ uint64) uint64 { return s[1].base - 1 }, 0},
		{"base of the second segment", func(s []segRange, _ uint64) uint64 { return s[1].base }, 1},
		{"inside the third segment", func(s []segRange, _ uint64) uint64 { return s[2].base + 2 }, 2},
		{"base of the active segment", func(s []segRange, _ uint64) uint64 { return s[len(s)-1].base }, -1},
		{"past the end", func(_ []segRange, next uint64) uint64 { return next + 100 }, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashFS()
			opts := segment.Options{FS: fs, SegmentSize: 4096, Logger: quiet}
			l, all := buildLog(t, "/wal", opts, 5, 200)
			defer func() { l.Close() }()
			var segs []segRange
			infos := l.Segments()
			for i, s := range infos {
				next := l.NextLSN()
				if i+1 < len(infos) {
					next = infos[i+1].BaseLSN
				}
				segs = append(segs, segRange{s.BaseLSN, next})
			}
			if infos[len(infos)-1].Sealed || !infos[0].Sealed {
				t.Fatalf("segments %+v: want sealed ones and an active last one", infos)
			}
			lsn := tc.lsn(segs, l.NextLSN())
			n := tc.wantRemoved
			if n < 0 {
				n = len(segs) - 1
			}
			// A reader already open in the first segment keeps reading what
			// it had, as with an unlinked file.
			early, err := l.NewReader(segs[0].base, false)
			if err != nil {
				t.Fatal(err)
			}
			defer early.Close()

			removed, err := l.RemoveBefore(lsn)
			if err != nil {
				t.Fatal(err)
			}
			var wantNames []string
			for _, s := range infos[:n] {
				wantNames = append(wantNames, s.Name)
			}
			if fmt.Sprint(removed) != fmt.Sprint(wantNames) {
				t.Fatalf("RemoveBefore(%d) removed %v, want %v (segments %v)", lsn, removed, wantNames, segs)
			}
			for _, s := range removed {
				if _, err := fs.Open(vfs.Join("/wal", s)); err == nil {
					t.Fatalf("%s still on disk", s)
				}
			}
			if got := segFiles(t, fs, "/wal"); len(got) != len(segs)-n {
				t.Fatalf("files %v after removing %d of %d", got, n, len(segs))
			}
			first := segs[n].base
			if l.FirstLSN() != first {
				t.Fatalf("FirstLSN %d, want %d", l.FirstLSN(), first)
			}
			if n > 0 {
				for _, from := range []uint64{segs[0].base, first - 1} {
					if _, err := l.NewReader(from, false); !errors.Is(err, segment.ErrRemoved) {
						t.Fatalf("NewReader(%d) below the first LSN %d: %v, want ErrRemoved", from, first, err)
					}
				}
			}
			recs := flatten(all)
			got, err := readRecords(l, first)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameRecords(got, recs[first-1:]); err != nil {
				t.Fatalf("reader from the new first LSN %d: %v", first, err)
			}
			if rec, err := early.Next(context.Background()); err != nil || rec.LSN != segs[0].base {
				t.Fatalf("reader opened before the removal: %+v, %v", rec, err)
			}

			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, _ = open(t, "/wal", opts)
			if l.FirstLSN() != first {
				t.Fatalf("after reopen FirstLSN %d, want %d", l.FirstLSN(), first)
			}
			got, err = readRecords(l, first)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameRecords(got, recs[first-1:]); err != nil {
				t.Fatalf("after reopen: %v", err)
			}
			if _, err := segment.Verify(fs, "/wal"); err != nil {
				t.Fatalf("Verify after retention: %v", err)
			}
		})
	}
}

// eioFS fails every ReadAt of files whose name contains bad.
type eioFS struct {
	vfs.FS
	bad string
}

type eioFile struct{ vfs.File }

func (eioFile) ReadAt([]byte, int64) (int, error) { return 0, errors.New("injected EIO on read") }

func (e eioFS) Open(n string) (vfs.File, error) {
	f, err := e.FS.Open(n)
	if err == nil && strings.Contains(n, e.bad) {
		return eioFile{f}, nil
	}
	return f, err
}

func TestUnreadableNewestSegmentIsNotRemoved(t *testing.T) {
	dir := t.TempDir()
	l, _, err := segment.Open(dir, segment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	name := l.Segments()[0].Name
	l.Close()
	if _, _, err := segment.Open(dir, segment.Options{FS: eioFS{vfs.Default, name}}); err == nil {
		t.Fatal("open succeeded although the segment header could not be read")
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatalf("unreadable segment was removed: %v", err)
	}
}
