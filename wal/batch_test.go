package wal

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

func testTxn(id int64) *change.Txn {
	return &change.Txn{Changes: []change.Change{{Op: change.Insert, Table: change.Table{Schema: "public", Name: "t"},
		After: change.Row{{Name: "id", Value: change.IntValue(id)}}}}}
}

// TestBatchAllOrNothing: a batch's transactions get consecutive LSNs in
// order with their own commit records; a batch refused by a closed log
// appends none of them.
func TestBatchAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	w, _, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := w.NewBatch()
	for i := range 5 {
		if err := b.Add(testTxn(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AppendBatchAsync(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var lasts []uint64
	b.Tickets(func(tk Ticket) { lasts = append(lasts, tk.Last) })
	if len(lasts) != 5 || lasts[0] != 1 || lasts[4] != 5 || b.Last() != 5 {
		t.Fatalf("tickets end at %v, last %d; want 1..5", lasts, b.Last())
	}
	late := w.NewBatch()
	late.Add(testTxn(9))
	late.Add(testTxn(10))
	w.Close()
	if err := w.AppendBatchAsync(context.Background(), late); err == nil {
		t.Fatal("a closed log took a batch")
	}
	w, _, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, _ := w.NewReader(1, false)
	defer r.Close()
	n := 0
	for ; ; n++ {
		tx, err := r.Next(context.Background())
		if err != nil {
			break
		}
		if tx.CommitLSN != uint64(n+1) {
			t.Fatalf("transaction %d ends at LSN %d", n, tx.CommitLSN)
		}
	}
	if n != 5 {
		t.Fatalf("%d transactions in the log, want 5", n)
	}
}

// TestKeysWindow: a key is remembered across a reopen while its request is
// within the window, and forgotten after it.
func TestKeysWindow(t *testing.T) {
	dir := t.TempDir()
	w, _, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := w.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("body"))
	c, err := keys.Claim(ctx, "k", hash, 2)
	if err != nil || c.Replayed || c.Start != 0 {
		t.Fatalf("claim of a new key: %+v, %v", c, err)
	}
	b := w.NewBatch()
	b.Add(testTxn(1))
	b.Add(testTxn(2))
	b.SetMark(c.Mark())
	if err := w.AppendBatchAsync(ctx, b); err != nil {
		t.Fatal(err)
	}
	c.Done(b)
	w.Close()

	w, _, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	keys, err = w.LoadKeys(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := keys.Claim(ctx, "k", hash, 2); err != nil || !c.Replayed {
		t.Fatalf("within the window: %+v, %v; want a replay", c, err)
	}
	if _, err := keys.Claim(ctx, "k", sha256.Sum256([]byte("other")), 2); !errors.Is(err, ErrKeyConflict) {
		t.Fatalf("other body: %v, want ErrKeyConflict", err)
	}
	if lsn, ok := keys.Floor(); !ok || lsn != 1 {
		t.Fatalf("floor %d %v, want 1", lsn, ok)
	}
	keys, err = w.LoadKeys(ctx, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := keys.Claim(ctx, "k", hash, 2); err != nil || c.Replayed {
		t.Fatalf("after the window: %+v, %v; want the key forgotten", c, err)
	}
}
