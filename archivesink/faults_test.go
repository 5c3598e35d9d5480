package archivesink

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/internal/archivetest"
)

// flakyBackend fails some writes with a permanent (non-transient) error
// after or before performing them, as a crash or a lost response would.
type flakyBackend struct {
	archive.Backend
	calls atomic.Int64
}

var errInjected = errors.New("injected failure")

func (f *flakyBackend) PutIfAbsent(ctx context.Context, key string, body []byte) error {
	n := f.calls.Add(1)
	switch {
	case n%3 == 0:
		// The write happens but its answer is lost.
		if err := f.Backend.PutIfAbsent(ctx, key, body); err != nil {
			return err
		}
		return errInjected
	case n%5 == 0:
		return errInjected // the write never happens
	}
	return f.Backend.PutIfAbsent(ctx, key, body)
}

// TestArchiverSurvivesFailedWrites: object and manifest writes that fail
// (before or after reaching the store) are retried by the archiver; the
// objects already stored are adopted, nothing is stored twice or
// differently, and the archive ends equal to the WAL with no hole.
func TestArchiverSurvivesFailedWrites(t *testing.T) {
	fb := &flakyBackend{Backend: archivetest.OpenBackend(t, archivetest.Backend{URL: "file://" + t.TempDir()})}
	a := must(archive.New(fb, archive.Options{}))
	nd := newNode(t)
	ar := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond, MaxObjectBytes: 2 << 10, NodeID: "n"}))
	r := start(ar)
	nd.appendN(t, 1, 200)
	waitArchived(t, ar, r, nd.w, 60*time.Second)
	r.stop(t)
	if st := ar.Stats(); st.Errors == 0 || !strings.Contains(st.LastError, "injected") {
		t.Fatalf("stats %+v: no failed attempt recorded", st)
	}
	archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), nd.walTxns(t))
}

// TestArchiverRefusesHole: when the local WAL no longer holds the LSNs
// after the archive's end (retention ran while the archive lost
// objects), the archiver fails with an error naming them instead of
// starting past them.
func TestArchiverRefusesHole(t *testing.T) {
	ctx := archivetest.Ctx(t)
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + t.TempDir()}, archive.Options{})
	nd := newNode(t) // 1 MiB segments
	opts := ArchiverOptions{Timeout: 200 * time.Millisecond, MaxObjectBytes: 64 << 10, NodeID: "n"}
	ar := must(NewArchiver(a, nd.w, nd.ckpts, opts))
	r := start(ar)
	for i := range 30 {
		nd.appendN(t, uint64(i*1000), 400)
	}
	waitArchived(t, ar, r, nd.w, 60*time.Second)
	r.stop(t)
	// Lose the archive's tail, then let retention run.
	c := must(a.Catalog(ctx))
	segs := c.Lineage("main").Segments
	for _, m := range segs[len(segs)/2:] {
		must(0, a.DeleteSegment(ctx, m))
	}
	removed, err := nd.w.RemoveBefore(nd.w.Durable())
	if err != nil || len(removed) == 0 {
		t.Fatalf("RemoveBefore: %v, %v (need several segments)", removed, err)
	}
	if nd.w.FirstLSN() <= segs[len(segs)/2].FirstLSN {
		t.Fatalf("retention kept LSN %d; the test needs it removed", segs[len(segs)/2].FirstLSN)
	}
	ar2 := must(NewArchiver(a, nd.w, nd.ckpts, opts))
	err = ar2.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "refusing to leave a hole") {
		t.Fatalf("Run with LSNs missing from both the archive.archive and the WAL: %v", err)
	}
}
