package archivesink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/archivetest"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

type node struct {
	w     *wal.WAL
	ckpts *checkpoint.Store
}

func newNode(t *testing.T) *node {
	t.Helper()
	w, _, err := wal.Open(wal.Options{Dir: t.TempDir(), SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, t.TempDir(), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &node{w: w, ckpts: ck}
}

func txnOf(xid uint64, n int) *change.Txn {
	t := &change.Txn{Header: change.TxHeader{XID: xid, SourceLSN: 0x10_0000_0000 + xid}}
	for i := range n {
		id := change.IntValue(int64(xid*100 + uint64(i)))
		t.Changes = append(t.Changes, change.Change{
			Table: change.Table{Schema: "public", Name: "t"}, Op: change.Update,
			Key:   change.Row{{Name: "id", Value: id}},
			After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(fmt.Sprintf("value %d of a CDC-like row", xid))}},
		})
	}
	return t
}

// appendN appends n transactions from 4 concurrent appenders, xids from
// base, and one aborted stream.
func (nd *node) appendN(t *testing.T, base uint64, n int) {
	t.Helper()
	ctx := archivetest.Ctx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				if _, err := nd.w.Append(ctx, txnOf(base+uint64(i), 1+i%4)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	// An aborted stream: nothing of it is part of the log's content.
	k := 0
	_, err := nd.w.AppendStream(ctx, change.TxHeader{XID: 1}, func() (*change.Change, error) {
		if k++; k > 3 {
			return nil, errors.New("source went away")
		}
		return &txnOf(1, 1).Changes[0], nil
	})
	if err == nil {
		t.Fatal("aborted stream committed")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func (nd *node) walTxns(t *testing.T) []change.Committed {
	t.Helper()
	r, err := nd.w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
}

// archivedTxns checks the lineage is whole (starts at LSN 1, no gap, no
// problem) and returns its transactions.
func archivedTxns(t *testing.T, a *archive.Archive, lineage string) []change.Committed {
	t.Helper()
	ctx := archivetest.Ctx(t)
	c, err := a.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Lineage(lineage)
	if l == nil {
		t.Fatalf("lineage %q not in the catalog", lineage)
	}
	if !c.Intact() || len(l.Gaps) > 0 || len(l.Problems) > 0 {
		t.Fatalf("archive not intact: gaps %v problems %v", l.Gaps, l.Problems)
	}
	if len(l.Segments) == 0 || l.Segments[0].FirstLSN != 1 {
		t.Fatalf("archive does not start at LSN 1: %d segments", len(l.Segments))
	}
	var out []change.Committed
	for _, m := range l.Segments {
		txns, err := a.ReadSegment(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, txns...)
	}
	return out
}

type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(ar *Archiver) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- ar.Run(ctx) }()
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// waitArchived waits until ar has archived every durable LSN of w.
func waitArchived(t *testing.T, ar *Archiver, r *running, w *wal.WAL, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := ar.Stats()
		if s.ArchivedLSN >= w.Durable() {
			return
		}
		select {
		case err := <-r.done:
			t.Fatalf("Run returned %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not archived after %v: stats %+v, durable %d", limit, s, w.Durable())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestArchiverEndToEnd(t *testing.T) {
	archivetest.EachBackend(t, func(t *testing.T, tb archivetest.Backend) {
		a := archivetest.OpenArchive(t, tb, archive.Options{})
		nd := newNode(t)
		const timeout = time.Second
		opts := ArchiverOptions{Lineage: "main", Timeout: timeout, MaxObjectBytes: 8 << 10}
		ar, err := NewArchiver(a, nd.w, nd.ckpts, opts)
		if err != nil {
			t.Fatal(err)
		}
		// Registered before anything is archived: retention waits.
		if pos, name, ok := nd.ckpts.Min(); !ok || pos != 0 || name != CheckpointName {
			t.Fatalf("Min = %d %q %v, want 0 %q", pos, name, ok, CheckpointName)
		}
		r := start(ar)
		nd.appendN(t, 1000, 300)
		waitArchived(t, ar, r, nd.w, 90*time.Second)

		// RPO: one more small transaction, which fills no object, is
		// archived by the timer. The archiver cuts at Timeout/4 so that
		// the upload fits in Timeout (~300 ms here); the test allows twice
		// Timeout for a loaded CI machine's slow fdatasync and CPU steal.
		tk, err := nd.w.Append(archivetest.Ctx(t), txnOf(5000, 2))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for ar.Stats().ArchivedLSN < tk.Last {
			if time.Since(t0) > 2*timeout {
				t.Fatalf("transaction not archived within twice Timeout %v: %+v", timeout, ar.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("a lone transaction was archived %v after its commit (Timeout %v)", time.Since(t0).Round(time.Millisecond), timeout)
		r.stop(t)

		st := ar.Stats()
		if st.Objects < 5 || st.ArchivedLSN != nd.w.Durable() || st.Lag != 0 || st.Errors != 0 || !st.ArchivedCommitTime.Equal(tk.Time()) {
			t.Fatalf("stats = %+v (durable %d, last commit %v)", st, nd.w.Durable(), tk.Time())
		}
		c, ok := nd.ckpts.Get(CheckpointName)
		if !ok || c.Pos != st.ArchivedLSN || !strings.HasPrefix(string(c.Payload), "node-") {
			t.Fatalf("checkpoint = %+v, want position %d and a node id", c, st.ArchivedLSN)
		}

		// Restart: more transactions while stopped, then a new archiver
		// continues exactly where the archive ends.
		nd.appendN(t, 2000, 60)
		ar2, err := NewArchiver(a, nd.w, nd.ckpts, opts)
		if err != nil {
			t.Fatal(err)
		}
		r2 := start(ar2)
		waitArchived(t, ar2, r2, nd.w, 90*time.Second)
		r2.stop(t)
		archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), nd.walTxns(t))
	})
}

// TestArchiverResume: objects stored but not checkpointed (a crash
// between the two) are not written again; an archive ahead of the local
// WAL is refused.
func TestArchiverResume(t *testing.T) {
	ctx := archivetest.Ctx(t)
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + t.TempDir()}, archive.Options{})
	nd := newNode(t)
	opts := ArchiverOptions{Timeout: 200 * time.Millisecond, MaxObjectBytes: 4 << 10, NodeID: "n1"}
	ar := must(NewArchiver(a, nd.w, nd.ckpts, opts))
	r := start(ar)
	nd.appendN(t, 1, 100)
	waitArchived(t, ar, r, nd.w, 90*time.Second)
	r.stop(t)
	objects := ar.Stats().Objects
	last := ar.Stats().ArchivedLSN
	if err := nd.ckpts.SetBackward(ctx, CheckpointName, 3, []byte("n1")); err != nil {
		t.Fatal(err)
	}
	ar2 := must(NewArchiver(a, nd.w, nd.ckpts, opts))
	r2 := start(ar2)
	for {
		if c, _ := nd.ckpts.Get(CheckpointName); c.Pos == last {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r2.stop(t)
	if ar2.Stats().Objects != 0 {
		t.Fatalf("restarted archiver stored %d objects again (first run stored %d)", ar2.Stats().Objects, objects)
	}
	archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), nd.walTxns(t))

	// A different WAL (shorter history) refuses the lineage.
	other := newNode(t)
	other.appendN(t, 1, 5)
	ar3 := must(NewArchiver(a, other.w, other.ckpts, opts))
	err := ar3.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "beyond this WAL's durable end") {
		t.Fatalf("Run with a WAL behind the archive: %v", err)
	}

	// An HA leader without Kafka copied the archive through LSN 3 when
	// it took over; the archive now ends beyond that and beyond its
	// checkpoint: a replaced leader's late put, whose transactions are
	// not this log's. It refuses to resume after it.
	if err := nd.ckpts.SetBackward(ctx, CheckpointName, 3, []byte("n1")); err != nil {
		t.Fatal(err)
	}
	copiedOpts := opts
	copiedOpts.Copied = func() uint64 { return 3 }
	err = must(NewArchiver(a, nd.w, nd.ckpts, copiedOpts)).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "another writer stored it") {
		t.Fatalf("Run over a segment beyond what it copied: %v", err)
	}
	copiedOpts.Copied = func() uint64 { return last }
	r4 := start(must(NewArchiver(a, nd.w, nd.ckpts, copiedOpts)))
	r4.stop(t)
}

func TestArchiverOwnership(t *testing.T) {
	archivetest.EachBackend(t, func(t *testing.T, tb archivetest.Backend) {
		ctx := archivetest.Ctx(t)
		a := archivetest.OpenArchive(t, tb, archive.Options{})
		nd := newNode(t)
		ar := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond}))
		r := start(ar)
		nd.appendN(t, 1, 20)
		waitArchived(t, ar, r, nd.w, 90*time.Second)
		r.stop(t)
		c, _ := nd.ckpts.Get(CheckpointName)
		owner := string(c.Payload)

		intruder := newNode(t)
		intruder.appendN(t, 1, 50)
		ar2 := must(NewArchiver(a, intruder.w, intruder.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond}))
		err := ar2.Run(ctx)
		var oe *archive.OwnerError
		if !errors.Is(err, archive.ErrNotOwner) || !errors.As(err, &oe) || oe.Owner != owner || !strings.Contains(err.Error(), owner) {
			t.Fatalf("Run into a lineage owned by %s: %v, want *archive.OwnerError", owner, err)
		}
		if cat := must(a.Catalog(ctx)); cat.Lineage("main").Owner != owner {
			t.Fatalf("catalog owner = %q, want %q", cat.Lineage("main").Owner, owner)
		}

		// The owner restarted with its stored id keeps writing.
		nd.appendN(t, 100, 10)
		ar3 := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond}))
		r3 := start(ar3)
		waitArchived(t, ar3, r3, nd.w, 90*time.Second)
		r3.stop(t)
		archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), nd.walTxns(t))
	})
}

// TestArchiverFaults: MinIO behind a proxy answers 503 SlowDown, then
// refuses connections, while transactions keep coming; the archiver
// retries, and afterwards the archive equals the WAL with no hole.
func TestArchiverFaults(t *testing.T) {
	srv := archivetest.MinIO(t, false)
	proxy, err := miniotest.NewProxy(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	b := archivetest.S3(t, srv, proxy.Endpoint)
	b.Opts.RetryTimeout = 0 // retry until ctx ends
	a := archivetest.OpenArchive(t, b, archive.Options{})
	nd := newNode(t)
	ar := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: time.Second, MaxObjectBytes: 16 << 10}))
	r := start(ar)

	stopAppend := make(chan struct{})
	appended := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for i := uint64(1); ; i++ {
			select {
			case <-stopAppend:
				appended <- nil
				return
			default:
			}
			if _, err := nd.w.Append(ctx, txnOf(i, 1+int(i%3))); err != nil {
				appended <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	phase := func(m miniotest.Mode, d time.Duration) {
		if err := proxy.Set(m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
	}
	phase(miniotest.Pass, 700*time.Millisecond)
	phase(miniotest.SlowDown, 2*time.Second)
	during := ar.Stats().ArchivedLSN
	phase(miniotest.Pass, 700*time.Millisecond)
	phase(miniotest.Down, 2*time.Second)
	phase(miniotest.Pass, 0)
	close(stopAppend)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	waitArchived(t, ar, r, nd.w, 90*time.Second)
	r.stop(t)
	st := ar.Stats()
	if st.Retries == 0 || proxy.Faults() == 0 {
		t.Fatalf("no retries recorded (stats %+v, proxy faults %d)", st, proxy.Faults())
	}
	if c, _ := nd.ckpts.Get(CheckpointName); c.Pos != nd.w.Durable() || during >= c.Pos {
		t.Fatalf("checkpoint %d, durable %d, archived during the outage %d", c.Pos, nd.w.Durable(), during)
	}
	archivetest.TxnsEqual(t, archivedTxns(t, a, "main"), nd.walTxns(t))
	t.Logf("objects %d, retries %d, proxy faults %d", st.Objects, st.Retries, proxy.Faults())
}

// TestArchiverRestorePoints: a restore point written to the WAL appears
// in its segment's manifest at its transaction's commit LSN.
func TestArchiverRestorePoints(t *testing.T) {
	ctx := archivetest.Ctx(t)
	a := archivetest.OpenArchive(t, archivetest.Backend{URL: "file://" + t.TempDir()}, archive.Options{})
	nd := newNode(t)
	nd.appendN(t, 1, 10)
	rp := &change.Txn{Changes: []change.Change{{Op: change.Message, Message: &change.LogicalMessage{Prefix: archive.RestorePointPrefix, Content: []byte("nightly"), Transactional: true}}}}
	tk := must(nd.w.Append(ctx, rp))
	nd.appendN(t, 100, 10)
	ar := must(NewArchiver(a, nd.w, nd.ckpts, ArchiverOptions{Timeout: 200 * time.Millisecond}))
	r := start(ar)
	waitArchived(t, ar, r, nd.w, 90*time.Second)
	r.stop(t)
	var got []archive.RestorePoint
	for _, m := range must(a.Catalog(ctx)).Lineage("main").Segments {
		got = append(got, m.RestorePoints...)
	}
	if len(got) != 1 || got[0].Name != "nightly" || got[0].LSN != tk.Last || !got[0].CommitTime.Equal(tk.Time()) {
		t.Fatalf("restore points = %+v, want nightly at %d", got, tk.Last)
	}
}
