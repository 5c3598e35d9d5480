package kafkasink

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/kafkawire"
)

// TestTransactionTopic: with TransactionTopic, every transaction gets a
// BEGIN and an END event on <prefix>.transaction, in order, keyed and
// identified as the envelopes' transaction.id, the END counting the row
// changes per table; the data topics are unchanged and the checkpoint
// still reaches the end (the events are acknowledged with their change).
func TestTransactionTopic(t *testing.T) {
	for _, mode := range []string{kafkawire.ModeOrdered, kafkawire.ModeTables} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t)
			e := newEnv(t)
			e.append(kafkatest.NewWorkload(3), 120)
			want := e.walTxns()
			s, err := New(Options{Brokers: []string{c.Addr}, Mode: mode, TopicPrefix: "tx", TransactionTopic: true}, e.w, e.ckpts, "L1")
			if err != nil {
				t.Fatal(err)
			}
			runSink(t, s)
			waitAcked(t, s, want[len(want)-1].CommitLSN, 30*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, "tx.transaction", 2*len(want))
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 2*len(want) {
				t.Fatalf("%d transaction events, want %d", len(recs), 2*len(want))
			}
			type event struct {
				Status          string `json:"status"`
				ID              string `json:"id"`
				EventCount      *int   `json:"event_count"`
				DataCollections []struct {
					DataCollection string `json:"data_collection"`
					EventCount     int    `json:"event_count"`
				} `json:"data_collections"`
				TSMS int64 `json:"ts_ms"`
			}
			for i, txn := range want {
				key := string(kafkawire.AppendTxnKey(nil, &txn))
				counts := map[string]int{}
				total := 0
				for _, ch := range txn.Changes {
					if ch.Op != change.Message {
						counts[ch.Table.Schema+"."+ch.Table.Name]++
						total++
					}
				}
				for j, status := range []string{"BEGIN", "END"} {
					r := recs[2*i+j]
					var ev event
					if err := json.Unmarshal(r.Value, &ev); err != nil {
						t.Fatalf("event %d: %v: %s", 2*i+j, err, r.Value)
					}
					if string(r.Key) != key || `{"id":"`+ev.ID+`"}` != key || ev.Status != status {
						t.Fatalf("txn %d %s: key %s value %s, want key %s", i, status, r.Key, r.Value, key)
					}
					if ev.TSMS != txn.CommitTime.UnixMilli() && ev.TSMS != txn.Header.SourceCommitTime.UnixMilli() {
						t.Errorf("txn %d %s: ts_ms %d", i, status, ev.TSMS)
					}
					if status == "BEGIN" {
						if ev.EventCount != nil || ev.DataCollections != nil {
							t.Errorf("txn %d BEGIN has counts: %s", i, r.Value)
						}
						continue
					}
					got := map[string]int{}
					for _, dc := range ev.DataCollections {
						got[dc.DataCollection] = dc.EventCount
					}
					if ev.EventCount == nil || *ev.EventCount != total || len(got) != len(counts) {
						t.Fatalf("txn %d END %s, want %d events in %v", i, r.Value, total, counts)
					}
					for k, n := range counts {
						if got[k] != n {
							t.Fatalf("txn %d END %s, want %d events in %v", i, r.Value, total, counts)
						}
					}
				}
			}
			if mode == kafkawire.ModeOrdered {
				recs, err := kafkatest.ReadTopic(ctx, []string{c.Addr}, kafkawire.OrderedTopic("tx"), recordCount(want, true))
				if err != nil {
					t.Fatal(err)
				}
				sameTxns(t, rebuild(t, recs), want)
			}
		})
	}
}
