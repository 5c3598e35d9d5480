package kafkawire

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
)

func fuzzRecord(value []byte) *kgo.Record { return fuzzRecordFirst(value, HeaderTxnFirstLSN) }

// fuzzRecordFirst is fuzzRecord with the first-LSN header named firstKey.
func fuzzRecordFirst(value []byte, firstKey string) *kgo.Record {
	return &kgo.Record{Value: value, Headers: []kgo.RecordHeader{
		{Key: HeaderLSN, Value: []byte("2")}, {Key: HeaderCommitLSN, Value: []byte("3")}, {Key: firstKey, Value: []byte("1")}}}
}

// FuzzDecode: Decode never panics, decodes a record whose first-LSN header
// has the old spelling exactly as one with the new, and what it accepts
// (and what passes change validation) re-encodes to a record that decodes
// Equal.
func FuzzDecode(f *testing.F) {
	wl := kafkatest.NewWorkload(9)
	enc := &Encoder{Lineage: "L", Now: func() time.Time { return time.Unix(0, 0) }}
	for range 40 {
		ct := wl.Next()
		for len(ct.Changes) < 3 {
			ct.Changes = append(ct.Changes, wl.Next().Changes...)
		}
		txn := change.Committed{FirstLSN: 1, CommitLSN: uint64(len(ct.Changes)), CommitTime: time.Unix(5, 6).UTC(), Txn: ct}
		f.Add(enc.AppendValue(nil, Position{Txn: &txn, Index: 1, TableOrdinal: 1}))
	}
	schemas := &Encoder{Lineage: "L", NowMS: 1, Format: FormatJSONSchemas}
	for _, ct := range kafkatest.EveryTypeTxns(8) {
		txn := change.Committed{FirstLSN: 1, CommitLSN: uint64(len(ct.Changes)), CommitTime: time.Unix(5, 6).UTC(), Txn: ct}
		f.Add(schemas.AppendValue(nil, Position{Txn: &txn, Index: 1, TableOrdinal: 1}))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		ev, err := Decode(fuzzRecord(value))
		old, oldErr := Decode(fuzzRecordFirst(value, headerTxnFirstLSNOld))
		if (err == nil) != (oldErr == nil) || err == nil && (!old.Change.Equal(&ev.Change) || old.FirstLSN != ev.FirstLSN) {
			t.Fatalf("old header spelling: %v, %+v; new: %v, %+v", oldErr, old, err, ev)
		}
		if err != nil {
			return
		}
		c := ev.Change
		txn := change.Committed{FirstLSN: 1, CommitLSN: 3, CommitTime: ev.CommitTime, Txn: change.Txn{Header: ev.Header, Changes: []change.Change{c, c, c}}}
		if txn.Validate() != nil || ev.CommitTime.Year() < 0 || ev.CommitTime.Year() > 9999 {
			return
		}
		again, err := Decode(fuzzRecord(enc.AppendValue(nil, Position{Txn: &txn, Index: 1, TableOrdinal: 1})))
		if err != nil || !again.Change.Equal(&c) || !again.Header.Equal(ev.Header) {
			t.Fatalf("re-encoded record: %v\n got %+v\nwant %+v", err, again.Change, c)
		}
	})
}

// FuzzDecodeMarker: Decode never panics on any headers and null or
// non-null value, and what it takes for an aborted-range marker has a null
// value, lsn == txn_first_lsn < commit_lsn, and is no tombstone.
func FuzzDecodeMarker(f *testing.F) {
	f.Add("3", "9", "3", "true", true, []byte(nil))
	f.Add("3", "3", "3", "true", true, []byte(nil))
	f.Add("4", "9", "3", "true", false, []byte(`{}`))
	f.Add("1", "2", "1", "false", true, []byte(nil))
	f.Fuzz(func(t *testing.T, lsn, commit, first, aborted string, null bool, value []byte) {
		r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte(lsn)}, {Key: HeaderCommitLSN, Value: []byte(commit)},
			{Key: HeaderTxnFirstLSN, Value: []byte(first)}, {Key: HeaderAborted, Value: []byte(aborted)}}}
		if !null {
			r.Value = append([]byte{}, value...)
		}
		ev, err := Decode(r)
		if err != nil || !ev.Aborted {
			return
		}
		if r.Value != nil || ev.Tombstone || ev.LSN != ev.FirstLSN || ev.CommitLSN <= ev.LSN || !IsAbortedMarker(r) {
			t.Fatalf("accepted as a marker: %+v (value %q)", ev, r.Value)
		}
	})
}
