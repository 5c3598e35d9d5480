package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/walerr"
)

// Txn is a committed transaction read from the log.
type Txn struct {
	FirstLSN, CommitLSN uint64
	CommitTime          time.Time
	change.Txn
}

// Reader reads whole committed transactions from a segment.Log.
type Reader struct {
	r *segment.Reader
}

// NewReader returns a reader of the transactions whose records have LSNs
// from from on. If from falls inside a transaction, reading starts at that
// transaction's first record, so every Txn is whole. With follow, NextTxn
// waits for new transactions instead of returning io.EOF.
func NewReader(l *segment.Log, from uint64, follow bool) (*Reader, error) {
	// Probe without following: if from is inside a transaction, start at
	// the transaction's first record instead.
	probe, err := l.NewReader(from, false)
	if err != nil {
		return nil, err
	}
	if rec, err := probe.Next(context.Background()); err == nil && rec.TxnStart < from {
		if rec.TxnStart >= l.FirstLSN() {
			from = rec.TxnStart
		} else {
			// Retention removed the transaction's start: begin at the next
			// whole transaction.
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
	return &Reader{r: r}, nil
}

// NextTxn returns the next whole transaction, io.EOF at the end of the
// visible log (or waits, if following), or an error naming the LSN of an
// undecodable record. Transactions aborted midway (see WAL.AppendStream)
// are skipped; like committed ones they are read whole before the abort
// record that ends them is seen, so skipping one costs its size in memory.
func (r *Reader) NextTxn(ctx context.Context) (Txn, error) {
	var t Txn
	for {
		rec, err := r.r.Next(ctx)
		if err != nil {
			return Txn{}, err
		}
		if rec.Aborted {
			// The transaction was aborted midway (WAL.AppendStream): none
			// of it is part of the log's content.
			if len(t.Changes) > 0 && rec.TxnStart != t.FirstLSN {
				return Txn{}, fmt.Errorf("%w: wal: abort record at LSN %d ends transaction %d inside transaction %d", walerr.ErrCorruption, rec.LSN, rec.TxnStart, t.FirstLSN)
			}
			t = Txn{}
			continue
		}
		if len(t.Changes) == 0 {
			if rec.TxnStart != rec.LSN {
				return Txn{}, fmt.Errorf("%w: wal: record at LSN %d continues transaction %d that was not read", walerr.ErrCorruption, rec.LSN, rec.TxnStart)
			}
			t.FirstLSN = rec.LSN
		}
		hdr, c, err := change.DecodeRecord(rec.Data)
		if err != nil {
			return Txn{}, fmt.Errorf("wal: record at LSN %d: %w", rec.LSN, err)
		}
		if len(t.Changes) == 0 {
			if hdr == nil {
				return Txn{}, fmt.Errorf("%w: wal: record at LSN %d starts a transaction but has no transaction header", walerr.ErrCorruption, rec.LSN)
			}
			t.Header = *hdr
		} else if hdr != nil {
			return Txn{}, fmt.Errorf("%w: wal: record at LSN %d has a transaction header inside transaction %d", walerr.ErrCorruption, rec.LSN, t.FirstLSN)
		}
		t.Changes = append(t.Changes, c)
		if rec.Commit {
			t.CommitLSN = rec.LSN
			t.CommitTime = time.Unix(0, rec.CommitTime).UTC()
			return t, nil
		}
	}
}

// Close releases the reader.
func (r *Reader) Close() error { return r.r.Close() }
