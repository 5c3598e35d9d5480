package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/walship/walship/change"
)

// ErrKeyConflict is returned by KeyIndex.Claim for a key already used,
// within the window, by a request with another body.
var ErrKeyConflict = errors.New("wal: idempotency key already used for a different request")

// ErrKeyGone is returned by Claim.Tickets when the transactions a key
// appended are no longer readable from the log (retention removed them)
// or never became durable (the log failed).
var ErrKeyGone = errors.New("wal: the transactions of an idempotency key cannot be read back")

// KeyIndex remembers the idempotency keys of the requests appended whole
// (AppendBatchAsync, with a change.IdempotencyMark) within a window, so
// that a retry of a request finds it instead of appending it again. The
// log itself is the memory: LoadKeys rebuilds the index by reading back
// the transactions of the window, so it survives restarts; it holds a few
// dozen bytes per key, never the transactions.
//
// A key is remembered from when the request was appended, by this host's
// clock (the mark's AppendedAt, whatever commit_time the request set),
// until window later; a mark written before that was recorded counts
// from the commit time the log recorded for the request. Retention must keep the
// transactions of live keys (Floor), or a retry can only be told that
// they are gone.
//
// A KeyIndex is safe for concurrent use.
type KeyIndex struct {
	w      *WAL
	window time.Duration
	now    func() time.Time

	mu sync.Mutex
	m  map[string]*keyEntry
}

type keyEntry struct {
	hash  [32]byte
	count uint32 // transactions in the request
	parts []keyPart
	at    time.Time // when the first part was appended (markTime)
	// busy is closed when the request holding the key in flight ends; nil
	// when none is in flight.
	busy chan struct{}
}

// keyPart is a run of the request's transactions, consecutive in the log:
// all of them, or the part an interrupted attempt or its retry appended.
type keyPart struct {
	first    uint64 // LSN of the run's first record
	start, n uint32 // index in the request of its first transaction, and how many
}

func (e *keyEntry) next() uint32 {
	n := uint32(0)
	for _, p := range e.parts {
		n = max(n, p.start+p.n)
	}
	return n
}

// LoadKeys reads back the transactions of the last window of the log and
// returns the index of the idempotency keys they carry. It reads only as
// far back as the window needs: from the newest segment whose first
// transaction is older than the window.
func (w *WAL) LoadKeys(ctx context.Context, window time.Duration) (*KeyIndex, error) {
	x := &KeyIndex{w: w, window: window, now: time.Now, m: make(map[string]*keyEntry)}
	cutoff := x.now().Add(-window)
	from := w.FirstLSN()
	segs := w.Segments()
	for i := len(segs) - 1; i >= 0; i-- {
		t, ok, err := w.firstCommitTime(ctx, segs[i].BaseLSN)
		if err != nil {
			return nil, fmt.Errorf("wal: loading idempotency keys: %w", err)
		}
		if ok && t.Before(cutoff) {
			from = max(from, segs[i].BaseLSN)
			break
		}
	}
	r, err := w.NewReader(from, false)
	if err != nil {
		return nil, fmt.Errorf("wal: loading idempotency keys: %w", err)
	}
	defer r.Close()
	var cur *keyPart
	var left uint32 // transactions of cur's request still to come
	for {
		tx, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wal: loading idempotency keys: %w", err)
		}
		m := tx.Header.Idempotency
		if m == nil {
			if left > 0 && tx.Header.InRequest {
				cur.n++
				left--
			} else {
				left = 0 // the run ended: a crash cut it short
			}
			continue
		}
		e := x.m[m.Key]
		if e == nil || e.hash != m.Hash || e.at.Before(cutoff) {
			e = &keyEntry{hash: m.Hash, count: m.Count, at: markTime(m, tx.CommitTime)}
			x.m[m.Key] = e
		}
		e.parts = append(e.parts, keyPart{first: tx.FirstLSN, start: m.Start, n: 1})
		cur, left = &e.parts[len(e.parts)-1], m.Count-m.Start-1
	}
	x.mu.Lock()
	x.pruneLocked()
	x.mu.Unlock()
	return x, nil
}

// markTime is when the request of mark m was appended: its AppendedAt,
// or for a mark without one the commit time recorded for it.
func markTime(m *change.IdempotencyMark, commit time.Time) time.Time {
	if m.AppendedAt != 0 {
		return time.Unix(0, m.AppendedAt).UTC()
	}
	return commit
}

// firstCommitTime returns the commit time of the first transaction at or
// after lsn, and false if there is none.
func (w *WAL) firstCommitTime(ctx context.Context, lsn uint64) (time.Time, bool, error) {
	r, err := w.NewReader(lsn, false)
	if err != nil {
		return time.Time{}, false, err
	}
	defer r.Close()
	tx, err := r.Next(ctx)
	if errors.Is(err, io.EOF) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	return tx.CommitTime, true, nil
}

// pruneLocked forgets the keys older than the window.
func (x *KeyIndex) pruneLocked() {
	cutoff := x.now().Add(-x.window)
	for k, e := range x.m {
		if e.busy == nil && e.at.Before(cutoff) {
			delete(x.m, k)
		}
	}
}

// Floor returns the lowest LSN the live keys' transactions start at, and
// false if no key is live: retention should keep the log from there on.
func (x *KeyIndex) Floor() (uint64, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pruneLocked()
	lsn, ok := uint64(0), false
	for _, e := range x.m {
		for _, p := range e.parts {
			if !ok || p.first < lsn {
				lsn, ok = p.first, true
			}
		}
	}
	return lsn, ok
}

// Claim is a request's hold on its idempotency key, from KeyIndex.Claim.
type Claim struct {
	x      *KeyIndex
	key    string
	e      *keyEntry
	fresh  bool // the key was unknown: Release forgets it
	closed bool
	// appendedAt is the Mark's AppendedAt, once Mark was called.
	appendedAt int64

	// Replayed says the whole request is in the log already: append
	// nothing and answer with Tickets.
	Replayed bool
	// Start is the index of the first transaction of the request to
	// append: 0, or past those an interrupted earlier attempt appended.
	Start uint32
}

// Claim looks key up for a request whose body has SHA-256 hash and which
// holds count transactions. While another request with the key is in
// flight it waits for it to end (or ctx). Then:
//   - unknown key: a Claim to append the request (Start 0);
//   - the request is in the log: a Claim with Replayed set;
//   - an earlier attempt was cut short (a crash): a Claim to append the
//     rest, from Start;
//   - the key was used for another body: ErrKeyConflict.
//
// A Claim that is not Replayed must end with Done or Release; until then
// other requests with the key wait.
func (x *KeyIndex) Claim(ctx context.Context, key string, hash [32]byte, count int) (*Claim, error) {
	if err := change.ValidateIdempotencyKey(key); err != nil {
		return nil, err
	}
	for {
		x.mu.Lock()
		e := x.m[key]
		if e != nil && e.busy == nil && e.at.Before(x.now().Add(-x.window)) {
			delete(x.m, key)
			e = nil
		}
		if e != nil && e.busy != nil {
			busy := e.busy
			x.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		defer x.mu.Unlock()
		switch {
		case e == nil:
			e = &keyEntry{hash: hash, count: uint32(count), busy: make(chan struct{})}
			x.m[key] = e
			return &Claim{x: x, key: key, e: e, fresh: true}, nil
		case e.hash != hash:
			return nil, ErrKeyConflict
		case e.next() >= e.count:
			return &Claim{x: x, key: key, e: e, Replayed: true, closed: true}, nil
		}
		e.busy = make(chan struct{})
		return &Claim{x: x, key: key, e: e, Start: e.next()}, nil
	}
}

// Mark returns the idempotency mark for the batch that appends the claimed
// request from Start on.
func (c *Claim) Mark() *change.IdempotencyMark {
	if c.appendedAt == 0 {
		c.appendedAt = c.x.now().UnixNano()
	}
	return &change.IdempotencyMark{Key: c.key, Hash: c.e.hash, Start: c.Start, Count: c.e.count, AppendedAt: c.appendedAt}
}

// Done records that b, carrying Mark, was queued (and, as far as the log
// can tell, is durable) and lets waiting requests with the key go on.
func (c *Claim) Done(b *Batch) {
	x := c.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if len(c.e.parts) == 0 && c.e.at.IsZero() {
		c.e.at = c.x.now()
		if c.appendedAt != 0 {
			c.e.at = time.Unix(0, c.appendedAt).UTC()
		}
	}
	c.e.parts = append(c.e.parts, keyPart{first: b.first, start: c.Start, n: uint32(len(b.gb.Txns))})
	close(c.e.busy)
	c.e.busy = nil
}

// Release ends a claim under which nothing was appended: an unknown key
// is forgotten again, and waiting requests with the key go on.
func (c *Claim) Release() {
	x := c.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.fresh {
		delete(x.m, c.key)
	}
	close(c.e.busy)
	c.e.busy = nil
}

// Tickets calls fn with the ticket of each transaction the request
// appended, in request order, read back from the log once durable. It
// fails with ErrKeyGone if they cannot all be read.
func (c *Claim) Tickets(ctx context.Context, fn func(Ticket)) error {
	c.x.mu.Lock()
	parts := append([]keyPart(nil), c.e.parts...)
	c.x.mu.Unlock()
	w := c.x.w
	for _, p := range parts {
		if err := w.Wait(ctx, p.first); err != nil {
			return fmt.Errorf("%w: %w", ErrKeyGone, err)
		}
		r, err := w.NewReader(p.first, false)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrKeyGone, err)
		}
		for i := uint32(0); i < p.n; i++ {
			tx, err := r.Next(ctx)
			if err == nil && i == 0 && tx.FirstLSN != p.first {
				err = fmt.Errorf("LSN %d is no longer in the log", p.first)
			}
			if err == nil {
				if err = w.Wait(ctx, tx.CommitLSN); err == nil {
					fn(Ticket{First: tx.FirstLSN, Last: tx.CommitLSN, CommitTime: tx.CommitTime.UnixNano()})
				}
			}
			if err != nil {
				r.Close()
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("transactions from LSN %d are not durable", p.first)
				}
				return fmt.Errorf("%w: %w", ErrKeyGone, err)
			}
		}
		r.Close()
	}
	return nil
}
