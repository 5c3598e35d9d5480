package consumer

import (
	"context"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/walship/walship/change"
)

// Dependency health: the brokers as the Kafka client sees them (every
// connection attempt, and every failed read or write), and the replica
// database, probed every probeInterval while Run runs (an idle consumer
// must notice a dead replica before the next batch fails on it).

// probeInterval is how often Run reads the replica's position to check
// that the database answers.
const probeInterval = 2 * time.Second

// brokerHooks reports connections, reads and writes to the brokers'
// health.
type brokerHooks struct{ c *Consumer }

func (h brokerHooks) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	h.c.kafka.Fail(err)
}

func (h brokerHooks) OnBrokerWrite(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		h.c.kafka.Fail(err)
	}
}

func (h brokerHooks) OnBrokerRead(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		h.c.kafka.Fail(err)
	}
}

// probeReplica reads the replica's position every probeInterval until ctx
// ends and records the outcome in the replica's health.
func (c *Consumer) probeReplica(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*probeInterval)
		_, err := c.applier.Position(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.replica.Fail(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// queuedBatch is a batch handed to the applier: its last commit LSN and
// the commit time of its first transaction.
type queuedBatch struct {
	last   uint64
	oldest time.Time
}

// queue records batch as handed to the applier, for the lag (Stats).
func (c *Consumer) queue(batch []change.Committed) {
	c.mu.Lock()
	c.mu.queued = append(c.mu.queued, queuedBatch{last: batch[len(batch)-1].CommitLSN, oldest: batch[0].CommitTime})
	c.mu.Unlock()
}
