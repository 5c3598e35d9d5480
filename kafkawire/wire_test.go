package kafkawire

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/walerr"
)

// TestEncodeDecodeEveryKind encodes changes with every value kind and
// decodes them back Equal.
func TestEncodeDecodeEveryKind(t *testing.T) {
	wl := kafkatest.NewWorkload(7)
	enc := &Encoder{Database: "db", Name: "n", Lineage: "L"}
	lsn := uint64(1)
	var kinds int
	for range 500 {
		ct := wl.Next()
		txn := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(ct.Changes)) - 1, CommitTime: time.Unix(1700000000, 123456789).UTC(), Txn: ct}
		lsn = txn.CommitLSN + 1
		for i := range txn.Changes {
			c := &txn.Changes[i]
			if c.Table == kafkatest.Kinds {
				kinds++
			}
			key, ok := enc.AppendKey(nil, c)
			if !ok {
				key = nil
			}
			r := &kgo.Record{Key: key, Value: enc.AppendValue(nil, Position{Txn: &txn, Index: i, TableOrdinal: 1}),
				Headers: []kgo.RecordHeader{
					{Key: HeaderLSN, Value: []byte(itoa(txn.FirstLSN + uint64(i)))},
					{Key: HeaderCommitLSN, Value: []byte(itoa(txn.CommitLSN))},
					{Key: HeaderTxnFirstLSN, Value: []byte(itoa(txn.FirstLSN))},
				}}
			ev, err := Decode(r)
			if err != nil {
				t.Fatalf("%v\nvalue %s", err, r.Value)
			}
			if !ev.Change.Equal(c) || !ev.Header.Equal(txn.Header) || !ev.CommitTime.Equal(txn.CommitTime) {
				t.Fatalf("round trip:\n got %+v %+v\nwant %+v %+v\nvalue %s", ev.Change, ev.Header, *c, txn.Header, r.Value)
			}
		}
	}
	if kinds == 0 {
		t.Fatal("workload has no public.kinds changes")
	}
	// Arrays of mixed kinds, nested.
	num, _ := change.NumericValue("1.10")
	ts, _ := change.TimestampValue(time.Date(1, 2, 3, 4, 5, 6, 7, time.UTC))
	js, _ := change.JSONValue([]byte(`[1,{"$type":"bytes"}]`))
	mixed := change.ArrayValue(change.IntValue(1), change.NullValue(), change.TextValue("x"), num, change.BytesValue([]byte("hi")),
		change.ArrayValue(change.FloatValue(2.25), ts, change.ArrayValue()), js, change.UnknownValue("tsvector", "'a':1"), change.BoolValue(true))
	mc := change.Change{Table: kafkatest.Kinds, Op: change.Insert, After: change.Row{{Name: "m", Value: mixed}, {Name: "plain", Value: change.ArrayValue(change.IntValue(1), change.TextValue("y"))}}}
	mtxn := change.Committed{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{mc}}}
	mr := &kgo.Record{Value: enc.AppendValue(nil, Position{Txn: &mtxn}), Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
	if ev, err := Decode(mr); err != nil || !ev.Change.Equal(&mc) {
		t.Fatalf("mixed arrays: %v\n got %+v\nwant %+v\nvalue %s", err, ev.Change, mc, mr.Value)
	}

	// An empty row is not an absent one.
	c := change.Change{Table: kafkatest.Accounts, Op: change.Insert, After: change.Row{}}
	txn := change.Committed{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{c}}}
	r := &kgo.Record{Value: enc.AppendValue(nil, Position{Txn: &txn}), Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
	ev, err := Decode(r)
	if err != nil || ev.Change.After == nil || len(ev.Change.After) != 0 || ev.Change.Key != nil {
		t.Fatalf("empty row: %+v %v", ev.Change, err)
	}
}

func itoa(v uint64) string { return string(appendUint(nil, v)) }

func appendUint(dst []byte, v uint64) []byte {
	if v >= 10 {
		dst = appendUint(dst, v/10)
	}
	return append(dst, byte('0'+v%10))
}

func TestDecodeRejectsMalformed(t *testing.T) {
	hdr := func(l, c, f string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte(l)}, {Key: HeaderCommitLSN, Value: []byte(c)}, {Key: HeaderTxnFirstLSN, Value: []byte(f)}}
	}
	for name, r := range map[string]*kgo.Record{
		"no headers":      {Value: []byte(`{}`)},
		"bad lsn":         {Headers: hdr("x", "1", "1"), Value: []byte(`{}`)},
		"lsn past commit": {Headers: hdr("3", "2", "1"), Value: []byte(`{}`)},
		"not json":        {Headers: hdr("1", "1", "1"), Value: []byte(`{`)},
		"no walship":      {Headers: hdr("1", "1", "1"), Value: []byte(`{"op":"c"}`)},
		"bad kind":        {Headers: hdr("1", "1", "1"), Value: []byte(`{"op":"c","after":{"a":"x"},"source":{"schema":"s","table":"t"},"walship":{"lsn":1,"commit_lsn":1,"first_lsn":1,"commit_time":"2024-01-01T00:00:00Z","kinds":{"after":{"a":"nope"}}}}`)},
		"bad numeric":     {Headers: hdr("1", "1", "1"), Value: []byte(`{"op":"c","after":{"a":"x"},"source":{"schema":"s","table":"t"},"walship":{"lsn":1,"commit_lsn":1,"first_lsn":1,"commit_time":"2024-01-01T00:00:00Z","kinds":{"after":{"a":"numeric"}}}}`)},
		"object natural":  {Headers: hdr("1", "1", "1"), Value: []byte(`{"op":"c","after":{"a":{}},"source":{"schema":"s","table":"t"},"walship":{"lsn":1,"commit_lsn":1,"first_lsn":1,"commit_time":"2024-01-01T00:00:00Z"}}`)},
		"header mismatch": {Headers: hdr("1", "1", "1"), Value: []byte(`{"op":"c","after":{},"source":{"schema":"s","table":"t"},"walship":{"lsn":2,"commit_lsn":1,"first_lsn":1,"commit_time":"2024-01-01T00:00:00Z"}}`)},
	} {
		if _, err := Decode(r); err == nil {
			t.Errorf("%s: no error", name)
		} else if !errorsIs(err, ErrMalformed) || !errorsIs(err, walerr.ErrCorruption) {
			t.Errorf("%s: %v does not wrap ErrMalformed and walerr.ErrCorruption", name, err)
		}
	}
}

func TestAssemblerDedupes(t *testing.T) {
	ev := func(lsn, first, commit uint64) *Event {
		return &Event{LSN: lsn, FirstLSN: first, CommitLSN: commit, Change: change.Change{Op: change.Truncate, Table: kafkatest.Odd}}
	}
	// txn A = 1..3, B = 4..5; the sink restarted after sending 1,2 and
	// again after sending all of A and 4.
	seq := []*Event{ev(1, 1, 3), ev(2, 1, 3), ev(1, 1, 3), ev(2, 1, 3), ev(3, 1, 3), {LSN: 3, FirstLSN: 1, CommitLSN: 3, Tombstone: true},
		ev(4, 4, 5), ev(1, 1, 3), ev(2, 1, 3), ev(3, 1, 3), ev(4, 4, 5), ev(5, 4, 5), ev(5, 4, 5)}
	a := NewAssembler(0)
	var got []uint64
	for _, e := range seq {
		txn, ok, err := a.Add(e)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, txn.FirstLSN, txn.CommitLSN, uint64(len(txn.Changes)))
		}
	}
	if want := []uint64{1, 3, 3, 4, 5, 2}; !equalU(got, want) {
		t.Fatalf("completed %v, want %v", got, want)
	}
	if _, _, err := a.Add(ev(7, 7, 7)); !errorsIs(err, ErrGap) {
		t.Fatalf("gap: %v", err)
	}
}

func equalU(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// The encoder keeps the per-transaction parts of the envelope of the last
// transaction: reused over a stream of transactions (consecutive ones
// sharing some fields), it must write exactly what a fresh encoder writes.
func TestEncoderReuseMatchesFresh(t *testing.T) {
	now := func() time.Time { return time.UnixMilli(1700000000123) }
	wl := kafkatest.NewWorkload(7)
	base := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	// Each transaction differs from the one before in exactly one field the
	// per-transaction parts come from.
	var txns []change.Committed
	prev := change.Committed{FirstLSN: 1, CommitLSN: 3, CommitTime: base, Txn: wl.Next()}
	for i := range 400 {
		t := prev
		t.Changes = wl.Next().Changes
		switch i % 8 {
		case 0:
			t.Header.XID++
		case 1:
			t.Header.SourceLSN += 1 << 32
		case 2:
			t.Header.SourceCommitTime = base.Add(time.Duration(i) * time.Microsecond)
		case 3:
			t.Header.Origin = []string{"", "o1", "o\"2"}[i%3]
		case 4:
			t.CommitTime = t.CommitTime.Add(time.Nanosecond)
		case 5:
			t.FirstLSN++
		case 6:
			t.CommitLSN++
		case 7:
			// The same instant in another zone: nothing changes.
			t.CommitTime = t.CommitTime.In(time.FixedZone("x", 3600))
		}
		txns = append(txns, t)
		prev = t
	}
	reused := &Encoder{Database: "db", Name: "n", Lineage: "l1", Now: now}
	for i := range txns {
		if i%50 == 49 {
			reused.Lineage = fmt.Sprintf("l%d", i)
		}
		for j := range txns[i].Changes {
			p := Position{Txn: &txns[i], Index: j, TableOrdinal: j + 1}
			fresh := &Encoder{Database: "db", Name: "n", Lineage: reused.Lineage, Now: now}
			got, want := reused.AppendValue(nil, p), fresh.AppendValue(nil, p)
			if string(got) != string(want) {
				t.Fatalf("txn %d change %d:\nreused %s\nfresh  %s", i, j, got, want)
			}
		}
	}
}
