package kafkasink

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
)

// TestPublisherEndsOfAnHAGroupsTopics: a Publisher finds that an ordered
// topic holding only an aborted transaction (its records and marker) holds
// nothing, without waiting on the marker, and does not take the group's
// lease topic "<prefix>.ha" for a table's topic.
func TestPublisherEndsOfAnHAGroupsTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only catches a stall
	defer cancel()
	c := startCluster(t)
	wl := kafkatest.NewWorkload(5)
	txn := change.Committed{FirstLSN: 1, Txn: wl.Next(), CommitTime: time.Unix(1700000000, 0).UTC()}
	txn.CommitLSN = uint64(len(txn.Changes))
	recs := (&kafkawire.Encoder{Lineage: "L"}).OrderedRecords(&txn, "g", true)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addr), kgo.TransactionalID("g.ordered"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, topic := range []string{"g.ha", "g.ordered"} {
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	// A lease renewal as the group's leader writes it: no walship headers.
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "g.ha", Key: []byte("lease"), Value: []byte(`{"member":"a","lease_ms":6000}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}

	for _, modes := range [][]string{{kafkawire.ModeOrdered}, {kafkawire.ModeOrdered, kafkawire.ModeTables}} {
		p, err := NewPublisher(ctx, PublishOptions{Kafka: Options{Brokers: []string{c.Addr}, TopicPrefix: "g"}, Modes: modes, Lineage: "L"})
		if err != nil {
			t.Fatalf("modes %v: %v", modes, err)
		}
		ends := p.Ends()
		p.Close()
		if e := ends["g.ordered"]; len(e) != 1 || e[0] != nil {
			t.Fatalf("modes %v: the ordered topic ends at %+v, want empty (only an aborted transaction)", modes, e)
		}
		if _, ok := ends["g.ha"]; ok {
			t.Fatalf("modes %v: the lease topic is read as a table's topic", modes)
		}
	}
}
