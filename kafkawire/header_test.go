package kafkawire

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
)

// headerTxn is a transaction of three changes at LSNs 5..7.
func headerTxn() change.Committed {
	wl := kafkatest.NewWorkload(11)
	ct := wl.Next()
	for len(ct.Changes) < 3 {
		ct.Changes = append(ct.Changes, wl.Next().Changes...)
	}
	ct.Changes = ct.Changes[:3]
	return change.Committed{FirstLSN: 5, CommitLSN: 7, CommitTime: time.Unix(1700000000, 9).UTC(), Txn: ct}
}

// TestEncoderEmitsLowercaseTxnFirstLSN: records carry the first LSN of
// their transaction as "walship.txn_first_lsn", the name docs/KAFKA.md
// gives, never as the old "walship.Txn_first_lsn".
func TestEncoderEmitsLowercaseTxnFirstLSN(t *testing.T) {
	if HeaderTxnFirstLSN != "walship.txn_first_lsn" {
		t.Fatalf("HeaderTxnFirstLSN = %q, want walship.txn_first_lsn", HeaderTxnFirstLSN)
	}
	txn := headerTxn()
	enc := &Encoder{Lineage: "L"}
	for i, r := range enc.OrderedRecords(&txn, "p", true) {
		var keys []string
		for _, h := range r.Headers {
			keys = append(keys, h.Key)
			if h.Key == "walship.txn_first_lsn" && string(h.Value) != "5" {
				t.Errorf("record %d: walship.txn_first_lsn = %q, want 5", i, h.Value)
			}
		}
		if got, want := strings.Join(keys[:4], ","), "walship.lsn,walship.commit_lsn,walship.txn_first_lsn,walship.lineage"; got != want {
			t.Errorf("record %d: header keys %s, want %s", i, got, want)
		}
		for _, k := range keys {
			if k == "walship.Txn_first_lsn" {
				t.Errorf("record %d carries the old spelling walship.Txn_first_lsn", i)
			}
		}
	}
}

// TestDecodeReadsTheOldTxnFirstLSNSpelling: a record written by an
// earlier build, whose first-LSN header is "walship.Txn_first_lsn",
// decodes (and assembles) exactly as one with the new spelling.
func TestDecodeReadsTheOldTxnFirstLSNSpelling(t *testing.T) {
	txn := headerTxn()
	enc := &Encoder{Lineage: "L"}
	asm := NewAssembler(4)
	var got *change.Committed
	for i, r := range enc.OrderedRecords(&txn, "p", false) {
		renamed := 0
		for j := range r.Headers {
			if r.Headers[j].Key == "walship.txn_first_lsn" {
				r.Headers[j].Key = "walship.Txn_first_lsn"
				renamed++
			}
		}
		if renamed != 1 {
			t.Fatalf("record %d: %d walship.txn_first_lsn headers, want 1", i, renamed)
		}
		lsn, commit, first, lineage, err := DecodeHeaders(r)
		if err != nil || lsn != 5+uint64(i) || commit != 7 || first != 5 || lineage != "L" {
			t.Fatalf("record %d: DecodeHeaders = %d %d %d %q %v, want %d 7 5 L", i, lsn, commit, first, lineage, err, 5+i)
		}
		ev, err := Decode(r)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if ev.FirstLSN != 5 || !ev.Change.Equal(&txn.Changes[i]) {
			t.Fatalf("record %d: decoded first LSN %d, change %+v; want 5, %+v", i, ev.FirstLSN, ev.Change, txn.Changes[i])
		}
		tx, complete, err := asm.Add(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if complete {
			got = &tx
		}
	}
	if got == nil || got.FirstLSN != 5 || got.CommitLSN != 7 || !got.Txn.Equal(&txn.Txn) {
		t.Fatalf("assembled %+v, want the transaction 5..7", got)
	}

	// Neither spelling: the error names the header by its current name.
	r := &kgo.Record{Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}}}
	if _, _, _, _, err := DecodeHeaders(r); err == nil || !strings.Contains(err.Error(), "walship.txn_first_lsn missing") {
		t.Fatalf("no first-LSN header: %v, want an error naming walship.txn_first_lsn", err)
	}
}
