// Package groupcommit batches concurrent appends to a segment.Log into one
// write and one fsync, the way pebble's LogWriter does.
//
// Guarantees:
//   - Appenders are never delayed artificially: the next batch is taken as
//     soon as the previous fsync returns and the appenders it released have
//     run (while they keep running, at most four flushes' time; see
//     awaitWoken), never by a timer (Options.MinInterval, off by default,
//     trades latency for larger batches).
//   - With SyncLocal, Append returns (and Wait releases an LSN) only after an
//     fdatasync covering the transaction has completed (docs/DESIGN.md §4.1).
//   - A failed write or fsync is sticky: the transactions it covered and every
//     later one fail with the same error; fsync is never retried.
//   - A transaction's records get consecutive LSNs and are never split by
//     another transaction's; the log records its commit time, which never
//     decreases (the caller's time is raised to the previous commit's).
//   - Memory is bounded: when Options.MaxPendingBytes are waiting for the
//     flusher, appenders block (backpressure) until it takes them.
//   - A batch Options.Gate refuses reaches no disk: its appenders fail with
//     the gate's error, its LSNs are given again to the next appends, and
//     the committer stays usable (the refusal is not sticky).
//
// No mutex is held across a write or fsync: appenders keep filling the next
// batch while a batch is written and synced. One flush (write, then
// fdatasync) runs at a time, done by the flusher goroutine or by a
// synchronous appender leading the commit; the batch that gathered
// meanwhile is taken whole as soon as it ends and the appenders it released
// have run, so that those that append again at once are in it. Two
// overlapping flushes measured worse on the project machine: each
// fdatasync took longer and burnt CPU, so batches were smaller and
// throughput with many appenders lower (bench/README.md has the numbers).
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walship/walship/segment"
)

// SyncMode says when an append is acknowledged.
type SyncMode uint8

const (
	// SyncLocal acknowledges after fdatasync: durable against power loss.
	SyncLocal SyncMode = iota
	// SyncOff acknowledges after write(2): durable against a process crash
	// only. Readers see data once written.
	SyncOff
)

func (m SyncMode) String() string {
	if m == SyncOff {
		return "off"
	}
	return "local"
}

// Options configure a Committer. Zero values select the defaults noted.
type Options struct {
	Sync SyncMode
	// MinInterval is the least time between two fsyncs; default 0 (none).
	MinInterval time.Duration
	// MaxPendingBytes bounds encoded bytes waiting for the flusher; default
	// 64 MiB. A single transaction larger than this is still accepted alone.
	MaxPendingBytes int
	// MaxBatchBytes bounds one frame's payload; default 1 MiB. Larger
	// transactions span several frames.
	MaxBatchBytes int
	// Now is the clock for commit times; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Observe, if set, is called by the flusher after each successful flush
	// with the number of records and bytes in it and the time the write and
	// sync took (for metrics and benchmarks).
	Observe func(records, bytes int, took time.Duration)
	// Gate, if set, is called right before each batch is written, with the
	// committer's lock held (it must be quick and must not call the
	// committer): a leader's check that it still holds its lease. If it
	// returns an error the batch — everything queued and not yet written —
	// is dropped before any of it reaches the disk, its appenders (and
	// their Waits) fail with an error wrapping ErrRefused and the gate's
	// error, its LSNs are given to the next appends, and an active stream
	// can then only be aborted. The refusal is not sticky: the next batch
	// is written if Gate then returns nil.
	Gate func() error
}

// Validate checks the options.
func (o *Options) Validate() error {
	if o.MinInterval < 0 {
		return errors.New("groupcommit: negative MinInterval")
	}
	if o.MaxPendingBytes < 0 || o.MaxBatchBytes < 0 {
		return errors.New("groupcommit: negative byte bound")
	}
	if o.MaxBatchBytes > segment.MaxFramePayload {
		return fmt.Errorf("groupcommit: MaxBatchBytes %d above the frame limit %d", o.MaxBatchBytes, segment.MaxFramePayload)
	}
	if o.Sync > SyncOff {
		return fmt.Errorf("groupcommit: unknown sync mode %d", o.Sync)
	}
	return nil
}

var (
	// ErrClosed is returned by appends after Close.
	ErrClosed = errors.New("groupcommit: committer closed")
	// ErrTooLarge is returned for a record that cannot fit in a frame.
	ErrTooLarge = errors.New("groupcommit: record too large")
	// ErrEmpty is returned for a transaction with no records.
	ErrEmpty = errors.New("groupcommit: empty transaction")
	// ErrRefused is wrapped (with the gate's error) by the error of every
	// append of a batch Options.Gate refused.
	ErrRefused = errors.New("groupcommit: batch refused by the gate, nothing of it written")
	// ErrNotNext is wrapped by AppendAt's error for a transaction that does
	// not start at the log's next LSN.
	ErrNotNext = errors.New("groupcommit: transaction does not start at the log's next LSN")
	// ErrCommitTimeOrder is wrapped by AppendAt's error for a commit time
	// before the log's last.
	ErrCommitTimeOrder = errors.New("groupcommit: commit time before the log's last")
)

// chunk is one future frame. raw begins with segment.FrameHeaderSize bytes
// reserved for the frame header (segment.Batch.Framed), so the log can
// write the frame from raw without copying it.
type chunk struct {
	raw            []byte
	first          uint64
	txnStart       uint64
	count          int
	endsTxn        bool
	aborted        bool // an abort frame (see Stream.Abort)
	abortedRange   bool // an aborted-range frame (see AppendAbortedAt)
	lastCommit     uint64
	lastCommitTime int64
}

// Committer is the single owner of a segment.Log's writer side.
type Committer struct {
	log  *segment.Log
	opts Options

	mu struct {
		sync.Mutex
		space    sync.Cond // signalled when the flusher takes pending chunks
		nextLSN  uint64
		lastTime int64
		pending  []*chunk
		bytes    int
		free     []*chunk
		err      error
		closed   bool
		// stream is the active streamed transaction, if any: other
		// appends and streams wait until it ends.
		stream *Stream
		// takes counts the flushes that took pending chunks, so a stream
		// knows whether its chunks are still all pending.
		takes uint64
	}
	work chan struct{}

	// flushing holds the one token of whoever is flushing (the flusher
	// goroutine or a leading synchronous appender), from taking its batch
	// to releasing its waiters; meanwhile appends accumulate into the next
	// batch. flush is the holder's scratch state.
	flushing chan struct{}
	flush    struct {
		batches []segment.Batch
		taken   []*chunk
		last    time.Time
		took    time.Duration // the last flush's write and sync
		timer   *time.Timer   // awaitWoken's
		wake    []*waiter     // wakeWaiters'
	}

	durable atomic.Uint64 // last durable commit LSN
	failed  atomic.Pointer[error]
	// refused is the last batch Options.Gate refused: a Wait for one of its
	// LSNs not given again since fails with its error.
	refused atomic.Pointer[refusal]
	stopped atomic.Bool // the flusher has ended: no LSN becomes durable any more
	// waking counts the waiters a flush released that have not run yet;
	// when it drops to 0 and wokenWanted is set, allWoken is signalled
	// (see awaitWoken).
	waking      atomic.Int64
	wokenWanted atomic.Bool
	allWoken    chan struct{}
	// Each waiter parks on a channel of its own, listed with the flush
	// that will make its LSN durable; that flush sends each of its waiters
	// a token. A channel per flush, closed to release them all, was
	// shared by every waiter of the flush: each of them locked it twice
	// per wait (in select, parking beside its context's channel, and again
	// on waking), and with hundreds of appenders on two cores select took a
	// large share of the process's CPU, much of it spinning on that lock;
	// with a channel each, clearly less (bench/README.md has the numbers).
	w struct {
		sync.Mutex
		// gens are the taken flushes with a commit not yet durable, in
		// LSN order.
		gens []flushGen
		// next are the waiters of LSNs no flush has taken yet: the next
		// take moves them into gens.
		next []*waiter
		// spare are emptied waiter lists, for reuse.
		spare [][]*waiter
		// released: every waiter is released and no more park, because
		// the committer failed or stopped.
		released bool
	}

	done chan struct{}
}

// New starts a committer on log, which it owns for writing until Close.
func New(log *segment.Log, opts Options) (*Committer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.MaxPendingBytes == 0 {
		opts.MaxPendingBytes = 64 << 20
	}
	if opts.MaxBatchBytes == 0 {
		opts.MaxBatchBytes = 1 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Committer{log: log, opts: opts, work: make(chan struct{}, 1), done: make(chan struct{}),
		flushing: make(chan struct{}, 1), allWoken: make(chan struct{}, 1)}
	c.mu.space.L = &c.mu.Mutex
	c.mu.nextLSN = log.NextLSN()
	c.mu.lastTime = log.LastCommitTime()
	c.durable.Store(log.Visible())
	go c.flushLoop()
	return c, nil
}

// Ticket identifies an appended transaction.
type Ticket struct {
	First, Last uint64 // LSNs of its first and last (commit) record
	CommitTime  int64  // Unix nanoseconds, as recorded in the log
}

// Time returns the commit time as a time.Time.
func (t Ticket) Time() time.Time { return time.Unix(0, t.CommitTime).UTC() }

// Append appends one transaction and waits until it is durable (SyncLocal)
// or written (SyncOff). commitTime is the source's commit time; zero means
// now. It blocks for backpressure and for the flush; ctx bounds both, but a
// transaction already queued is written even if ctx ends.
//
// When no flush is in progress the calling goroutine performs the write
// and fsync itself (leader commit, as in pebble and InnoDB), saving the
// two goroutine handoffs to and from the flusher; otherwise the flusher
// takes the transaction with the next batch.
func (c *Committer) Append(ctx context.Context, records [][]byte, commitTime time.Time) (Ticket, error) {
	t, err := c.enqueue(ctx, records, commitTime)
	if err != nil {
		return t, err
	}
	if c.opts.MinInterval == 0 && c.tryLead() {
		c.mu.Lock()
		more := len(c.mu.pending) > 0
		c.mu.Unlock()
		if more {
			c.signal()
		}
	} else {
		c.signal()
	}
	return t, c.Wait(ctx, t.Last)
}

// signal wakes the flusher if it is idle.
func (c *Committer) signal() {
	select {
	case c.work <- struct{}{}:
	default:
	}
}

// AppendAsync queues one transaction and returns its LSNs at once, without
// waiting for durability: a single producer pipelines by calling it
// repeatedly and then Wait on the last LSN. It blocks only while
// MaxPendingBytes are queued. The records are copied; the caller keeps them.
func (c *Committer) AppendAsync(ctx context.Context, records [][]byte, commitTime time.Time) (Ticket, error) {
	t, err := c.enqueue(ctx, records, commitTime)
	if err == nil {
		c.signal()
	}
	return t, err
}

// admitAtLocked is admitLocked for a copy from another log (AppendAt,
// AppendAbortedAt): what must also start at the log's next LSN, first.
func (c *Committer) admitAtLocked(ctx context.Context, size int, first uint64, what string) error {
	if err := c.admitLocked(ctx, size); err != nil {
		return err
	}
	if next := c.mu.nextLSN; first != next {
		return fmt.Errorf("%w: %s at LSN %d, the log's next LSN is %d", ErrNotNext, what, first, next)
	}
	return nil
}

// AppendAt queues one transaction copied from another log of the same
// history, like AppendAsync but at exactly the LSNs and commit time given:
// its first record must get LSN first, the log's next (else an error
// wrapping ErrNotNext naming both), and commitTime (Unix nanoseconds) is
// recorded as is, so it must not be before the log's last commit time
// (else an error wrapping ErrCommitTimeOrder naming both). Nothing is
// queued on error.
func (c *Committer) AppendAt(ctx context.Context, first uint64, records [][]byte, commitTime int64) (Ticket, error) {
	size, err := txnSize(records)
	if err != nil {
		return Ticket{}, err
	}
	c.mu.Lock()
	if err := c.admitAtLocked(ctx, size, first, "transaction"); err != nil {
		c.mu.Unlock()
		return Ticket{}, err
	}
	if last := c.mu.lastTime; commitTime < last {
		c.mu.Unlock()
		return Ticket{}, fmt.Errorf("%w: commit time %s (LSN %d) is before the log's last commit time %s",
			ErrCommitTimeOrder, time.Unix(0, commitTime).UTC().Format(time.RFC3339Nano), first, time.Unix(0, last).UTC().Format(time.RFC3339Nano))
	}
	c.mu.lastTime = commitTime
	c.encodeLocked(records, size, first, commitTime)
	c.mu.nextLSN += uint64(len(records))
	c.mu.bytes += size
	c.mu.Unlock()
	c.signal()
	return Ticket{First: first, Last: first + uint64(len(records)) - 1, CommitTime: commitTime}, nil
}

// AppendAbortedAt queues an aborted range copied from another log of the
// same history: the LSNs first..last of a transaction that log aborted
// midway (a streamed transaction ended by an abort frame), whose records
// this log never had. It is written as one aborted-range frame
// (segment.Batch.AbortedRange) holding only the abort record at last, so
// that readers skip the range exactly as they skip it in the other log and
// LSNs continue at last+1. first must be the log's next LSN (else an error
// wrapping ErrNotNext) and last > first (an abort frame follows at least
// one record). The abort record carries abortTime (Unix nanoseconds: the
// abort's time in the other log, as far as it is known), raised to the
// log's last commit time if earlier, so that commit times never decrease
// (docs/FORMAT.md §3). Committer.Wait(ctx, last) waits for it to be
// durable. Nothing is queued on error.
func (c *Committer) AppendAbortedAt(ctx context.Context, first, last uint64, abortTime int64) (Ticket, error) {
	if last <= first || last-first >= math.MaxUint32 {
		return Ticket{}, fmt.Errorf("groupcommit: aborted range %d-%d: want 2 to 2^32-1 LSNs", first, last)
	}
	size := segment.RecordOverhead
	c.mu.Lock()
	if err := c.admitAtLocked(ctx, size, first, "aborted range"); err != nil {
		c.mu.Unlock()
		return Ticket{}, err
	}
	ct := max(abortTime, c.mu.lastTime)
	c.mu.lastTime = ct
	ch := c.newChunkLocked(first, first)
	ch.raw = segment.AppendRecord(ch.raw, nil, true, ct)
	ch.count, ch.endsTxn, ch.aborted, ch.abortedRange = int(last-first+1), true, true, true
	ch.lastCommit, ch.lastCommitTime = last, ct
	c.mu.nextLSN = last + 1
	c.mu.bytes += len(ch.raw) - segment.FrameHeaderSize
	c.mu.Unlock()
	c.signal()
	return Ticket{First: first, Last: last, CommitTime: ct}, nil
}

// txnSize checks one transaction's records and returns their size in a
// frame.
func txnSize(records [][]byte) (int, error) {
	if len(records) == 0 {
		return 0, ErrEmpty
	}
	size := 0
	for _, r := range records {
		if len(r) > segment.MaxFramePayload-segment.RecordOverhead {
			return 0, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(r), segment.MaxFramePayload-segment.RecordOverhead)
		}
		size += len(r) + segment.RecordOverhead
	}
	return size, nil
}

// enqueue encodes one transaction into the pending batch.
func (c *Committer) enqueue(ctx context.Context, records [][]byte, commitTime time.Time) (Ticket, error) {
	size, err := txnSize(records)
	if err != nil {
		return Ticket{}, err
	}
	var ct int64
	if commitTime.IsZero() {
		ct = c.opts.Now().UnixNano()
	} else {
		ct = commitTime.UnixNano()
	}

	c.mu.Lock()
	if err := c.admitLocked(ctx, size); err != nil {
		c.mu.Unlock()
		return Ticket{}, err
	}
	ct = max(ct, c.mu.lastTime)
	c.mu.lastTime = ct
	first := c.mu.nextLSN
	c.encodeLocked(records, size, first, ct)
	c.mu.nextLSN += uint64(len(records))
	c.mu.bytes += size
	c.mu.Unlock()
	return Ticket{First: first, Last: first + uint64(len(records)) - 1, CommitTime: ct}, nil
}

// Batch is several transactions queued as one unit by AppendBatchAsync,
// held flat so that a batch of many small transactions costs no slice per
// record.
type Batch struct {
	// Data holds the records back to back; Ends[i] is the end offset in
	// Data of record i.
	Data []byte
	Ends []uint32
	// Txns has one entry per transaction, in order: its number of records
	// and its commit time (Unix nanoseconds; zero means now), which
	// AppendBatchAsync replaces with the commit time the log recorded.
	Txns []BatchTxn
}

// BatchTxn is one transaction of a Batch.
type BatchTxn struct {
	Records    uint32
	CommitTime int64
}

// AppendBatchAsync queues every transaction of b at once and returns the
// LSN of its first record, without waiting for durability: the
// transactions get consecutive LSNs in order, with nothing between them,
// and either all of them are queued or, on error, none. It blocks only
// while MaxPendingBytes are queued (a batch larger than that is accepted
// alone). The records are copied; the caller keeps b.
func (c *Committer) AppendBatchAsync(ctx context.Context, b *Batch) (uint64, error) {
	n := 0
	for _, t := range b.Txns {
		if t.Records == 0 {
			return 0, ErrEmpty
		}
		n += int(t.Records)
	}
	if n == 0 || n != len(b.Ends) {
		return 0, fmt.Errorf("%w: batch of %d records, its transactions count %d", ErrEmpty, len(b.Ends), n)
	}
	start := uint32(0)
	for _, e := range b.Ends {
		if int(e-start) > segment.MaxFramePayload-segment.RecordOverhead {
			return 0, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, e-start, segment.MaxFramePayload-segment.RecordOverhead)
		}
		start = e
	}
	size := len(b.Data) + len(b.Ends)*segment.RecordOverhead
	now := c.opts.Now().UnixNano()

	c.mu.Lock()
	if err := c.admitLocked(ctx, size); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	first := c.mu.nextLSN
	rec, off := 0, uint32(0)
	var records [][]byte
	for i := range b.Txns {
		t := &b.Txns[i]
		txnStart := off
		records = records[:0]
		for range t.Records {
			records = append(records, b.Data[off:b.Ends[rec]])
			off = b.Ends[rec]
			rec++
		}
		ct := t.CommitTime
		if ct == 0 {
			ct = now
		}
		ct = max(ct, c.mu.lastTime)
		c.mu.lastTime = ct
		t.CommitTime = ct
		sz := len(b.Data[txnStart:off]) + len(records)*segment.RecordOverhead
		c.encodeLocked(records, sz, c.mu.nextLSN, ct)
		c.mu.nextLSN += uint64(t.Records)
	}
	c.mu.bytes += size
	c.mu.Unlock()
	c.signal()
	return first, nil
}

// admitLocked waits until size more bytes may be queued (no stream in
// progress, MaxPendingBytes not exceeded unless nothing is queued), then
// returns the sticky error or ErrClosed if either ends appending. The
// caller holds c.mu, and still does when it returns.
func (c *Committer) admitLocked(ctx context.Context, size int) error {
	if err := c.waitLocked(ctx, func() bool {
		return c.mu.stream != nil || (c.mu.bytes > 0 && c.mu.bytes+size > c.opts.MaxPendingBytes)
	}); err != nil {
		return err
	}
	if c.mu.err != nil {
		return c.mu.err
	}
	if c.mu.closed {
		return ErrClosed
	}
	return nil
}

// waitLocked waits on c.mu.space while blocked() holds. It returns the
// sticky error, ErrClosed or ctx's error if one of them ends the wait
// first. The caller holds c.mu.
func (c *Committer) waitLocked(ctx context.Context, blocked func() bool) error {
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for blocked() {
		switch {
		case c.mu.err != nil:
			return c.mu.err
		case c.mu.closed:
			return ErrClosed
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if stop == nil {
			// Wake this waiter when ctx ends, not only at the next flush.
			stop = context.AfterFunc(ctx, func() {
				c.mu.Lock()
				c.mu.space.Broadcast()
				c.mu.Unlock()
			})
		}
		c.mu.space.Wait()
	}
	return nil
}

// encodeLocked encodes a transaction into pending chunks. A transaction
// that does not fit the current chunk starts a new one, so a transaction
// spanning frames always begins a frame (segment.Batch's rule).
func (c *Committer) encodeLocked(records [][]byte, size int, first uint64, ct int64) {
	var ch *chunk
	shared := false
	if n := len(c.mu.pending); n > 0 && !c.mu.pending[n-1].aborted && len(c.mu.pending[n-1].raw)+size <= c.opts.MaxBatchBytes {
		ch, shared = c.mu.pending[n-1], true
	} else {
		ch = c.newChunkLocked(first, first)
	}
	last := len(records) - 1
	for i, r := range records {
		// Only a transaction that began its own chunk may be split.
		if !shared && i > 0 && len(ch.raw)+len(r)+segment.RecordOverhead > c.opts.MaxBatchBytes {
			ch = c.newChunkLocked(first+uint64(i), first)
		}
		ch.raw = segment.AppendRecord(ch.raw, r, i == last, ct)
		ch.count++
	}
	ch.endsTxn = true
	ch.lastCommit, ch.lastCommitTime = first+uint64(last), ct
}

func (c *Committer) newChunkLocked(firstLSN, txnStart uint64) *chunk {
	var ch *chunk
	if n := len(c.mu.free); n > 0 {
		ch = c.mu.free[n-1]
		c.mu.free = c.mu.free[:n-1]
		*ch = chunk{raw: ch.raw[:segment.FrameHeaderSize]}
	} else {
		ch = &chunk{raw: make([]byte, segment.FrameHeaderSize, min(c.opts.MaxBatchBytes, 64<<10))}
	}
	ch.first, ch.txnStart = firstLSN, txnStart
	c.mu.pending = append(c.mu.pending, ch)
	return ch
}

// Wait blocks until the transaction whose commit record has LSN lsn is
// durable (or written, with SyncOff), the committer fails, or ctx ends.
func (c *Committer) Wait(ctx context.Context, lsn uint64) error {
	done := ctx.Done()
	for {
		r := c.refused.Load()
		if r != nil {
			// Before the durable check: an abort frame that ended a
			// refused stream takes the LSN of a refused commit.
			if err := c.refusedErr(r, lsn); err != nil {
				return err
			}
		}
		if c.durable.Load() >= lsn {
			return nil
		}
		if e := c.failed.Load(); e != nil {
			return *e
		}
		if c.stopped.Load() {
			// stopped is set after the last durable store.
			if c.durable.Load() >= lsn {
				return nil
			}
			return ErrClosed
		}
		w := waiterPool.Get().(*waiter)
		if !c.park(w, lsn, r) {
			waiterPool.Put(w)
			continue // durable, failed or stopped meanwhile
		}
		if done == nil {
			<-w.ch
		} else {
			select {
			case <-w.ch:
			case <-done:
				c.unpark(w)
				if c.durable.Load() >= lsn {
					return nil // both were ready: durable is the answer
				}
				return ctx.Err()
			}
		}
		err := w.err
		w.err = nil
		waiterPool.Put(w)
		c.resumed()
		if err != nil {
			return err // its batch was refused: its LSN may be given again
		}
	}
}

// refusedErr returns the error of r, the last refused batch, if it held
// lsn and lsn has not been given to another transaction since.
func (c *Committer) refusedErr(r *refusal, lsn uint64) error {
	if r == nil || lsn < r.first {
		return nil
	}
	if lsn == r.abort {
		return r.err // no transaction commits at the abort frame's LSN
	}
	c.mu.Lock()
	given := lsn < c.mu.nextLSN
	c.mu.Unlock()
	if given {
		return nil
	}
	return r.err
}

// refusal is a batch Options.Gate refused.
type refusal struct {
	first uint64 // its first LSN
	abort uint64 // the LSN of the abort frame that ended a stream's written part; 0 if none
	err   error
}

// waiter is one parked Wait: its flush sends one token on ch (capacity 1),
// after setting err if its batch was refused.
type waiter struct {
	ch  chan struct{}
	err error
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// park lists w with the first taken flush whose last commit is at or after
// lsn, or with the next take. It reports false if lsn is durable, the
// committer failed or stopped, or a batch was refused since the caller
// loaded refused (the caller looks again).
func (c *Committer) park(w *waiter, lsn uint64, refused *refusal) bool {
	c.w.Lock()
	defer c.w.Unlock()
	if c.w.released || c.durable.Load() >= lsn || c.refused.Load() != refused {
		return false
	}
	for i := range c.w.gens {
		if c.w.gens[i].last >= lsn {
			c.w.gens[i].waiters = append(c.w.gens[i].waiters, w)
			return true
		}
	}
	c.w.next = append(c.w.next, w)
	return true
}

// unpark takes out w, whose ctx ended. If a flush released it meanwhile
// (its token is sent or on its way), it is counted as run instead, and not
// reused.
func (c *Committer) unpark(w *waiter) {
	c.w.Lock()
	defer c.w.Unlock()
	if remove(&c.w.next, w) {
		return
	}
	for i := range c.w.gens {
		if remove(&c.w.gens[i].waiters, w) {
			return
		}
	}
	c.resumed()
}

// remove deletes w from *list, reporting whether it was there.
func remove(list *[]*waiter, w *waiter) bool {
	i := slices.Index(*list, w)
	if i < 0 {
		return false
	}
	*list = slices.Delete(*list, i, i+1)
	return true
}

// Durable returns the LSN of the last durable commit.
func (c *Committer) Durable() uint64 { return c.durable.Load() }

// NextLSN returns the LSN the next append's first record gets (unless
// another append comes first).
func (c *Committer) NextLSN() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.nextLSN
}

// Err returns the sticky error, if the committer has failed.
func (c *Committer) Err() error {
	if e := c.failed.Load(); e != nil {
		return *e
	}
	return nil
}

func (c *Committer) flushLoop() {
	defer func() {
		// A leading appender may still be in its flush: wait for it, so a
		// waiter that sees done also sees every durable LSN.
		c.flushing <- struct{}{}
		<-c.flushing
		c.stopped.Store(true)
		c.releaseAll()
		close(c.done)
	}()
	for {
		c.mu.Lock()
		// After Close, an active stream still ends (committed or aborted)
		// through this loop.
		for len(c.mu.pending) == 0 && (!c.mu.closed || c.mu.stream != nil) {
			c.mu.Unlock()
			<-c.work
			c.mu.Lock()
		}
		if len(c.mu.pending) == 0 && c.mu.closed && c.mu.stream == nil {
			c.mu.Unlock()
			return
		}
		closed := c.mu.closed
		c.mu.Unlock()
		c.flushing <- struct{}{}
		if c.opts.MinInterval > 0 && !closed {
			if d := c.opts.MinInterval - time.Since(c.flush.last); d > 0 {
				time.Sleep(d)
			}
		}
		if job, ok := c.writeLocked(); ok {
			c.finish(job)
		}
		<-c.flushing
	}
}

// tryLead is the leader commit of a synchronous appender: if nobody is
// flushing, it writes everything pending and syncs it in the calling
// goroutine. It reports whether it did.
func (c *Committer) tryLead() bool {
	select {
	case c.flushing <- struct{}{}:
	default:
		return false
	}
	if job, ok := c.writeLocked(); ok {
		c.finish(job)
	}
	<-c.flushing
	return true
}

// awaitWoken waits, before the next batch is taken, until the waiters
// the previous flush released have all run, for as long as they keep
// coming: in slices of budget (the previous flush's duration), while each
// slice sees some of them run, at most maxWokenSlices.
//
// A released appender that appends again at once then joins this batch
// instead of waiting for it to end and for the one after. With 16 to 256
// closed-loop appenders on two cores, taking the batch as soon as the
// first of them was back split them into cohorts that each waited two
// flushes (bench/README.md). This is not an artificial delay: it waits
// only for goroutines that are already runnable, and returns at once when
// there are none (the single appender; a flusher woken by new appends).
// Running 256 of them can take longer than a flush, hence the slices; a
// slice in which none of them ran ends the wait, since they then wait for
// a processor behind unrelated work, and an appender that misses the
// batch waits about one flush anyway.
func (c *Committer) awaitWoken(budget time.Duration) {
	if c.waking.Load() <= 0 || budget <= 0 {
		return
	}
	f := &c.flush
	c.wokenWanted.Store(true)
	for slice := 0; slice < maxWokenSlices; slice++ {
		left := c.waking.Load()
		if left <= 0 {
			break
		}
		if f.timer == nil {
			f.timer = time.NewTimer(budget)
		} else {
			f.timer.Reset(budget)
		}
		timedOut := false
		for !timedOut && c.waking.Load() > 0 {
			select {
			case <-c.allWoken: // maybe left by an earlier wait: look again
			case <-f.timer.C:
				timedOut = true
			}
		}
		if !timedOut && !f.timer.Stop() {
			select { // a timer channel of before Go 1.23 may hold a value
			case <-f.timer.C:
			default:
			}
		}
		if !timedOut || c.waking.Load() >= left {
			break // all of them ran, or none did in a whole slice
		}
	}
	c.wokenWanted.Store(false)
	// The last of them signalled before appending again: let it.
	runtime.Gosched()
}

// maxWokenSlices bounds awaitWoken to this many flush times.
const maxWokenSlices = 4

// resumed counts a released waiter as run, and wakes awaitWoken after the
// last one.
func (c *Committer) resumed() {
	if c.waking.Add(-1) == 0 && c.wokenWanted.Load() {
		select {
		case c.allWoken <- struct{}{}:
		default:
		}
	}
}

// flushGen is one taken flush with a commit: its waiters are released
// when its last commit LSN is durable.
type flushGen struct {
	last    uint64
	waiters []*waiter
}

// syncJob is a written batch waiting for its fdatasync.
type syncJob struct {
	p       segment.SyncPoint
	records int
	bytes   int
	start   time.Time
}

// writeLocked takes everything pending and writes it to the log (and, with
// SyncOff, publishes it). It reports false if there was nothing to write
// or the write failed (the committer is then failed and the waiters
// woken). The caller holds the flushing token and passes the job to
// finish.
func (c *Committer) writeLocked() (syncJob, bool) {
	f := &c.flush
	c.awaitWoken(f.took)
	c.mu.Lock()
	if len(c.mu.pending) == 0 {
		c.mu.Unlock()
		return syncJob{}, false
	}
	if c.opts.Gate != nil {
		if err := c.opts.Gate(); err != nil {
			c.refuseLocked(err)
			return syncJob{}, false
		}
	}
	f.taken = append(f.taken[:0], c.mu.pending...)
	c.mu.pending = c.mu.pending[:0]
	c.mu.takes++
	c.takeGenLocked(f.taken)
	n := c.mu.bytes
	c.mu.bytes = 0
	c.mu.space.Broadcast()
	c.mu.Unlock()

	f.batches = f.batches[:0]
	records := 0
	for _, ch := range f.taken {
		f.batches = append(f.batches, segment.Batch{Raw: ch.raw, Count: ch.count, FirstLSN: ch.first, TxnStart: ch.txnStart,
			EndsTxn: ch.endsTxn, Aborted: ch.aborted, AbortedRange: ch.abortedRange, LastCommit: ch.lastCommit, LastCommitTime: ch.lastCommitTime, Framed: true})
		records += ch.count
	}
	start := time.Now()
	f.last = start
	err := c.log.Write(f.batches)
	if err == nil && c.opts.Sync == SyncOff {
		c.log.Publish()
	}
	// Write copied the chunks: they can be refilled at once.
	c.mu.Lock()
	c.mu.free = append(c.mu.free, f.taken...)
	c.mu.Unlock()
	clear(f.taken)
	if err != nil {
		c.setFailed(err)
		c.wakeWaiters()
		return syncJob{}, false
	}
	return syncJob{p: c.log.Mark(), records: records, bytes: n, start: start}, true
}

// refuseLocked drops every pending chunk, which Options.Gate refused with
// gerr, and gives their LSNs back; it fails the waiters of those LSNs and
// an active stream. The caller holds the flushing token (so the log's last
// written commit time is stable) and c.mu, which refuseLocked unlocks.
func (c *Committer) refuseLocked(gerr error) {
	first := c.mu.pending[0].first
	// A stream's transaction begun in a batch already written continues
	// in the refused one (only a stream spans batches).
	begun := c.mu.pending[0].txnStart
	partial := begun < first
	err := fmt.Errorf("%w (LSNs %d to %d): %w", ErrRefused, first, c.mu.nextLSN-1, gerr)
	c.mu.free = append(c.mu.free, c.mu.pending...)
	clear(c.mu.pending)
	c.mu.pending = c.mu.pending[:0]
	c.mu.bytes = 0
	c.mu.nextLSN = first
	c.mu.lastTime = c.log.LastCommitTime()
	if s := c.mu.stream; s != nil {
		s.refusedLocked(err)
	}
	if partial {
		// Its written records must never be read as part of what comes
		// next: end them with an abort frame, which the next batch writes
		// once the gate passes (docs/FORMAT.md §3).
		c.queueAbortLocked(begun)
	}
	r := &refusal{first: first, err: err}
	if partial {
		r.abort = first
	}
	c.refused.Store(r)
	c.mu.space.Broadcast()
	// The waiters of untaken LSNs are the refused batch's: taken flushes
	// are written already.
	c.w.Lock()
	var wake []*waiter
	if !c.w.released {
		wake, c.w.next = c.w.next, nil
		for _, w := range wake {
			w.err = err
		}
		c.waking.Add(int64(len(wake)))
	}
	c.w.Unlock()
	c.mu.Unlock()
	release(wake)
	c.opts.Logger.Warn("group commit: batch refused by the gate; nothing written", "first_lsn", first, "err", gerr)
}

// takeGenLocked moves the waiters parked for the next take into a new gen
// for this flush, and gives next an emptied list. Done under c.mu, with
// the take, so that an LSN enqueued after the take never parks with this
// flush. A take without a commit (a stream's middle) releases nobody and
// keeps next.
func (c *Committer) takeGenLocked(taken []*chunk) {
	var last uint64
	for _, ch := range taken {
		last = max(last, ch.lastCommit) // 0 in a chunk without a commit
	}
	if last == 0 {
		return
	}
	c.w.Lock()
	if !c.w.released {
		c.w.gens = append(c.w.gens, flushGen{last: last, waiters: c.w.next})
		c.w.next = nil
		if n := len(c.w.spare); n > 0 {
			c.w.next, c.w.spare = c.w.spare[n-1], c.w.spare[:n-1]
		}
	}
	c.w.Unlock()
}

// finish makes a written batch durable (SyncLocal; with SyncOff it is
// already published), then releases its waiters. The caller holds the
// flushing token.
func (c *Committer) finish(job syncJob) {
	var err error
	if c.opts.Sync == SyncLocal {
		err = c.log.SyncTo(job.p)
	}
	if err != nil {
		c.setFailed(err)
	} else {
		// Only the flushing token's holder stores durable. A flush of a
		// stream's middle has no commit (LastCommit 0).
		if lsn := job.p.LastCommit(); lsn > c.durable.Load() {
			c.durable.Store(lsn)
		}
		c.flush.took = time.Since(job.start)
		if c.opts.Observe != nil {
			c.opts.Observe(job.records, job.bytes, c.flush.took)
		}
	}
	c.wakeWaiters()
}

// wakeWaiters releases the waiters of every flush whose last commit is
// now durable, or, once the committer has failed, every waiter. The tokens
// are sent after c.w is unlocked, so that the first released waiters can
// park again meanwhile.
func (c *Committer) wakeWaiters() {
	if c.failed.Load() != nil {
		c.releaseAll()
		return
	}
	c.w.Lock()
	if c.w.released {
		c.w.Unlock()
		return
	}
	d := c.durable.Load()
	n := 0
	for n < len(c.w.gens) && c.w.gens[n].last <= d {
		n++
	}
	if n == 0 {
		c.w.Unlock()
		return
	}
	wake := c.flush.wake[:0]
	for _, g := range c.w.gens[:n] {
		wake = append(wake, g.waiters...)
		c.w.spare = append(c.w.spare, g.waiters[:0])
	}
	m := copy(c.w.gens, c.w.gens[n:])
	clear(c.w.gens[m:])
	c.w.gens = c.w.gens[:m]
	// Counted before any token is sent: a waiter's resumed follows it.
	c.waking.Add(int64(len(wake)))
	c.w.Unlock()
	release(wake)
	clear(wake)
	c.flush.wake = wake[:0]
}

// release sends each waiter its token.
func release(ws []*waiter) {
	for _, w := range ws {
		w.ch <- struct{}{}
	}
}

// releaseAll releases every waiter, for good: the committer failed or
// stopped, and waiters see which in Wait.
func (c *Committer) releaseAll() {
	c.w.Lock()
	if c.w.released {
		c.w.Unlock()
		return
	}
	c.w.released = true
	wake := c.w.next
	for _, g := range c.w.gens {
		wake = append(wake, g.waiters...)
	}
	c.w.gens, c.w.next, c.w.spare = nil, nil, nil
	c.waking.Add(int64(len(wake)))
	c.w.Unlock()
	release(wake)
}

func (c *Committer) setFailed(err error) {
	c.failed.CompareAndSwap(nil, &err)
	c.mu.Lock()
	if c.mu.err == nil {
		c.mu.err = err
	}
	// Queued transactions can never be written now: drop them; their
	// waiters see the error.
	c.mu.pending = c.mu.pending[:0]
	c.mu.bytes = 0
	c.mu.space.Broadcast()
	c.mu.Unlock()
	c.opts.Logger.Error("group commit failed; all later appends fail", "err", err)
}

// Close stops accepting appends, writes and syncs everything queued, and
// stops the flusher. It does not close the log. It is idempotent and
// returns the sticky error, if any. An active Stream's later Add and Commit
// fail with ErrClosed; Close returns only after the stream has ended
// (Commit or Abort), so its owner must end it.
func (c *Committer) Close() error {
	c.mu.Lock()
	c.mu.closed = true
	c.mu.space.Broadcast()
	c.mu.Unlock()
	c.signal()
	<-c.done // also after a leading appender's flush: see flushLoop
	return c.Err()
}
