package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/walship/walship/change"
	"github.com/walship/walship/replica"
)

// slowApplier applies nothing until released.
type slowApplier struct {
	replica.Applier
	release chan struct{}
}

func (a *slowApplier) Stats() replica.Stats { return replica.Stats{} }

func (a *slowApplier) Apply(ctx context.Context, txns []change.Committed) error {
	select {
	case <-a.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestLagOfQueuedBatch: a fresh replica (nothing applied, so no applied
// commit time) with a batch waiting for the applier reports the age of
// the batch's oldest commit, growing while it waits, and 0 once applied.
func TestLagOfQueuedBatch(t *testing.T) {
	ap := &slowApplier{release: make(chan struct{})}
	c := &Consumer{applier: ap}
	c.mu.advanced = make(chan struct{})
	oldest := time.Now().Add(-30 * time.Second)
	batch := []change.Committed{{FirstLSN: 1, CommitLSN: 2, CommitTime: oldest}, {FirstLSN: 3, CommitLSN: 3, CommitTime: oldest.Add(time.Second)}}
	c.queue(batch)
	first := c.Stats().LagSeconds
	if first < 30 {
		t.Fatalf("lag %vs with a batch committed 30s ago waiting", first)
	}
	for c.Stats().LagSeconds <= first {
		time.Sleep(time.Millisecond) // the lag is computed when asked: it grows
	}
	done := make(chan error, 1)
	go func() { done <- c.apply(context.Background(), batch) }()
	close(ap.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.LagSeconds != 0 || st.AppliedLSN != 3 {
		t.Fatalf("after applying: %+v", st)
	}
}
