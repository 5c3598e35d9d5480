package kafkawire

import (
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
)

func markerRecord(first, last uint64) *kgo.Record {
	return &kgo.Record{Timestamp: time.UnixMilli(1700000000123),
		Headers: AbortedMarkerHeaders(nil, []byte(strconv.FormatUint(first, 10)), []byte(strconv.FormatUint(last, 10)), []byte("L"))}
}

// TestAbortedMarkerDecodes: the marker (OrderedRecords of an aborted
// range) has no key and a null value, and decodes as an aborted range
// with its LSNs and its timestamp as time, not as a tombstone; a marker
// with a value is an ordinary record, and one with impossible LSNs is
// malformed.
func TestAbortedMarkerDecodes(t *testing.T) {
	enc := &Encoder{Lineage: "L"}
	recs := enc.OrderedRecords(&change.Committed{FirstLSN: 10, CommitLSN: 52, CommitTime: time.UnixMilli(1700000000123), Aborted: true}, "p", true)
	if len(recs) != 1 || recs[0].Key != nil || recs[0].Value != nil || recs[0].Topic != OrderedTopic("p") || !IsAbortedMarker(recs[0]) {
		t.Fatalf("the marker: %+v", recs)
	}
	ev, err := Decode(recs[0])
	if err != nil || !ev.Aborted || ev.Tombstone || ev.LSN != 10 || ev.FirstLSN != 10 || ev.CommitLSN != 52 || ev.Lineage != "L" ||
		!ev.CommitTime.Equal(time.UnixMilli(1700000000123)) {
		t.Fatalf("decoded marker: %+v, %v", ev, err)
	}
	tomb := &kgo.Record{Headers: recs[0].Headers[:4]}
	if ev, err := Decode(tomb); err != nil || !ev.Tombstone || ev.Aborted || IsAbortedMarker(tomb) {
		t.Fatalf("a null value without the header: %+v, %v; want a tombstone", ev, err)
	}
	withValue := &kgo.Record{Headers: recs[0].Headers, Value: []byte(`{}`)}
	if IsAbortedMarker(withValue) {
		t.Fatal("a record with a value is no marker")
	}
	for name, r := range map[string]*kgo.Record{
		"one LSN": markerRecord(7, 7),
		"lsn after the first": {Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("8")}, {Key: HeaderCommitLSN, Value: []byte("9")},
			{Key: HeaderTxnFirstLSN, Value: []byte("7")}, {Key: HeaderAborted, Value: []byte("true")}}},
	} {
		if _, err := Decode(r); !errorsIs(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// TestAssemblerAbortedRange: a marker completes its whole range as an
// aborted Committed with no changes (once: a duplicate is skipped), so the
// transaction after it is no gap; a marker past a missing LSN is a gap.
func TestAssemblerAbortedRange(t *testing.T) {
	ev := func(lsn, first, commit uint64) *Event {
		return &Event{LSN: lsn, FirstLSN: first, CommitLSN: commit, Change: change.Change{Op: change.Truncate, Table: kafkatest.Odd}}
	}
	marker := func(first, last uint64) *Event {
		e, err := Decode(markerRecord(first, last))
		if err != nil {
			t.Fatal(err)
		}
		return &e
	}
	// A = 1..2, aborted 3..9, B = 10..11; the sink restarted after
	// sending A, the marker and 10.
	seq := []*Event{ev(1, 1, 2), ev(2, 1, 2), marker(3, 9), ev(10, 10, 11), ev(1, 1, 2), ev(2, 1, 2), marker(3, 9), ev(10, 10, 11), ev(11, 10, 11)}
	a := NewAssembler(0)
	var got []string
	for _, e := range seq {
		txn, ok, err := a.Add(e)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, strconv.FormatUint(txn.FirstLSN, 10)+"-"+strconv.FormatUint(txn.CommitLSN, 10)+
				map[bool]string{true: " aborted", false: ""}[txn.Aborted]+" "+strconv.Itoa(len(txn.Changes)))
		}
	}
	if want := []string{"1-2 2", "3-9 aborted 0", "10-11 2"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("completed %q, want %q", got, want)
	}
	if a.Done() != 11 {
		t.Fatalf("done %d, want 11", a.Done())
	}
	if _, _, err := a.Add(marker(13, 20)); !errorsIs(err, ErrGap) {
		t.Fatalf("a marker after a missing LSN: %v, want ErrGap", err)
	}
}
