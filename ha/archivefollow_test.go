package ha

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/archivesink"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/internal/archivetest"
	"github.com/walship/walship/internal/miniotest"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

const archLineage = "grp1"

// archLeader is a leader's log shipped into an archive by a real
// archivesink.Archiver, in small segments.
type archLeader struct {
	*leader // its sink is nil
	a       *archive.Archive
	dir     string // the directory archive's root ("" for S3)
	ar      *archivesink.Archiver
	done    chan error // the archiver's Run result
}

// startArchLeader opens a leader log with wo (Dir filled in) and archives
// it into a directory archive, or into b if its URL is set.
func startArchLeader(t *testing.T, wo wal.Options, b archivetest.Backend) *archLeader {
	t.Helper()
	dir := t.TempDir()
	l := &archLeader{}
	if b.URL == "" {
		l.dir = filepath.Join(dir, "archive")
		b.URL = "file://" + l.dir
	}
	l.a = archivetest.OpenArchive(t, b, archive.Options{})
	t.Cleanup(func() { l.a.Close() })
	wo.Dir, wo.SegmentSize = filepath.Join(dir, "wal"), 1<<20
	w, _, err := wal.Open(wo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Small objects flushed every 50ms: many segments, each soon.
	l.ar, err = archivesink.NewArchiver(l.a, w, ck, archivesink.ArchiverOptions{Lineage: archLineage, Timeout: 200 * time.Millisecond, MaxObjectBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.done = make(chan error, 1)
	go func() { l.done <- l.ar.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-l.done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("archiver: %v", err)
		}
	})
	l.leader = &leader{t: t, w: w, wl: kafkatest.NewWorkload(1)}
	return l
}

// archived waits until the archiver has stored everything durable.
func (l *archLeader) archived() {
	l.t.Helper()
	waitFor(l.t, "the archiver to archive the log", func() bool {
		select {
		case err := <-l.done:
			l.t.Fatalf("archiver stopped: %v", err)
		default:
		}
		return l.ar.Stats().ArchivedLSN >= l.w.Durable()
	})
}

func (l *archLeader) follow() ArchiveFollowOptions {
	return ArchiveFollowOptions{Archive: l.a, Lineage: archLineage, Poll: 20 * time.Millisecond}
}

// segments lists the lineage's segments.
func (l *archLeader) segments() []archive.SegmentRange {
	l.t.Helper()
	segs, err := l.a.ListSegments(context.Background(), archLineage)
	if err != nil {
		l.t.Fatal(err)
	}
	return segs
}

func newArchiveFollower(t *testing.T, w *wal.WAL, o ArchiveFollowOptions) *ArchiveFollower {
	t.Helper()
	f, err := NewArchiveFollower(w, o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runArchive runs f.Run until the test ends.
func runArchive(t *testing.T, f *ArchiveFollower) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() {
		r.err = f.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(90 * time.Second):
			t.Error("Run did not end in 90s after its context")
		}
	})
	return r
}

// reach waits until f's log has reached LSN lsn, failing if Run ends.
func reach(t *testing.T, r *running, f *ArchiveFollower, lsn uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the follower to reach LSN %d", lsn), func() bool {
		select {
		case <-r.done:
			t.Fatalf("Run ended at LSN %d: %v", f.Position(), r.err)
		default:
		}
		return f.Position() >= lsn
	})
}

// TestArchiveFollowerLogEqualsLeaders: a follower's log, built from the
// segments a real archiver stores of the leader's log, equals the
// leader's transaction by transaction — multi-change, logical messages, a
// large transaction, one appended with AppendStream, a request of several
// transactions appended whole under an idempotency key — and LoadKeys on
// it finds the key with the original LSNs. Run, started on an empty
// archive, tails the segments as they come.
func TestArchiveFollowerLogEqualsLeaders(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	fw := openLog(t, wal.Options{})
	f := newArchiveFollower(t, fw, l.follow())
	done := runArchive(t, f)

	l.append(50)
	reach(t, done, f, l.w.Durable()) // tailing: the archive grows after Run started
	msg := change.Txn{Header: change.TxHeader{XID: 7, Origin: "msg"}, Changes: []change.Change{
		{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p1", Content: []byte{0, 1, 2}, Transactional: true}},
		{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p2", Content: []byte("hello")}},
	}}
	if _, err := l.w.Append(ctx, &msg); err != nil {
		t.Fatal(err)
	}
	big := change.Txn{Header: change.TxHeader{XID: 8}}
	for i := range 1500 {
		big.Changes = append(big.Changes, bigChange(i))
	}
	if _, err := l.w.Append(ctx, &big); err != nil {
		t.Fatal(err)
	}
	i := 0
	if _, err := l.w.AppendStream(ctx, change.TxHeader{XID: 9, Origin: "stream"}, func() (*change.Change, error) {
		if i == 800 {
			return nil, io.EOF
		}
		c := bigChange(10_000 + i)
		i++
		return &c, nil
	}); err != nil {
		t.Fatal(err)
	}
	keys, err := l.w.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("request body"))
	claim, err := keys.Claim(ctx, "req-42", hash, 3)
	if err != nil {
		t.Fatal(err)
	}
	b := l.w.NewBatch()
	for range 3 {
		tx := l.wl.Next()
		if err := b.Add(&tx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetMark(claim.Mark()); err != nil {
		t.Fatal(err)
	}
	if err := l.w.AppendBatchAsync(ctx, b); err != nil {
		t.Fatal(err)
	}
	claim.Done(b)
	var wantTickets []wal.Ticket
	b.Tickets(func(tk wal.Ticket) { wantTickets = append(wantTickets, tk) })
	if err := l.w.Wait(ctx, b.Last()); err != nil {
		t.Fatal(err)
	}
	l.append(20)

	reach(t, done, f, l.w.Durable())
	if n := len(l.segments()); n < 4 {
		t.Fatalf("the archive holds %d segments: the test wants many", n)
	}
	want := txns(t, l.w)
	sameLog(t, txns(t, fw), want)
	marked := 0
	for _, tx := range want {
		if tx.Header.Idempotency != nil || tx.Header.InRequest {
			marked++
		}
	}
	if marked != 3 {
		t.Fatalf("%d transactions of the leader's log carry the request's mark or flag, want 3", marked)
	}
	if fw.NextLSN() != l.w.NextLSN() {
		t.Fatalf("follower next LSN %d, leader's %d", fw.NextLSN(), l.w.NextLSN())
	}

	fkeys, err := fw.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fkeys.Claim(ctx, "req-42", hash, 3)
	if err != nil || !c.Replayed {
		t.Fatalf("the follower's key: %+v, %v; want a replay", c, err)
	}
	var got []wal.Ticket
	if err := c.Tickets(ctx, func(tk wal.Ticket) { got = append(got, tk) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(wantTickets) {
		t.Fatalf("the follower's key gives %v, want the leader's %v", got, wantTickets)
	}
}

// TestArchiveFollowerS3: the same over a real MinIO: Run copies what the
// archiver stores, and CatchUp on a second log ends at the archive's end.
func TestArchiveFollowerS3(t *testing.T) {
	srv := miniotest.Start(t, miniotest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.MakeBucket(ctx, archivetest.Bucket); err != nil {
		t.Fatal(err)
	}
	l := startArchLeader(t, wal.Options{}, archivetest.S3(t, srv, ""))
	fw := openLog(t, wal.Options{})
	f := newArchiveFollower(t, fw, l.follow())
	done := runArchive(t, f)
	l.append(60)
	reach(t, done, f, l.w.Durable())
	l.append(40)
	l.archived()
	reach(t, done, f, l.w.Durable())
	sameLog(t, txns(t, fw), txns(t, l.w))

	other := openLog(t, wal.Options{})
	if err := newArchiveFollower(t, other, l.follow()).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, other), txns(t, l.w))
}

// TestArchiveCatchUpEndsAtTheArchivesEnd: CatchUp appends exactly what
// the archive holds — all of it when nothing is being archived, and, while
// the leader keeps appending and archiving, at least what was archived
// when it was called and at most what was archived when it returned — and
// the log is then a prefix of the leader's.
func TestArchiveCatchUpEndsAtTheArchivesEnd(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	fw := openLog(t, wal.Options{})
	f := newArchiveFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil || fw.Durable() != 0 {
		t.Fatalf("CatchUp of an empty archive: %v, log at LSN %d", err, fw.Durable())
	}
	l.append(100)
	l.archived()
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fw), txns(t, l.w))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				l.append(1)
			}
		}
	})
	end := func() uint64 {
		segs := l.segments()
		return segs[len(segs)-1].LastLSN
	}
	for round := range 3 {
		waitFor(t, "the leader to archive more", func() bool { return l.ar.Stats().ArchivedLSN > fw.Durable()+20 })
		before := end()
		if err := f.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		after, pos := end(), f.Position()
		if pos < before || pos > after {
			t.Fatalf("round %d: CatchUp ended at LSN %d; the archive ended at LSN %d when it was called and %d after", round, pos, before, after)
		}
		all, got := txns(t, l.w), txns(t, fw)
		sameLog(t, got, all[:len(got)])
		if got[len(got)-1].CommitLSN != pos {
			t.Fatalf("round %d: the log's last transaction commits at LSN %d, its position is %d", round, got[len(got)-1].CommitLSN, pos)
		}
	}
	close(stop)
	wg.Wait()
}

// TestArchiveDivergedLocalExtraTransaction: a log with a transaction the
// archive does not have (a deposed leader's unshipped tail) is
// ErrDiverged: for CatchUp because it ends beyond the archive's end, for
// Run once the archive holds another transaction at those LSNs. The error
// names the LSN.
func TestArchiveDivergedLocalExtraTransaction(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	l.append(30)
	l.archived()
	fw := openLog(t, wal.Options{})
	f := newArchiveFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	extra := kafkatest.NewWorkload(99).Next()
	tk, err := fw.Append(ctx, &extra)
	if err != nil {
		t.Fatal(err)
	}
	err = f.CatchUp(ctx)
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("LSN %d", tk.Last)) {
		t.Fatalf("CatchUp with a local extra transaction at LSN %d: %v, want ErrDiverged naming it", tk.First, err)
	}
	done := runArchive(t, f)
	l.append(5)
	select {
	case <-done.done:
		err := done.err
		if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("at LSN %d", tk.First)) {
			t.Fatalf("Run with a local extra transaction at LSN %d: %v, want ErrDiverged naming it", tk.First, err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Run did not notice the divergence in 90s")
	}
}

// TestArchiveDivergedDifferentTransaction: a log whose last transaction
// differs from the archive's at the same LSNs — in a change, in a header
// field, in its commit time, in its extent — is ErrDiverged naming the
// LSN; the same transaction is not.
func TestArchiveDivergedDifferentTransaction(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	l.append(20)
	l.archived()
	want := txns(t, l.w)
	k := len(want) - 5
	for len(want[k].Changes) < 2 {
		k--
	}
	for _, c := range []struct {
		name   string
		change func(tx *change.Committed)
		says   string
	}{
		{"same", func(*change.Committed) {}, ""},
		{"change", func(tx *change.Committed) {
			tx.Changes = append([]change.Change(nil), tx.Changes...)
			tx.Changes[0].After = change.Row{{Name: "id", Value: change.IntValue(-1)}}
			tx.Changes[0].Before, tx.Changes[0].Op = nil, change.Insert
		}, "change at LSN"},
		{"origin", func(tx *change.Committed) { tx.Header.Origin = "another" }, "header"},
		{"commit time", func(tx *change.Committed) { tx.CommitTime = tx.CommitTime.Add(time.Microsecond) }, "commit time"},
		{"shorter", func(tx *change.Committed) {
			tx.Changes = tx.Changes[:len(tx.Changes)-1]
			tx.CommitLSN--
		}, "spanning LSNs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fw := openLog(t, wal.Options{})
			for i := range k {
				if _, err := fw.AppendReplica(ctx, &want[i]); err != nil {
					t.Fatal(err)
				}
			}
			tx := want[k]
			c.change(&tx)
			if _, err := fw.AppendReplica(ctx, &tx); err != nil {
				t.Fatal(err)
			}
			err := newArchiveFollower(t, fw, l.follow()).CatchUp(ctx)
			if c.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				sameLog(t, txns(t, fw), want)
				return
			}
			if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("at LSN %d", want[k].FirstLSN)) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want ErrDiverged at LSN %d saying %q", err, want[k].FirstLSN, c.says)
			}
		})
	}
}

// TestArchiveStartAndGaps: ArchiveStart says an empty lineage is empty;
// when retention removed the first segments, it gives the first LSN of the
// first one left, and a fresh log opened there catches up to the leader's;
// a log that needs a removed segment gets kafkawire.ErrGap, whether the
// segment is gone whole (retention) or only its object (a hole); an
// object that does not verify passes the archive's corruption error on.
func TestArchiveStartAndGaps(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	if _, empty, err := ArchiveStart(ctx, l.a, archLineage); err != nil || !empty {
		t.Fatalf("ArchiveStart of an empty lineage: empty %v, %v; want empty", empty, err)
	}
	for range 6 {
		l.append(10)
		l.archived() // one segment at least each time
	}
	want := txns(t, l.w)
	segs := l.segments()
	if len(segs) < 6 {
		t.Fatalf("%d segments, want at least 6", len(segs))
	}
	manifest := func(s archive.SegmentRange) archive.SegmentManifest {
		m, err := l.a.SegmentManifestOf(ctx, archLineage, s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, s := range segs[:2] { // retention, oldest first
		if err := l.a.DeleteSegment(ctx, manifest(s)); err != nil {
			t.Fatal(err)
		}
	}
	first, empty, err := ArchiveStart(ctx, l.a, archLineage)
	if err != nil || empty || first != segs[2].FirstLSN {
		t.Fatalf("ArchiveStart: %d, empty %v, %v; want %d", first, empty, err, segs[2].FirstLSN)
	}
	from := func(lsn uint64) []change.Committed {
		for i := range want {
			if want[i].FirstLSN >= lsn {
				return want[i:]
			}
		}
		return nil
	}
	fresh := openLog(t, wal.Options{FirstLSN: first})
	if err := newArchiveFollower(t, fresh, l.follow()).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sameLog(t, txns(t, fresh), from(first))

	old := openLog(t, wal.Options{})
	err = newArchiveFollower(t, old, l.follow()).CatchUp(ctx)
	if !errors.Is(err, kafkawire.ErrGap) || !strings.Contains(err.Error(), "needs LSN 1 next") {
		t.Fatalf("CatchUp of a log needing a removed segment: %v, want ErrGap naming LSN 1", err)
	}

	// A log that ends before segs[3]: its object removed (a hole), then
	// corrupt, then the whole segment removed.
	behind := openLog(t, wal.Options{FirstLSN: first})
	for _, tx := range from(first) {
		if tx.CommitLSN >= segs[3].FirstLSN {
			break
		}
		if _, err := behind.AppendReplica(ctx, &tx); err != nil {
			t.Fatal(err)
		}
	}
	obj := filepath.Join(l.dir, filepath.FromSlash(archive.SegmentKey(archLineage, segs[3].FirstLSN, segs[3].LastLSN)))
	body, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)-1] ^= 0xff
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	fb := newArchiveFollower(t, behind, l.follow())
	if err := fb.CatchUp(ctx); !errors.Is(err, kafkawire.ErrGap) || !strings.Contains(err.Error(), fmt.Sprintf("LSN %d next", segs[3].FirstLSN)) {
		t.Fatalf("CatchUp needing a segment whose object is missing: %v, want ErrGap naming LSN %d", err, segs[3].FirstLSN)
	}
	if err := os.WriteFile(obj, body, 0o644); err != nil {
		t.Fatal(err)
	}
	var ce *walerr.CorruptionError
	if err := fb.CatchUp(ctx); !errors.As(err, &ce) || !strings.Contains(ce.Object, "wal/") {
		t.Fatalf("CatchUp needing a corrupt segment: %v, want the archive's CorruptionError naming it", err)
	}
	if err := l.a.DeleteSegment(ctx, manifest(segs[3])); err != nil {
		t.Fatal(err)
	}
	if err := fb.CatchUp(ctx); !errors.Is(err, kafkawire.ErrGap) {
		t.Fatalf("CatchUp needing a removed segment: %v, want ErrGap", err)
	}
	if behind.Durable() != segs[3].FirstLSN-1 {
		t.Fatalf("the log needing the removed segment moved to LSN %d", behind.Durable())
	}
}

// TestArchiveFollowerCopiesAbortedRanges: the leader's log holds
// transactions aborted midway — alone between committed ones, and two in
// a row — which the archive does not hold (its segments cover their
// LSNs); the follower writes each run of them as one aborted range at
// exactly those LSNs, so that its log reads back as the leader's with the
// same LSNs skipped and the same next LSN. A log that ends with an aborted
// range (the leader's first of the two in a row, or the follower's own) is
// checked against the archive and goes on.
func TestArchiveFollowerCopiesAbortedRanges(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{MaxPendingBytes: 16 << 10, MaxBatchBytes: 8 << 10}, archivetest.Backend{})
	l.append(5)
	appendAborted(t, l.w, 30)
	l.append(5)
	appendAborted(t, l.w, 20)
	appendAborted(t, l.w, 20)
	l.append(5)
	l.archived()

	fw := openLog(t, wal.Options{})
	f := newArchiveFollower(t, fw, l.follow())
	done := runArchive(t, f)
	reach(t, done, f, l.w.Durable())
	sameLog(t, txns(t, fw), txns(t, l.w))
	skipped := func(w *wal.WAL) (out []uint64) {
		for _, tx := range withAborted(t, w) {
			if tx.Aborted {
				for lsn := tx.FirstLSN; lsn <= tx.CommitLSN; lsn++ {
					out = append(out, lsn)
				}
			}
		}
		return out
	}
	gotSkipped, wantSkipped := skipped(fw), skipped(l.w)
	if len(wantSkipped) < 60 || fmt.Sprint(gotSkipped) != fmt.Sprint(wantSkipped) {
		t.Fatalf("the follower's log skips LSNs %v, the leader's %v", gotSkipped, wantSkipped)
	}
	if fw.NextLSN() != l.w.NextLSN() || fw.Durable() != l.w.Durable() {
		t.Fatalf("follower next LSN %d durable %d, leader %d and %d", fw.NextLSN(), fw.Durable(), l.w.NextLSN(), l.w.Durable())
	}

	// Logs ending with an aborted range: the leader's own up to each of
	// its ranges, and the follower's up to its merged one.
	leaderEntries, followerEntries := withAborted(t, l.w), withAborted(t, fw)
	l.append(3)
	l.archived()
	checked := 0
	for _, entries := range [][]change.Committed{leaderEntries, followerEntries} {
		for k := range entries {
			if !entries[k].Aborted {
				continue
			}
			w := openLog(t, wal.Options{})
			for i := range k + 1 {
				if _, err := w.AppendReplica(ctx, &entries[i]); err != nil {
					t.Fatal(err)
				}
			}
			if err := newArchiveFollower(t, w, l.follow()).CatchUp(ctx); err != nil {
				t.Fatalf("CatchUp of a log ending with the aborted range at LSNs %d-%d: %v", entries[k].FirstLSN, entries[k].CommitLSN, err)
			}
			sameLog(t, txns(t, w), txns(t, l.w))
			if fmt.Sprint(skipped(w)) != fmt.Sprint(skipped(l.w)) || w.NextLSN() != l.w.NextLSN() {
				t.Fatalf("after a log ending with the aborted range at LSNs %d-%d: skips %v, next LSN %d; want %v, %d",
					entries[k].FirstLSN, entries[k].CommitLSN, skipped(w), w.NextLSN(), skipped(l.w), l.w.NextLSN())
			}
			checked++
		}
	}
	if checked != 5 {
		t.Fatalf("%d logs ending with an aborted range checked, want 3 of the leader's and 2 of the follower's", checked)
	}

	// A log whose final aborted range the archive holds a transaction in.
	k := 0
	for !leaderEntries[k].Aborted {
		k++
	}
	wrong := change.Committed{FirstLSN: leaderEntries[k-1].FirstLSN, CommitLSN: leaderEntries[k].CommitLSN, CommitTime: leaderEntries[k].CommitTime, Aborted: true}
	w2 := openLog(t, wal.Options{})
	for i := range k - 1 {
		if _, err := w2.AppendReplica(ctx, &leaderEntries[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w2.AppendReplica(ctx, &wrong); err != nil {
		t.Fatal(err)
	}
	err := newArchiveFollower(t, w2, l.follow()).CatchUp(ctx)
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), fmt.Sprintf("at LSN %d", wrong.FirstLSN)) {
		t.Fatalf("CatchUp of a log whose last aborted range covers an archived transaction: %v, want ErrDiverged at LSN %d", err, wrong.FirstLSN)
	}
}

// TestArchiveFollowerRefusesOverlap: two segments covering a common LSN
// (a replaced leader's put that landed late) are two histories; the
// follower refuses to copy either, naming both, rather than mixing them.
func TestArchiveFollowerRefusesOverlap(t *testing.T) {
	ctx := context.Background()
	l := startArchLeader(t, wal.Options{}, archivetest.Backend{})
	for range 3 {
		l.append(10)
		l.archived()
	}
	segs := l.segments()
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	// A manifest is part of the archive's listing; its content is read
	// only when copying, which the overlap must prevent.
	late := archive.SegmentKey(archLineage, segs[1].FirstLSN, segs[1].LastLSN+1)
	path := filepath.Join(l.dir, filepath.FromSlash(archive.ManifestKey(late)))
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	fw := openLog(t, wal.Options{})
	var ce *walerr.CorruptionError
	err := newArchiveFollower(t, fw, l.follow()).CatchUp(ctx)
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "overlaps") || !strings.Contains(err.Error(), late) {
		t.Fatalf("CatchUp over overlapping segments: %v, want a CorruptionError naming %s", err, late)
	}
	if fw.Durable() != 0 {
		t.Fatalf("the follower copied up to LSN %d from an archive holding two histories", fw.Durable())
	}
}
