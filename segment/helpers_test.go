package segment_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/walerr"
)

// time0 is an arbitrary commit time to count from.
var time0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// quiet keeps recovery warnings out of the test output.
var quiet = slog.New(slog.DiscardHandler)

// txn is one transaction as the tests know it: what was appended, or what
// was read back.
type txn struct {
	first, last uint64
	recs        [][]byte
	commitTime  int64
}

func (x txn) String() string {
	return fmt.Sprintf("txn %d..%d (%d records, t=%d)", x.first, x.last, len(x.recs), x.commitTime)
}

func sameTxn(a, b txn) bool {
	if a.first != b.first || a.last != b.last || a.commitTime != b.commitTime || len(a.recs) != len(b.recs) {
		return false
	}
	for i := range a.recs {
		if !bytes.Equal(a.recs[i], b.recs[i]) {
			return false
		}
	}
	return true
}

// readTxns reads every visible record of l from its first LSN and groups
// them into transactions, checking what every reader may rely on: LSNs are
// dense from FirstLSN, each record's TxnStart is its transaction's first
// LSN, only a transaction's last record commits, commit times never
// decrease, and the log ends on a commit.
func readTxns(t testing.TB, l *segment.Log) []txn {
	t.Helper()
	txns, err := tryReadTxns(l, l.FirstLSN())
	if err != nil {
		t.Fatal(err)
	}
	return txns
}

func tryReadTxns(l *segment.Log, from uint64) ([]txn, error) {
	r, err := l.NewReader(from, false)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []txn
	var cur *txn
	want := from
	lastTime := int64(-1 << 63)
	skipping := false // the tail of a transaction that began before from
	for {
		rec, err := r.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, err
		}
		if rec.LSN != want {
			return out, fmt.Errorf("read LSN %d, want %d", rec.LSN, want)
		}
		want++
		if rec.LSN == from && rec.TxnStart < from {
			skipping = true
		}
		if skipping {
			skipping = !rec.Commit
			continue
		}
		if cur == nil {
			cur = &txn{first: rec.LSN}
		}
		if rec.TxnStart != cur.first {
			return out, fmt.Errorf("LSN %d: TxnStart %d, want %d", rec.LSN, rec.TxnStart, cur.first)
		}
		cur.recs = append(cur.recs, bytes.Clone(rec.Data))
		if rec.Commit {
			if rec.CommitTime < lastTime {
				return out, fmt.Errorf("LSN %d: commit time %d before %d", rec.LSN, rec.CommitTime, lastTime)
			}
			lastTime = rec.CommitTime
			cur.last, cur.commitTime = rec.LSN, rec.CommitTime
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		return out, fmt.Errorf("reader returned part of a transaction: %d records from LSN %d without commit", len(cur.recs), cur.first)
	}
	if want != l.Visible()+1 {
		return out, fmt.Errorf("reader stopped at LSN %d, visible is %d", want-1, l.Visible())
	}
	return out, nil
}

// readRecords returns every record a non-following reader from LSN from
// returns, with copied data.
func readRecords(l *segment.Log, from uint64) ([]segment.Record, error) {
	r, err := l.NewReader(from, false)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []segment.Record
	for {
		rec, err := r.Next(context.Background())
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		rec.Data = bytes.Clone(rec.Data)
		out = append(out, rec)
	}
}

// open opens dir and fails the test on error.
func open(t testing.TB, dir string, opts segment.Options) (*segment.Log, *segment.RecoveryReport) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	l, rep, err := segment.Open(dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return l, rep
}

func newCommitter(t testing.TB, l *segment.Log, opts groupcommit.Options) *groupcommit.Committer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	c, err := groupcommit.New(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// payload returns n deterministic bytes for record k of transaction tag;
// half of them compress well, so s2 and zstd frames really are compressed.
func payload(tag string, k, n int, rng *rand.Rand) []byte {
	b := []byte(fmt.Sprintf("%s/r%d/", tag, k))
	if rng.IntN(2) == 0 {
		for len(b) < n {
			b = append(b, "abcabcabcabc"[len(b)%12])
		}
	} else {
		for len(b) < n {
			b = append(b, byte(rng.Uint32()))
		}
	}
	return b[:max(n, 1)]
}

// appendTxn appends recs through c and returns the acknowledged txn.
func appendTxn(t testing.TB, c *groupcommit.Committer, recs [][]byte) txn {
	t.Helper()
	tk, err := c.Append(context.Background(), recs, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return txn{first: tk.First, last: tk.Last, recs: recs, commitTime: tk.CommitTime}
}

// checkTxns compares what was read with what is expected, one by one.
func checkTxns(t testing.TB, got, want []txn) {
	t.Helper()
	if len(got) != len(want) {
		n := min(len(got), len(want))
		for i := range n {
			if !sameTxn(got[i], want[i]) {
				t.Fatalf("transaction %d: got %v, want %v", i, got[i], want[i])
			}
		}
		t.Fatalf("read %d transactions, want %d (first extra: %v)", len(got), len(want), append(got[n:], want[n:]...)[0])
	}
	for i := range got {
		if !sameTxn(got[i], want[i]) {
			t.Fatalf("transaction %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// segFiles returns the segment file names of dir in order.
func segFiles(t testing.TB, fsys vfs.FS, dir string) []string {
	t.Helper()
	names, err := fsys.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if _, ok := segment.ParseSegmentName(n); ok {
			segs = append(segs, n)
		}
	}
	return segs
}

// frameInfo is one frame as an independent walker of the documented format
// sees it (doc.go), used to aim damage at precise places.
type frameInfo struct {
	off, payloadEnd, end int64
	firstLSN, txnStart   uint64
	count                uint32
	writeOffset          int64
	endsTxn              bool
}

// walkFrames lists the frames of a segment file's bytes, stopping at the
// first zero header or the end of the data.
func walkFrames(b []byte) []frameInfo {
	var out []frameInfo
	off := int64(segment.HeaderSize)
	for off+segment.FrameHeaderSize <= int64(len(b)) {
		h := b[off : off+segment.FrameHeaderSize]
		if bytes.Count(h, []byte{0}) == len(h) {
			break
		}
		stored := int64(binary.LittleEndian.Uint32(h[8:]))
		fi := frameInfo{
			off:         off,
			payloadEnd:  off + segment.FrameHeaderSize + stored,
			end:         off + (segment.FrameHeaderSize+stored+7)&^7,
			firstLSN:    binary.LittleEndian.Uint64(h[16:]),
			txnStart:    binary.LittleEndian.Uint64(h[24:]),
			count:       binary.LittleEndian.Uint32(h[32:]),
			writeOffset: int64(binary.LittleEndian.Uint32(h[36:])),
			endsTxn:     h[45]&1 == 1,
		}
		out = append(out, fi)
		off = fi.end
	}
	return out
}

// copyDir copies the regular files of src into dst, which is emptied first.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == vfs.LockFileName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// loadCrashFS returns a CrashFS holding files (name -> content) durably in
// dir.
func loadCrashFS(t testing.TB, dir string, files map[string][]byte) *vfs.CrashFS {
	t.Helper()
	fs := vfs.NewCrashFS()
	if err := fs.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := fs.WriteFile(vfs.Join(dir, name), b, true); err != nil {
			t.Fatal(err)
		}
	}
	return fs
}

// wantCorrupt checks that err is a *walerr.CorruptionError naming segment seg at
// an offset in [lo, hi).
func wantCorrupt(t testing.TB, what string, err error, seg string, lo, hi int64) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want corruption in %s at [%d,%d)", what, seg, lo, hi)
	}
	if !errors.Is(err, walerr.ErrCorruption) {
		t.Fatalf("%s: %v is not walerr.ErrCorruption", what, err)
	}
	var ce *walerr.CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %v is not a *walerr.CorruptionError", what, err)
	}
	if ce.Object != seg || ce.Offset < lo || ce.Offset >= hi {
		t.Fatalf("%s: %v: want segment %s offset in [%d,%d)", what, err, seg, lo, hi)
	}
	if !strings.Contains(err.Error(), seg) {
		t.Fatalf("%s: message %q does not name the segment", what, err)
	}
}

// fence is the FS one "process" uses on a shared CrashFS. Crash makes the
// filesystem lose power and kills the process at the same instant: after
// it every operation of this process fails, so a writer that was running
// cannot touch the rebooted filesystem (files it opened before already fail
// with vfs.ErrCrashed; fence stops it from opening, creating, renaming or
// removing anything afterwards). Operations that can change directory
// entries run under a read lock that Crash takes exclusively, so none
// straddles the crash. File.Sync and SyncDir are not held under the lock:
// the sync hook, which may crash, runs inside them; CrashFS itself makes a
// sync that races a crash fail.
type fence struct {
	fs   *vfs.CrashFS
	mu   sync.RWMutex
	dead bool
}

var _ vfs.FS = (*fence)(nil)

func (f *fence) crash(rng *rand.Rand, mode vfs.CrashMode) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return false
	}
	f.dead = true
	f.fs.Crash(rng, mode)
	return true
}

func (f *fence) isDead() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.dead
}

func fenced[T any](f *fence, op func() (T, error)) (T, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.dead {
		var zero T
		return zero, vfs.ErrCrashed
	}
	return op()
}

func (f *fence) Create(name string) (vfs.File, error) {
	return fenced(f, func() (vfs.File, error) { return f.fs.Create(name) })
}

func (f *fence) OpenReadWrite(name string) (vfs.File, error) {
	return fenced(f, func() (vfs.File, error) { return f.fs.OpenReadWrite(name) })
}

func (f *fence) Open(name string) (vfs.File, error) {
	return fenced(f, func() (vfs.File, error) { return f.fs.Open(name) })
}

func (f *fence) Rename(o, n string) error {
	_, err := fenced(f, func() (int, error) { return 0, f.fs.Rename(o, n) })
	return err
}

func (f *fence) Remove(name string) error {
	_, err := fenced(f, func() (int, error) { return 0, f.fs.Remove(name) })
	return err
}

func (f *fence) MkdirAll(dir string) error {
	_, err := fenced(f, func() (int, error) { return 0, f.fs.MkdirAll(dir) })
	return err
}

func (f *fence) List(dir string) ([]string, error) {
	return fenced(f, func() ([]string, error) { return f.fs.List(dir) })
}

func (f *fence) LockDir(dir string) (io.Closer, error) {
	return fenced(f, func() (io.Closer, error) { return f.fs.LockDir(dir) })
}

func (f *fence) SyncDir(dir string) error {
	if f.isDead() {
		return vfs.ErrCrashed
	}
	return f.fs.SyncDir(dir)
}

// ackSnapshot returns a function that puts the acknowledgement watermark
// of the log in dir back as it is now, durably: what a crash leaves when
// the watermark, which lags the log by design, had not caught up with the
// writes made since (they are then beyond it, as a torn write is).
func ackSnapshot(t testing.TB, fsys vfs.FS, dir string) (restore func()) {
	t.Helper()
	path := vfs.Join(dir, segment.AckedName)
	if cfs, ok := fsys.(*vfs.CrashFS); ok {
		b, err := cfs.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			t.Helper()
			if err := cfs.WriteFile(path, b, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
