package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/walerr"
)

// Reader reads whole committed, durable transactions from the log, in LSN
// order. It is the one place that knows how transactions are framed in
// records (docs/FORMAT.md §3): the first record carries the header, a
// transaction ends at its commit record, and an abort record ends one that
// was abandoned midway (WAL.AppendStream) and is skipped whole.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	r *segment.Reader

	// The transactions and their changes are carved from shared arrays
	// instead of allocating a Committed and growing a Changes slice per
	// transaction: in the sinks' hot loops those allocations were a large
	// share of the cost of reading (bench/README.md). changes[start:] belong to the transaction being
	// read; a transaction returned is never written to again.
	changes []change.Change
	txns    []change.Committed

	// reportAborted: Next returns aborted ranges (ReportAborted).
	reportAborted bool
}

// ReportAborted makes Next return each transaction aborted midway, instead
// of skipping it, as a change.Committed with Aborted set, no changes, its
// LSN range (from its first record through its abort record) and the
// abort's time: for readers that must account for every LSN of the log
// (the Kafka sink's ordered topic, which a standby copies). NextRaw still
// skips them. Call it before the first Next.
func (r *Reader) ReportAborted() { r.reportAborted = true }

const (
	readerChangeArena = 256
	readerTxnArena    = 64
)

// newReader returns a reader of the transactions whose records have LSNs
// from from on. If from falls inside a transaction, reading starts at that
// transaction's first record, so every transaction is whole; if retention
// removed that first record, it starts at the next whole transaction.
// With follow, Next waits for new durable transactions instead of
// returning io.EOF.
func newReader(l *segment.Log, from uint64, follow bool) (*Reader, error) {
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

// frame reads the records of the next whole transaction, enforcing the
// framing rules, and hands each to add with its index in the transaction.
// An abort record discards what was added so far: reset is called and
// reading goes on with the next transaction. It returns the transaction's
// first and commit LSNs and its commit time in Unix nanoseconds. With
// aborted set, reset was called and the range is not skipped but returned
// (first..commit, the abort's time): when the caller asks, with
// reportAborted.
func (r *Reader) frame(ctx context.Context, reportAborted bool, add func(rec *segment.Record, i int) error, reset func()) (first, commit uint64, commitTime int64, aborted bool, err error) {
	n := 0 // records of the transaction so far
	for {
		rec, err := r.r.Next(ctx)
		if err != nil {
			return 0, 0, 0, false, err
		}
		if rec.Aborted {
			// The transaction was aborted midway (WAL.AppendStream): none
			// of it is part of the log's content.
			if n > 0 && rec.TxnStart != first {
				return 0, 0, 0, false, fmt.Errorf("%w: wal: abort record at LSN %d ends transaction %d inside transaction %d", walerr.ErrCorruption, rec.LSN, rec.TxnStart, first)
			}
			n = 0
			reset()
			if reportAborted {
				// TxnStart is the range's start even when its records
				// were not read: an aborted-range frame stores none, and
				// a reader never starts inside a transaction (newReader).
				return rec.TxnStart, rec.LSN, rec.CommitTime, true, nil
			}
			continue
		}
		if n == 0 {
			if rec.TxnStart != rec.LSN {
				return 0, 0, 0, false, fmt.Errorf("%w: wal: record at LSN %d continues transaction %d that was not read", walerr.ErrCorruption, rec.LSN, rec.TxnStart)
			}
			first = rec.LSN
		} else if rec.TxnStart != first {
			return 0, 0, 0, false, fmt.Errorf("%w: wal: record at LSN %d belongs to transaction %d, inside transaction %d", walerr.ErrCorruption, rec.LSN, rec.TxnStart, first)
		}
		if err := add(&rec, n); err != nil {
			return 0, 0, 0, false, err
		}
		n++
		if rec.Commit {
			return first, rec.LSN, rec.CommitTime, false, nil
		}
	}
}

// Next returns the next whole transaction, io.EOF at the end of the
// visible log (or waits for one, if following, until ctx ends), or an
// error naming the LSN of an undecodable or misplaced record. Transactions
// aborted midway are skipped (returned as ranges after ReportAborted); like committed ones they are read whole
// before the abort record that ends them is seen, so skipping one costs
// its size in memory. The transaction returned stays valid and unchanged
// after later calls; the caller may keep it.
func (r *Reader) Next(ctx context.Context) (*change.Committed, error) {
	var hdr change.TxHeader
	start := len(r.changes) // r.changes[start:] belong to the transaction
	discard := func() {
		clear(r.changes[start:])
		r.changes = r.changes[:start]
	}
	first, commit, commitTime, aborted, err := r.frame(ctx, r.reportAborted, func(rec *segment.Record, i int) error {
		h, c, err := change.DecodeRecord(rec.Data)
		if err != nil {
			return fmt.Errorf("wal: record at LSN %d: %w", rec.LSN, err)
		}
		switch {
		case i == 0 && h == nil:
			return fmt.Errorf("%w: wal: record at LSN %d starts a transaction but has no transaction header", walerr.ErrCorruption, rec.LSN)
		case i > 0 && h != nil:
			return fmt.Errorf("%w: wal: record at LSN %d has a transaction header inside transaction %d", walerr.ErrCorruption, rec.LSN, rec.TxnStart)
		case i == 0:
			hdr = *h
		}
		if len(r.changes) == cap(r.changes) {
			// A new array; the transaction read so far moves to its front.
			a := make([]change.Change, i, max(readerChangeArena, 2*i))
			copy(a, r.changes[start:])
			clear(r.changes[start:])
			r.changes, start = a, 0
		}
		r.changes = append(r.changes, c)
		return nil
	}, discard)
	if err != nil {
		discard()
		return nil, err
	}
	if aborted {
		hdr = change.TxHeader{} // the aborted transaction's, read before its abort record
	}
	if len(r.txns) == cap(r.txns) {
		r.txns = make([]change.Committed, 0, readerTxnArena)
	}
	r.txns = append(r.txns, change.Committed{
		FirstLSN: first, CommitLSN: commit, CommitTime: time.Unix(0, commitTime).UTC(),
		Txn:     change.Txn{Header: hdr, Changes: r.changes[start:len(r.changes):len(r.changes)]},
		Aborted: aborted,
	})
	return &r.txns[len(r.txns)-1], nil
}

// RawTxn is a whole committed transaction with its records undecoded, for
// readers that ship the log's records as they are (the archive).
type RawTxn struct {
	FirstLSN, CommitLSN uint64
	CommitTime          time.Time
	// Records holds the transaction's CommitLSN-FirstLSN+1 records in
	// order, each preceded by its length as a uvarint. The caller owns it.
	Records []byte
}

// NextRaw is Next without decoding: the same transactions, framed by the
// same rules, but the records are copied as they are stored. It does not
// check where the transaction header sits (that needs decoding); a caller
// that decodes a record checks it.
func (r *Reader) NextRaw(ctx context.Context) (*RawTxn, error) {
	var buf []byte
	first, commit, commitTime, _, err := r.frame(ctx, false, func(rec *segment.Record, i int) error {
		if buf == nil {
			buf = make([]byte, 0, 2*len(rec.Data)+8)
		}
		buf = binary.AppendUvarint(buf, uint64(len(rec.Data)))
		buf = append(buf, rec.Data...)
		return nil
	}, func() { buf = buf[:0] })
	if err != nil {
		return nil, err
	}
	return &RawTxn{FirstLSN: first, CommitLSN: commit, CommitTime: time.Unix(0, commitTime).UTC(), Records: buf}, nil
}

// Close releases the reader.
func (r *Reader) Close() error { return r.r.Close() }
