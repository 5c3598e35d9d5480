package main

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

var errSourceLost = errors.New("test: the source's connection dropped")

// newAbortedSource is newSource in ordered mode for a log with
// transactions aborted midway after the committed transactions at the
// indexes in abortAfter, archived in segments of 20 transactions that
// cover the LSNs between them (as archivesink does: each segment starts
// after the previous one's last LSN), so that a range after a segment's
// last transaction starts the next segment.
func newAbortedSource(t *testing.T, n int, abortAfter ...int) *source {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), Sync: wal.SyncOff, MaxPendingBytes: 4 << 10, MaxBatchBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wl := kafkatest.NewWorkload(7)
	for i := range n {
		txn := wl.Next()
		if _, err := w.Append(ctx, &txn); err != nil {
			t.Fatal(err)
		}
		for _, a := range abortAfter {
			if a != i {
				continue
			}
			k := 0
			first := w.NextLSN()
			_, err := w.AppendStream(ctx, change.TxHeader{XID: 77}, func() (*change.Change, error) {
				if k == 40 {
					return nil, errSourceLost
				}
				k++
				id := change.IntValue(int64(k))
				return &change.Change{Table: change.Table{Schema: "public", Name: "aborted"}, Op: change.Insert, Key: change.Row{{Name: "id", Value: id}},
					After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(strings.Repeat("v", 300))}}}, nil
			})
			if !errors.Is(err, errSourceLost) || w.NextLSN()-1 <= first {
				t.Fatalf("aborted stream: %v, LSNs %d-%d", err, first, w.NextLSN()-1)
			}
		}
	}
	c := startKafka(t)
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{c.Addr}, Mode: kafkawire.ModeOrdered}, w, ck, "main")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.Run(rctx) }()
	for deadline := time.Now().Add(90 * time.Second); s.Stats().CheckpointLSN < w.Durable(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sink stuck: %+v", s.Stats())
		}
	}
	cancel()
	<-errc

	rd, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	var txns []change.Committed
	for {
		tx, err := rd.Next(ctx)
		if err != nil {
			break
		}
		txns = append(txns, *tx)
	}
	rd.Close()
	f := &fixture{dir: t.TempDir(), txns: txns}
	f.url = "file://" + f.dir
	if f.a, err = archive.Open(ctx, f.url, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	next := uint64(1)
	for i := 0; i < len(txns); i += 20 {
		enc, err := f.a.EncodeSegment("main", next, txns[i:min(i+20, len(txns))])
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.a.StoreSegment(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		f.segs = append(f.segs, m)
		next = m.LastLSN + 1
	}
	return &source{cluster: c, f: f, txns: txns, mode: kafkawire.ModeOrdered, parts: 1}
}

// markersAnyTime gives every aborted-range marker the zero timestamp: the
// sink stamps it with the abort's time, which the archive does not keep,
// and publish with the next commit's.
func markersAnyTime(t *testing.T, topics map[string]map[int32][]*kgo.Record) int {
	t.Helper()
	n := 0
	for _, parts := range topics {
		for _, recs := range parts {
			for _, r := range recs {
				if kafkawire.IsAbortedMarker(r) {
					r.Timestamp = time.Time{}
					n++
				}
			}
		}
	}
	return n
}

// TestPublishReproducesAbortedRanges: the archive keeps the LSNs of
// transactions aborted midway as LSNs its segments cover without a
// transaction; publish turns each into the sink's marker (same headers,
// no key, null value), in mid-segment and at a segment's start, into an
// empty topic and into one that ends right before a range; publishing
// again adds nothing.
func TestPublishReproducesAbortedRanges(t *testing.T) {
	src := newAbortedSource(t, 60, 9, 19, 44) // after the 20th transaction: the second segment starts with the range
	if s := src.f.segs[1]; s.FirstLSN >= src.txns[20].FirstLSN {
		t.Fatalf("the second segment starts at LSN %d, its first transaction at %d: no range at its start", s.FirstLSN, src.txns[20].FirstLSN)
	}
	orig := topicRecords(t, src.cluster.Addr)
	if n := markersAnyTime(t, orig); n != 3 {
		t.Fatalf("the sink produced %d markers, want 3", n)
	}
	dst := startKafka(t)
	if r := src.publish(t, dst.Addr); r.code != 0 {
		t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	got := topicRecords(t, dst.Addr)
	markersAnyTime(t, got)
	sameTopics(t, orig, got, all)
	if r := src.publish(t, dst.Addr); r.code != 0 || !strings.Contains(r.stdout, " 0 records produced") {
		t.Fatalf("second publish: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}

	// A topic that ends right before the range at the second segment's
	// start is continued with that range's marker.
	part := startKafka(t)
	end := src.txns[19].CommitLSN
	if r := src.publish(t, part.Addr, "--to-lsn", strconv.FormatUint(end, 10)); r.code != 0 {
		t.Fatalf("publish --to-lsn: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	if r := src.publish(t, part.Addr); r.code != 0 {
		t.Fatalf("publish the rest: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	got = topicRecords(t, part.Addr)
	markersAnyTime(t, got)
	sameTopics(t, orig, got, all)
}
