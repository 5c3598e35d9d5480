package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/wal"
	"github.com/walship/walship/walerr"
)

// txnReader reads whole committed, durable transactions from a WAL's log as
// wal.Reader does — the same positioning, the same checks, aborted
// transactions skipped — but carves the transactions and their changes from
// shared arrays instead of allocating a Txn and growing a Changes slice per
// transaction: in the sink's hot loop those allocations cost about as much
// as decoding. (A local adapter: package wal is not the sink's.) A
// transaction returned stays valid; the reader never writes to it again.
type txnReader struct {
	r       *segment.Reader
	changes []change.Change // changes[start:] belong to the transaction being read
	txns    []wal.Txn
}

const (
	readerChangeArena = 256
	readerTxnArena    = 64
)

// newTxnReader is wal.NewReader: from inside a transaction, reading starts
// at that transaction's first record (or, if retention removed it, at the
// next whole transaction). With follow, next waits for new durable
// transactions instead of returning io.EOF.
func newTxnReader(l *segment.Log, from uint64, follow bool) (*txnReader, error) {
	probe, err := l.NewReader(from, false)
	if err != nil {
		return nil, err
	}
	if rec, err := probe.Next(context.Background()); err == nil && rec.TxnStart < from {
		if rec.TxnStart >= l.FirstLSN() {
			from = rec.TxnStart
		} else {
			for err == nil && !rec.Commit {
				rec, err = probe.Next(context.Background())
			}
			switch {
			case err == nil:
				from = rec.LSN + 1
			case errors.Is(err, io.EOF):
				from = max(from, l.Visible()+1)
			default:
				probe.Close()
				return nil, err
			}
		}
	}
	probe.Close()
	r, err := l.NewReader(from, follow)
	if err != nil {
		return nil, err
	}
	return &txnReader{r: r}, nil
}

// next returns the next whole transaction, io.EOF at the end of the visible
// log (or waits, if following), or an error naming the LSN of an
// undecodable record, as wal.Reader.NextTxn.
func (r *txnReader) next(ctx context.Context) (*wal.Txn, error) {
	var t wal.Txn
	start := len(r.changes)
	n := 0 // changes of t so far: r.changes[start:start+n]
	for {
		rec, err := r.r.Next(ctx)
		if err != nil {
			r.changes = r.changes[:start]
			return nil, err
		}
		if rec.Aborted {
			// The transaction was aborted midway (WAL.AppendStream): none
			// of it is part of the log's content.
			if n > 0 && rec.TxnStart != t.FirstLSN {
				r.changes = r.changes[:start]
				return nil, fmt.Errorf("%w: wal: abort record at LSN %d ends transaction %d inside transaction %d", walerr.ErrCorruption, rec.LSN, rec.TxnStart, t.FirstLSN)
			}
			t, n = wal.Txn{}, 0
			clear(r.changes[start:])
			r.changes = r.changes[:start]
			continue
		}
		if n == 0 {
			if rec.TxnStart != rec.LSN {
				return nil, fmt.Errorf("%w: wal: record at LSN %d continues transaction %d that was not read", walerr.ErrCorruption, rec.LSN, rec.TxnStart)
			}
			t.FirstLSN = rec.LSN
		}
		hdr, c, err := change.DecodeRecord(rec.Data)
		if err != nil {
			r.changes = r.changes[:start]
			return nil, fmt.Errorf("wal: record at LSN %d: %w", rec.LSN, err)
		}
		if n == 0 {
			if hdr == nil {
				return nil, fmt.Errorf("%w: wal: record at LSN %d starts a transaction but has no transaction header", walerr.ErrCorruption, rec.LSN)
			}
			t.Header = *hdr
		} else if hdr != nil {
			r.changes = r.changes[:start]
			return nil, fmt.Errorf("%w: wal: record at LSN %d has a transaction header inside transaction %d", walerr.ErrCorruption, rec.LSN, t.FirstLSN)
		}
		if len(r.changes) == cap(r.changes) {
			// A new array; the transaction read so far moves to its front.
			a := make([]change.Change, n, max(readerChangeArena, 2*n))
			copy(a, r.changes[start:])
			r.changes, start = a, 0
		}
		r.changes = append(r.changes, c)
		n++
		if rec.Commit {
			t.CommitLSN = rec.LSN
			t.CommitTime = time.Unix(0, rec.CommitTime).UTC()
			t.Changes = r.changes[start : start+n : start+n]
			if len(r.txns) == cap(r.txns) {
				r.txns = make([]wal.Txn, 0, readerTxnArena)
			}
			r.txns = append(r.txns, t)
			return &r.txns[len(r.txns)-1], nil
		}
	}
}

// Close releases the reader.
func (r *txnReader) Close() error { return r.r.Close() }
