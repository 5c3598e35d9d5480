package kafkasink

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/walship/walship/change"
	"github.com/walship/walship/kafkasink/kafkatest"
	"github.com/walship/walship/wal"
)

// txnReader must read exactly what wal.Reader reads, from any position,
// aborted streamed transactions skipped, across many arrays of changes
// (transactions of up to 300 changes, more than one array).
func TestTxnReaderMatchesWALReader(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	wl := kafkatest.NewWorkload(11)
	for i := range 400 {
		switch {
		case i%50 == 7: // a large transaction
			txn := wl.Next()
			for len(txn.Changes) < 300 {
				txn.Changes = append(txn.Changes, wl.Next().Changes...)
			}
			if _, err := e.w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
		case i%40 == 3: // a streamed transaction aborted midway
			txn := wl.Next()
			k := 0
			_, err := e.w.AppendStream(ctx, txn.Header, func() (*change.Change, error) {
				if k == 2 {
					return nil, errors.New("stop")
				}
				k++
				return &txn.Changes[0], nil
			})
			if err == nil {
				t.Fatal("aborted stream: no error")
			}
		default:
			txn := wl.Next()
			if _, err := e.w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
		}
	}
	all := e.walTxns()
	last := all[len(all)-1].CommitLSN
	for _, from := range []uint64{1, 2, 3, all[7].FirstLSN + 5, all[100].FirstLSN, all[100].CommitLSN, last, last + 1} {
		wr, err := wal.NewReader(e.w.Log, from, false)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := newTxnReader(e.w.Log, from, false)
		if err != nil {
			t.Fatal(err)
		}
		var got []*wal.Txn
		for n := 0; ; n++ {
			want, werr := wr.NextTxn(ctx)
			g, gerr := tr.next(ctx)
			if errors.Is(werr, io.EOF) || errors.Is(gerr, io.EOF) {
				if !errors.Is(werr, io.EOF) || !errors.Is(gerr, io.EOF) {
					t.Fatalf("from %d, txn %d: wal.Reader %v, txnReader %v", from, n, werr, gerr)
				}
				break
			}
			if werr != nil || gerr != nil {
				t.Fatalf("from %d: %v / %v", from, werr, gerr)
			}
			sameTxn(t, from, g, &want)
			got = append(got, g)
		}
		// Earlier transactions are never written to again.
		wr2, _ := wal.NewReader(e.w.Log, from, false)
		for _, g := range got {
			want, _ := wr2.NextTxn(ctx)
			sameTxn(t, from, g, &want)
		}
		wr.Close()
		wr2.Close()
		tr.Close()
	}
}

func sameTxn(t *testing.T, from uint64, g, w *wal.Txn) {
	t.Helper()
	if g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.CommitTime.Equal(w.CommitTime) ||
		!g.Header.Equal(w.Header) || len(g.Changes) != len(w.Changes) {
		t.Fatalf("from %d: got txn %d-%d (%d changes), want %d-%d (%d changes)", from, g.FirstLSN, g.CommitLSN, len(g.Changes), w.FirstLSN, w.CommitLSN, len(w.Changes))
	}
	for i := range g.Changes {
		if !g.Changes[i].Equal(&w.Changes[i]) {
			t.Fatalf("from %d: txn %d change %d differs", from, g.FirstLSN, i)
		}
	}
}
