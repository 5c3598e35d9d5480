package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/walship/walship/change"
)

// Next must return whole transactions from any position, aborted
// streamed transactions skipped, across many arrays of changes
// (transactions of up to 300 changes), and never write to a transaction
// it returned earlier; NextRaw must frame exactly the same transactions
// and return their records byte for byte.
func TestReaderFromAnyPositionKeepsReturnedTxns(t *testing.T) {
	ctx := context.Background()
	w, _, err := Open(Options{Dir: t.TempDir(), Sync: SyncOff, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var want []change.Txn
	for i := range 400 {
		switch {
		case i%50 == 7: // a large transaction
			txn := txnOf(uint64(i+1), 300)
			if _, err := w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
			want = append(want, txn)
		case i%40 == 3: // a streamed transaction aborted midway
			stop := errors.New("stop")
			if _, err := w.AppendStream(ctx, change.TxHeader{XID: uint64(i + 1)}, streamOf(5, 10, func(k int) error {
				if k == 2 {
					return stop
				}
				return nil
			})); !errors.Is(err, stop) {
				t.Fatalf("aborted stream: %v", err)
			}
		default:
			txn := txnOf(uint64(i+1), i%5+1)
			if _, err := w.Append(ctx, &txn); err != nil {
				t.Fatal(err)
			}
			want = append(want, txn)
		}
	}
	all := readTxns(t, w.seg, 1)
	checkTxns(t, all, want)
	last := all[len(all)-1].CommitLSN
	for _, from := range []uint64{1, 2, 3, all[7].FirstLSN + 5, all[100].FirstLSN, all[100].CommitLSN, last, last + 1} {
		r, err := w.NewReader(from, false)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := w.NewReader(from, false)
		if err != nil {
			t.Fatal(err)
		}
		var got []*change.Committed
		for {
			g, err := r.Next(ctx)
			rg, rerr := raw.NextRaw(ctx)
			if errors.Is(err, io.EOF) || errors.Is(rerr, io.EOF) {
				if !errors.Is(err, io.EOF) || !errors.Is(rerr, io.EOF) {
					t.Fatalf("from %d: Next %v, NextRaw %v", from, err, rerr)
				}
				break
			}
			if err != nil || rerr != nil {
				t.Fatalf("from %d: %v / %v", from, err, rerr)
			}
			sameRaw(t, g, rg)
			got = append(got, g)
		}
		r.Close()
		raw.Close()
		// The whole transaction holding from comes first.
		i := 0
		for i < len(all) && all[i].CommitLSN < from {
			i++
		}
		if len(got) != len(all)-i {
			t.Fatalf("from %d: read %d transactions, want %d", from, len(got), len(all)-i)
		}
		// Transactions returned earlier were never written to again.
		for k, g := range got {
			if w := &all[i+k]; g.FirstLSN != w.FirstLSN || g.CommitLSN != w.CommitLSN || !g.Txn.Equal(&w.Txn) {
				t.Fatalf("from %d: transaction %d changed after it was returned", from, w.FirstLSN)
			}
		}
	}
}

// sameRaw checks that r holds exactly the records that encode c.
func sameRaw(t *testing.T, c *change.Committed, r *RawTxn) {
	t.Helper()
	if c.FirstLSN != r.FirstLSN || c.CommitLSN != r.CommitLSN || !c.CommitTime.Equal(r.CommitTime) {
		t.Fatalf("NextRaw read %d..%d at %v, Next %d..%d at %v", r.FirstLSN, r.CommitLSN, r.CommitTime, c.FirstLSN, c.CommitLSN, c.CommitTime)
	}
	var want []byte
	for i := range c.Changes {
		var hdr *change.TxHeader
		if i == 0 {
			hdr = &c.Header
		}
		rec := change.AppendRecord(nil, hdr, &c.Changes[i])
		want = binary.AppendUvarint(want, uint64(len(rec)))
		want = append(want, rec...)
	}
	if !bytes.Equal(r.Records, want) {
		t.Fatalf("transaction %d: NextRaw's records differ from the encoding of Next's changes", c.FirstLSN)
	}
}
