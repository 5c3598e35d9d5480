package ha

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/kafkasink/kafkatest"
)

func leaseTestKafka(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	c, err := kafkatest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func leaseTestTopic(t *testing.T, c *kafkatest.Cluster, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
}

func leaseTestProducer(t *testing.T, c *kafkatest.Cluster, id, topic string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// leaseTestFenced reports whether err is how a fenced producer's request fails.
// Kafka answers PRODUCER_FENCED or INVALID_PRODUCER_EPOCH; kfake answers an
// EndTxn (v5) whose epoch is exactly one below the current one, with no
// transaction open, INVALID_TXN_STATE: it takes the commit for a retry of
// an EndTxn that already completed as an abort, which is what the fence did.
func leaseTestFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidTxnState)
}

// leaseTestCommitted reads partition 0 of topic read_committed up to its
// last stable offset and returns its data records.
func leaseTestCommitted(t *testing.T, c *kafkatest.Cluster, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	lso, err := lastStableOffset(ctx, cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []*kgo.Record
	for next := int64(0); next < lso; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: at offset %d of %d: %v", topic, next, lso, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}

func leaseTestValues(t *testing.T, c *kafkatest.Cluster, topic string) []string {
	t.Helper()
	var out []string
	for _, r := range leaseTestCommitted(t, c, topic) {
		out = append(out, string(r.Value))
	}
	return out
}

// TestKfakeFencesOldTransactionalProducer is the experiment the lease
// relies on: a second InitProducerID for a transactional id fences the
// first producer — its commit and its next produce fail — and the record it
// had produced in its open transaction is aborted, invisible to a
// read_committed reader.
func TestKfakeFencesOldTransactionalProducer(t *testing.T) {
	c := leaseTestKafka(t)
	leaseTestTopic(t, c, "fence.exp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	old := leaseTestProducer(t, c, "fence.exp", "fence.exp")
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, kgo.StringRecord("committed")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := old.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	_, oldEpoch, err := old.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := old.ProduceSync(ctx, kgo.StringRecord("open")).FirstErr(); err != nil {
		t.Fatal(err)
	}

	newer := leaseTestProducer(t, c, "fence.exp", "fence.exp")
	_, newEpoch, err := newer.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newEpoch <= oldEpoch {
		t.Fatalf("second InitProducerID gave epoch %d, want above %d", newEpoch, oldEpoch)
	}

	err = old.EndTransaction(ctx, kgo.TryCommit)
	t.Logf("commit of the fenced producer: %v", err)
	if !leaseTestFenced(err) {
		t.Fatalf("old producer's commit after the second InitProducerID: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	// kgo keeps a transaction whose commit failed open until it is aborted
	// (kfake accepts the abort, as a retry of the abort the fence did);
	// the producer id has then failed for good, so nothing more is
	// produced: the next transaction cannot even begin.
	t.Logf("abort of the fenced producer: %v", old.EndTransaction(ctx, kgo.TryAbort))
	err = old.BeginTransaction()
	if err == nil {
		err = old.ProduceSync(ctx, kgo.StringRecord("after")).FirstErr()
	}
	t.Logf("next transaction of the fenced producer: %v", err)
	if err == nil {
		t.Fatal("the fenced producer produced again")
	}

	got := leaseTestValues(t, c, "fence.exp")
	if len(got) != 1 || got[0] != "committed" {
		t.Fatalf("read_committed sees %q, want only [committed]", got)
	}
}

// TestFenceFailsTheProducerWithTheSameID: Fence (InitProducerID only) makes
// a transactional producer with the same id fail on its next commit and its
// next produce, and what it had produced stays invisible.
func TestFenceFailsTheProducerWithTheSameID(t *testing.T) {
	c := leaseTestKafka(t)
	leaseTestTopic(t, c, "fence.data")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	p := leaseTestProducer(t, c, "fence.data", "fence.data")
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, kgo.StringRecord("zombie")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.Addr)}, "fence.data"); err != nil {
		t.Fatal(err)
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); !leaseTestFenced(err) {
		t.Fatalf("commit after Fence: %v, want a fencing error", err)
	}

	q := leaseTestProducer(t, c, "fence.data", "fence.data")
	if err := q.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := q.ProduceSync(ctx, kgo.StringRecord("zombie2")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.Addr)}, "fence.data"); err != nil {
		t.Fatal(err)
	}
	if err := q.ProduceSync(ctx, kgo.StringRecord("zombie3")).FirstErr(); !leaseTestFenced(err) {
		t.Fatalf("produce after Fence: %v, want a fencing error", err)
	}
	if got := leaseTestValues(t, c, "fence.data"); len(got) != 0 {
		t.Fatalf("read_committed sees %q after fencing, want nothing", got)
	}

	if err := Fence(ctx, []kgo.Opt{kgo.SeedBrokers(c.Addr)}, ""); err == nil {
		t.Fatal("Fence with an empty transactional id succeeded")
	}
}
