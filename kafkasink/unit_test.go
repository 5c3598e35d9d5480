package kafkasink

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

func TestWatermarkOutOfOrderAcks(t *testing.T) {
	w := newWatermark(10)
	// LSNs 11..20; 13 has two records (delete + tombstone), 15 none.
	for lsn := uint64(11); lsn <= 20; lsn++ {
		n := 1
		switch lsn {
		case 13:
			n = 2
		case 15:
			n = 0
		}
		w.issue(lsn, n, true, time.Unix(int64(lsn), 0))
	}
	pos := func() uint64 { p, _, _, _ := w.position(); return p }
	steps := []struct {
		ack  uint64
		want uint64
	}{
		{12, 10}, {14, 10}, {11, 12}, {13, 12}, {16, 12}, {13, 16}, {20, 16}, {18, 16}, {17, 18}, {19, 20},
	}
	for _, s := range steps {
		w.ack(s.ack)
		if got := pos(); got != s.want {
			t.Fatalf("after ack of %d: watermark %d, want %d", s.ack, got, s.want)
		}
	}
	if _, pt, n, _ := w.position(); n != 0 || !pt.Equal(time.Unix(20, 0)) {
		t.Fatalf("in flight %d, commit time %v", n, pt)
	}
	// Re-sent LSNs below the watermark never lower it.
	w.issue(21, 1, true, time.Time{})
	w2 := newWatermark(25)
	w2.issue(21, 1, true, time.Time{})
	w2.ack(21)
	if p, _, _, _ := w2.position(); p != 25 {
		t.Fatalf("watermark lowered to %d", p)
	}
}

// TestWatermarkStopsOnCommits: with transactions 1-3 and 4-6, the
// watermark moves from 0 to 3 to 6, never to an LSN inside a transaction,
// however far the acknowledgements inside it have got.
func TestWatermarkStopsOnCommits(t *testing.T) {
	w := newWatermark(0)
	for lsn := uint64(1); lsn <= 6; lsn++ {
		w.issue(lsn, 1, lsn == 3 || lsn == 6, time.Time{})
	}
	for _, s := range []struct{ ack, want uint64 }{{1, 0}, {2, 0}, {4, 0}, {5, 0}, {3, 3}, {6, 6}} {
		w.ack(s.ack)
		if p, _, _, _ := w.position(); p != s.want {
			t.Fatalf("after ack of %d: watermark %d, want %d", s.ack, p, s.want)
		}
	}
}

func TestWatermarkRandomOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		w := newWatermark(0)
		n := 1 + rng.IntN(100)
		var acks []uint64
		for lsn := uint64(1); lsn <= uint64(n); lsn++ {
			k := rng.IntN(3)
			w.issue(lsn, k, true, time.Time{})
			for range k {
				acks = append(acks, lsn)
			}
		}
		rng.Shuffle(len(acks), func(i, j int) { acks[i], acks[j] = acks[j], acks[i] })
		left := map[uint64]int{}
		for _, a := range acks {
			left[a]++
		}
		for _, a := range acks {
			w.ack(a)
			left[a]--
			p, _, _, _ := w.position()
			// p is the largest LSN such that everything <= p has no acks left.
			want := uint64(0)
			for lsn := uint64(1); lsn <= uint64(n) && left[lsn] == 0; lsn++ {
				want = lsn
			}
			if p != want {
				t.Fatalf("iteration %d: watermark %d, want %d", iter, p, want)
			}
		}
	}
}

// TestEncodeDecodeEveryKind encodes changes with every value kind and
// decodes them back Equal.
func TestEncodeDecodeEveryKind(t *testing.T) {
	wl := kafkatest.NewWorkload(7)
	enc := &Encoder{Database: "db", Name: "n", Lineage: "L"}
	lsn := uint64(1)
	var kinds int
	for range 500 {
		ct := wl.Next()
		txn := wal.Txn{FirstLSN: lsn, CommitLSN: lsn + uint64(len(ct.Changes)) - 1, CommitTime: time.Unix(1700000000, 123456789).UTC(), Txn: ct}
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
			r := &kgo.Record{Key: key, Value: enc.AppendValue(nil, position{txn: &txn, index: i, tableOrdinal: 1}),
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
	mtxn := wal.Txn{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{mc}}}
	mr := &kgo.Record{Value: enc.AppendValue(nil, position{txn: &mtxn}), Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
	if ev, err := Decode(mr); err != nil || !ev.Change.Equal(&mc) {
		t.Fatalf("mixed arrays: %v\n got %+v\nwant %+v\nvalue %s", err, ev.Change, mc, mr.Value)
	}

	// An empty row is not an absent one.
	c := change.Change{Table: kafkatest.Accounts, Op: change.Insert, After: change.Row{}}
	txn := wal.Txn{FirstLSN: 1, CommitLSN: 1, Txn: change.Txn{Changes: []change.Change{c}}}
	r := &kgo.Record{Value: enc.AppendValue(nil, position{txn: &txn}), Headers: []kgo.RecordHeader{{Key: HeaderLSN, Value: []byte("1")}, {Key: HeaderCommitLSN, Value: []byte("1")}, {Key: HeaderTxnFirstLSN, Value: []byte("1")}}}
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
	var txns []wal.Txn
	prev := wal.Txn{FirstLSN: 1, CommitLSN: 3, CommitTime: base, Txn: wl.Next()}
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
			p := position{txn: &txns[i], index: j, tableOrdinal: j + 1}
			fresh := &Encoder{Database: "db", Name: "n", Lineage: reused.Lineage, Now: now}
			got, want := reused.AppendValue(nil, p), fresh.AppendValue(nil, p)
			if string(got) != string(want) {
				t.Fatalf("txn %d change %d:\nreused %s\nfresh  %s", i, j, got, want)
			}
		}
	}
}
