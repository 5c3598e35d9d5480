package wal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/walship/walship/change"
)

// TestCommitTimeAfter: the commit time of the first committed transaction
// after an LSN, skipping one aborted midway; none past the end.
func TestCommitTimeAfter(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, ok, err := w.CommitTimeAfter(0); ok || err != nil {
		t.Fatalf("empty log: ok %v, err %v", ok, err)
	}
	t1 := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	txn := txnOf(1, 3)
	txn.Header.SourceCommitTime = t1
	tk1, err := w.Append(ctx, &txn)
	if err != nil {
		t.Fatal(err)
	}
	// Aborted midway: its records take LSNs but it has no commit.
	n := 0
	_, err = w.AppendStream(ctx, txnOf(2, 1).Header, func() (*change.Change, error) {
		if n++; n > 2 {
			return nil, errors.New("source gone")
		}
		c := txnOf(2, 1).Changes[0]
		return &c, nil
	})
	if err == nil {
		t.Fatal("AppendStream of a failing stream succeeded")
	}
	t3 := time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC)
	txn = txnOf(3, 2)
	txn.Header.SourceCommitTime = t3
	tk3, err := w.Append(ctx, &txn)
	if err != nil {
		t.Fatal(err)
	}
	t1, t3 = tk1.Time(), tk3.Time() // as recorded
	for _, c := range []struct {
		after uint64
		want  time.Time
		ok    bool
	}{{0, t1, true}, {1, t1, true}, {tk1.Last, t3, true}, {tk3.Last - 1, t3, true}, {tk3.Last, time.Time{}, false}} {
		got, ok, err := w.CommitTimeAfter(c.after)
		if err != nil || ok != c.ok || !got.Equal(c.want) {
			t.Errorf("CommitTimeAfter(%d) = %v, %v, %v; want %v, %v", c.after, got, ok, err, c.want, c.ok)
		}
	}
}
