package pitr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/walship/walship/archive"
	"github.com/walship/walship/change"
	"github.com/walship/walship/walerr"
)

// retry calls f with archive.Retry under policy p until it succeeds or
// fails permanently (ErrMissing, ErrCorruption, ctx ended); every other
// error is retried, and one that p.MaxElapsed does not see overcome is
// ErrUnreadable, with the number of attempts. A transient error is never
// taken for the end of the archive or for a missing object.
func retry(ctx context.Context, p archive.RetryPolicy, f func(ctx context.Context) error) error {
	if p.MaxElapsed < 0 {
		p.MaxElapsed = 0 // a restore always gives up: the default
	}
	start := time.Now()
	attempts := 0
	var last error
	err := archive.Retry(ctx, p, func(err error) bool { return !permanent(err) }, func(ctx context.Context) error {
		attempts++
		last = f(ctx)
		return last
	})
	switch {
	case err == nil || permanent(last):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("%w: transient error not overcome after %d attempts in %s: %w", ErrUnreadable, attempts, time.Since(start).Round(time.Millisecond), err)
}

// fetchRaw downloads and verifies a segment object from src, retrying
// transient errors, and names the object in any error.
func fetchRaw(ctx context.Context, src Source, p archive.RetryPolicy, s Segment) ([]byte, error) {
	var obj []byte
	err := retry(ctx, p, func(ctx context.Context) error {
		var err error
		obj, err = src.FetchSegment(ctx, s)
		return err
	})
	if err != nil {
		return nil, &ObjectError{Key: s.Key, Op: "fetch segment", Err: err}
	}
	return obj, nil
}

// decode decodes a fetched object and checks it against its manifest.
func decode(src Source, s Segment, obj []byte) ([]change.Committed, error) {
	txns, err := src.DecodeSegment(s, obj)
	if err == nil {
		err = checkSegment(s, txns) // walerr.ErrCorruption
	}
	if err != nil {
		if !errors.Is(err, walerr.ErrCorruption) {
			// Not the object's fault: a sealed object without its key,
			// say. The archive cannot be read with this configuration.
			err = fmt.Errorf("%w: %w", ErrUnreadable, err)
		}
		return nil, &ObjectError{Key: s.Key, Op: "decode segment", Err: err}
	}
	return txns, nil
}

// readSegment fetches, verifies and decodes s.
func readSegment(ctx context.Context, src Source, p archive.RetryPolicy, s Segment) ([]change.Committed, error) {
	obj, err := fetchRaw(ctx, src, p, s)
	if err != nil {
		return nil, err
	}
	return decode(src, s, obj)
}

// checkSegment verifies that the decoded transactions are those the
// manifest describes: whole, in LSN order, within FirstLSN-LastLSN, the
// last one committing at LastLSN. LSNs between transactions are allowed:
// they belong to transactions aborted midway, which the log skips.
func checkSegment(s Segment, txns []change.Committed) error {
	if len(txns) == 0 {
		return fmt.Errorf("%w: no transactions, manifest says LSNs %d-%d", walerr.ErrCorruption, s.FirstLSN, s.LastLSN)
	}
	next := s.FirstLSN
	for i := range txns {
		t := &txns[i]
		if t.FirstLSN < next || t.CommitLSN < t.FirstLSN || t.CommitLSN-t.FirstLSN+1 != uint64(len(t.Changes)) {
			return fmt.Errorf("%w: transaction %d spans LSNs %d-%d with %d changes, expected to start at or after LSN %d",
				walerr.ErrCorruption, i, t.FirstLSN, t.CommitLSN, len(t.Changes), next)
		}
		next = t.CommitLSN + 1
	}
	if next-1 != s.LastLSN {
		return fmt.Errorf("%w: transactions end at LSN %d, manifest says %d", walerr.ErrCorruption, next-1, s.LastLSN)
	}
	if s.Txns != 0 && len(txns) != s.Txns {
		return fmt.Errorf("%w: %d transactions, manifest says %d", walerr.ErrCorruption, len(txns), s.Txns)
	}
	return nil
}

// prefetcher runs fetch on segments with n workers, at most window results
// ahead of the consumer (bounded memory), and delivers the results in
// order.
type prefetcher[T any] struct {
	segs    []Segment
	slots   []chan fetched[T]
	tokens  chan struct{}
	next    int
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Once
}

type fetched[T any] struct {
	v   T
	err error
}

func newPrefetcher[T any](ctx context.Context, segs []Segment, n, window int, fetch func(context.Context, Segment) (T, error)) *prefetcher[T] {
	n = max(n, 1)
	window = max(window, n)
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetcher[T]{segs: segs, slots: make([]chan fetched[T], len(segs)), tokens: make(chan struct{}, window), cancel: cancel}
	for i := range p.slots {
		p.slots[i] = make(chan fetched[T], 1)
	}
	jobs := make(chan int)
	p.wg.Add(1)
	go func() { // the dispatcher: hands out indexes in order, window at a time
		defer p.wg.Done()
		defer close(jobs)
		for i := range segs {
			select {
			case p.tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for i := range jobs {
				v, err := fetch(ctx, segs[i])
				p.slots[i] <- fetched[T]{v, err}
			}
		}()
	}
	return p
}

// Next returns the next segment's result, in order. It blocks until that
// segment is fetched. It must be called at most len(segs) times.
func (p *prefetcher[T]) Next() (T, Segment, error) {
	i := p.next
	r := <-p.slots[i]
	p.next++
	<-p.tokens
	return r.v, p.segs[i], r.err
}

// Close stops the workers and waits for them. It is idempotent.
func (p *prefetcher[T]) Close() {
	p.closeMu.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
}
