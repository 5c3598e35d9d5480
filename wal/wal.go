// Package wal is walship's transaction log: a segment.Log written through a
// groupcommit.Committer, storing change.Txn transactions as one record per
// change. It is what sources append to and what sinks, replicas and the
// operator tools read.
//
// Guarantees are those of the packages below it: Append returns only after
// the transaction is durable (sync "local") or written (sync "off"); its
// changes get consecutive LSNs; readers see whole committed, durable
// transactions only, in LSN order.
package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/groupcommit"
	"github.com/walship/walship/segment"
	"github.com/walship/walship/vfs"
)

// Options configure a WAL. The zero value is valid except for Dir.
type Options struct {
	Dir         string
	FS          vfs.FS               // default vfs.Default
	Sync        groupcommit.SyncMode // default SyncLocal
	SegmentSize int64                // default 64 MiB
	Compression segment.Codec        // default none
	MinInterval time.Duration        // least time between fsyncs; default 0
	ZeroFill    bool                 // zero-fill new segments (segment.Options.ZeroFill)
	Logger      *slog.Logger
	// Observe is passed to the committer (records, bytes, flush duration).
	Observe func(records, bytes int, took time.Duration)
	// MaxPendingBytes and MaxBatchBytes are passed to the committer
	// (groupcommit.Options); zero selects its defaults.
	MaxPendingBytes int
	MaxBatchBytes   int
}

// WAL is an open transaction log.
type WAL struct {
	Log *segment.Log
	c   *groupcommit.Committer

	scratch sync.Pool // *encodeBuf
	once    sync.Once
	err     error
}

type encodeBuf struct {
	buf  []byte
	recs [][]byte
}

// Open opens (recovering) or creates the log in opts.Dir.
func Open(opts Options) (*WAL, *segment.RecoveryReport, error) {
	if opts.Dir == "" {
		return nil, nil, fmt.Errorf("wal: no directory given")
	}
	l, rep, err := segment.Open(opts.Dir, segment.Options{FS: opts.FS, SegmentSize: opts.SegmentSize,
		Codec: opts.Compression, Logger: opts.Logger, ZeroFill: opts.ZeroFill})
	if err != nil {
		return nil, nil, err
	}
	c, err := groupcommit.New(l, groupcommit.Options{Sync: opts.Sync, MinInterval: opts.MinInterval,
		Logger: opts.Logger, Observe: opts.Observe, MaxPendingBytes: opts.MaxPendingBytes, MaxBatchBytes: opts.MaxBatchBytes})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	w := &WAL{Log: l, c: c}
	w.scratch.New = func() any { return &encodeBuf{} }
	return w, rep, nil
}

// encode validates txn and encodes its changes, the header on the first.
func (w *WAL) encode(txn *change.Txn) (*encodeBuf, error) {
	if err := txn.Validate(); err != nil {
		return nil, err
	}
	eb := w.scratch.Get().(*encodeBuf)
	eb.buf, eb.recs = eb.buf[:0], eb.recs[:0]
	ends := make([]int, 0, 8)
	for i := range txn.Changes {
		var hdr *change.TxHeader
		if i == 0 {
			hdr = &txn.Header
		}
		eb.buf = change.AppendRecord(eb.buf, hdr, &txn.Changes[i])
		ends = append(ends, len(eb.buf))
	}
	start := 0
	for _, e := range ends {
		eb.recs = append(eb.recs, eb.buf[start:e])
		start = e
	}
	return eb, nil
}

// Append validates and appends txn and waits until it is durable. The
// commit time recorded is txn.Header.SourceCommitTime if set (raised to
// the previous commit's if earlier), else now.
func (w *WAL) Append(ctx context.Context, txn *change.Txn) (groupcommit.Ticket, error) {
	t, err := w.AppendAsync(ctx, txn)
	if err != nil {
		return t, err
	}
	return t, w.c.Wait(ctx, t.Last)
}

// AppendAsync validates and queues txn, returning its LSNs without waiting
// for durability; Wait(ctx, t.Last) waits.
func (w *WAL) AppendAsync(ctx context.Context, txn *change.Txn) (groupcommit.Ticket, error) {
	eb, err := w.encode(txn)
	if err != nil {
		return groupcommit.Ticket{}, err
	}
	t, err := w.c.AppendAsync(ctx, eb.recs, txn.Header.SourceCommitTime)
	w.scratch.Put(eb)
	return t, err
}

// AppendStream appends one transaction whose changes come from next
// (io.EOF ends it), without holding it all in memory, and waits until it is
// durable, like Append. It takes the WAL exclusively: other appends (and
// streams) wait until it ends; transactions queued before it stay before
// it. Changes are validated and encoded one at a time and written in
// frames as they come, with at most groupcommit.StreamPendingBytes of them
// queued; next is called from the calling goroutine. The first change
// carries hdr. The commit time is hdr.SourceCommitTime if set (raised to
// the previous commit's if earlier), else now.
//
// If next fails, a change is invalid, or ctx ends before the commit record
// is queued, the transaction is aborted: nothing of it ever becomes
// visible to readers, now or after recovery. Records it had already
// written keep their LSNs and are ended by an abort record that readers
// skip (docs/FORMAT.md §3), so LSNs stay dense; records not yet written
// are dropped and their LSNs reused. The WAL remains usable. Only a write
// or fsync failure puts it in the failed state, as for Append: every later
// append fails with the same error until it is reopened, and recovery
// then removes the unfinished transaction. Once the commit is queued the
// transaction is committed even if ctx ends while waiting for durability.
func (w *WAL) AppendStream(ctx context.Context, hdr change.TxHeader, next func() (*change.Change, error)) (groupcommit.Ticket, error) {
	if err := hdr.Validate(); err != nil {
		return groupcommit.Ticket{}, err
	}
	s, err := w.c.BeginStream(ctx)
	if err != nil {
		return groupcommit.Ticket{}, err
	}
	defer s.Abort() // a no-op once committed; also covers a panic in next
	abort := func(err error) (groupcommit.Ticket, error) {
		if aerr := s.Abort(); aerr != nil {
			err = errors.Join(err, fmt.Errorf("wal: aborting the streamed transaction: %w", aerr))
		}
		return groupcommit.Ticket{}, err
	}
	var buf []byte
	n := 0
	for ; ; n++ {
		if err := ctx.Err(); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted after %d changes: %w", n, err))
		}
		c, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
		if c == nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d is nil", n))
		}
		if err := c.Validate(); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
		var h *change.TxHeader
		if n == 0 {
			h = &hdr
		}
		buf = change.AppendRecord(buf[:0], h, c)
		if err := s.Add(ctx, buf); err != nil {
			return abort(fmt.Errorf("wal: streamed transaction aborted: change %d: %w", n, err))
		}
	}
	if n == 0 {
		return abort(&change.InvalidError{Path: "changes", Reason: "empty transaction"})
	}
	t, err := s.Commit(ctx, hdr.SourceCommitTime)
	if err != nil {
		return abort(fmt.Errorf("wal: streamed transaction aborted at its commit: %w", err))
	}
	return t, w.c.Wait(ctx, t.Last)
}

// Wait blocks until LSN lsn is durable.
func (w *WAL) Wait(ctx context.Context, lsn uint64) error { return w.c.Wait(ctx, lsn) }

// Durable returns the LSN of the last durable commit.
func (w *WAL) Durable() uint64 { return w.c.Durable() }

// Close flushes and syncs queued transactions and closes the log. It is
// idempotent.
func (w *WAL) Close() error {
	w.once.Do(func() {
		err := w.c.Close()
		if cerr := w.Log.Close(); err == nil {
			err = cerr
		}
		w.err = err
	})
	return w.err
}

// OpenReadOnly opens the log in dir for reading only: it repairs nothing,
// takes no lock and may run beside a live writer; readers see what was
// durable when it was opened.
func OpenReadOnly(fsys vfs.FS, dir string) (*segment.Log, *segment.RecoveryReport, error) {
	return segment.Open(dir, segment.Options{FS: fsys, ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
}
