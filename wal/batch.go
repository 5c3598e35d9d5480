package wal

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/walship/walship/change"
	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
)

// MaxRecordBytes is the largest encoded change the log stores as one
// record.
const MaxRecordBytes = segment.MaxFramePayload - segment.RecordOverhead

// Batch is a request of several transactions, each validated and encoded
// as it is added, then appended whole by AppendBatchAsync: all of them or,
// if anything fails first, none. Its encoded records are the only copy of
// the transactions it keeps (with a few bytes per record and per
// transaction of bookkeeping), so a caller decoding its input line by line
// holds no decoded transaction beyond the current one, and the first.
//
// The first transaction is kept decoded until the batch is appended, so
// that its header can still take an idempotency mark (SetMark) that
// depends on the whole request.
//
// A Batch is not safe for concurrent use; it may be appended once.
type Batch struct {
	w     *WAL
	gb    groupcommit.Batch
	head  *change.Txn // the first transaction, encoded at append
	mark  *change.IdempotencyMark
	first uint64 // LSN of the first record, once queued
	size  int    // bytes of the decoded head, estimated by its encoding
}

// NewBatch returns an empty batch for w.
func (w *WAL) NewBatch() *Batch { return &Batch{w: w} }

// Len returns the number of transactions added.
func (b *Batch) Len() int {
	if b.head == nil {
		return len(b.gb.Txns)
	}
	return 1 + len(b.gb.Txns)
}

// Bytes returns about how much memory the batch holds: its encoded records
// and their bookkeeping.
func (b *Batch) Bytes() int {
	return cap(b.gb.Data) + 4*cap(b.gb.Ends) + 16*cap(b.gb.Txns) + b.size
}

// Add validates txn (Txn.Validate, WAL.CheckCommitTime) and encodes it.
// An invalid transaction, or a change whose encoded record would exceed
// Options.MaxRecordBytes, is refused with a *change.InvalidError naming the part
// at fault, and the batch is unchanged. txn is not retained, except the
// first one, which the caller must not change afterwards.
func (b *Batch) Add(txn *change.Txn) error {
	if b.first != 0 {
		return errors.New("wal: batch already appended")
	}
	if err := txn.Validate(); err != nil {
		return err
	}
	if err := b.w.CheckCommitTime(&txn.Header); err != nil {
		return err
	}
	// One pass: each record's size is checked against the limit (the
	// first with the transaction header it carries) and summed without
	// headers.
	n := 0
	for i := range txn.Changes {
		size := change.RecordSize(nil, &txn.Changes[i])
		full := size
		if i == 0 {
			full = change.RecordSize(&txn.Header, &txn.Changes[i])
		}
		if full > b.w.maxRecord {
			return b.tooLarge(i, full)
		}
		n += size
	}
	if b.head == nil {
		b.head = txn
		b.size += n
		return nil
	}
	if len(b.gb.Data)+b.size+n+len(txn.Changes)*16 > math.MaxUint32 {
		return &change.InvalidError{Reason: "request larger than 4 GiB encoded"}
	}
	b.encode(txn)
	return nil
}

func (b *Batch) tooLarge(i, n int) *change.InvalidError {
	return &change.InvalidError{Path: fmt.Sprintf("changes[%d]", i), Reason: fmt.Sprintf(
		"encoded record of %d bytes exceeds the log's record limit of %d bytes", n, b.w.maxRecord)}
}

// encode appends txn's records to the batch.
func (b *Batch) encode(txn *change.Txn) {
	for i := range txn.Changes {
		var hdr *change.TxHeader
		if i == 0 {
			hdr = &txn.Header
		}
		b.gb.Data = change.AppendRecord(b.gb.Data, hdr, &txn.Changes[i])
		b.gb.Ends = append(b.gb.Ends, uint32(len(b.gb.Data)))
	}
	var ct int64
	if t := txn.Header.SourceCommitTime; !t.IsZero() {
		ct = t.UnixNano()
	}
	b.gb.Txns = append(b.gb.Txns, groupcommit.BatchTxn{Records: uint32(len(txn.Changes)), CommitTime: ct})
}

// Skip drops the first k transactions added (0 < k < Len()), for a
// request whose first k transactions an interrupted earlier attempt
// already appended.
func (b *Batch) Skip(k int) error {
	if k <= 0 || k >= b.Len() || b.first != 0 {
		return fmt.Errorf("wal: cannot skip %d of a batch of %d transactions", k, b.Len())
	}
	// Transaction k becomes the decoded head; 1..k leave the encoded part.
	rec := 0
	for _, t := range b.gb.Txns[:k-1] {
		rec += int(t.Records)
	}
	start := uint32(0)
	if rec > 0 {
		start = b.gb.Ends[rec-1]
	}
	nk := int(b.gb.Txns[k-1].Records)
	head := &change.Txn{Changes: make([]change.Change, 0, nk)}
	off := start
	for i := rec; i < rec+nk; i++ {
		hdr, c, err := change.DecodeRecord(b.gb.Data[off:b.gb.Ends[i]])
		if err != nil {
			return fmt.Errorf("wal: re-reading transaction %d of the batch: %w", k, err)
		}
		if hdr != nil {
			head.Header = *hdr
		}
		head.Changes = append(head.Changes, c)
		off = b.gb.Ends[i]
	}
	b.gb.Data = b.gb.Data[:copy(b.gb.Data, b.gb.Data[off:])]
	ends := b.gb.Ends[:0]
	for _, e := range b.gb.Ends[rec+nk:] {
		ends = append(ends, e-off)
	}
	b.gb.Ends = ends
	b.gb.Txns = b.gb.Txns[:copy(b.gb.Txns, b.gb.Txns[k:])]
	b.head = head
	return nil
}

// SetMark gives the batch's first transaction the idempotency mark m
// (change.IdempotencyMark), or none if m is nil. It fails, appending
// nothing, if the mark is invalid or makes the first record too large.
func (b *Batch) SetMark(m *change.IdempotencyMark) error {
	if m != nil {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	b.mark = m
	return nil
}

// AppendBatchAsync appends every transaction of b as one unit and returns
// without waiting for durability; Wait(ctx, b.Last()) waits. The
// transactions get consecutive LSNs in order with nothing between them;
// on error none of them was queued. The same errors as AppendAsync.
func (w *WAL) AppendBatchAsync(ctx context.Context, b *Batch) error {
	if b.w != w {
		return errors.New("wal: batch of another log")
	}
	if b.first != 0 {
		return errors.New("wal: batch already appended")
	}
	if b.head == nil {
		return &change.InvalidError{Path: "changes", Reason: "empty request"}
	}
	// Encode the first transaction, with its mark, in front of the others.
	hdr := b.head.Header
	hdr.Idempotency = b.mark
	n := 0
	for i := range b.head.Changes {
		h := (*change.TxHeader)(nil)
		if i == 0 {
			h = &hdr
		}
		sz := change.RecordSize(h, &b.head.Changes[i])
		if sz > w.maxRecord {
			err := b.tooLarge(i, sz)
			err.Reason += " once it carries the idempotency mark"
			return err
		}
		n += sz
	}
	rest, restEnds, restTxns := len(b.gb.Data), len(b.gb.Ends), len(b.gb.Txns)
	b.gb.Data = slices.Grow(b.gb.Data, n)[:rest+n]
	copy(b.gb.Data[n:], b.gb.Data[:rest])
	b.gb.Ends = slices.Grow(b.gb.Ends, len(b.head.Changes))[:restEnds+len(b.head.Changes)]
	copy(b.gb.Ends[len(b.head.Changes):], b.gb.Ends[:restEnds])
	for i := len(b.head.Changes); i < len(b.gb.Ends); i++ {
		b.gb.Ends[i] += uint32(n)
	}
	head := b.gb.Data[:0]
	for i := range b.head.Changes {
		h := (*change.TxHeader)(nil)
		if i == 0 {
			h = &hdr
		}
		head = change.AppendRecord(head, h, &b.head.Changes[i])
		b.gb.Ends[i] = uint32(len(head))
	}
	var ct int64
	if t := hdr.SourceCommitTime; !t.IsZero() {
		ct = t.UnixNano()
	}
	b.gb.Txns = slices.Insert(b.gb.Txns[:restTxns], 0, groupcommit.BatchTxn{Records: uint32(len(b.head.Changes)), CommitTime: ct})
	b.head, b.size = nil, 0

	if b.mark != nil {
		// The later transactions belong to the marked request.
		rec := int(b.gb.Txns[0].Records)
		for _, t := range b.gb.Txns[1:] {
			start := b.gb.Ends[rec-1]
			change.SetInRequest(b.gb.Data[start:b.gb.Ends[rec]])
			rec += int(t.Records)
		}
	}
	first, err := w.c.AppendBatchAsync(ctx, &b.gb)
	if err != nil {
		b.gb.Data, b.gb.Ends, b.gb.Txns = nil, nil, nil
		b.first = ^uint64(0)
		return err
	}
	b.first = first
	// The committer copied the records: only the bookkeeping stays.
	b.gb.Data, b.gb.Ends = nil, nil
	return nil
}

// Last returns the commit LSN of the batch's last transaction, once
// appended.
func (b *Batch) Last() uint64 {
	n := uint64(0)
	for _, t := range b.gb.Txns {
		n += uint64(t.Records)
	}
	return b.first + n - 1
}

// Tickets calls fn with the ticket of each transaction of an appended
// batch, in order.
func (b *Batch) Tickets(fn func(Ticket)) {
	lsn := b.first
	for _, t := range b.gb.Txns {
		fn(Ticket{First: lsn, Last: lsn + uint64(t.Records) - 1, CommitTime: t.CommitTime})
		lsn += uint64(t.Records)
	}
}
