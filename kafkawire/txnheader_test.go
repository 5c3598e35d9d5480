package kafkawire

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
)

// TestTxnHeadersTravel: a transaction's idempotency mark and in-request
// flag travel in its first record's headers (only there) and the
// Assembler restores them into the transaction's header.
func TestTxnHeadersTravel(t *testing.T) {
	wl := kafkatest.NewWorkload(3)
	enc := &Encoder{Lineage: "L"}
	mark := &change.IdempotencyMark{Key: "req-1", Start: 1, Count: 3, AppendedAt: 1700000000123456789}
	copy(mark.Hash[:], "0123456789abcdef0123456789abcdef")
	asm := NewAssembler(0)
	lsn := uint64(1)
	for i, h := range []change.TxHeader{{XID: 1, Idempotency: mark}, {XID: 2, InRequest: true}, {XID: 3}} {
		ct := wl.Next()
		for len(ct.Changes) < 2 {
			ct.Changes = append(ct.Changes, wl.Next().Changes...)
		}
		ct.Header = h
		txn := change.Committed{FirstLSN: lsn, CommitLSN: lsn + uint64(len(ct.Changes)) - 1, CommitTime: time.Unix(1700000000, int64(i)).UTC(), Txn: ct}
		lsn = txn.CommitLSN + 1
		var got *change.Committed
		for j, r := range enc.OrderedRecords(&txn, "p", false) {
			has := false
			for _, rh := range r.Headers {
				has = has || rh.Key == HeaderIdempotency || rh.Key == HeaderInRequest
			}
			if want := j == 0 && (h.Idempotency != nil || h.InRequest); has != want {
				t.Fatalf("transaction %d record %d: carries the transaction headers: %v, want %v", i, j, has, want)
			}
			ev, err := Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			tx, complete, err := asm.Add(&ev)
			if err != nil {
				t.Fatal(err)
			}
			if complete {
				got = &tx
			}
		}
		if got == nil || !got.Header.Equal(h) || !got.Txn.Equal(&txn.Txn) {
			t.Fatalf("transaction %d assembled with header %+v, want %+v", i, got, h)
		}
	}
}

// TestTxnHeadersMalformed: a malformed idempotency or in-request header is
// an error wrapping ErrMalformed that names it.
func TestTxnHeadersMalformed(t *testing.T) {
	enc := &Encoder{Lineage: "L"}
	txn := change.Committed{FirstLSN: 1, CommitLSN: 1, CommitTime: time.Unix(1, 0).UTC(),
		Txn: change.Txn{Changes: []change.Change{{Op: change.Message, Message: &change.LogicalMessage{Prefix: "p", Content: []byte("c")}}}}}
	base := enc.OrderedRecords(&txn, "p", false)[0]
	for _, c := range []struct{ key, value string }{
		{HeaderIdempotency, `{"key":"k","hash":"00","start":0,"count":1}`},
		{HeaderIdempotency, `{"key":"","hash":"` + strings.Repeat("00", 32) + `","start":0,"count":1}`},
		{HeaderIdempotency, `{"key":"k","hash":"` + strings.Repeat("00", 32) + `","start":1,"count":1}`},
		{HeaderIdempotency, `not json`},
		{HeaderInRequest, `yes`},
	} {
		r := *base
		r.Headers = append(append([]kgo.RecordHeader(nil), base.Headers...), kgo.RecordHeader{Key: c.key, Value: []byte(c.value)})
		_, err := Decode(&r)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.key) {
			t.Fatalf("%s %s: %v, want ErrMalformed naming the header", c.key, c.value, err)
		}
	}
}
