package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// groupTxnID is the transactional id an HA group's Kafka sink writes the
// ordered topic with: "<prefix>.ordered" (docs/HA.md).
const groupTxnID = "walship.ordered"

// txnSource is a log of n transactions of which the first shipped were
// shipped to the ordered topic of cluster by a transactional Kafka sink
// (as an HA group's leader ships them).
type txnSource struct {
	cluster *kafkatest.Cluster
	txns    []change.Committed
	shipped int
}

func newTxnSource(t *testing.T, ctx context.Context, shipped, n int) *txnSource {
	t.Helper()
	dir := t.TempDir()
	w, _, err := wal.Open(wal.Options{Dir: filepath.Join(dir, "wal"), Sync: wal.SyncOff})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ck, err := checkpoint.Open(ctx, vfs.Default, filepath.Join(dir, "ckpt"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wl := kafkatest.NewWorkload(7)
	appendN := func(k int) {
		for range k {
			txn := wl.Next()
			if _, err := w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(shipped)
	c := startKafka(t)
	s, err := kafkasink.New(kafkasink.Options{Brokers: []string{c.Addr}, Mode: kafkawire.ModeOrdered, TransactionalID: groupTxnID,
		Linger: time.Millisecond, CheckpointInterval: 5 * time.Millisecond}, w, ck, "main")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.Run(rctx) }()
	for s.Stats().AckedLSN < w.Durable() { // the committed position, in transactional mode
		if ctx.Err() != nil {
			t.Fatalf("transactional sink stuck: %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("sink: %v", err)
	}
	appendN(n - shipped) // in the log (and the archive), not in the topic
	rd, err := w.NewReader(1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	src := &txnSource{cluster: c, shipped: shipped}
	for len(src.txns) < n {
		tx, err := rd.Next(ctx)
		if err != nil {
			t.Fatalf("read the log back: %v", err)
		}
		src.txns = append(src.txns, *tx)
	}
	return src
}

// records returns the ordered-topic records the sink makes of txns.
func orderedRecords(txns []change.Committed) []*kgo.Record {
	enc := &kafkawire.Encoder{Name: "walship", Lineage: "main"} // the sink's defaults
	var out []*kgo.Record
	for i := range txns {
		out = append(out, enc.OrderedRecords(&txns[i], kafkawire.DefaultTopicPrefix, true)...)
	}
	return out
}

// produceTxn produces recs in one transaction of transactional id id and
// then commits it (commit) or aborts it; with end false it leaves it open
// and returns the client, which the caller closes.
func produceTxn(t *testing.T, ctx context.Context, addr, id string, recs []*kgo.Record, commit, end bool) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID(id), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		c := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
		if err := cl.ProduceSync(ctx, c).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if !end {
		return cl
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	return nil
}

// committedRecords reads the ordered topic read_committed to its end (no
// transaction may be open) and returns its data records, in order.
func committedRecords(t *testing.T, ctx context.Context, addr string) []*kgo.Record {
	t.Helper()
	topic := kafkawire.OrderedTopic(kafkawire.DefaultTopicPrefix)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	var out []*kgo.Record
	for next := int64(0); next < end.Offset; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s read_committed: at offset %d of %d: %v", topic, next, end.Offset, ctx.Err())
		}
		for _, r := range fs.Records() {
			next = r.Offset + 1
			if !r.Attrs.IsControl() && r.Offset < end.Offset {
				out = append(out, r)
			}
		}
	}
	return out
}

// exactRecords fails unless got are want, record by record: LSN, key,
// value (but its processing time), headers and timestamp — each LSN once.
func exactRecords(t *testing.T, want, got []*kgo.Record) {
	t.Helper()
	for i := range max(len(want), len(got)) {
		if i >= len(want) || i >= len(got) {
			t.Fatalf("the topic holds %d committed records, want %d (record %d: LSN %d)", len(got), len(want), i,
				recordLSN(append(got, want...)[min(i, len(got)+len(want)-1)]))
		}
		w := *want[i]
		w.Partition, w.Timestamp = got[i].Partition, want[i].Timestamp.Truncate(time.Millisecond) // Kafka keeps milliseconds
		if d := sameRecord(&w, got[i]); d != "" {
			t.Fatalf("committed record %d: LSN %d, want LSN %d: %s", i, recordLSN(got[i]), recordLSN(want[i]), d)
		}
	}
}

// TestPublishContinuesATransactionalTopic: the ordered topic of an HA
// group — written by the transactional sink, so it holds transaction
// markers, and ending with an aborted transaction holding the records of
// the next transactions (a fenced leader's) — is continued by publish from
// the archive of the same log exactly after its last committed record:
// nothing twice, nothing missing, no wait on the markers; and a second
// publish adds nothing.
func TestPublishContinuesATransactionalTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // only catches a stall
	defer cancel()
	src := newTxnSource(t, ctx, 40, 80)
	f := newFixture(t, src.txns, 20)
	all := orderedRecords(src.txns)
	tail := orderedRecords(src.txns[src.shipped:])
	// More aborted records than the first window publish reads below the
	// end: it must walk back over them.
	aborted := tail[:min(len(tail), 100)]
	if len(aborted) < 70 {
		t.Fatalf("only %d records after the shipped transactions", len(aborted))
	}
	produceTxn(t, ctx, src.cluster.Addr, groupTxnID, aborted, false, true)

	r := walreplay(t, ctx, "publish", "--archive", f.url, "--brokers", src.cluster.Addr, "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("publish: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	if want := fmt.Sprintf(" %d records produced", len(tail)); !strings.Contains(r.stdout, want) {
		t.Fatalf("publish: %q, want%s", r.stdout, want)
	}
	exactRecords(t, all, committedRecords(t, ctx, src.cluster.Addr))

	// A committed transaction of the group's producer at the end now, and
	// a second publish: nothing to add.
	r = walreplay(t, ctx, "publish", "--archive", f.url, "--brokers", src.cluster.Addr, "--timeout", "60s")
	if r.code != 0 || !strings.Contains(r.stdout, " 0 records produced") {
		t.Fatalf("second publish: exit %d: %v\n%s%s", r.code, r.err, r.stdout, r.stderr)
	}
	exactRecords(t, all, committedRecords(t, ctx, src.cluster.Addr))
}

// TestPublishRefusesALiveGroupsTopic: while a transactional producer (an
// HA group's leader) has a transaction open in the ordered topic, publish
// refuses it (exit 1, naming the topic and the open transaction) and
// produces nothing; once the transaction is committed, publish continues
// after it.
func TestPublishRefusesALiveGroupsTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // only catches a stall
	defer cancel()
	src := newTxnSource(t, ctx, 20, 40)
	f := newFixture(t, src.txns, 20)
	tail := orderedRecords(src.txns[src.shipped:])
	next := orderedRecords(src.txns[src.shipped : src.shipped+1])
	leader := produceTxn(t, ctx, src.cluster.Addr, groupTxnID, next, false, false)
	defer leader.Close()

	r := walreplay(t, ctx, "publish", "--archive", f.url, "--brokers", src.cluster.Addr, "--timeout", "60s")
	if r.code != exitFailure || !errors.Is(r.err, kafkasink.ErrTopicInUse) ||
		!strings.Contains(r.err.Error(), "walship.ordered partition 0 has a transaction open") {
		t.Fatalf("publish into a live group's topic: exit %d: %v, want exit 1 and ErrTopicInUse naming the topic", r.code, r.err)
	}
	if err := leader.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	r = walreplay(t, ctx, "publish", "--archive", f.url, "--brokers", src.cluster.Addr, "--timeout", "60s")
	if want := fmt.Sprintf(" %d records produced", len(tail)-len(next)); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("publish after the commit: exit %d: %v: %q, want%s", r.code, r.err, r.stdout, want)
	}
	exactRecords(t, orderedRecords(src.txns), committedRecords(t, ctx, src.cluster.Addr))
}
