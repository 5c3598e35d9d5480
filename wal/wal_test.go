package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
)

func txnOf(xid uint64, n int) change.Txn {
	t := change.Txn{Header: change.TxHeader{XID: xid}}
	for i := range n {
		id := change.IntValue(int64(xid*100 + uint64(i)))
		t.Changes = append(t.Changes, change.Change{
			Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert,
			Key:   change.Row{{Name: "id", Value: id}},
			After: change.Row{{Name: "id", Value: id}, {Name: "v", Value: change.TextValue(fmt.Sprintf("%0200d", xid))}},
		})
	}
	return t
}

func readTxns(t *testing.T, l *segment.Log, from uint64) []change.Committed {
	t.Helper()
	r, err := newReader(l, from, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []change.Committed
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *tx)
	}
}

func TestAppendReadWholeTransactions(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), SegmentSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var want []change.Txn
	var tickets []uint64
	for x := uint64(1); x <= 60; x++ {
		tx := txnOf(x, int(x%4)+1)
		tk, err := w.Append(ctx, &tx)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, tx)
		tickets = append(tickets, tk.Last)
	}
	got := readTxns(t, w.seg, 1)
	if len(got) != len(want) {
		t.Fatalf("read %d transactions, want %d", len(got), len(want))
	}
	for i := range got {
		if !got[i].Txn.Equal(&want[i]) || got[i].CommitLSN != tickets[i] {
			t.Fatalf("transaction %d differs (commit %d, want %d)", i, got[i].CommitLSN, tickets[i])
		}
	}
	// From inside a transaction: that whole transaction comes first.
	mid := got[10].FirstLSN + 1
	if got[10].CommitLSN < mid {
		mid = got[10].FirstLSN
	}
	if g := readTxns(t, w.seg, mid); g[0].FirstLSN != got[10].FirstLSN || len(g) != len(got)-10 {
		t.Fatalf("from %d: first txn at %d, %d txns", mid, g[0].FirstLSN, len(g))
	}
	// Retention cuts a transaction: readers start at the next whole one.
	segs := w.Segments()
	if len(segs) < 3 {
		t.Fatalf("want rotation, got %d segments", len(segs))
	}
	if _, err := w.RemoveBefore(segs[1].BaseLSN); err != nil {
		t.Fatal(err)
	}
	g := readTxns(t, w.seg, w.FirstLSN())
	if len(g) == 0 || g[0].FirstLSN < w.FirstLSN() || g[len(g)-1].CommitLSN != tickets[len(tickets)-1] {
		t.Fatalf("after retention: %d txns from %d", len(g), g[0].FirstLSN)
	}
}

func TestInvalidTransactionIsRejectedAndNothingWritten(t *testing.T) {
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	bad := change.Txn{Changes: []change.Change{{Table: change.Table{Schema: "public", Name: "t"}, Op: change.Insert}}}
	if _, err := w.Append(context.Background(), &bad); !errors.Is(err, change.ErrInvalid) {
		t.Fatalf("invalid txn: %v", err)
	}
	if w.seg.NextLSN() != 1 {
		t.Fatalf("next LSN %d after a rejected transaction", w.seg.NextLSN())
	}
}

func TestFollowingReaderGetsNewTransactions(t *testing.T) {
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := newReader(w.seg, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan []change.Committed)
	go func() {
		var out []change.Committed
		for len(out) < 5 {
			tx, err := r.Next(ctx)
			if err != nil {
				break
			}
			out = append(out, *tx)
		}
		done <- out
	}()
	for x := uint64(1); x <= 5; x++ {
		tx := txnOf(x, 3)
		if _, err := w.Append(ctx, &tx); err != nil {
			t.Fatal(err)
		}
	}
	got := <-done
	r.Close()
	if len(got) != 5 || got[4].Header.XID != 5 || len(got[4].Changes) != 3 {
		t.Fatalf("follower got %d transactions", len(got))
	}
}
