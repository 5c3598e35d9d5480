package pitr

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/walship/walship/wal"
)

// RetryPolicy bounds the retries of a transient fetch error. A transient
// error is never taken for the end of the archive or for a missing object:
// after the policy gives up the restore fails with the error.
type RetryPolicy struct {
	// MaxElapsed is how long one object is retried; default 2 minutes.
	MaxElapsed time.Duration
	// Initial and Max bound the exponential backoff (with jitter) between
	// attempts; defaults 100 ms and 5 s.
	Initial, Max time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 2 * time.Minute
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Second
	}
	return p
}

// retry calls f until it succeeds, fails permanently (ErrMissing,
// ErrCorrupt, ctx ended) or p.MaxElapsed has passed. It returns f's last
// error with the number of attempts.
func retry(ctx context.Context, p RetryPolicy, f func() error) error {
	p = p.withDefaults()
	start := time.Now()
	wait := p.Initial
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || permanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start)+wait > p.MaxElapsed {
			return fmt.Errorf("transient error not overcome after %d attempts in %s: %w", attempt, time.Since(start).Round(time.Millisecond), err)
		}
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, p.Max)
	}
}

type fetchFunc func(ctx context.Context, s Segment) ([]wal.Txn, error)

// fetchWithRetry reads a segment from src, retrying transient errors, and
// names the object in any error.
func fetchWithRetry(src Source, p RetryPolicy) fetchFunc {
	return func(ctx context.Context, s Segment) ([]wal.Txn, error) {
		var txns []wal.Txn
		err := retry(ctx, p, func() error {
			var err error
			txns, err = src.ReadSegment(ctx, s)
			return err
		})
		if err != nil {
			return nil, &ObjectError{Key: s.Key, Op: "read segment", Err: err}
		}
		if err := checkSegment(s, txns); err != nil {
			return nil, &ObjectError{Key: s.Key, Op: "read segment", Err: err}
		}
		return txns, nil
	}
}

// checkSegment verifies that the decoded transactions are those the
// manifest describes: whole, in order, spanning exactly FirstLSN-LastLSN.
func checkSegment(s Segment, txns []wal.Txn) error {
	if len(txns) == 0 {
		return fmt.Errorf("%w: no transactions, manifest says LSNs %d-%d", ErrCorrupt, s.FirstLSN, s.LastLSN)
	}
	next := s.FirstLSN
	for i := range txns {
		t := &txns[i]
		if t.FirstLSN != next || t.CommitLSN < t.FirstLSN || t.CommitLSN-t.FirstLSN+1 != uint64(len(t.Changes)) {
			return fmt.Errorf("%w: transaction %d spans LSNs %d-%d with %d changes, expected to start at LSN %d",
				ErrCorrupt, i, t.FirstLSN, t.CommitLSN, len(t.Changes), next)
		}
		next = t.CommitLSN + 1
	}
	if next-1 != s.LastLSN {
		return fmt.Errorf("%w: transactions end at LSN %d, manifest says %d", ErrCorrupt, next-1, s.LastLSN)
	}
	return nil
}

// prefetcher reads segments with n workers, at most window of them fetched
// ahead of the consumer (bounded memory), and delivers them in order.
type prefetcher struct {
	segs    []Segment
	slots   []chan fetched
	tokens  chan struct{}
	next    int
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Once
}

type fetched struct {
	txns []wal.Txn
	err  error
}

func newPrefetcher(ctx context.Context, segs []Segment, n, window int, fetch fetchFunc) *prefetcher {
	n = max(n, 1)
	window = max(window, n)
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetcher{segs: segs, slots: make([]chan fetched, len(segs)), tokens: make(chan struct{}, window), cancel: cancel}
	for i := range p.slots {
		p.slots[i] = make(chan fetched, 1)
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
				txns, err := fetch(ctx, segs[i])
				p.slots[i] <- fetched{txns, err}
			}
		}()
	}
	return p
}

// Next returns the next segment's transactions in order. It blocks until
// that segment is fetched.
func (p *prefetcher) Next() ([]wal.Txn, Segment, error) {
	if p.next >= len(p.segs) {
		return nil, Segment{}, fmt.Errorf("pitr: prefetcher: no more segments")
	}
	i := p.next
	r := <-p.slots[i]
	p.next++
	<-p.tokens
	return r.txns, p.segs[i], r.err
}

// Close stops the workers and waits for them. It is idempotent.
func (p *prefetcher) Close() {
	p.closeMu.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
}
