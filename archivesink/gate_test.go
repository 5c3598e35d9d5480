package archivesink

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/archivetest"
)

var errLeaseLost = errors.New("lease lost")

// gateFlag is a Gate that closes when told to.
type gateFlag struct{ closed atomic.Bool }

func (g *gateFlag) gate() error {
	if g.closed.Load() {
		return errLeaseLost
	}
	return nil
}

// files lists every file under dir (a directory archive).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitErr waits for Run's error.
func (r *running) waitErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// TestArchiverGateStopsPuts: once the gate closes, the archiver puts no
// new object or manifest into a directory archive, and Run returns the
// gate's error; the checkpoint stays where it was.
func TestArchiverGateStopsPuts(t *testing.T) {
	dir := t.TempDir()
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + dir}, archive.Options{})
	nd := newNode(t)
	var g gateFlag
	ar := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond, MaxObjectBytes: 4 << 10, NodeID: "n1", Gate: g.gate}))
	r := start(ar)
	nd.appendN(t, 1, 100)
	waitArchived(t, ar, r, nd.w, 60*time.Second)
	before := files(t, dir)
	ck, _ := nd.ckpts.Get(CheckpointName)

	g.closed.Store(true)
	nd.appendN(t, 1000, 100)
	err := r.waitErr(t)
	if !errors.Is(err, archive.ErrGateClosed) || !errors.Is(err, errLeaseLost) {
		t.Fatalf("Run: %v, want the gate's error", err)
	}
	if after := files(t, dir); !slices.Equal(after, before) {
		t.Fatalf("archive changed after the gate closed:\nbefore %v\nafter  %v", before, after)
	}
	if c, _ := nd.ckpts.Get(CheckpointName); c.Pos != ck.Pos {
		t.Fatalf("checkpoint moved from %d to %d after the gate closed", ck.Pos, c.Pos)
	}
}

// TestArchiverThrough: the archiver archives nothing past Through, waits
// (without spinning) while Through holds it back, and goes on when it
// advances.
func TestArchiverThrough(t *testing.T) {
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + t.TempDir()}, archive.Options{})
	nd := newNode(t)
	var through, calls, beyond atomic.Uint64
	opts := ArchiverOptions{Timeout: 200 * time.Millisecond, MaxObjectBytes: 4 << 10, NodeID: "n1",
		Through: func() uint64 { calls.Add(1); return through.Load() },
		Stored: func(lsn uint64) {
			if lsn > through.Load() {
				beyond.Store(lsn)
			}
		}}
	nd.appendN(t, 1, 100)
	txns := nd.walTxns(t)
	ar := must(NewArchiver(a, nd.w, nd.ckpts, opts))
	t0 := time.Now()
	r := start(ar)
	// Held back at 0: it polls, backing off, rather than spinning.
	for calls.Load() < 15 {
		if time.Since(t0) > 60*time.Second {
			t.Fatalf("Through called %d times in 60s", calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(t0); d < 200*time.Millisecond {
		t.Fatalf("Through called %d times in %v: spinning", calls.Load(), d)
	}
	if st := ar.Stats(); st.ArchivedLSN != 0 || st.Objects != 0 {
		t.Fatalf("archived %+v while Through is 0", st)
	}
	// Let it go to the middle, then to the end.
	mid := txns[len(txns)/2].CommitLSN
	through.Store(mid)
	deadline := time.Now().Add(60 * time.Second)
	for ar.Stats().ArchivedLSN < mid {
		if time.Now().After(deadline) {
			t.Fatalf("not archived to %d: %+v", mid, ar.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := ar.Stats().ArchivedLSN; got != mid {
		t.Fatalf("archived to %d, Through %d", got, mid)
	}
	through.Store(nd.w.Durable())
	waitArchived(t, ar, r, nd.w, 60*time.Second)
	r.stop(t)
	if lsn := beyond.Load(); lsn != 0 {
		t.Fatalf("archived to %d, past Through", lsn)
	}
	archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), txns)
}

// TestSnapshotterGateStopsPuts: with the gate closed, a snapshot is not
// stored (no new file in a directory archive) and Run returns the gate's
// error.
func TestSnapshotterGateStopsPuts(t *testing.T) {
	ctx := archivetest.Ctx(t)
	dir := t.TempDir()
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + dir}, archive.Options{})
	nd := newNode(t)
	var g gateFlag
	sn := must(NewSnapshotter(a, nd.w, nd.ckpts, SnapshotterOptions{Dir: t.TempDir(), Gate: g.gate}))
	t.Cleanup(func() { sn.Close() })
	r := &running{done: make(chan error, 1)}
	go func() { r.done <- sn.Run(ctx) }()
	waitApplied := func() {
		deadline := time.Now().Add(60 * time.Second)
		for sn.Position() < nd.w.Durable() {
			if time.Now().After(deadline) {
				t.Fatalf("snapshotter at %d, durable %d", sn.Position(), nd.w.Durable())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	nd.appendN(t, 1, 20)
	waitApplied()
	if _, err := sn.TakeSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	before := files(t, dir)
	nd.appendN(t, 1000, 20)
	waitApplied()
	g.closed.Store(true)
	if _, err := sn.TakeSnapshot(ctx); !errors.Is(err, archive.ErrGateClosed) || !errors.Is(err, errLeaseLost) {
		t.Fatalf("TakeSnapshot with the gate closed: %v", err)
	}
	if err := r.waitErr(t); !errors.Is(err, errLeaseLost) {
		t.Fatalf("Run: %v, want the gate's error", err)
	}
	if after := files(t, dir); !slices.Equal(after, before) {
		t.Fatalf("archive changed after the gate closed:\nbefore %v\nafter  %v", before, after)
	}
}
