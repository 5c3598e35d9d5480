package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/replica"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

// node is a primary: a WAL, its checkpoints, the real archiver and a
// snapshotter, all running until the test ends.
type node struct {
	w     *wal.WAL
	ckpts *checkpoint.Store
	a     *archive.Archive
	ar    *archivesink.Archiver
	snap  *archivesink.Snapshotter
	dir   string // the snapshotter's working directory
	stop  func()
	n     int // transactions appended
}

func startNode(t *testing.T, interval time.Duration, segSize ...int64) *node {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	wo := wal.Options{Dir: filepath.Join(dir, "wal"), Sync: wal.SyncOff} // no power-loss durability needed
	if len(segSize) > 0 {
		wo.SegmentSize = segSize[0]
	}
	w, _, err := wal.Open(wo)
	if err != nil {
		t.Fatal(err)
	}
	ckpts, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := archive.Open(ctx, "file://"+filepath.Join(dir, "archive"), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archivesink.NewArchiver(a, w, ckpts, archivesink.ArchiverOptions{Lineage: "main", Timeout: archivesink.MinTimeout})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := archivesink.NewSnapshotter(a, w, ckpts, archivesink.SnapshotterOptions{Lineage: "main", Dir: filepath.Join(dir, "snap"), Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, 2)
	go func() { errs <- ar.Run(rctx) }()
	go func() { errs <- sn.Run(rctx) }()
	n := &node{w: w, ckpts: ckpts, a: a, ar: ar, snap: sn, dir: filepath.Join(dir, "snap")}
	n.stop = func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("run: %v", err)
			}
		}
		sn.Close()
		w.Close()
	}
	t.Cleanup(func() {
		if n.stop != nil {
			n.stop()
		}
	})
	return n
}

// append appends k transactions upserting public.kv.
func (n *node) append(t *testing.T, k int) {
	t.Helper()
	for range k {
		i := n.n
		n.n++
		txn := &change.Txn{Header: change.TxHeader{XID: uint64(100 + i)}, Changes: []change.Change{{
			Table: change.Table{Schema: "public", Name: "kv"}, Op: change.Insert,
			Key:   change.Row{{Name: "k", Value: change.IntValue(int64(i % 7))}},
			After: change.Row{{Name: "k", Value: change.IntValue(int64(i % 7))}, {Name: "v", Value: change.IntValue(int64(i))}}}}}
		if i >= 7 {
			txn.Changes[0].Op = change.Update
		}
		if _, err := n.w.Append(context.Background(), txn); err != nil {
			t.Fatal(err)
		}
	}
}

// waitArchived waits until the archive holds the WAL's durable end.
func (n *node) waitArchived(t *testing.T) {
	t.Helper()
	want := n.w.Durable()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if n.ar.Stats().ArchivedLSN >= want && n.snap.Position() >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("archived %d, snapshotter at %d, want %d", n.ar.Stats().ArchivedLSN, n.snap.Position(), want)
}

func (n *node) allTxns(t *testing.T) []change.Committed {
	t.Helper()
	l, _, err := wal.OpenReadOnly(nil, n.w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if err != nil {
			break
		}
		out = append(out, *tx)
	}
	return out
}

func TestSnapshotterSnapshotsAndRestoresStartThere(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, 0)
	n.append(t, 40)
	n.waitArchived(t)
	s1, err := n.snap.TakeSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s1.LSN != n.w.Durable() || s1.Existed {
		t.Fatalf("snapshot %+v, want at LSN %d", s1, n.w.Durable())
	}
	if c, _ := n.ckpts.Get(archivesink.SnapshotterCheckpoint); c.Pos != s1.LSN {
		t.Fatalf("snapshotter checkpoint at %d, want %d", c.Pos, s1.LSN)
	}
	again, err := n.snap.TakeSnapshot(ctx)
	if err != nil || !again.Existed || again.LSN != s1.LSN {
		t.Fatalf("second snapshot at the same LSN: %+v, %v", again, err)
	}
	n.append(t, 30)
	n.waitArchived(t)
	s2, err := n.snap.TakeSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txns := n.allTxns(t)
	src := NewArchiveSource(n.a)
	dir := t.TempDir()
	for i, c := range []struct {
		target   Target
		wantSnap uint64
		want     int
	}{
		{Target{Kind: Latest}, s2.LSN, 70},
		{Target{Kind: LSN, LSN: s2.LSN, Exclusive: true}, s1.LSN, 69},
		{Target{Kind: XID, XID: 100 + 50}, s1.LSN, 51},
		{Target{Kind: XID, XID: 100 + 20}, 0, 21},
	} {
		plan, err := PlanRestore(ctx, src, c.target, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := uint64(0)
		if plan.Snapshot != nil {
			got = plan.Snapshot.LSN
		}
		if got != c.wantSnap {
			t.Errorf("%s: starts from snapshot %d, want %d", c.target, got, c.wantSnap)
		}
		url := "sqlite://" + filepath.Join(dir, fmt.Sprintf("r%d.db", i))
		if _, err := Restore(ctx, src, plan, url, RestoreOptions{}); err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		exp := "sqlite://" + filepath.Join(dir, fmt.Sprintf("e%d.db", i))
		buildReplica(t, exp, txns[:c.want])
		compareReplicas(t, c.target.String(), url, exp)
	}
}

func TestSnapshotterScheduleAndRestart(t *testing.T) {
	n := startNode(t, 30*time.Millisecond)
	n.append(t, 20)
	n.waitArchived(t)
	deadline := time.Now().Add(20 * time.Second)
	for n.snap.Last().LSN != n.w.Durable() {
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled snapshot at LSN %d (last %+v)", n.w.Durable(), n.snap.Last())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Restart the snapshotter on the same directory: it resumes from its
	// replica's position and applies every transaction exactly once.
	dir := n.dir
	n.stop() // the archiver, the snapshotter (then closed) and the WAL
	n.stop = nil
	w, _, err := wal.Open(wal.Options{Dir: n.w.Dir(), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	n.w = w
	n.append(t, 15)
	sn, err := archivesink.NewSnapshotter(n.a, w, n.ckpts, archivesink.SnapshotterOptions{Lineage: "main", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	for sn.Position() != w.Durable() {
		if time.Now().After(deadline) {
			t.Fatalf("restarted snapshotter at %d, want %d", sn.Position(), w.Durable())
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, err := sn.TakeSnapshot(ctx)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	sn.Close()
	if err != nil {
		t.Fatal(err)
	}
	exp := "sqlite://" + filepath.Join(t.TempDir(), "e.db")
	buildReplica(t, exp, n.allTxns(t))
	compareReplicas(t, "restarted snapshotter", "sqlite://"+filepath.Join(dir, "replica.db"), exp)
	if info.LSN != w.Durable() {
		t.Fatalf("snapshot at %d, want %d", info.LSN, w.Durable())
	}
}

func TestPruneKeepsRestorableHistory(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, 0)
	var snaps []archivesink.SnapshotInfo
	for range 3 {
		n.append(t, 25)
		n.waitArchived(t)
		s, err := n.snap.TakeSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	n.append(t, 10)
	n.waitArchived(t)
	txns := n.allTxns(t)
	before, _ := n.a.Catalog(ctx)
	segsBefore := len(before.Lineages[0].Segments)

	if _, err := Prune(ctx, n.a, RetentionPolicy{}); err == nil {
		t.Fatal("a policy that keeps nothing was accepted")
	}
	_, err := Prune(ctx, n.a, RetentionPolicy{KeepSnapshots: 2, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := n.a.Catalog(ctx); len(after.Lineages[0].Segments) != segsBefore || len(after.Lineages[0].Snapshots) != 3 {
		t.Fatal("a dry run deleted objects")
	}
	rep, err := Prune(ctx, n.a, RetentionPolicy{KeepSnapshots: 2})
	if err != nil {
		t.Fatal(err)
	}
	lp := rep.Lineages[0]
	if lp.OldestKept != snaps[1].LSN || len(lp.DeletedSnapshots) != 1 || len(lp.DeletedSegments) == 0 {
		t.Fatalf("prune report %+v", lp)
	}
	// Nothing restorable from the kept snapshots is lost, nothing is a
	// hole, and earlier targets are refused clearly.
	vr, err := VerifyArchive(ctx, NewArchiveSource(n.a), VerifyOptions{})
	if err != nil || !vr.Intact() {
		t.Fatalf("after prune: %+v, %v", vr, err)
	}
	if li := vr.Lineages[0]; li.RestorableFrom != snaps[1].LSN || li.FirstLSN > snaps[1].LSN+1 {
		t.Fatalf("after prune: restorable from %d, segments from %d; want %d", li.RestorableFrom, li.FirstLSN, snaps[1].LSN)
	}
	src := NewArchiveSource(n.a)
	for i, tg := range []Target{{Kind: Latest}, {Kind: LSN, LSN: snaps[1].LSN}, {Kind: LSN, LSN: snaps[1].LSN + 3}} {
		plan, err := PlanRestore(ctx, src, tg, PlanOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tg, err)
		}
		url := "sqlite://" + filepath.Join(t.TempDir(), fmt.Sprintf("r%d.db", i))
		if _, err := Restore(ctx, src, plan, url, RestoreOptions{}); err != nil {
			t.Fatal(err)
		}
		exp := "sqlite://" + filepath.Join(t.TempDir(), fmt.Sprintf("e%d.db", i))
		buildReplica(t, exp, txns[:expectedPrefix(txns, tg)])
		compareReplicas(t, tg.String(), url, exp)
	}
	if _, err := PlanRestore(ctx, src, Target{Kind: LSN, LSN: snaps[1].LSN - 1}, PlanOptions{}); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("target below the oldest kept snapshot: %v", err)
	}
}

// TestRestoreWhileAWorkloadRuns notes the source's position and the clock
// at several moments while a workload appends, the archiver ships and the
// snapshotter snapshots, then restores to each noted time and LSN,
// inclusive and exclusive, and compares with the source state at that
// moment.
func TestRestoreWhileAWorkloadRuns(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, 150*time.Millisecond)
	stop := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n.append(t, 1)
			time.Sleep(time.Millisecond)
		}
	}()
	type mark struct {
		at  time.Time
		lsn uint64
	}
	var marks []mark
	for range 6 {
		time.Sleep(120 * time.Millisecond)
		// The LSN first, then the time: every transaction durable by the
		// LSN read has a commit time before the time read.
		lsn := n.w.Durable()
		marks = append(marks, mark{time.Now().UTC(), lsn})
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	<-appended
	n.waitArchived(t)
	txns := n.allTxns(t)
	src := NewArchiveSource(n.a)
	cat, err := src.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Snapshots) == 0 {
		t.Fatal("no scheduled snapshot was taken during the workload")
	}
	dir := t.TempDir()
	for i, m := range marks {
		for _, tg := range []Target{
			{Kind: Time, Time: m.at}, {Kind: Time, Time: m.at, Exclusive: true},
			{Kind: LSN, LSN: m.lsn}, {Kind: LSN, LSN: m.lsn, Exclusive: true},
		} {
			want := expectedPrefix(txns, tg)
			if tg.Kind == LSN && !tg.Exclusive && txns[want-1].CommitLSN != m.lsn {
				t.Fatalf("the durable LSN %d noted is not a commit", m.lsn)
			}
			// What was durable when the clock was read committed at or
			// before it: the state at T includes it.
			if tg.Kind == Time && !tg.Exclusive && (want == 0 || txns[want-1].CommitLSN < m.lsn) {
				t.Fatalf("%s: the state at T has %d transactions, but LSN %d was durable then", tg, want, m.lsn)
			}
			plan, err := PlanRestore(ctx, src, tg, PlanOptions{})
			if err != nil {
				t.Fatalf("%s: %v", tg, err)
			}
			url := "sqlite://" + filepath.Join(dir, fmt.Sprintf("r%d-%v-%v.db", i, tg.Kind, tg.Exclusive))
			if _, err := Restore(ctx, src, plan, url, RestoreOptions{}); err != nil {
				t.Fatalf("%s: %v", tg, err)
			}
			exp := "sqlite://" + filepath.Join(dir, fmt.Sprintf("e%d-%v-%v.db", i, tg.Kind, tg.Exclusive))
			buildReplica(t, exp, txns[:want])
			compareReplicas(t, tg.String(), url, exp)
		}
	}
}

// TestSnapshotterSeedsFromTheArchive: with the local replica gone and the
// WAL trimmed by retention, a new snapshotter starts from the archive's
// newest usable snapshot and continues from the WAL, exactly.
func TestSnapshotterSeedsFromTheArchive(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, 0, 4096)
	n.append(t, 150)
	n.waitArchived(t)
	snap, err := n.snap.TakeSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.append(t, 10)
	n.waitArchived(t)
	walDir, a, ckpts := n.w.Dir(), n.a, n.ckpts
	n.stop()
	n.stop = nil

	w, _, err := wal.Open(wal.Options{Dir: walDir, SegmentSize: 4096, Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	n.w = w
	n.append(t, 40)
	txns := n.allTxns(t)
	if _, err := w.RemoveBefore(snap.LSN + 1); err != nil {
		t.Fatal(err)
	}
	if w.FirstLSN() <= 1 {
		t.Fatalf("retention removed nothing (first LSN %d)", w.FirstLSN())
	}
	dir := filepath.Join(t.TempDir(), "fresh")
	sn, err := archivesink.NewSnapshotter(a, w, ckpts, archivesink.SnapshotterOptions{Lineage: "main", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sn.Run(rctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for sn.Position() != w.Durable() {
		if time.Now().After(deadline) {
			t.Fatalf("seeded snapshotter at %d, want %d", sn.Position(), w.Durable())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	sn.Close()
	exp := "sqlite://" + filepath.Join(t.TempDir(), "e.db")
	buildReplica(t, exp, txns)
	compareReplicasCounts(t, "seeded snapshotter", "sqlite://"+filepath.Join(dir, "replica.db"), exp, true)

	// A replica left behind the WAL's first LSN (an HA standby trims its
	// log while its replica stands still) is replaced the same way.
	stale := filepath.Join(t.TempDir(), "stale")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	app, err := replica.Open(ctx, "sqlite://"+filepath.Join(stale, "replica.db"), replica.Options{Lineage: "main"})
	if err != nil {
		t.Fatal(err)
	}
	app.Close()
	sn, err = archivesink.NewSnapshotter(a, w, ckpts, archivesink.SnapshotterOptions{Lineage: "main", Dir: stale})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel = context.WithCancel(ctx)
	go func() { done <- sn.Run(rctx) }()
	deadline = time.Now().Add(20 * time.Second)
	for sn.Position() != w.Durable() {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("snapshotter over a stale replica at %d, want %d (Run: %v)", sn.Position(), w.Durable(), <-done)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	sn.Close()
	compareReplicasCounts(t, "replaced stale replica", "sqlite://"+filepath.Join(stale, "replica.db"), exp, true)

	// With no usable snapshot it refuses clearly.
	if _, err := archivesink.NewSnapshotter(archiveWithout(t), w, ckpts, archivesink.SnapshotterOptions{Lineage: "main", Dir: t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), "no snapshot from LSN") {
		t.Fatalf("seeding without a snapshot: %v", err)
	}
}

func archiveWithout(t *testing.T) *archive.Archive {
	a, err := archive.Open(context.Background(), "file://"+t.TempDir(), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
