package ha

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

var errSourceLost = errors.New("test: the source's connection dropped")

// appendAborted appends to w (opened with a small MaxPendingBytes, so
// that the stream's first records are written before it fails) a
// streamed transaction of n changes whose source then fails: the log
// keeps its LSNs, ended by an abort frame.
func appendAborted(t *testing.T, w *wal.WAL, n int) {
	t.Helper()
	i := 0
	first := w.NextLSN()
	_, err := w.AppendStream(context.Background(), change.TxHeader{XID: 77}, func() (*change.Change, error) {
		if i == n {
			return nil, errSourceLost
		}
		c := bigChange(50_000 + i)
		i++
		return &c, nil
	})
	if !errors.Is(err, errSourceLost) {
		t.Fatalf("AppendStream: %v, want %v", err, errSourceLost)
	}
	if last := w.NextLSN() - 1; last <= first {
		t.Fatalf("the aborted stream left LSNs %d-%d: none of its records was written", first, last)
	}
	if err := w.Wait(context.Background(), w.NextLSN()-1); err != nil { // the abort frame is queued, not waited for
		t.Fatal(err)
	}
}

// withAborted reads w whole with ReportAborted: transactions and aborted
// ranges.
func withAborted(t *testing.T, w *wal.WAL) []change.Committed {
	t.Helper()
	r, err := w.NewReader(w.FirstLSN(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.ReportAborted()
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

// sameLSNs fails unless follower's log is LSN-identical to leader's:
// every transaction equal (sameLog), the aborted ranges at the same LSNs,
// and the same next LSN.
func sameLSNs(t *testing.T, follower, leader *wal.WAL) {
	t.Helper()
	sameLog(t, txns(t, follower), txns(t, leader))
	got, want := withAborted(t, follower), withAborted(t, leader)
	if len(got) != len(want) {
		t.Fatalf("%d transactions and aborted ranges, want %d", len(got), len(want))
	}
	aborted := 0
	for i := range want {
		g, w := &got[i], &want[i]
		if g.Aborted != w.Aborted || g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN {
			t.Fatalf("%d: LSNs %d-%d aborted %v, want %d-%d aborted %v", i, g.FirstLSN, g.CommitLSN, g.Aborted, w.FirstLSN, w.CommitLSN, w.Aborted)
		}
		if w.Aborted {
			aborted++
		}
	}
	if aborted == 0 {
		t.Fatal("no aborted range compared")
	}
	if follower.NextLSN() != leader.NextLSN() || follower.Durable() != leader.Durable() {
		t.Fatalf("follower next LSN %d durable %d, leader %d and %d", follower.NextLSN(), follower.Durable(), leader.NextLSN(), leader.Durable())
	}
}

// TestFollowerCopiesAbortedRanges: the leader's log holds transactions
// aborted midway, between committed ones and at its end; its
// transactional sink ships a marker for each, and the follower writes each
// range at exactly its LSNs, so that its log reads back as the leader's
// (the same transactions, the same skipped ranges, the same next LSN).
// Restarted on a log that ends with an aborted range, the follower checks
// that range against the topic and goes on; a fresh log copying a topic
// whose head (after retention) is a marker starts at the marker's range.
func TestFollowerCopiesAbortedRanges(t *testing.T) {
	ctx := context.Background()
	c, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dir := t.TempDir()
	lw, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "leader"), SegmentSize: 1 << 20, MaxPendingBytes: 16 << 10, MaxBatchBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lw.Close() })
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{c.Addr}, TopicPrefix: prefix, Linger: time.Millisecond,
		TransactionalID: topic}, lw, ck, lineage)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopSink := context.WithCancel(ctx)
	sinkDone := make(chan error, 1)
	go func() { sinkDone <- s.Run(sctx) }()
	t.Cleanup(func() {
		stopSink()
		if err := <-sinkDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("sink: %v", err)
		}
	})
	l := &leader{t: t, addr: c.Addr, w: lw, sink: s, wl: kafkatest.NewWorkload(1)}

	l.append(5)
	appendAborted(t, lw, 30)
	l.append(5)
	appendAborted(t, lw, 20) // the log ends with it
	if lw.Durable() != lw.NextLSN()-1 {
		t.Fatalf("leader durable %d, next LSN %d", lw.Durable(), lw.NextLSN())
	}

	fdir := filepath.Join(dir, "follower")
	fw := openLog(t, wal.Options{Dir: fdir})
	f := newFollower(t, fw, l.follow())
	fctx, stopFollower := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	waitFor(t, "the follower to copy the leader's log", func() bool {
		select {
		case err := <-done:
			t.Fatalf("follower Run ended at LSN %d of %d: %v", f.Position(), lw.Durable(), err)
		default:
		}
		return f.Position() >= lw.Durable()
	})
	stopFollower()
	if err := <-done; err != nil {
		t.Fatalf("follower Run: %v", err)
	}
	sameLSNs(t, fw, lw)

	// Reopened, the follower's log ends with an aborted range: CatchUp
	// checks it against the topic's marker and copies what follows.
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	fw = openLog(t, wal.Options{Dir: fdir})
	l.append(3)
	l.shipped()
	f = newFollower(t, fw, l.follow())
	if err := f.CatchUp(ctx); err != nil {
		t.Fatalf("CatchUp after a restart on a log ending with an aborted range: %v", err)
	}
	sameLSNs(t, fw, lw)

	// A topic whose retention left a marker at its head: a fresh log
	// starts at the marker's range and copies it.
	var markerOff int64 = -1
	var rangeFirst uint64
	end := endOffset(t, c.Addr)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr), kgo.KeepControlRecords(), // the transactional sink's markers take offsets too
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for next := int64(0); markerOff < 0 && next < end; {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			t.Fatalf("reading %s up to offset %d: %v", topic, end, err)
		}
		for _, r := range fs.Records() {
			next = r.Offset + 1
			if markerOff < 0 && kafkawire.IsAbortedMarker(r) {
				markerOff = r.Offset
				rangeFirst, _, _, _, _ = kafkawire.DecodeHeaders(r)
			}
		}
	}
	if markerOff < 0 {
		t.Fatal("no marker in the topic")
	}
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: markerOff})
	if resp, err := kadm.NewClient(cl).DeleteRecords(ctx, offs); err != nil || resp.Error() != nil {
		t.Fatalf("delete records before offset %d: %v %v", markerOff, err, resp.Error())
	}
	first, empty, err := TopicStart(ctx, l.follow())
	if err != nil || empty || first != rangeFirst {
		t.Fatalf("TopicStart of a topic starting with a marker: %d, empty %v, %v; want %d", first, empty, err, rangeFirst)
	}
	fresh := openLog(t, wal.Options{FirstLSN: first})
	if err := newFollower(t, fresh, l.follow()).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	got, want := withAborted(t, fresh), withAborted(t, lw)
	for len(want) > 0 && want[0].FirstLSN < first {
		want = want[1:]
	}
	if len(got) != len(want) || !got[0].Aborted || got[0].FirstLSN != first || fresh.NextLSN() != lw.NextLSN() {
		t.Fatalf("fresh log from LSN %d: %d entries (first %+v), next LSN %d; want %d, next LSN %d", first, len(got), got[0], fresh.NextLSN(), len(want), lw.NextLSN())
	}
	for i := range want {
		if got[i].FirstLSN != want[i].FirstLSN || got[i].CommitLSN != want[i].CommitLSN || got[i].Aborted != want[i].Aborted || !got[i].Txn.Equal(&want[i].Txn) {
			t.Fatalf("fresh log entry %d: %d-%d aborted %v, want %d-%d aborted %v", i, got[i].FirstLSN, got[i].CommitLSN, got[i].Aborted, want[i].FirstLSN, want[i].CommitLSN, want[i].Aborted)
		}
	}
}
