package kafkasink

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/checkpoint"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
	"github.com/walship/walship/vfs"
	"github.com/walship/walship/wal"
)

var errSourceLost = errors.New("test: the source's connection dropped")

// appendAborted appends to w (opened with a small MaxPendingBytes, so
// that the stream's first records are written before it fails) a streamed
// transaction of n inserts into public.aborted whose source then fails:
// the log keeps its LSNs, ended by an abort frame.
func appendAborted(t *testing.T, w *wal.WAL, n int) {
	t.Helper()
	i := 0
	first := w.NextLSN()
	_, err := w.AppendStream(context.Background(), change.TxHeader{XID: 77}, func() (*change.Change, error) {
		if i == n {
			return nil, errSourceLost
		}
		i++
		id := change.IntValue(int64(i))
		return &change.Change{Table: change.Table{Schema: "public", Name: "aborted"}, Op: change.Insert, Key: change.Row{{Name: "id", Value: id}},
			After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(strings.Repeat("v", 300))}}}, nil
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

// TestAbortedRangeTablesMode: in tables mode an aborted range produces
// nothing (no marker, no topic for the aborted transaction's table), and
// the checkpoint passes it, also when the log ends with one.
func TestAbortedRangeTablesMode(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), MaxPendingBytes: 4 << 10, MaxBatchBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ck, err := checkpoint.Open(context.Background(), vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, w: w, ckpts: ck}
	wl := kafkatest.NewWorkload(4)
	e.append(wl, 10)
	appendAborted(t, w, 40)
	e.append(wl, 10)
	appendAborted(t, w, 30)
	s, err := New(Options{Brokers: []string{c.Addr}, Mode: kafkawire.ModeTables, TopicPrefix: "tp", Linger: time.Millisecond}, w, ck, "L1")
	if err != nil {
		t.Fatal(err)
	}
	stop := runSink(t, s)
	waitAcked(t, s, w.Durable(), 60*time.Second) // the final abort's LSN
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}

	perTopic := map[string]int{}
	for _, txn := range e.walTxns() {
		for _, ch := range txn.Changes {
			if ch.Op != change.Message {
				perTopic[kafkawire.TablesTopic("tp", ch.Table.Schema, ch.Table.Name)]++
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range topics {
		if _, ok := perTopic[name]; !ok {
			t.Fatalf("topic %s exists; the committed changes have only %v", name, perTopic)
		}
	}
	for topic, n := range perTopic {
		recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, topic, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if kafkawire.IsAbortedMarker(r) {
				t.Fatalf("%s offset %d: an aborted-range marker in tables mode", topic, r.Offset)
			}
		}
	}
}
