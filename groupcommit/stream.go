package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/walship/walship/segment"
)

// ErrStreamEnded is returned by a Stream's Add and Commit after the stream
// was committed or aborted.
var ErrStreamEnded = errors.New("groupcommit: stream already ended")

// Stream appends one transaction record by record, for transactions too
// large to hold in memory. While a stream is active it owns the log:
// every other append and stream waits until it commits or aborts, so its
// records get consecutive LSNs and no other transaction interleaves.
// Transactions queued before it keep their place before it.
//
// Its records are written (and, with SyncLocal, synced) in frames while
// they come, with at most StreamPendingBytes of them in memory; they stay
// invisible to readers until the commit record is durable: readers see
// only up to the last durable commit, and recovery removes a transaction
// whose commit never became durable. Abort ends the stream without a
// commit: the records already written are ended by an abort frame that
// readers skip (see segment.Record.Aborted); those not yet taken by the
// flusher are simply dropped.
//
// A Stream is not safe for concurrent use. Its owner must end it with
// Commit or Abort; until then every other appender waits.
type Stream struct {
	c     *Committer
	first uint64 // LSN of the stream's first record
	bound int    // pending bytes above which Add waits

	held    []byte // last record added: encoded by the next Add or Commit, which knows if it is the commit
	hasHeld bool

	cur        *chunk // chunk being filled, valid while curTakes == c.mu.takes
	curTakes   uint64
	firstChunk *chunk // the stream's first chunk, nil before the first encoded record
	firstTakes uint64 // c.mu.takes when firstChunk was created
	bytes      int    // bytes this stream queued since firstTakes
	ended      bool
	// refused is the error of a batch Options.Gate refused with some of
	// the stream's records: the stream can then only be aborted.
	refused error
}

// StreamPendingBytes is the most bytes of a stream's encoded records
// waiting for the flusher (less when Options.MaxPendingBytes is smaller):
// the bound on a stream's memory besides the frames being written.
const StreamPendingBytes = 8 << 20

// BeginStream starts a streamed transaction. It waits while another stream
// is active; ctx bounds that wait. The caller must end the returned stream
// with Commit or Abort.
func (c *Committer) BeginStream(ctx context.Context) (*Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.waitLocked(ctx, func() bool { return c.mu.stream != nil }); err != nil {
		return nil, err
	}
	if c.mu.err != nil {
		return nil, c.mu.err
	}
	if c.mu.closed {
		return nil, ErrClosed
	}
	s := &Stream{c: c, first: c.mu.nextLSN, bound: min(c.opts.MaxPendingBytes, StreamPendingBytes)}
	c.mu.stream = s
	return s, nil
}

// First returns the LSN the stream's first record gets.
func (s *Stream) First() uint64 { return s.first }

// Add appends one record to the stream. The record is copied; the caller
// keeps it. Add blocks while StreamPendingBytes are waiting for the
// flusher (backpressure); ctx bounds that wait. An error leaves the stream
// active: the caller then aborts it.
func (s *Stream) Add(ctx context.Context, record []byte) error {
	if lim := segment.MaxFramePayload - segment.RecordOverhead; len(record) > lim {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(record), lim)
	}
	c := s.c
	c.mu.Lock()
	if err := s.usableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	signal := false
	if s.hasHeld {
		if err := s.waitSpaceLocked(ctx); err != nil {
			c.mu.Unlock()
			return err
		}
		signal = s.encodeLocked(s.held, false, 0)
	}
	s.held, s.hasHeld = append(s.held[:0], record...), true
	c.mu.Unlock()
	if signal {
		c.signal()
	}
	return nil
}

// Commit appends the last added record as the commit record and ends the
// stream, returning the transaction's LSNs without waiting for durability
// (Committer.Wait waits). commitTime is as for Append: zero means now, and
// it is raised to the previous commit's. A stream with no record fails
// with ErrEmpty. On error (ctx ended while waiting for backpressure, the
// committer failed or closed) the stream stays active: abort it.
func (s *Stream) Commit(ctx context.Context, commitTime time.Time) (Ticket, error) {
	c := s.c
	c.mu.Lock()
	if err := s.usableLocked(); err != nil {
		c.mu.Unlock()
		return Ticket{}, err
	}
	if !s.hasHeld {
		c.mu.Unlock()
		return Ticket{}, ErrEmpty
	}
	if err := s.waitSpaceLocked(ctx); err != nil {
		c.mu.Unlock()
		return Ticket{}, err
	}
	var ct int64
	if commitTime.IsZero() {
		ct = c.opts.Now().UnixNano()
	} else {
		ct = commitTime.UnixNano()
	}
	ct = max(ct, c.mu.lastTime)
	c.mu.lastTime = ct
	s.encodeLocked(s.held, true, ct)
	t := Ticket{First: s.first, Last: c.mu.nextLSN - 1, CommitTime: ct}
	s.endLocked()
	c.mu.Unlock()
	c.signal()
	return t, nil
}

// Abort ends the stream without committing it; it never blocks on I/O and
// ignores no context because it must always end the stream. If none of
// the stream's records was taken by the flusher yet they are dropped and
// their LSNs reused. Otherwise an abort frame is queued after them: it
// consumes one LSN and makes readers skip the whole transaction, so LSNs
// stay dense. If the committer has failed, nothing more can be written:
// Abort returns the sticky error, and the records already written stay
// without a commit, which recovery removes on the next open. Abort after
// the stream ended does nothing.
func (s *Stream) Abort() error {
	c := s.c
	c.mu.Lock()
	if s.ended {
		c.mu.Unlock()
		return nil
	}
	defer func() {
		s.endLocked()
		c.mu.Unlock()
		c.signal()
	}()
	s.hasHeld = false
	if s.firstChunk == nil {
		return nil // nothing was encoded
	}
	if c.mu.err != nil {
		return c.mu.err
	}
	if c.mu.takes == s.firstTakes {
		// Every record of the stream is still pending, from firstChunk on.
		for i, ch := range c.mu.pending {
			if ch == s.firstChunk {
				c.mu.free = append(c.mu.free, c.mu.pending[i:]...)
				clear(c.mu.pending[i:])
				c.mu.pending = c.mu.pending[:i]
				c.mu.bytes -= s.bytes
				c.mu.nextLSN = s.first
				return nil
			}
		}
		panic("groupcommit: stream's first chunk missing from pending")
	}
	c.queueAbortLocked(s.first)
	return nil
}

// queueAbortLocked queues an abort frame ending the transaction begun at
// LSN txnStart, some of whose records were written: it takes the next LSN.
func (c *Committer) queueAbortLocked(txnStart uint64) {
	// The abort record carries a real time, like a commit: the log's commit
	// times (archive manifests, time targets) must never hold the "no
	// commit yet" sentinel of an empty log.
	c.mu.lastTime = max(c.opts.Now().UnixNano(), c.mu.lastTime)
	lsn := c.mu.nextLSN
	ch := c.newChunkLocked(lsn, txnStart)
	ch.raw = segment.AppendRecord(ch.raw, nil, true, c.mu.lastTime)
	ch.count, ch.endsTxn, ch.aborted = 1, true, true
	ch.lastCommit, ch.lastCommitTime = lsn, c.mu.lastTime
	c.mu.nextLSN++
	c.mu.bytes += len(ch.raw) - segment.FrameHeaderSize
}

// refusedLocked records that Options.Gate refused a batch holding the
// stream's pending records, which the committer dropped (and, if some of
// the stream's records were written already, ended with an abort frame):
// Abort has nothing more to do.
func (s *Stream) refusedLocked(err error) {
	s.refused = err
	s.cur = nil
	s.hasHeld = false
	s.firstChunk, s.bytes = nil, 0
}

func (s *Stream) usableLocked() error {
	switch {
	case s.ended:
		return ErrStreamEnded
	case s.refused != nil:
		return s.refused
	case s.c.mu.err != nil:
		return s.c.mu.err
	case s.c.mu.closed:
		return ErrClosed
	}
	return nil
}

// waitSpaceLocked applies backpressure before the held record is encoded.
func (s *Stream) waitSpaceLocked(ctx context.Context) error {
	c := s.c
	size := len(s.held) + segment.RecordOverhead
	blocked := func() bool { return c.mu.bytes > 0 && c.mu.bytes+size > s.bound }
	if blocked() {
		c.signal() // the pending chunks may not have woken the flusher yet
	}
	return c.waitLocked(ctx, blocked)
}

// encodeLocked encodes one record of the stream into its current chunk,
// starting a new chunk when the current one was taken by the flusher or is
// full. Every chunk continues the transaction begun at s.first, and the
// first one begins with it: a transaction spanning frames begins a frame.
// It reports whether a chunk was completed (time to wake the flusher).
func (s *Stream) encodeLocked(rec []byte, commit bool, ct int64) (completed bool) {
	c := s.c
	size := len(rec) + segment.RecordOverhead
	ch := s.cur
	if ch == nil || s.curTakes != c.mu.takes || (ch.count > 0 && len(ch.raw)+size > c.opts.MaxBatchBytes) {
		completed = ch != nil && s.curTakes == c.mu.takes
		ch = c.newChunkLocked(c.mu.nextLSN, s.first)
		s.cur, s.curTakes = ch, c.mu.takes
		if s.firstChunk == nil {
			s.firstChunk, s.firstTakes = ch, c.mu.takes
		}
	}
	before := len(ch.raw)
	ch.raw = segment.AppendRecord(ch.raw, rec, commit, ct)
	ch.count++
	n := len(ch.raw) - before
	c.mu.bytes += n
	s.bytes += n
	if commit {
		ch.endsTxn = true
		ch.lastCommit, ch.lastCommitTime = c.mu.nextLSN, ct
	}
	c.mu.nextLSN++
	return completed
}

func (s *Stream) endLocked() {
	s.ended = true
	s.held = nil
	if s.c.mu.stream == s {
		s.c.mu.stream = nil
	}
	s.c.mu.space.Broadcast()
}
